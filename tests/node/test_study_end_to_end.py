"""A whole study, as a PACS forwards it, through the real programs (issue 15, "Done when").

The chest study of ``tests/studies.py`` (the real 1 mm LIDC-IDRI-0314 series, a 5 mm axial
reconstruction of it, coronal reformats, a scout, a dose SR and an earlier run's SEG/SR/SC, one
Study Instance UID) is sent with DCMTK ``/usr/bin/storescu`` in shuffled order over three
parallel associations to ``ainode serve`` in study completion mode (short quiet periods), which
sends its results to Orthanc. Exactly one SEG + SR + SC of chest-respiratory-muscle must reach
Orthanc, measured on the 1 mm series; nothing for any other series; and ``ainode jobs show``
must say for every other series of the study that it was skipped, and why.

The small head study (2.5 mm series, its bone-kernel copy, a 5 mm reconstruction...) takes the
DICOMweb paths: results sent by STOW-RS to Orthanc's DICOMweb plugin, and the study POSTed to
the node's own STOW-RS endpoint; each must give the same single result set.
"""

from __future__ import annotations

import json
import random
import re
import secrets
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from node_helpers import FINAL_STATES, wait_for_jobs
from studies import BuiltStudy, chest_study, head_study, send_study

from node.local_pacs import OrthancPACS
from node.server import Node
from pipelines.validation import run_dciodvfy
from storage.database import JobDatabase
from storage.models import JobState

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PROTOCOL = "chest-respiratory-muscle"


@pytest.fixture
def study_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    """``ainode serve`` (which inherits the environment) completes studies after 3 quiet s."""
    monkeypatch.setenv("AINODE_COMPLETION", "study")
    monkeypatch.setenv("AINODE_STUDY_QUIET_SECONDS", "3")
    monkeypatch.setenv("AINODE_STUDY_MAX_WAIT_SECONDS", "600")


#: Words of which the skip reason of each role's series must contain one (case-insensitive).
SKIP_REASON_OF_ROLE = {
    "thick-axial": ("mm thick",),
    "bone-kernel": ("kernel",),
    "coronal": ("derived", "reformat"),
    "localizer": ("localizer",),
    "dose-sr": ("skipped",),
    "ainode": ("ainode output",),
}

_STUDY_SERIES_LINE = re.compile(r"^\s*\*?job\s+\d+\s+\S+\s+(?P<uid>[0-9.]+)\s*$")


def _study_series_reasons(text: str) -> dict[str, str]:
    """``ainode jobs show``'s "series of the study" section: reason by Series Instance UID."""
    lines = text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("series of the study"))
    reasons: dict[str, str] = {}
    for line, following in zip(lines[start + 1:], lines[start + 2:] + [""], strict=True):
        if line and not line.startswith(" "):
            break
        match = _STUDY_SERIES_LINE.match(line)
        if match:
            reasons[match["uid"]] = following.strip()
    return reasons


def _check_outputs_in_orthanc(orthanc: OrthancPACS, study: BuiltStudy, tmp_path: Path) -> None:
    """Exactly one SEG + SR + SC in Orthanc, valid, in the study, measured on the thin series."""
    orthanc.wait_for_instances(3, timeout_s=90)
    time.sleep(3)  # anything more the node would send follows within its send loop
    received = orthanc.instances()
    assert sorted(i["Modality"] for i in received) == ["OT", "SEG", "SR"], received
    thin = study.series["thin-axial"].series_instance_uid
    for instance in received:
        path = tmp_path / f"{instance['SOPInstanceUID']}.dcm"
        path.write_bytes(orthanc.get_instance_file(instance["ID"]))
        report = run_dciodvfy(path)
        assert report.errors == [], f"dciodvfy errors in {instance['Modality']}: {report.errors}"
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == study.study_instance_uid
        assert ds.Manufacturer == "ainode"
        if ds.Modality == "SEG":
            referenced = {item.SeriesInstanceUID for item in ds.ReferencedSeriesSequence}
            assert referenced == {thin}, "the SEG must lie on the 1 mm series"
        if ds.Modality == "SR":
            evidence = {series.SeriesInstanceUID
                        for study_item in ds.CurrentRequestedProcedureEvidenceSequence
                        for series in study_item.ReferencedSeriesSequence}
            assert thin in evidence and not evidence & (
                study.series["thick-axial"].series_instance_uids
                | study.series["coronal"].series_instance_uids), evidence


