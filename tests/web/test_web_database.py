"""Dashboard queries of the job database on SQLite and PostgreSQL: filters, cancel, delete,
audit log, users, association log."""

from __future__ import annotations

import datetime as dt

import pytest
from web_helpers import failed_job, queued_job, record

from pipelines.errors import StorageError
from storage.database import JobDatabase
from storage.models import JobState, SendState, utcnow


def test_query_jobs_filters_paginates_and_searches(any_web_db: JobDatabase) -> None:
    db = any_web_db
    t0 = dt.datetime(2026, 1, 10, 12, 0)
    ids = []
    for k in range(7):
        record(db, f"1.2.3.{k}", calling="CT1" if k % 2 else "CT2", accession=f"ACC{k:03d}",
               at=t0 + dt.timedelta(days=k))
        (job_id,) = db.complete_quiet_series(0, now=t0 + dt.timedelta(days=k, minutes=1))
        db.set_routing(job_id, protocol="l3-body-composition" if k < 5 else None, rule="r",
                       reason="test")
        ids.append(job_id)
    page = db.query_jobs(limit=3)
    assert page.total == 7 and [j.id for j in page.jobs] == ids[::-1][:3]
    assert [j.id for j in db.query_jobs(limit=3, offset=6).jobs] == [ids[0]]
    assert db.query_jobs(state="ignored").total == 2
    assert db.query_jobs(protocol="l3-body-composition").total == 5
    assert db.query_jobs(calling_ae_title="CT1").total == 3
    window = db.query_jobs(created_from=t0 + dt.timedelta(days=2), created_to=t0 + dt.timedelta(days=4))
    assert sorted(j.id for j in window.jobs) == [ids[2], ids[3]]
    assert [j.id for j in db.query_jobs(text="ACC004").jobs] == [ids[4]]
    assert [j.id for j in db.query_jobs(text="1.2.3.5").jobs] == [ids[5]]  # series UID substring
    assert [j.id for j in db.query_jobs(text="1.2.3.6.1").jobs] == [ids[6]]  # SOP Instance UID
    assert db.query_jobs(text="%").total == 0  # LIKE wildcards are literal
    assert db.query_jobs(text=str(ids[1])).total >= 1


def test_cancelled_queued_job_is_never_claimed_and_can_be_retried(any_web_db: JobDatabase) -> None:
    db = any_web_db
    job_id = queued_job(db, "1.2.3.9")
    assert "before it ran" in db.cancel_job(job_id, by="alice")
    assert db.claim_job("w", 60) is None
    assert db.get_job(job_id).state == JobState.CANCELLED
    with pytest.raises(StorageError, match="cancelled"):
        db.cancel_job(job_id)
    db.retry_job(job_id)
    assert db.claim_job("w", 60).id == job_id


def test_results_of_a_job_cancelled_while_running_are_discarded(any_web_db: JobDatabase) -> None:
    db = any_web_db
    job_id = queued_job(db, "1.2.3.10")
    assert db.claim_job("w", 60).id == job_id
    assert "while running" in db.cancel_job(job_id, by="alice")
    db.record_results(job_id, algorithm="a 1", results={"x": 1},
                      outputs=[("SC", "1.2.840.10008.5.1.4.1.1.7", "9.9", "9.8", "/o.dcm")],
                      destinations=["PACS@h:104"])
    job = db.get_job(job_id)
    assert job.state == JobState.CANCELLED and job.outputs == [] and job.results_json is None
    assert db.fail_job(job_id, "late error", retry=True) == JobState.CANCELLED
    assert db.expire_leases(utcnow() + dt.timedelta(hours=1)) == []
    assert db.resume_interrupted() == []


def test_cancel_while_sending_fails_pending_sends_and_delete_removes_the_job(any_web_db: JobDatabase) -> None:
    db = any_web_db
    job_id = queued_job(db, "1.2.3.11")
    db.claim_job("w", 60)
    db.record_results(job_id, algorithm="a 1", results={},
                      outputs=[("SC", "1.2.840.10008.5.1.4.1.1.7", "9.9", "9.8", "/o.dcm")],
                      destinations=["PACS@h:104", "ARCH@h:104"])
    assert db.get_job(job_id).state == JobState.SENDING
    with pytest.raises(StorageError, match="cancel it first"):
        db.delete_job(job_id)
    assert "2 pending send(s) dropped" in db.cancel_job(job_id, by="alice")
    assert db.due_sends("PACS@h:104") == []
    sends = [s for o in db.get_job(job_id).outputs for s in o.sends]
    assert {s.state for s in sends} == {SendState.FAILED}
    db.delete_job(job_id)
    assert db.get_job(job_id) is None
    with pytest.raises(StorageError, match="no job"):
        db.delete_job(job_id)


def test_audit_users_associations_and_status_counts(any_web_db: JobDatabase) -> None:
    db = any_web_db
    job_id = failed_job(db, "1.2.3.12")
    db.record_audit(user_name="alice", action="retry", job_id=job_id, remote_address="10.0.0.9",
                    outcome="ok")
    (entry,) = db.list_audit(job_id=job_id)
    assert (entry.user_name, entry.action, entry.remote_address) == ("alice", "retry", "10.0.0.9")
    assert [u.name for u in db.list_users()] == ["alice", "paula", "victor"]
    with pytest.raises(StorageError, match="exists"):
        db.add_user("alice", "x", ["viewer"])
    assert db.remove_user("victor") and not db.remove_user("victor")
    now = utcnow()
    db.record_association(calling_ae_title="CT1", address="10.0.0.1", accepted=True, at=now)
    db.record_association(calling_ae_title="BAD", address="10.0.0.2", accepted=False, reason="x", at=now)
    db.record_association(calling_ae_title="OLD", address="10.0.0.3", accepted=True,
                          at=now - dt.timedelta(hours=2))
    assert db.association_counts(now - dt.timedelta(hours=1)) == {"accepted": 1, "rejected": 1}
    db.record_association(calling_ae_title="CT1", address="10.0.0.1", accepted=True,
                          at=now + dt.timedelta(days=7, hours=1))  # prunes what is > 7 days old
    assert db.association_counts(now - dt.timedelta(days=30)) == {"accepted": 1, "rejected": 0}
    queued_job(db, "1.2.3.13")
    assert db.queue_depth_by_protocol() == {"l3-body-composition": 1}
    assert db.count_jobs_by_state() == {"failed": 1, "queued": 1}
