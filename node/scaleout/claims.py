"""Job-database operations of a scale-out worker: claim a named job, hold and check its lease.

A broker message names one job. Delivering it twice, or delivering a message for a job another
worker already took, must not run the job twice; so the worker runs a job only after a
compare-and-set claim in the job database succeeded::

    UPDATE jobs SET state='running', worker=:me, attempts=attempts+1, lease_expires_at=...
    WHERE id=:job_id AND state='queued'

On PostgreSQL the ``UPDATE`` locks the row: of two concurrent claims the second waits, re-reads
the row (READ COMMITTED) and matches nothing; on SQLite writers are serialised. While the job
runs, the worker renews its lease (:func:`renew_lease`); when the worker dies the lease runs out
and the node re-queues the job (:meth:`storage.database.JobDatabase.expire_leases`).
"""

from __future__ import annotations

import datetime as dt
import logging
from dataclasses import dataclass
from enum import StrEnum

from sqlalchemy import select, update

from storage.database import ClaimedJob, JobDatabase, claim_statement
from storage.models import Job, JobEvent, JobState, utcnow

logger = logging.getLogger(__name__)


class ClaimRefusal(StrEnum):
    """Why a delivered job id was not claimed (the message is acknowledged without a run)."""

    UNKNOWN = "unknown"  # no such job (deleted)
    NOT_QUEUED = "not-queued"  # running elsewhere, finished, cancelled, or not routed yet
    LOST = "attempts-used-up"  # queued again after its worker was lost on every attempt


@dataclass(frozen=True)
class ClaimResult:
    """Outcome of :func:`claim_job_by_id`: the claimed job, or why there is none."""

    job: ClaimedJob | None
    refusal: ClaimRefusal | None = None
    state: str | None = None


def claim_job_by_id(
    database: JobDatabase, job_id: int, worker: str, lease_seconds: float
) -> ClaimResult:
    """Claim job ``job_id`` for ``worker`` if it is queued (compare-and-set).

    A queued job whose attempts are used up (its earlier workers were lost, e.g. killed by the
    kernel's out-of-memory killer, and the node re-queued it when their leases expired) is failed
    instead of run, so an input that kills every worker cannot loop forever.

    Parameters
    ----------
    database:
        The job database.
    job_id:
        The job named by the broker message.
    worker:
        Worker name recorded in the job (``host:pid/celery``); the lease belongs to it.
    lease_seconds:
        Initial lease; renew it with :func:`renew_lease`.

    Returns
    -------
    ClaimResult
        ``job`` set when this worker now owns the job; otherwise ``refusal`` (and the state).
    """
    with database.session() as session:
        job = session.get(Job, job_id)
        if job is None:
            return ClaimResult(None, ClaimRefusal.UNKNOWN)
        if job.state != JobState.QUEUED:
            return ClaimResult(None, ClaimRefusal.NOT_QUEUED, str(job.state))
        now = utcnow()
        if job.attempts >= job.max_attempts:
            failed = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.QUEUED)
                .values(
                    state=JobState.FAILED,
                    finished_at=now,
                    lease_expires_at=None,
                    error=(
                        f"its worker was lost during each of {job.attempts} attempt(s) "
                        f"(max_job_attempts {job.max_attempts}); it is not run again "
                        "automatically: check the workers' logs (out of memory?), then "
                        f"`ainode jobs retry {job_id}`"
                    ),
                )
                .execution_options(synchronize_session=False)
            )
            if failed.rowcount == 1:  # type: ignore[attr-defined]
                session.add(
                    JobEvent(
                        job_id=job_id,
                        level="error",
                        message=f"not run again: its worker was lost on {job.attempts} attempt(s)",
                    )
                )
            return ClaimResult(None, ClaimRefusal.LOST, str(JobState.FAILED))
        result = session.execute(claim_statement(job_id, worker, lease_seconds, now))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return ClaimResult(None, ClaimRefusal.NOT_QUEUED, "claimed by another worker")
        session.refresh(job)
        session.add(
            JobEvent(
                job_id=job_id,
                message=f"running {job.protocol} (attempt {job.attempts}) on {worker}",
            )
        )
        return ClaimResult(
            ClaimedJob(
                id=job.id,
                series_instance_uid=job.series_instance_uid,
                study_instance_uid=job.study_instance_uid,
                protocol=str(job.protocol),
                attempt=job.attempts,
            )
        )


def renew_lease(database: JobDatabase, job_id: int, worker: str, lease_seconds: float) -> bool:
    """Extend the lease of a job this worker runs.

    Returns
    -------
    bool
        ``False`` when the job is no longer this worker's (its lease expired and the node
        re-queued it, it was cancelled, or it finished): the worker must stop the run and must
        not record results.
    """
    with database.session() as session:
        result = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker == worker)
            .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
            .execution_options(synchronize_session=False)
        )
        return bool(result.rowcount == 1)  # type: ignore[attr-defined]


def owns_job(database: JobDatabase, job_id: int, worker: str, attempt: int) -> bool:
    """Whether ``worker`` still runs attempt ``attempt`` of the job (checked before recording)."""
    with database.session() as session:
        row = session.execute(
            select(Job.state, Job.worker, Job.attempts).where(Job.id == job_id)
        ).first()
    return (
        row is not None
        and row[0] == JobState.RUNNING
        and row[1] == worker
        and int(row[2]) == attempt
    )