def _serve_study(
    serve_process: Callable[..., object], study: BuiltStudy, tmp_path: Path,
    send_to: str | None,
) -> tuple[object, Path, object]:
    """Send ``study`` shuffled to a new ``ainode serve``; return its DONE job, data dir, node.

    Every instance must be acknowledged; exactly one job may run (DONE), on the thin series, for
    ``study.protocol``; every other job of the study is IGNORED.
    """
    data_dir = tmp_path / "node"
    node = serve_process(data_dir, send_to=send_to)
    node.start()  # type: ignore[attr-defined]
    started = time.monotonic()
    sent = send_study(study.files(), node.port, associations=3)  # type: ignore[attr-defined]
    print(f"sent {len(study.files())} instances in {time.monotonic() - started:.1f} s")
    assert all(code == 0 for code in sent.returncodes), sent.output[-3000:]
    assert sent.acknowledged == set(study.files()), "every instance must be acknowledged"

    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        done = wait_for_jobs(db, 1, timeout_s=420, states=(JobState.DONE, JobState.FAILED))
        print(f"job finished {time.monotonic() - started:.1f} s after the first instance")
        jobs = [db.get_job(j.id) for j in db.list_jobs(limit=500)]
    finally:
        db.close()
    (job,) = done
    events = "\n".join(f"  {e.level}: {e.message}" for e in job.events)
    assert job.state == JobState.DONE, f"job {job.id} {job.state} {job.error}\n{events}"
    assert job.protocol == study.protocol
    assert job.series_instance_uid == study.series["thin-axial"].series_instance_uid
    ran = [j for j in jobs if j.state != JobState.IGNORED]
    assert [j.id for j in ran] == [job.id], [(j.id, j.protocol, str(j.state)) for j in ran]
    return job, data_dir, node


