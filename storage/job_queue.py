"""The job queue: routing into it, fair claims, leases, failures, results, recovery and admin.

A job goes received -> queued (:meth:`JobQueue.set_routing`) -> running (a claim) -> sending
(:meth:`JobQueue.record_results`) -> done, or failed / ignored / cancelled. The local runner
(:class:`node.runner.LocalProcessRunner`) and the Celery workers (:mod:`node.worker`) claim
through the same methods: :meth:`JobQueue.claim_job` takes the next job in fair order
(:mod:`storage.scheduling`); :meth:`JobQueue.claim_job_by_id` takes one named job. Both are
compare-and-set updates::

    UPDATE jobs SET state='running', worker=:me, attempts=attempts+1, lease_expires_at=...
    WHERE id=:job_id AND state='queued'

On PostgreSQL the candidate row is first selected ``FOR UPDATE SKIP LOCKED`` and the ``UPDATE``
locks the row: of two concurrent claims the second waits, re-reads the row (READ COMMITTED) and
matches nothing; on SQLite writers are serialised. So of several claimers exactly one sees
``rowcount == 1``. While a job runs, its worker renews the lease (:meth:`JobQueue.renew_lease`);
when the worker dies the lease runs out and the node re-queues the job
(:meth:`JobQueue.expire_leases`).
"""

from __future__ import annotations

import datetime as dt
import json
from collections.abc import Sequence
from dataclasses import dataclass
from enum import StrEnum
from typing import Any

from sqlalchemy import Update, delete, func, select, update
from sqlalchemy.orm import Session

from ainode_core.errors import StorageError
from storage.engine import DatabaseCore
from storage.models import Job, JobEvent, JobState, Output, Priority, Send, SendState, utcnow
from storage.scheduling import ProtocolFilter, caller_turn_order, last_served
from storage.send_queue import settle_job

#: Received jobs routed per pass of the node's dispatcher (:meth:`JobQueue.jobs_to_route`).
ROUTING_BATCH = 50
#: States in which a job may be cancelled (it has not settled yet).
CANCELLABLE_STATES = (JobState.RECEIVED, JobState.QUEUED, JobState.RUNNING, JobState.SENDING)
#: States in which a job may be deleted (nothing works on it any more).
DELETABLE_STATES = (JobState.DONE, JobState.FAILED, JobState.IGNORED, JobState.CANCELLED)


@dataclass(frozen=True)
class ClaimedJob:
    """A job claimed by a worker: what the runner needs to run it."""

    id: int
    series_instance_uid: str
    study_instance_uid: str
    protocol: str
    attempt: int


class ClaimRefusal(StrEnum):
    """Why a named job was not claimed (a broker message is acknowledged without a run)."""

    UNKNOWN = "unknown"  # no such job (deleted)
    NOT_QUEUED = "not-queued"  # running elsewhere, finished, cancelled, or not routed yet
    LOST = "attempts-used-up"  # queued again after its worker was lost on every attempt


@dataclass(frozen=True)
class ClaimResult:
    """Outcome of :meth:`JobQueue.claim_job_by_id`: the claimed job, or why there is none."""

    job: ClaimedJob | None
    refusal: ClaimRefusal | None = None
    state: str | None = None


def _holds(job: Job, owner: tuple[str, int]) -> bool:
    """Whether run ``owner`` = ``(worker, attempt)`` still holds ``job``."""
    worker, attempt = owner
    return job.state == JobState.RUNNING and job.worker == worker and job.attempts == attempt


def claim_statement(job_id: int, worker: str, lease_seconds: float, now: dt.datetime) -> Update:
    """The compare-and-set UPDATE that claims a queued job: it changes one row only if the job is
    still queued, so of several workers racing for a job exactly one sees ``rowcount == 1``."""
    return (
        update(Job)
        .where(Job.id == job_id, Job.state == JobState.QUEUED)
        .values(
            state=JobState.RUNNING,
            worker=worker,
            attempts=Job.attempts + 1,
            started_at=now,
            lease_expires_at=now + dt.timedelta(seconds=lease_seconds),
            error=None,
        )
        .execution_options(synchronize_session=False)
    )


