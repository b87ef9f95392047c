"""Fair scheduling: which queued job is claimed next, and each queued job's projected place.

The order, the same for the local runner and the Celery workers (both claim through
:meth:`storage.job_queue.JobQueue.claim_job`):

1. **priority** first (:class:`storage.models.Priority`: urgent, routine, low; set per routing
   rule with ``priority:``);
2. then **round robin between calling AE titles**: among the callers with a queued job of that
   priority, the one served least recently (the latest ``started_at`` of any of its jobs, never
   served first; ties by AE title) goes first, so a caller who sent 2,000 series gets one job in
   turn with every other caller instead of all of its jobs first;
3. then **age**: that caller's oldest job (lowest id).

:func:`projected_order` replays these rules over a snapshot of the queue to give each queued job
its place (position 1 is claimed next). It is a projection: jobs that arrive later, claims by
parallel workers and jobs of other Celery queues change it.

Sources: least-recently-served round robin is the classic fair queueing of Nagle, "On packet
switches with infinite storage", IEEE Trans. Commun. 35(4):435-438, 1987 (one queue per source,
served in turn).
"""

from __future__ import annotations

import datetime as dt
import heapq
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import ColumnElement, func, select
from sqlalchemy.orm import Session

from storage.models import Job, JobState


@dataclass(frozen=True)
class QueuedJob:
    """One queued job as the scheduler sees it."""

    id: int
    priority: int
    calling_ae_title: str


@dataclass(frozen=True)
class ProtocolFilter:
    """Which protocols a claimer takes: ``only`` these (``None``: any), none of ``excluded``.

    A Celery queue serves the protocols mapped to it (``celery.queues``); the default queue
    serves every protocol not mapped elsewhere (``excluded``).
    """

    only: frozenset[str] | None = None
    excluded: frozenset[str] = frozenset()

    def conditions(self) -> list[ColumnElement[bool]]:
        """SQL conditions on :class:`storage.models.Job` for this filter."""
        conditions: list[ColumnElement[bool]] = []
        if self.only is not None:
            conditions.append(Job.protocol.in_(sorted(self.only)))
        if self.excluded:
            conditions.append(Job.protocol.not_in(sorted(self.excluded)))
        return conditions


def _turn_key(last_served: dt.datetime | None, caller: str) -> tuple[int, float, str]:
    # Never served first, then least recently served; the AE title breaks ties. Times are naive
    # UTC; as POSIX seconds they only need to order correctly among themselves.
    if last_served is None:
        return (0, 0.0, caller)
    return (1, last_served.replace(tzinfo=dt.UTC).timestamp(), caller)


def caller_turn_order(last_served: Mapping[str, dt.datetime | None]) -> list[str]:
    """Callers in the order they get their next turn (least recently served first).

    Parameters
    ----------
    last_served:
        Calling AE title -> latest start of any of its jobs (``None``: never served).
    """
    return sorted(last_served, key=lambda caller: _turn_key(last_served[caller], caller))


def last_served(session: Session, callers: Iterable[str]) -> dict[str, dt.datetime | None]:
    """The latest ``started_at`` of any job of each caller (``None``: none started yet).

    One indexed ``max()`` per caller (``ix_jobs_caller_started_at``), cheap however many jobs a
    caller has had.
    """
    return {
        caller: session.scalar(
            select(func.max(Job.started_at)).where(Job.calling_ae_title == caller)
        )
        for caller in callers
    }


def queued_snapshot(
    session: Session, conditions: Sequence[ColumnElement[bool]] = ()
) -> list[QueuedJob]:
    """Every queued job (id, priority, caller), oldest first."""
    rows = session.execute(
        select(Job.id, Job.priority, Job.calling_ae_title)
        .where(Job.state == JobState.QUEUED, *conditions)
        .order_by(Job.id)
    ).all()
    return [QueuedJob(int(r[0]), int(r[1]), str(r[2] or "")) for r in rows]


def projected_order(
    queued: Sequence[QueuedJob], last_served: Mapping[str, dt.datetime | None]
) -> list[int]:
    """Job ids in the order the claims would take them if nothing else changed.

    Parameters
    ----------
    queued:
        The queued jobs (any order).
    last_served:
        Calling AE title -> latest start of any of its jobs; callers missing count as never
        served.

    Returns
    -------
    list[int]
        Every id of ``queued`` once, the next claim's first.
    """
    by_priority: dict[int, dict[str, deque[int]]] = {}
    for job in sorted(queued, key=lambda j: j.id):
        by_priority.setdefault(job.priority, {}).setdefault(job.calling_ae_title, deque()).append(
            job.id
        )
    # A served caller goes behind every other; later turns are counted, not timed.
    keys: dict[str, tuple[int, float, str]] = {
        caller: _turn_key(last_served.get(caller), caller)
        for callers in by_priority.values()
        for caller in callers
    }
    turn = 0
    order: list[int] = []
    for priority in sorted(by_priority):
        callers = by_priority[priority]
        heap = [(keys[caller], caller) for caller in callers]
        heapq.heapify(heap)
        while heap:
            _key, caller = heapq.heappop(heap)
            jobs = callers[caller]
            order.append(jobs.popleft())
            turn += 1
            keys[caller] = (2, float(turn), caller)
            if jobs:
                heapq.heappush(heap, (keys[caller], caller))
    return order