def _check_jobs_show(job: object, data_dir: Path, study: BuiltStudy) -> None:
    """``ainode jobs show`` names the thin series as chosen and every other one as skipped."""
    shown = subprocess.run(
        [sys.executable, "-m", "node", "jobs", "show", str(job.id),  # type: ignore[attr-defined]
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60, check=False)
    assert shown.returncode == 0, shown.stderr
    assert "series of the study" in shown.stdout, shown.stdout
    reasons = _study_series_reasons(shown.stdout)
    thin = study.series["thin-axial"].series_instance_uid
    assert reasons.get(thin, "").startswith(f"chosen for {study.protocol}"), shown.stdout
    for role, series in study.series.items():
        if role == "thin-axial":
            continue
        for uid in series.series_instance_uids:
            reason = reasons.get(uid, "")
            assert reason.startswith("skipped"), (
                f"`ainode jobs show` does not explain the {role} series {uid}:\n{shown.stdout}")
            assert any(word in reason.lower() for word in SKIP_REASON_OF_ROLE[role]), (
                role, reason)
    assert set(reasons) == {thin} | {uid for series in study.series.values()
                                     for uid in series.series_instance_uids}


def test_chest_study_yields_one_result_set_on_the_thin_series(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path,
    study_mode: None,
) -> None:
    """The chest study by DIMSE: one chest-respiratory-muscle result set, on the 1 mm series."""
    study = chest_study()
    job, data_dir, _node = _serve_study(serve_process, study, tmp_path,
                                 f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}")
    _check_outputs_in_orthanc(orthanc, study, tmp_path)
    _check_jobs_show(job, data_dir, study)


def test_head_study_results_reach_orthanc_by_stow_rs(
    serve_process: Callable[..., object], tmp_path: Path, study_mode: None,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The small head study, results sent by STOW-RS: one brain-gwr set, on the 2.5 mm series.

    The bone-kernel copy of the same slices and the 5 mm reconstruction are skipped. Sent again,
    the study's results replace the first ones in Orthanc (the same SOP Instance UIDs).
    """
    from peers import orthanc_dicomweb

    study = head_study()
    pacs = orthanc_dicomweb(tmp_path / "orthanc-web")
    pacs.start()
    try:
        monkeypatch.setenv("AINODE_TEST_STOW_PASSWORD", pacs.password)  # type: ignore[attr-defined]
        monkeypatch.setenv("AINODE_DESTINATIONS", json.dumps([{
            "kind": "dicomweb", "url": pacs.dicomweb_url,  # type: ignore[attr-defined]
            "timeout_seconds": 30,
            "auth": {"type": "basic", "username": "stow",
                     "password_env": "AINODE_TEST_STOW_PASSWORD"},
        }]))
        job, data_dir, node = _serve_study(serve_process, study, tmp_path, send_to=None)
        _check_outputs_in_orthanc(pacs, study, tmp_path)
        db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
        try:
            outputs = db.get_job(job.id).outputs  # type: ignore[attr-defined]
        finally:
            db.close()
        sends = {(s.destination, s.state) for o in outputs for s in o.sends}
        assert sends == {(pacs.dicomweb_url, "sent")}, sends  # type: ignore[attr-defined]
        _check_jobs_show(job, data_dir, study)
        first_set = {i["SOPInstanceUID"] for i in pacs.instances()}

        # The PACS sends the study again: its results replace, never duplicate, the first set.
        again = send_study(study.files(), node.port, seed=16)  # type: ignore[attr-defined]
        assert again.acknowledged == set(study.files()), again.output[-3000:]
        time.sleep(3 + 2)  # the study quiet period and a dispatcher pass
        db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
        try:
            deadline = time.monotonic() + 300
            while any(j.state not in FINAL_STATES for j in db.list_jobs(limit=500)):
                assert time.monotonic() < deadline, "jobs of the re-sent study never finished"
                time.sleep(0.5)
            jobs = db.list_jobs(limit=500)
            failed = [j.id for j in jobs if j.state == JobState.FAILED]
            print("after the re-send:", sorted((j.id, str(j.state)) for j in jobs
                                               if j.state != JobState.IGNORED))
        finally:
            db.close()
        assert failed == []
        time.sleep(3)
        assert {i["SOPInstanceUID"] for i in pacs.instances()} == first_set
    finally:
        pacs.stop()


def test_head_study_posted_by_stow_rs_is_processed_like_c_store(
    make_node: Callable[..., Node], orthanc: OrthancPACS, tmp_path: Path,
) -> None:
    """The head study POSTed to the node's STOW-RS endpoint in three shuffled requests.

    A service account posts; the node (study completion, 3 s quiet) runs brain-gwr once, on the
    2.5 mm series, and one SEG + SR + SC reach Orthanc, as for the study sent by C-STORE.
    """
    from fastapi.testclient import TestClient

    from node.config import Destination
    from node.users import add_user
    from node.web.app import create_app

    study = head_study()
    node = make_node([Destination(ae_title=orthanc.ae_title, host=orthanc.host,
                                  port=orthanc.port)],
                     completion="study", study_quiet_seconds=3.0)
    add_user(node.database, "pacs-stow", "service-secret-1", ["service"])
    files = study.files()
    random.Random(15).shuffle(files)
    with TestClient(create_app(node.settings, node.database),
                    base_url="http://127.0.0.1") as client:
        for group in (files[i::3] for i in range(3)):
            boundary = secrets.token_hex(12)
            body = b"".join(
                f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
                + path.read_bytes() + b"\r\n" for path in group
            ) + f"--{boundary}--\r\n".encode()
            response = client.post(
                f"/dicomweb/studies/{study.study_instance_uid}", content=body,
                headers={"Content-Type": "multipart/related; type=\"application/dicom\"; "
                                         f"boundary={boundary}",
                         "Accept": "application/dicom+json"},
                auth=("pacs-stow", "service-secret-1"))
            assert response.status_code == 200, response.text[-2000:]
    (job,) = wait_for_jobs(node.database, 1, timeout_s=300,
                           states=(JobState.DONE, JobState.FAILED))
    assert job.state == JobState.DONE, job.error
    assert job.protocol == study.protocol
    assert job.series_instance_uid == study.series["thin-axial"].series_instance_uid
    ran = [j for j in node.database.list_jobs(limit=500) if j.state != JobState.IGNORED]
    assert [j.id for j in ran] == [job.id], [(j.id, j.protocol, str(j.state)) for j in ran]
    _check_outputs_in_orthanc(orthanc, study, tmp_path)