class JobQueue(DatabaseCore):
    """The life cycle of jobs: routing, claims and leases, failures, results, recovery, admin."""

    def add_event(self, job_id: int, message: str, level: str = "info") -> None:
        """Append an event to a job's timeline."""
        with self.session() as session:
            session.add(JobEvent(job_id=job_id, message=message, level=level))

    def job_state(self, job_id: int) -> tuple[JobState, str | None] | None:
        """``(state, protocol)`` of a job, or ``None`` when there is no such job."""
        with self.session() as session:
            row = session.execute(select(Job.state, Job.protocol).where(Job.id == job_id)).first()
        return None if row is None else (JobState(row[0]), row[1])

    def jobs_to_route(self, limit: int = ROUTING_BATCH) -> list[Job]:
        """Received jobs to route next, the callers in turn: every caller's oldest unrouted job
        before any caller's second, and so on (ties by age), at most ``limit``.

        The node routes a bounded batch per pass, so the series of a caller that arrives while
        another caller's 2,000 series wait for routing (which may decode pixels in a child
        process, about a second each) is routed within the next pass, not after all of them.
        """
        turn = (
            func.row_number()
            .over(partition_by=Job.calling_ae_title, order_by=Job.id)
            .label("turn")
        )
        ranked = (
            select(Job.id.label("id"), turn).where(Job.state == JobState.RECEIVED).subquery()
        )
        with self.session() as session:
            return list(
                session.scalars(
                    select(Job)
                    .join(ranked, ranked.c.id == Job.id)
                    .order_by(ranked.c.turn, Job.id)
                    .limit(max(1, int(limit)))
                )
            )

    def jobs_in_state(self, state: JobState) -> list[Job]:
        """Jobs in one state, oldest first."""
        with self.session() as session:
            return list(session.scalars(select(Job).where(Job.state == state).order_by(Job.id)))

    def study_jobs(self, study_instance_uid: str) -> list[Job]:
        """Every job of one study, oldest first (``completion: study`` routes them together,
        ``ainode jobs show`` lists the study's series from them)."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Job)
                    .where(Job.study_instance_uid == study_instance_uid)
                    .order_by(Job.id)
                )
            )

    def supersede(self, job_id: int, *, by_job_id: int, note: str) -> None:
        """Record that a later job of the same study and protocol replaces ``job_id``'s
        results (a late series is now the chosen one): an event, and the note appended to
        its routing reason."""
        with self.session() as session:
            job = session.get_one(Job, job_id)
            job.routing_reason = f"{job.routing_reason or ''} [superseded by job {by_job_id}: {note}]"
            session.add(JobEvent(job_id=job_id, message=f"superseded by job {by_job_id}: {note}"))

    def set_routing(
        self,
        job_id: int,
        *,
        protocol: str | None,
        rule: str | None,
        reason: str,
        priority: str | int | Priority | None = None,
    ) -> None:
        """Record the routing decision: the job is queued, or ignored when no protocol applies.

        Parameters
        ----------
        priority:
            The deciding rule's ``priority`` (``urgent``, ``routine``, ``low``; ``None``:
            routine); orders the claims (:mod:`storage.scheduling`).

        Raises
        ------
        ValueError
            If ``priority`` names no priority.
        """
        rank = Priority.parse(priority)
        with self.session() as session:
            job = session.get_one(Job, job_id)
            job.protocol = protocol
            job.routing_rule = rule
            job.routing_reason = reason
            job.priority = int(rank)
            if protocol is None:
                job.state = JobState.IGNORED
                job.finished_at = utcnow()
                message = f"ignored: {reason}"
            else:
                job.state = JobState.QUEUED
                job.queued_at = utcnow()
                shown = "" if rank == Priority.ROUTINE else f" ({rank.label} priority)"
                message = f"queued for {protocol}{shown}: {reason}"
            session.add(JobEvent(job_id=job_id, message=message))

    def claim_job(
        self,
        worker: str,
        lease_seconds: float,
        *,
        protocols: ProtocolFilter | None = None,
    ) -> ClaimedJob | None:
        """Atomically claim the next queued job for ``worker``, in fair order.

        The next job is the one of the highest priority, of the caller (calling AE title) served
        least recently, oldest first (:mod:`storage.scheduling`). The claim is a compare-and-set
        ``UPDATE ... WHERE state='queued'`` after a ``SELECT ... FOR UPDATE SKIP LOCKED`` on
        PostgreSQL, so of several claimers exactly one gets each job. A queued job whose
        attempts are used up (every worker that ran it was lost) is failed instead of run
        (:meth:`fail_lost`).

        Parameters
        ----------
        worker:
            Name recorded in the job; the lease belongs to it.
        lease_seconds:
            Initial lease (renew with :meth:`renew_lease`).
        protocols:
            Only jobs of these protocols (a Celery queue's); default any.

        Returns
        -------
        ClaimedJob | None
            The claimed job, or ``None`` when no job is queued (or every one is being claimed).
        """
        conditions = [Job.state == JobState.QUEUED, *(protocols or ProtocolFilter()).conditions()]
        with self.session() as session:
            for _ in range(10):
                top = session.scalar(select(func.min(Job.priority)).where(*conditions))
                if top is None:
                    return None
                at_top = [*conditions, Job.priority == top]
                callers = session.scalars(
                    select(Job.calling_ae_title).where(*at_top).distinct()
                ).all()
                picked = None
                for caller in caller_turn_order(last_served(session, callers)):
                    query = (
                        select(Job.id, Job.attempts, Job.max_attempts)
                        .where(*at_top, Job.calling_ae_title == caller)
                        .order_by(Job.id)
                        .limit(1)
                    )
                    if self.is_postgresql:
                        query = query.with_for_update(skip_locked=True)
                    picked = session.execute(query).first()
                    if picked is not None:
                        break
                if picked is None:
                    return None  # every queued job is being claimed by another worker
                job_id, attempts, max_attempts = int(picked[0]), int(picked[1]), int(picked[2])
                if attempts >= max_attempts:
                    self._fail_lost(session, job_id, attempts, max_attempts)
                    continue
                claimed = self._claim(session, job_id, worker, lease_seconds)
                if claimed is not None:
                    return claimed
        return None

    def claim_job_by_id(self, job_id: int, worker: str, lease_seconds: float) -> ClaimResult:
        """Claim job ``job_id`` for ``worker`` if it is queued (compare-and-set).

        A queued job whose attempts are used up (its earlier workers were lost, e.g. killed by
        the kernel's out-of-memory killer, and the node re-queued it when their leases expired)
        is failed instead of run, so an input that kills every worker cannot loop forever.

        Parameters
        ----------
        job_id:
            The job named by a broker message.
        worker:
            Worker name recorded in the job (``host:pid/celery``); the lease belongs to it.
        lease_seconds:
            Initial lease; renew it with :meth:`renew_lease`.

        Returns
        -------
        ClaimResult
            ``job`` set when this worker now owns the job; otherwise ``refusal`` (and the state).
        """
        with self.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                return ClaimResult(None, ClaimRefusal.UNKNOWN)
            if job.state != JobState.QUEUED:
                return ClaimResult(None, ClaimRefusal.NOT_QUEUED, str(job.state))
            if job.attempts >= job.max_attempts:
                self._fail_lost(session, job_id, job.attempts, job.max_attempts)
                return ClaimResult(None, ClaimRefusal.LOST, str(JobState.FAILED))
            claimed = self._claim(session, job_id, worker, lease_seconds)
            if claimed is None:
                return ClaimResult(None, ClaimRefusal.NOT_QUEUED, "claimed by another worker")
            return ClaimResult(claimed)

    def _claim(
        self, session: Session, job_id: int, worker: str, lease_seconds: float
    ) -> ClaimedJob | None:
        """The compare-and-set claim of one job and its timeline event; ``None`` if lost."""
        result = session.execute(claim_statement(job_id, worker, lease_seconds, utcnow()))
        if result.rowcount != 1:  # type: ignore[attr-defined]
            return None
        job = session.get_one(Job, job_id)
        session.refresh(job)
        waited = ""
        if job.queued_at is not None and job.started_at is not None:
            waited = f" after {(job.started_at - job.queued_at).total_seconds():.0f} s queued"
        session.add(
            JobEvent(
                job_id=job_id,
                message=f"running {job.protocol} (attempt {job.attempts}) on {worker}{waited}",
            )
        )
        return ClaimedJob(
            id=job.id,
            series_instance_uid=job.series_instance_uid,
            study_instance_uid=job.study_instance_uid,
            protocol=str(job.protocol),
            attempt=job.attempts,
        )

    @staticmethod
    def _fail_lost(session: Session, job_id: int, attempts: int, max_attempts: int) -> None:
        """Fail a queued job whose worker was lost on every attempt (compare-and-set)."""
        failed = session.execute(
            update(Job)
            .where(Job.id == job_id, Job.state == JobState.QUEUED)
            .values(
                state=JobState.FAILED,
                finished_at=utcnow(),
                lease_expires_at=None,
                error=(
                    f"its worker was lost during each of {attempts} attempt(s) "
                    f"(max_job_attempts {max_attempts}); it is not run again "
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
                    message=f"not run again: its worker was lost on {attempts} attempt(s)",
                )
            )

    def renew_lease(self, job_id: int, worker: str, lease_seconds: float) -> bool:
        """Extend the lease of a job ``worker`` runs.

        Returns
        -------
        bool
            ``False`` when the job is no longer this worker's (its lease expired and the node
            re-queued it, it was cancelled, or it finished): the worker must stop the run and
            must not record results.
        """
        with self.session() as session:
            result = session.execute(
                update(Job)
                .where(Job.id == job_id, Job.state == JobState.RUNNING, Job.worker == worker)
                .values(lease_expires_at=utcnow() + dt.timedelta(seconds=lease_seconds))
                .execution_options(synchronize_session=False)
            )
            return bool(result.rowcount == 1)  # type: ignore[attr-defined]

    def owns_job(self, job_id: int, worker: str, attempt: int) -> bool:
        """Whether ``worker`` still runs attempt ``attempt`` of the job (checked before
        recording)."""
        with self.session() as session:
            row = session.execute(
                select(Job.state, Job.worker, Job.attempts).where(Job.id == job_id)
            ).first()
        return (
            row is not None
            and row[0] == JobState.RUNNING
            and row[1] == worker
            and int(row[2]) == attempt
        )

    def fail_job(
        self,
        job_id: int,
        error: str,
        *,
        retry: bool = False,
        owner: tuple[str, int] | None = None,
    ) -> JobState:
        """Record a failure; re-queue when ``retry`` and attempts remain.

        ``owner`` (``(worker, attempt)``): when given, the failure is recorded only if that run
        still holds the job (checked in the same transaction); otherwise an event notes it.

        Returns
        -------
        JobState
            The job's new state (``queued`` or ``failed``), or its unchanged state.
        """
        with self.session() as session:
            job = session.get_one(Job, job_id, with_for_update=True)
            if owner is not None and job.state != JobState.CANCELLED and not _holds(job, owner):
                session.add(
                    JobEvent(
                        job_id=job_id,
                        level="warning",
                        message=(
                            f"failure of attempt {owner[1]} on {owner[0]} not recorded: the job "
                            f"was re-queued or taken over while it ran ({error})"
                        ),
                    )
                )
                return JobState(job.state)
            if job.state == JobState.CANCELLED:
                session.add(
                    JobEvent(
                        job_id=job_id,
                        level="warning",
                        message=f"the cancelled job's run ended with an error: {error}",
                    )
                )
                return job.state
            job.error = error
            job.lease_expires_at = None
            if retry and job.attempts < job.max_attempts:
                job.state = JobState.QUEUED
                job.queued_at = utcnow()
                session.add(
                    JobEvent(job_id=job_id, level="warning", message=f"{error}; will retry")
                )
            else:
                job.state = JobState.FAILED
                job.finished_at = utcnow()
                session.add(JobEvent(job_id=job_id, level="error", message=error))
            return job.state

    def record_results(
        self,
        job_id: int,
        *,
        algorithm: str,
        results: dict[str, Any],
        outputs: Sequence[tuple[str, str, str, str, str]],
        destinations: Sequence[str],
        warnings: Sequence[str] = (),
        owner: tuple[str, int] | None = None,
    ) -> bool:
        """Store a job's results and outputs and queue one send per output and destination.

        Parameters
        ----------
        outputs:
            ``(kind, sop_class_uid, sop_instance_uid, series_instance_uid, path)`` per object.
        destinations:
            ``AET@host:port`` names; with none the job is done once the outputs are stored.

        owner:
            ``(worker, attempt)`` of the run that produced the results. When given, the results
            are recorded only if that run still holds the job (same worker and attempt, state
            running), checked in the same transaction as the write.

        A job cancelled while it ran keeps its ``cancelled`` state: the results are discarded
        (an event says so) and nothing is sent.

        Returns
        -------
        bool
            ``True`` when the results were recorded.
        """
        now = utcnow()
        with self.session() as session:
            job = session.get_one(Job, job_id, with_for_update=True)
            if owner is not None and job.state != JobState.CANCELLED and not _holds(job, owner):
                session.add(
                    JobEvent(
                        job_id=job_id,
                        level="warning",
                        message=(
                            f"results of attempt {owner[1]} on {owner[0]} discarded: the job was "
                            "re-queued or taken over while it ran"
                        ),
                    )
                )
                return False
            if job.state == JobState.CANCELLED:
                session.add(
                    JobEvent(
                        job_id=job_id,
                        level="warning",
                        message=(
                            "the run finished after the job was cancelled: results discarded, "
                            "nothing sent"
                        ),
                    )
                )
                return False
            job.algorithm = algorithm
            job.results_json = json.dumps(results, sort_keys=True, default=str)
            job.lease_expires_at = None
            for old in list(job.outputs):
                session.delete(old)
            session.flush()
            for kind, sop_class_uid, sop_instance_uid, series_instance_uid, path in outputs:
                output = Output(
                    job_id=job_id,
                    kind=kind,
                    sop_class_uid=sop_class_uid,
                    sop_instance_uid=sop_instance_uid,
                    series_instance_uid=series_instance_uid,
                    path=path,
                    created_at=now,
                )
                session.add(output)
                session.flush()
                for destination in destinations:
                    session.add(
                        Send(
                            output_id=output.id,
                            job_id=job_id,
                            destination=destination,
                            next_attempt_at=now,
                        )
                    )
            for warning in warnings:
                session.add(JobEvent(job_id=job_id, level="warning", message=warning))
            kinds = ", ".join(f"{kind} {uid}" for kind, _, uid, _, _ in outputs)
            session.add(JobEvent(job_id=job_id, message=f"outputs written: {kinds}"))
            if destinations:
                job.state = JobState.SENDING
            else:
                job.state = JobState.DONE
                job.finished_at = now
                session.add(JobEvent(job_id=job_id, message="done (no destination configured)"))
        return True

    def resume_interrupted(self) -> list[int]:
        """Re-queue jobs left ``running`` by a crash (called at start-up, before workers start).

        Returns
        -------
        list[int]
            The re-queued job ids.
        """
        with self.session() as session:
            jobs = session.scalars(select(Job).where(Job.state == JobState.RUNNING)).all()
            for job in jobs:
                job.lease_expires_at = None
                if job.attempts >= job.max_attempts:
                    # The node went down during every attempt: the input may be what kills it.
                    job.state = JobState.FAILED
                    job.finished_at = utcnow()
                    job.error = (
                        f"the node stopped while this job ran, {job.attempts} time(s) "
                        f"(max_job_attempts {job.max_attempts}); it is not run again "
                        "automatically: check the node log, then `ainode jobs retry "
                        f"{job.id}`"
                    )
                    session.add(JobEvent(job_id=job.id, level="error", message=job.error))
                    continue
                job.state = JobState.QUEUED
                job.queued_at = utcnow()
                session.add(
                    JobEvent(
                        job_id=job.id,
                        level="warning",
                        message=f"resumed: the node stopped while the job ran on {job.worker}",
                    )
                )
            return [job.id for job in jobs if job.state == JobState.QUEUED]

    def release_job(self, job_id: int) -> None:
        """Put back a running job that the node stopped on purpose (shutdown, not a crash).

        The attempt does not count: an ordinary restart must not use up ``max_job_attempts``.
        """
        with self.session() as session:
            job = session.get_one(Job, job_id)
            if job.state != JobState.RUNNING:
                return
            job.state = JobState.QUEUED
            job.attempts = max(0, job.attempts - 1)
            job.queued_at = utcnow()
            job.lease_expires_at = None
            session.add(
                JobEvent(
                    job_id=job_id,
                    level="warning",
                    message="the node was stopped while the job ran; it will run again",
                )
            )

    def expire_leases(self, now: dt.datetime | None = None) -> list[int]:
        """Re-queue running jobs whose lease expired (their worker died or hangs)."""
        now = now or utcnow()
        with self.session() as session:
            candidates = session.scalars(
                select(Job.id).where(
                    Job.state == JobState.RUNNING,
                    Job.lease_expires_at.is_not(None),
                    Job.lease_expires_at < now,
                )
            ).all()
            expired: list[int] = []
            for job_id in candidates:
                # Compare-and-set: a lease renewed since the select is left alone.
                changed = session.execute(
                    update(Job)
                    .where(
                        Job.id == job_id,
                        Job.state == JobState.RUNNING,
                        Job.lease_expires_at < now,
                    )
                    .values(state=JobState.QUEUED, queued_at=now)
                    .execution_options(synchronize_session=False)
                )
                if changed.rowcount == 1:  # type: ignore[attr-defined]
                    session.add(
                        JobEvent(job_id=job_id, level="warning", message="lease expired; re-queued")
                    )
                    expired.append(job_id)
            return expired

    def retry_job(self, job_id: int) -> str:
        """Retry a failed (or done) job: re-send failed sends, or run it again.

        Returns
        -------
        str
            What was done, for the CLI.

        Raises
        ------
        StorageError
            If the job does not exist or is still in progress.
        """
        with self.session() as session:
            job = session.get(Job, job_id)
            if job is None:
                raise StorageError(f"no job {job_id}; see `ainode jobs list`")
            if job.state in (JobState.QUEUED, JobState.RUNNING, JobState.SENDING, JobState.RECEIVED):
                raise StorageError(f"job {job_id} is {job.state}; only finished jobs can be retried")
            failed_sends = session.scalars(
                select(Send).where(Send.job_id == job_id, Send.state == SendState.FAILED)
            ).all()
            if failed_sends:
                for send in failed_sends:
                    send.state = SendState.PENDING
                    send.attempts = 0
                    send.next_attempt_at = utcnow()
                job.state = JobState.SENDING
                job.error = None
                job.finished_at = None
                message = f"retry requested: re-sending {len(failed_sends)} output(s)"
            else:
                job.state = JobState.RECEIVED if job.protocol is None else JobState.QUEUED
                job.queued_at = utcnow()
                job.error = None
                job.finished_at = None
                job.max_attempts = job.attempts + 1
                message = "retry requested: running the job again"
            session.add(JobEvent(job_id=job_id, message=message))
            return message


    def cancel_job(self, job_id: int, *, by: str = "") -> str:
        """Cancel a job that has not settled yet.

        A ``received`` or ``queued`` job is never run; a ``running`` job keeps running in its
        worker (the dashboard cannot reach the worker process) but its results are discarded
        when it ends (:meth:`record_results`); the pending sends of a ``sending`` job are failed
        (a C-STORE already under way completes). A cancelled job can be run again with
        :meth:`retry_job`.

        Returns
        -------
        str
            What was done.

        Raises
        ------
        StorageError
            If the job does not exist or has already settled (done, failed, ignored, cancelled).
        """
        with self.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise StorageError(f"no job {job_id}; see `ainode jobs list`")
            if job.state not in CANCELLABLE_STATES:
                raise StorageError(
                    f"job {job_id} is {job.state}; only received, queued, running or sending "
                    "jobs can be cancelled"
                )
            previous = JobState(job.state)
            who = f" by {by}" if by else ""
            job.state = JobState.CANCELLED
            job.lease_expires_at = None
            job.finished_at = utcnow()
            if previous == JobState.RUNNING:
                message = (
                    f"cancelled{who} while running on {job.worker}: the run continues in its "
                    "worker until it ends, then its results are discarded"
                )
            elif previous == JobState.SENDING:
                pending = session.scalars(
                    select(Send).where(Send.job_id == job_id, Send.state == SendState.PENDING)
                ).all()
                for send in pending:
                    send.state = SendState.FAILED
                    send.last_error = f"job cancelled{who}"
                message = f"cancelled{who}: {len(pending)} pending send(s) dropped"
            else:
                message = f"cancelled{who} before it ran"
            job.error = message
            session.add(JobEvent(job_id=job_id, level="warning", message=message))
            return message

    def delete_job(self, job_id: int) -> str:
        """Delete a settled job with its events, outputs and sends (the output files stay on disk).

        Returns
        -------
        str
            What was done.

        Raises
        ------
        StorageError
            If the job does not exist or is still in progress.
        """
        with self.session() as session:
            job = session.get(Job, job_id, with_for_update=True)
            if job is None:
                raise StorageError(f"no job {job_id}; see `ainode jobs list`")
            if job.state not in DELETABLE_STATES:
                raise StorageError(
                    f"job {job_id} is {job.state}; cancel it first, only done, failed, ignored "
                    "or cancelled jobs can be deleted"
                )
            session.execute(delete(Send).where(Send.job_id == job_id))
            session.execute(delete(Output).where(Output.job_id == job_id))
            session.execute(delete(JobEvent).where(JobEvent.job_id == job_id))
            session.execute(delete(Job).where(Job.id == job_id))
            return f"job {job_id} deleted from the job database (its files were kept)"

