"""The job database on SQLite and PostgreSQL: migrations, completion, claims, sends, recovery."""

from __future__ import annotations

import datetime as dt
import threading

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext

from storage.database import JobDatabase
from storage.models import Base, JobState, SendState, utcnow


def _record(db: JobDatabase, sop: str, series: str = "1.2.3", at: dt.datetime | None = None) -> bool:
    return db.record_instance(
        sop_instance_uid=sop,
        study_instance_uid="1.2",
        series_instance_uid=series,
        sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
        transfer_syntax_uid="1.2.840.10008.1.2.1",
        modality="CT",
        path=f"/store/{sop}.dcm",
        calling_ae_title="PACS",
        received_at=at,
    )


def _queued_job(db: JobDatabase, series: str) -> int:
    _record(db, f"{series}.1", series=series)
    (job_id,) = db.complete_quiet_series(0)
    db.set_routing(job_id, protocol="l3-body-composition", rule="abdomen", reason="test")
    return job_id


def test_migrations_match_the_models(database: JobDatabase) -> None:
    with database.engine.connect() as connection:
        diff = compare_metadata(MigrationContext.configure(connection), Base.metadata)
    assert diff == []


def test_series_completes_only_after_the_quiet_period(database: JobDatabase) -> None:
    t0 = utcnow()
    assert _record(database, "1.2.3.1", at=t0)
    assert _record(database, "1.2.3.2", at=t0 + dt.timedelta(seconds=8))
    assert not _record(database, "1.2.3.2", at=t0 + dt.timedelta(seconds=9))  # re-sent
    # 10 s after the first but only 2 s after the last instance: not complete.
    assert database.complete_quiet_series(10, now=t0 + dt.timedelta(seconds=10)) == []
    created = database.complete_quiet_series(10, now=t0 + dt.timedelta(seconds=19))
    assert len(created) == 1
    job = database.get_job(created[0])
    assert job is not None and job.state == JobState.RECEIVED and job.instance_count == 2
    # Nothing more to complete.
    assert database.complete_quiet_series(10, now=t0 + dt.timedelta(seconds=60)) == []


def test_resent_series_after_completion_becomes_a_new_job_with_same_fingerprint(
    database: JobDatabase,
) -> None:
    t0 = utcnow() - dt.timedelta(seconds=100)
    _record(database, "1.2.3.1", at=t0)
    (first,) = database.complete_quiet_series(10, now=t0 + dt.timedelta(seconds=11))
    _record(database, "1.2.3.1", at=t0 + dt.timedelta(seconds=30))
    (second,) = database.complete_quiet_series(10, now=t0 + dt.timedelta(seconds=41))
    jobs = {j.id: j for j in database.list_jobs()}
    assert jobs[first].input_fingerprint == jobs[second].input_fingerprint
    events = [e.message for e in database.get_job(second).events]  # type: ignore[union-attr]
    assert any("processed before" in m for m in events)


