"""Study completion in the job database, and the dashboard's "Series of the study" panel.

A real SQLite job database: instances of three series of one study recorded with timestamps;
:meth:`complete_quiet_studies` closes all of them together only when the whole study is quiet
(or waited too long); the job page lists every series of the study with its reason.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable

from fastapi.testclient import TestClient

from storage.database import JobDatabase
from storage.instances import InstanceRecord
from storage.models import JobState

STUDY = "1.2.826.0.1.3680043.8.498.1"
T0 = dt.datetime(2026, 1, 1, 12, 0, 0)


def _arrive(db: JobDatabase, series: str, count: int, at: dt.datetime, study: str = STUDY) -> None:
    db.record_instances([
        InstanceRecord(
            sop_instance_uid=f"{series}.{i}", study_instance_uid=study,
            series_instance_uid=series, sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
            transfer_syntax_uid="1.2.840.10008.1.2.1", modality="CT", path=f"/nowhere/{series}.{i}",
            calling_ae_title="PACS", received_at=at,
        )
        for i in range(count)
    ])


def test_a_study_closes_when_all_its_series_are_quiet(web_db: JobDatabase) -> None:
    _arrive(web_db, f"{STUDY}.1", 3, T0)
    _arrive(web_db, f"{STUDY}.2", 5, T0 + dt.timedelta(seconds=50))
    # series 1 has been quiet for 70 s, but the study only for 20 s
    assert web_db.complete_quiet_studies(60, 1800, now=T0 + dt.timedelta(seconds=70)) == []
    created = web_db.complete_quiet_studies(60, 1800, now=T0 + dt.timedelta(seconds=111))
    jobs = [web_db.get_job(i) for i in created]
    assert sorted(j.series_instance_uid for j in jobs) == [f"{STUDY}.1", f"{STUDY}.2"]
    assert all(j.state == JobState.RECEIVED for j in jobs)
    assert all("study complete" in j.events[0].message for j in jobs)
    assert web_db.complete_quiet_studies(60, 1800, now=T0 + dt.timedelta(seconds=999)) == []


def test_a_study_that_keeps_arriving_is_processed_after_the_maximum_wait(
    web_db: JobDatabase,
) -> None:
    for minute in range(0, 40, 1):
        _arrive(web_db, f"{STUDY}.{minute}", 1, T0 + dt.timedelta(minutes=minute))
    now = T0 + dt.timedelta(minutes=39, seconds=30)
    created = web_db.complete_quiet_studies(60, 1800, now=now)
    assert len(created) == 40
    assert "still receiving after 1800 s" in web_db.get_job(created[0]).events[0].message


def test_job_page_lists_every_series_of_the_study(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    for number in (1, 2, 3):
        _arrive(web_db, f"{STUDY}.{number}", 2, T0)
    _arrive(web_db, "9.9.9.1", 2, T0, study="9.9.9")  # another study: not listed
    created = web_db.complete_quiet_studies(60, 1800, now=T0 + dt.timedelta(seconds=61))
    jobs = {web_db.get_job(i).series_instance_uid: i for i in created}
    chosen = jobs[f"{STUDY}.2"]
    web_db.set_routing(chosen, protocol="brain-gwr", rule="r", reason="chosen for brain-gwr: axial ORIGINAL, 2.5 mm")
    web_db.set_routing(jobs[f"{STUDY}.1"], protocol=None, rule=None, reason="skipped: localizer")
    web_db.set_routing(
        jobs[f"{STUDY}.3"], protocol=None, rule="r",
        reason="skipped for brain-gwr: 5 mm thick (preferred 0.5-3 mm); series 2 (2.5 mm) preferred",
    )
    page = make_client(web_db, "victor").get(f"/jobs/{chosen}")
    assert page.status_code == 200
    panel = page.text.split('id="study-series"', 1)[1].split("</section>", 1)[0]
    for series in (1, 2, 3):
        assert f"{STUDY}.{series}" in panel
    assert "9.9.9.1" not in panel
    assert "skipped: localizer" in panel and "5 mm thick" in panel and "chosen for brain-gwr" in panel
