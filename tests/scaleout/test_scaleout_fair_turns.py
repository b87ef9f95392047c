"""A Celery message is a turn for its queue: the worker runs the queue's next job in the fair order
of the job database (priority, callers in turn, age), the local runner's order, whatever job the
message names; other queues' jobs and settled jobs are never run by it. No broker needed: the
task body (:meth:`node.worker.CeleryJobWorker.handle`) is called directly; the jobs' input files
do not exist, so each run ends at once with an input error."""

from __future__ import annotations

from pathlib import Path

from node.config import Settings
from node.scaleout.app import protocols_of_queue
from node.worker import CeleryJobWorker
from storage.database import InstanceRecord, JobDatabase
from storage.models import JobState, utcnow


def _queue(db: JobDatabase, series: str, caller: str, protocol: str, priority: str = "routine") -> int:
    db.record_instances(
        [
            InstanceRecord(
                sop_instance_uid=f"{series}.1",
                study_instance_uid="1.2",
                series_instance_uid=series,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT",
                path=f"/nonexistent/{series}.dcm",
                calling_ae_title=caller,
                received_at=utcnow(),
            )
        ]
    )
    (job_id,) = db.complete_quiet_series(0)
    db.set_routing(job_id, protocol=protocol, rule="r", reason="r", priority=priority)
    return job_id


def test_a_message_runs_the_next_job_of_its_queue_in_fair_order(tmp_path: Path) -> None:
    settings = Settings(
        data_dir=tmp_path / "data",
        runner="celery",
        celery={"default_queue": "gpu", "queues": {"neonatal-rds": "cpu"}},
    )
    assert protocols_of_queue(settings, "cpu").only == frozenset({"neonatal-rds"})
    assert protocols_of_queue(settings, "gpu").excluded == frozenset({"neonatal-rds"})
    db = JobDatabase(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    worker = CeleryJobWorker(settings, database=db, name="test-worker")
    try:
        batch = [_queue(db, f"1.2.3.{i}", "RESEARCH", "l3-body-composition") for i in range(3)]
        radiograph = _queue(db, "1.2.4.1", "NICU", "neonatal-rds", priority="urgent")
        head = _queue(db, "1.2.5.1", "CT_ER", "brain-gwr", priority="urgent")

        # The first batch job's message runs the urgent head CT of its (gpu) queue; the urgent
        # radiograph belongs to the cpu queue and waits for a cpu message.
        assert worker.handle(batch[0]) == "ran"
        assert db.job_state(head) == (JobState.FAILED, "brain-gwr")  # ran: its input is missing
        assert db.job_state(radiograph) == (JobState.QUEUED, "neonatal-rds")
        assert [db.job_state(j)[0] for j in batch] == [JobState.QUEUED] * 3  # type: ignore[index]
        # The head CT's own message, delivered later, is a turn for the batch's oldest job.
        assert worker.handle(head) == "ran"
        assert db.job_state(batch[0])[0] == JobState.FAILED  # type: ignore[index]
        assert worker.handle(radiograph) == "ran"
        assert db.job_state(radiograph)[0] == JobState.FAILED  # type: ignore[index]
        assert worker.handle(batch[1]) == "ran" and worker.handle(batch[2]) == "ran"
        # Every job ran once; surplus and unknown messages run nothing.
        assert worker.handle(batch[2]).startswith("skipped")
        assert worker.handle(10_000) == "skipped: unknown"
        for job_id in [*batch, radiograph, head]:
            job = db.get_job(job_id)
            assert job is not None and job.attempts == 1
            assert sum(e.message.startswith("running ") for e in job.events) == 1
    finally:
        db.close()