def test_each_job_is_claimed_exactly_once_by_concurrent_workers(database: JobDatabase) -> None:
    job_ids = {_queued_job(database, f"1.2.9.{i}") for i in range(12)}
    claimed: list[int] = []
    lock = threading.Lock()

    def worker(name: str) -> None:
        while (job := database.claim_job(name, 60)) is not None:
            with lock:
                claimed.append(job.id)

    threads = [threading.Thread(target=worker, args=(f"w{i}",)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert sorted(claimed) == sorted(job_ids)


def test_send_retries_with_backoff_then_fails_and_retry_resends(database: JobDatabase) -> None:
    job_id = _queued_job(database, "1.2.5")
    assert database.claim_job("w", 60) is not None
    database.record_results(
        job_id,
        algorithm="a 1",
        results={"sma_cm2": 100.0},
        outputs=[("SEG", "1.2.840.10008.5.1.4.1.1.66.4", "2.25.1", "2.25.2", "/out/seg.dcm")],
        destinations=["PACS@h:104", "ARCHIVE@h:105"],
    )
    assert database.get_job(job_id).state == JobState.SENDING  # type: ignore[union-attr]
    (pacs_send,) = database.due_sends("PACS@h:104")
    (archive_send,) = database.due_sends("ARCHIVE@h:105")
    assert database.mark_send(archive_send[0], ok=True) == SendState.SENT
    assert database.mark_send(pacs_send[0], ok=False, error="down", max_attempts=2, backoff_seconds=30) == SendState.PENDING
    # Backing off: not due now, due in a minute.
    assert database.due_sends("PACS@h:104") == []
    assert len(database.due_sends("PACS@h:104", now=utcnow() + dt.timedelta(seconds=61))) == 1
    assert database.mark_send(pacs_send[0], ok=False, error="down", max_attempts=2) == SendState.FAILED
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED and "1 of 2 send(s) failed" in (job.error or "")
    assert "re-sending 1" in database.retry_job(job_id)
    assert len(database.due_sends("PACS@h:104")) == 1
    assert database.due_sends("ARCHIVE@h:105") == []
    (again,) = database.due_sends("PACS@h:104")
    database.mark_send(again[0], ok=True)
    assert database.get_job(job_id).state == JobState.DONE  # type: ignore[union-attr]


def test_interrupted_jobs_are_requeued_and_failures_retry_within_attempts(database: JobDatabase) -> None:
    job_id = _queued_job(database, "1.2.6")
    assert database.claim_job("w", 60) is not None
    assert database.resume_interrupted() == [job_id]
    assert database.get_job(job_id).state == JobState.QUEUED  # type: ignore[union-attr]
    database.claim_job("w", 60)
    # attempts == 2 == max_attempts: a crash does not retry again.
    assert database.fail_job(job_id, "worker died", retry=True) == JobState.FAILED


def test_ignored_job_records_the_reason(database: JobDatabase) -> None:
    _record(database, "1.2.7.1", series="1.2.7")
    (job_id,) = database.complete_quiet_series(0)
    database.set_routing(job_id, protocol=None, rule=None, reason="no routing rule matched: Modality MR")
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.IGNORED
    assert "Modality MR" in (job.routing_reason or "")
    assert database.count_jobs_by_state() == {"ignored": 1}


def test_a_job_that_was_running_at_every_node_stop_is_failed_not_requeued(database: JobDatabase) -> None:
    job_id = _queued_job(database, "1.2.8")
    database.claim_job("w", 60)
    assert database.resume_interrupted() == [job_id]  # attempt 1 of 2: resumed
    database.claim_job("w", 60)
    assert database.resume_interrupted() == []  # attempt 2 of 2: the input may kill the node
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED
    assert "stopped while this job ran, 2 time(s)" in (job.error or "")


def test_pending_sends_to_a_removed_destination_fail_and_settle_the_job(database: JobDatabase) -> None:
    job_id = _queued_job(database, "1.2.10")
    database.claim_job("w", 60)
    database.record_results(
        job_id,
        algorithm="a 1",
        results={},
        outputs=[("SR", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.5", "2.25.6", "/out/sr.dcm")],
        destinations=["OLDPACS@h:104"],
    )
    assert database.fail_sends_to_unknown_destinations(["NEWPACS@h:104"]) == 1
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.FAILED
    assert any("no longer in the configuration" in e.message for e in job.events)
    assert database.fail_sends_to_unknown_destinations(["NEWPACS@h:104"]) == 0


def test_instance_resent_under_another_series_moves_to_it(database: JobDatabase) -> None:
    _record(database, "1.2.11.1", series="1.2.11")
    _record(database, "1.2.11.2", series="1.2.11")
    assert _record(database, "1.2.11.2", series="1.2.12")  # new to series 1.2.12
    assert [i.sop_instance_uid for i in database.series_instances("1.2.11")] == ["1.2.11.1"]
    assert [i.sop_instance_uid for i in database.series_instances("1.2.12")] == ["1.2.11.2"]
    jobs = {database.get_job(j).series_instance_uid: database.get_job(j) for j in database.complete_quiet_series(0)}  # type: ignore[union-attr]
    assert jobs["1.2.11"].instance_count == 1 and jobs["1.2.12"].instance_count == 1  # type: ignore[union-attr]


def test_a_job_released_at_shutdown_keeps_its_attempts(database: JobDatabase) -> None:
    job_id = _queued_job(database, "1.2.13")
    for _ in range(3):  # three ordinary restarts while the job ran
        assert database.claim_job("w", 60) is not None
        database.release_job(job_id)
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.QUEUED and job.attempts == 0


def test_results_and_failures_of_a_run_that_lost_its_job_are_not_recorded(
    database: JobDatabase,
) -> None:
    """A worker whose lease expired (job re-queued and claimed by another worker) cannot
    overwrite the new run: the owner check and the write are one transaction."""
    job_id = _queued_job(database, "1.2.6")
    first = database.claim_job("w1", 60)
    assert first is not None and first.attempt == 1
    assert database.expire_leases(now=utcnow() + dt.timedelta(seconds=120)) == [job_id]
    second = database.claim_job("w2", 60)
    assert second is not None and second.attempt == 2
    outputs = [("SR", "1.2.840.10008.5.1.4.1.1.88.34", "2.25.7", "2.25.8", "/out/sr.dcm")]
    stale = database.record_results(
        job_id, algorithm="a 1", results={"x": 1}, outputs=outputs, destinations=[],
        owner=("w1", 1),
    )
    assert stale is False
    assert database.fail_job(job_id, "late failure", owner=("w1", 1)) == JobState.RUNNING
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.RUNNING and job.results_json is None
    assert database.record_results(
        job_id, algorithm="a 1", results={"x": 2}, outputs=outputs, destinations=[],
        owner=("w2", 2),
    )
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.DONE
    messages = [e.message for e in job.events]
    assert any("discarded" in m for m in messages) and any("not recorded" in m for m in messages)


def test_a_renewed_lease_is_not_expired(database: JobDatabase) -> None:
    job_id = _queued_job(database, "1.2.7")
    assert database.claim_job("w1", 1) is not None
    # A lease renewed to the future is left alone even when the caller's clock is late.
    assert database.expire_leases(now=utcnow()) == []
    job = database.get_job(job_id)
    assert job is not None and job.state == JobState.RUNNING
