"""Helpers of the fair-claim tests: queueing jobs through the public storage calls, and the body
of a claiming process (spawned, its own database connection)."""

from __future__ import annotations

import datetime as dt
from typing import Any

from storage.database import InstanceRecord, JobDatabase
from storage.models import utcnow


def queue_jobs(
    database: JobDatabase,
    caller: str,
    count: int,
    *,
    priority: str = "routine",
    protocol: str = "l3-body-composition",
    tag: str | None = None,
) -> list[int]:
    """Receive ``count`` one-instance series from ``caller``, close them into jobs and route
    each with ``priority``; returns the job ids (oldest first)."""
    job_ids = receive_series(database, caller, count, tag=tag or f"{caller}.{priority}.{protocol}")
    for job_id in job_ids:
        database.set_routing(
            job_id, protocol=protocol, rule="test", reason="test", priority=priority
        )
    return job_ids


def receive_series(database: JobDatabase, caller: str, count: int, *, tag: str | None = None) -> list[int]:
    """Receive ``count`` one-instance series from ``caller`` and close them into jobs (state
    received, not routed); returns the job ids (oldest first)."""
    tag = tag or caller
    prefix = "2.25." + str(abs(hash(tag)) % 10**12)
    now = utcnow() - dt.timedelta(seconds=1)
    database.record_instances(
        [
            InstanceRecord(
                sop_instance_uid=f"{prefix}.{i}.1",
                study_instance_uid=f"{prefix}.0",
                series_instance_uid=f"{prefix}.{i}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT",
                path=f"/store/{prefix}.{i}.dcm",
                calling_ae_title=caller,
                received_at=now,
            )
            for i in range(count)
        ]
    )
    job_ids = sorted(database.complete_quiet_series(0))
    assert len(job_ids) == count
    return job_ids


def claim_until_empty(url: str, name: str, go: Any, results: Any) -> None:
    """Body of one claiming process: claim (fair order) and finish jobs until none is left;
    puts ``(name, [job ids run])`` on ``results``."""
    database = JobDatabase(url, migrate_schema=False)
    ran: list[int] = []
    go.wait(60)
    try:
        while (job := database.claim_job(name, 60)) is not None:
            database.record_results(
                job.id, algorithm="test", results={"by": name}, outputs=[], destinations=[]
            )
            ran.append(job.id)
    finally:
        results.put((name, ran))
        database.close()
