"""Read-only queries of the dashboard, the CLI and ``/metrics``: job lists and search, counts,
durations, and the queue as the scheduler sees it (depth and oldest wait per priority, each
queued job's projected place)."""

from __future__ import annotations

import datetime as dt
from collections.abc import Collection
from dataclasses import dataclass
from typing import Any

from sqlalchemy import Float, cast, func, or_, select
from sqlalchemy.orm import selectinload

from storage.engine import DatabaseCore
from storage.models import Instance, Job, JobState, Output, Priority, Send, utcnow
from storage.scheduling import last_served, projected_order, queued_snapshot


@dataclass(frozen=True)
class JobPage:
    """One page of a filtered job list (see :meth:`DashboardQueries.query_jobs`)."""

    jobs: list[Job]
    total: int
    offset: int
    limit: int


@dataclass(frozen=True)
class QueuePlace:
    """Where a queued job stands.

    Attributes
    ----------
    position:
        1 = claimed next (a projection, see :func:`storage.scheduling.projected_order`).
    queued:
        Jobs queued in all.
    priority:
        ``urgent``, ``routine`` or ``low``.
    waiting_seconds:
        Time since the job entered ``queued``, s (``None`` for jobs queued before revision 0003
        that have no time).
    """

    position: int
    queued: int
    priority: str
    waiting_seconds: float | None


@dataclass(frozen=True)
class PriorityQueueStats:
    """Queued jobs of one priority: how many, and how long the oldest has waited (s)."""

    depth: int
    oldest_waiting_seconds: float


