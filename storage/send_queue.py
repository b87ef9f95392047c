"""The send queue: one row per output and destination, its retry policy, and settling a job.

Each send is retried on its own (:class:`RetryPolicy`, exponential backoff), so one failing
destination never holds up another; when no send of a ``sending`` job is pending any more, the
job is settled (:func:`settle_job`): ``done`` when every send succeeded, else ``failed``.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import select
from sqlalchemy.orm import Session

from storage.engine import DatabaseCore
from storage.models import Job, JobEvent, JobState, Output, Send, SendState, utcnow


@dataclass(frozen=True)
class RetryPolicy:
    """When a failed C-STORE of one output to one destination is tried again.

    Parameters
    ----------
    max_attempts:
        Attempts in all (the first included); after the last failure the send fails.
    backoff_seconds:
        Delay after the first failure, s; doubled after each further failure.
    """

    max_attempts: int = 5
    backoff_seconds: float = 10.0

    def gives_up(self, attempts: int) -> bool:
        """Whether a send that failed ``attempts`` times is failed for good."""
        return attempts >= self.max_attempts

    def delay_seconds(self, attempts: int) -> float:
        """Seconds to wait after the ``attempts``-th failure (``attempts >= 1``)."""
        return self.backoff_seconds * 2 ** (max(1, attempts) - 1)


def settle_job(session: Session, job_id: int) -> None:
    """Finish a ``sending`` job once none of its sends is pending: ``done`` when all were sent,
    ``failed`` (with what to do) when any failed; any other state is left alone."""
    job = session.get_one(Job, job_id)
    if job.state != JobState.SENDING:
        return
    states = session.scalars(select(Send.state).where(Send.job_id == job_id)).all()
    if any(state == SendState.PENDING for state in states):
        return
    job.finished_at = utcnow()
    failed = [s for s in states if s == SendState.FAILED]
    if failed:
        job.state = JobState.FAILED
        job.error = (
            f"{len(failed)} of {len(states)} send(s) failed; fix the destination and run "
            f"`ainode jobs retry {job_id}`"
        )
        session.add(JobEvent(job_id=job_id, level="error", message=job.error))
    else:
        job.state = JobState.DONE
        session.add(JobEvent(job_id=job_id, message=f"done: {len(states)} send(s) succeeded"))



class SendQueue(DatabaseCore):
    """Pending sends per destination, their outcomes, and settling their jobs."""

    def destinations_with_pending_sends(self) -> list[str]:
        """Destinations that have pending sends."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Send.destination).where(Send.state == SendState.PENDING).distinct()
                )
            )

    def fail_sends_to_unknown_destinations(self, destinations: Sequence[str]) -> int:
        """Fail pending sends whose destination is no longer configured, settling their jobs.

        Without this, a job queued for a destination removed from the configuration would stay in
        ``sending`` forever.

        Returns
        -------
        int
            Number of sends failed.
        """
        with self.session() as session:
            orphans = session.scalars(
                select(Send).where(
                    Send.state == SendState.PENDING, Send.destination.not_in(list(destinations))
                )
            ).all()
            for send in orphans:
                send.state = SendState.FAILED
                send.last_error = (
                    f"destination {send.destination} is no longer in the configuration"
                )
                session.add(JobEvent(job_id=send.job_id, level="error", message=send.last_error))
            session.flush()
            for job_id in {send.job_id for send in orphans}:
                settle_job(session, job_id)
            return len(orphans)

    def due_sends(self, destination: str, now: dt.datetime | None = None) -> list[tuple[int, int, str, str]]:
        """Pending sends to ``destination`` whose next attempt is due.

        Returns
        -------
        list[tuple[int, int, str, str]]
            ``(send id, job id, output path, output SOP Instance UID)``, oldest job first.
        """
        now = now or utcnow()
        with self.session() as session:
            rows = session.execute(
                select(Send.id, Send.job_id, Output.path, Output.sop_instance_uid)
                .join(Output, Output.id == Send.output_id)
                .where(
                    Send.destination == destination,
                    Send.state == SendState.PENDING,
                    Send.next_attempt_at <= now,
                )
                .order_by(Send.job_id, Send.id)
            ).all()
            return [(r[0], r[1], r[2], r[3]) for r in rows]

    def mark_send(
        self,
        send_id: int,
        *,
        ok: bool,
        error: str | None = None,
        max_attempts: int = 5,
        backoff_seconds: float = 10.0,
    ) -> SendState:
        """Record the outcome of one C-STORE attempt and settle the job when all sends are final.

        A failed attempt is retried after :meth:`RetryPolicy.delay_seconds`
        (``backoff_seconds * 2**(attempts-1)``) until ``max_attempts``; then the send, and its
        job, fail with the last error.

        Returns
        -------
        SendState
            The send's new state.
        """
        policy = RetryPolicy(max_attempts=max_attempts, backoff_seconds=backoff_seconds)
        now = utcnow()
        with self.session() as session:
            send = session.get_one(Send, send_id)
            send.attempts += 1
            output = session.get_one(Output, send.output_id)
            if ok:
                send.state = SendState.SENT
                send.sent_at = now
                send.last_error = None
                session.add(
                    JobEvent(
                        job_id=send.job_id,
                        message=f"sent {output.kind} {output.sop_instance_uid} to {send.destination}",
                    )
                )
            else:
                send.last_error = error
                if policy.gives_up(send.attempts):
                    send.state = SendState.FAILED
                    session.add(
                        JobEvent(
                            job_id=send.job_id,
                            level="error",
                            message=(
                                f"gave up sending {output.kind} to {send.destination} after "
                                f"{send.attempts} attempt(s): {error}"
                            ),
                        )
                    )
                else:
                    delay = policy.delay_seconds(send.attempts)
                    send.next_attempt_at = now + dt.timedelta(seconds=delay)
                    session.add(
                        JobEvent(
                            job_id=send.job_id,
                            level="warning",
                            message=(
                                f"send of {output.kind} to {send.destination} failed "
                                f"(attempt {send.attempts}/{max_attempts}): {error}; retrying "
                                f"in {delay:g} s"
                            ),
                        )
                    )
            session.flush()
            settle_job(session, send.job_id)
            return send.state