class DashboardQueries(DatabaseCore):
    """Job lists, search, counts and queue statistics (reads only)."""

    def list_jobs(self, limit: int = 50, state: str | None = None) -> list[Job]:
        """Most recent jobs first."""
        with self.session() as session:
            query = select(Job).order_by(Job.id.desc()).limit(limit)
            if state:
                query = query.where(Job.state == state)
            return list(session.scalars(query))

    def get_job(self, job_id: int) -> Job | None:
        """A job with its events, outputs and sends loaded."""
        with self.session() as session:
            return session.scalar(
                select(Job)
                .where(Job.id == job_id)
                .options(
                    selectinload(Job.events),
                    selectinload(Job.outputs).selectinload(Output.sends),
                )
            )

    def count_jobs_by_state(self) -> dict[str, int]:
        """Number of jobs per state."""
        with self.session() as session:
            rows = session.execute(select(Job.state, func.count(Job.id)).group_by(Job.state)).all()
            return {str(state): int(count) for state, count in rows}

    # -- dashboard: filtered job list, cancel, delete -----------------------------------------------

    def query_jobs(
        self,
        *,
        state: str | None = None,
        protocol: str | None = None,
        calling_ae_title: str | None = None,
        created_from: dt.datetime | None = None,
        created_to: dt.datetime | None = None,
        text: str | None = None,
        offset: int = 0,
        limit: int = 50,
        accession_exact: bool = False,
    ) -> JobPage:
        """A page of jobs, most recent first, filtered.

        Parameters
        ----------
        state, protocol, calling_ae_title:
            Exact matches (``None`` or ``""``: any).
        created_from, created_to:
            Creation time range, naive UTC, ``created_from <= created_at < created_to``.
        text:
            Substring of the Study or Series Instance UID or of the Accession Number; or the
            exact SOP Instance UID of an input instance or an output; or a job id.
        offset, limit:
            Page (``limit`` is clamped to 1..500).
        accession_exact:
            ``text`` matches an Accession Number only in full (the dashboard's users without
            the phi role: no substring oracle).

        Returns
        -------
        JobPage
            The jobs of the page (without events/outputs) and the total number matching.
        """
        limit = max(1, min(int(limit), 500))
        offset = max(0, int(offset))
        conditions: list[Any] = []
        if state:
            conditions.append(Job.state == state)
        if protocol:
            conditions.append(Job.protocol == protocol)
        if calling_ae_title:
            conditions.append(Job.calling_ae_title == calling_ae_title)
        if created_from is not None:
            conditions.append(Job.created_at >= created_from)
        if created_to is not None:
            conditions.append(Job.created_at < created_to)
        if text and text.strip():
            needle = text.strip()
            pattern = "%" + needle.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            alternatives: list[Any] = [
                Job.study_instance_uid.like(pattern, escape="\\"),
                Job.series_instance_uid.like(pattern, escape="\\"),
                Job.accession_number == needle
                if accession_exact
                else Job.accession_number.like(pattern, escape="\\"),
                # Uncorrelated: evaluated once, not per job row.
                Job.series_instance_uid.in_(
                    select(Instance.series_instance_uid).where(Instance.sop_instance_uid == needle)
                ),
                Job.id.in_(select(Output.job_id).where(Output.sop_instance_uid == needle)),
            ]
            if needle.isdigit() and len(needle) < 10:
                alternatives.append(Job.id == int(needle))
            conditions.append(or_(*alternatives))
        with self.session() as session:
            total = int(session.scalar(select(func.count(Job.id)).where(*conditions)) or 0)
            jobs = list(
                session.scalars(
                    select(Job).where(*conditions).order_by(Job.id.desc()).offset(offset).limit(limit)
                )
            )
        return JobPage(jobs=jobs, total=total, offset=offset, limit=limit)

    def distinct_job_values(self) -> dict[str, list[str]]:
        """Protocols and calling AE titles that occur in the jobs (for filter menus)."""
        with self.session() as session:
            protocols = session.scalars(
                select(Job.protocol).where(Job.protocol.is_not(None)).distinct().order_by(Job.protocol)
            ).all()
            callers = session.scalars(
                select(Job.calling_ae_title).distinct().order_by(Job.calling_ae_title)
            ).all()
        return {"protocol": [str(p) for p in protocols], "calling_ae_title": [str(c) for c in callers]}


    def queue_depth_by_protocol(self) -> dict[str, int]:
        """Number of queued jobs per protocol."""
        with self.session() as session:
            rows = session.execute(
                select(Job.protocol, func.count(Job.id))
                .where(Job.state == JobState.QUEUED)
                .group_by(Job.protocol)
            ).all()
            return {str(protocol): int(count) for protocol, count in rows}

    def running_jobs(self) -> list[Job]:
        """Jobs now running (with their worker and lease), oldest first."""
        with self.session() as session:
            return list(
                session.scalars(select(Job).where(Job.state == JobState.RUNNING).order_by(Job.id))
            )

    def count_sends_by_state(self) -> dict[str, int]:
        """Number of sends per state."""
        with self.session() as session:
            rows = session.execute(select(Send.state, func.count(Send.id)).group_by(Send.state)).all()
            return {str(state): int(count) for state, count in rows}

    def job_duration_by_protocol(self) -> dict[str, tuple[int, float]]:
        """Per protocol: number of done jobs and the sum of their durations (start to finish), s."""
        if self.engine.dialect.name == "postgresql":
            seconds: Any = func.extract("epoch", Job.finished_at - Job.started_at)
        else:
            seconds = (func.julianday(Job.finished_at) - func.julianday(Job.started_at)) * 86400.0
        with self.session() as session:
            rows = session.execute(
                select(Job.protocol, func.count(Job.id), func.sum(cast(seconds, Float)))
                .where(
                    Job.state == JobState.DONE,
                    Job.started_at.is_not(None),
                    Job.finished_at.is_not(None),
                    Job.protocol.is_not(None),
                )
                .group_by(Job.protocol)
            ).all()
            return {str(p): (int(n), float(total or 0.0)) for p, n, total in rows}


    def queue_places(
        self, job_ids: Collection[int] | None = None, now: dt.datetime | None = None
    ) -> dict[int, QueuePlace]:
        """The projected place of queued jobs in the claim order.

        Parameters
        ----------
        job_ids:
            Jobs to report (those not queued are left out); ``None``: every queued job.
        now:
            Reference time (naive UTC) of the waiting times; default now.

        Returns
        -------
        dict[int, QueuePlace]
            Job id -> place, for the queued jobs among ``job_ids``. One read of the queue (id,
            priority and caller of each queued job) and one indexed ``max()`` per caller.
        """
        now = now or utcnow()
        with self.session() as session:
            queued = queued_snapshot(session)
            wanted = (
                {job.id for job in queued}
                if job_ids is None
                else {job.id for job in queued} & set(job_ids)
            )
            if not wanted:
                return {}
            order = projected_order(
                queued, last_served(session, {job.calling_ae_title for job in queued})
            )
            since = dict(
                session.execute(select(Job.id, Job.queued_at).where(Job.id.in_(sorted(wanted)))).all()
            )
        priority = {job.id: job.priority for job in queued}
        places: dict[int, QueuePlace] = {}
        for index, job_id in enumerate(order):
            if job_id in wanted:
                at = since.get(job_id)
                places[job_id] = QueuePlace(
                    position=index + 1,
                    queued=len(order),
                    priority=Priority.parse(priority[job_id]).label,
                    waiting_seconds=None if at is None else max(0.0, (now - at).total_seconds()),
                )
        return places

    def queue_stats_by_priority(self, now: dt.datetime | None = None) -> dict[str, PriorityQueueStats]:
        """Per priority (every one, also when empty): queued jobs and the oldest one's wait, s.

        The wait counts from ``queued_at``; jobs without one (queued before revision 0003)
        count from their creation.
        """
        now = now or utcnow()
        with self.session() as session:
            rows = session.execute(
                select(
                    Job.priority,
                    func.count(Job.id),
                    func.min(func.coalesce(Job.queued_at, Job.created_at)),
                )
                .where(Job.state == JobState.QUEUED)
                .group_by(Job.priority)
            ).all()
        stats = {p.label: PriorityQueueStats(0, 0.0) for p in Priority}
        for rank, count, oldest in rows:
            waited = 0.0 if oldest is None else max(0.0, (now - oldest).total_seconds())
            stats[Priority.parse(int(rank)).label] = PriorityQueueStats(int(count), waited)
        return stats

    def latest_algorithm_by_protocol(self) -> dict[str, str]:
        """Per protocol: the algorithm (name and version) of its most recent done job."""
        with self.session() as session:
            latest = dict(
                session.execute(
                    select(Job.protocol, func.max(Job.id))
                    .where(Job.state == JobState.DONE, Job.algorithm.is_not(None))
                    .group_by(Job.protocol)
                ).all()
            )
            return {
                str(protocol): str(session.scalar(select(Job.algorithm).where(Job.id == job_id)))
                for protocol, job_id in latest.items()
            }
