"""The job database: engine set-up, migrations, and every query the node makes.

SQLite in the data directory by default (WAL journal, ``busy_timeout``), PostgreSQL by URL
(``postgresql+psycopg://user:pw@host/db``). The schema is created and upgraded by Alembic
(:func:`migrate`), never by ``create_all``. Job claims are compare-and-set updates
(``UPDATE jobs SET state='running' WHERE id=? AND state='queued'``) after a
``SELECT ... FOR UPDATE SKIP LOCKED`` on PostgreSQL, so several workers never run one job twice.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import logging
import threading
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import (
    Engine,
    Float,
    Update,
    cast,
    create_engine,
    delete,
    event,
    func,
    or_,
    select,
    update,
)
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, selectinload, sessionmaker

from ainode_core.errors import StorageError
from storage.models import (
    AssociationRecord,
    AuditEntry,
    Instance,
    Job,
    JobEvent,
    JobState,
    Output,
    Send,
    SendState,
    Series,
    SeriesState,
    User,
    utcnow,
)

logger = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).with_name("migrations")


def default_sqlite_url(data_dir: Path) -> str:
    """SQLite URL of the job database in the data directory."""
    return f"sqlite:///{(Path(data_dir) / 'ainode.sqlite3').resolve()}"


def make_engine(url: str) -> Engine:
    """Create an engine; SQLite gets WAL, a busy timeout and foreign keys.

    ``synchronous=NORMAL`` in WAL mode survives a killed process (kill -9) with every committed
    transaction; on power loss the last commits may be lost, which the start-up scan of the
    instance store repairs for received instances.

    Raises
    ------
    StorageError
        If the URL is malformed or its driver is not installed.
    """
    try:
        if url.startswith("sqlite"):
            engine = create_engine(url, connect_args={"timeout": 30, "check_same_thread": False})

            @event.listens_for(engine, "connect")
            def _sqlite_pragmas(dbapi_connection: Any, _record: Any) -> None:
                cursor = dbapi_connection.cursor()
                cursor.execute("PRAGMA journal_mode=WAL")
                cursor.execute("PRAGMA synchronous=NORMAL")
                cursor.execute("PRAGMA foreign_keys=ON")
                cursor.execute("PRAGMA busy_timeout=30000")
                cursor.close()

            return engine
        return create_engine(url, pool_pre_ping=True)
    except (SQLAlchemyError, ImportError, ValueError) as exc:
        raise StorageError(f"cannot open the job database {redact_url(url)}: {exc}") from exc


def redact_url(url: str) -> str:
    """The URL with any password replaced by ``***`` (safe to log)."""
    from sqlalchemy.engine import make_url

    try:
        return make_url(url).render_as_string(hide_password=True)
    except Exception:  # noqa: BLE001 - only for display
        return "<invalid database URL>"


def alembic_config(url: str) -> Config:
    """An Alembic configuration pointing at ainode's migrations and ``url``."""
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.set_main_option("sqlalchemy.url", url.replace("%", "%%"))
    return config


def migrate(engine: Engine) -> None:
    """Bring the schema to the newest Alembic revision (idempotent).

    Raises
    ------
    StorageError
        If the migration fails (e.g. the database is not writable).
    """
    config = alembic_config(engine.url.render_as_string(hide_password=False))
    try:
        with engine.begin() as connection:
            config.attributes["connection"] = connection
            command.upgrade(config, "head")
    except SQLAlchemyError as exc:
        raise StorageError(f"cannot migrate the job database: {exc}") from exc


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance to record (see :meth:`JobDatabase.record_instances`)."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    path: str
    calling_ae_title: str
    received_at: dt.datetime
    accession_number: str = ""


@dataclass(frozen=True)
class ClaimedJob:
    """A job claimed by a worker: what the runner needs to run it."""

    id: int
    series_instance_uid: str
    study_instance_uid: str
    protocol: str
    attempt: int


@dataclass(frozen=True)
class JobPage:
    """One page of a filtered job list (see :meth:`JobDatabase.query_jobs`)."""

    jobs: list[Job]
    total: int
    offset: int
    limit: int


#: Days the association log (dashboard: "associations in the last hour") is kept.
ASSOCIATION_LOG_DAYS = 7
#: States in which a job may be cancelled (it has not settled yet).
CANCELLABLE_STATES = (JobState.RECEIVED, JobState.QUEUED, JobState.RUNNING, JobState.SENDING)
#: States in which a job may be deleted (nothing works on it any more).
DELETABLE_STATES = (JobState.DONE, JobState.FAILED, JobState.IGNORED, JobState.CANCELLED)


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


def input_fingerprint(sop_instance_uids: Sequence[str]) -> str:
    """sha256 of the sorted SOP Instance UIDs of a job's input (identifies a re-sent series)."""
    digest = hashlib.sha256("\n".join(sorted(sop_instance_uids)).encode()).hexdigest()
    return digest


class JobDatabase:
    """All reads and writes of the job database.

    Parameters
    ----------
    url:
        SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    migrate_schema:
        Run Alembic migrations on open (default ``True``).
    """

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate_schema:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Serialises the read-modify-write of the series table within this process.
        self._ingest_lock = threading.Lock()

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction, committed on success, rolled back on error."""
        session = self._sessions()
        try:
            with session.begin():
                yield session
        except SQLAlchemyError as exc:
            raise StorageError(f"job database error: {exc}") from exc
        finally:
            session.close()

    def close(self) -> None:
        """Dispose of the engine's connections."""
        self.engine.dispose()

    # -- instances and series -------------------------------------------------------------------

    def record_instance(
        self,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        transfer_syntax_uid: str,
        modality: str,
        path: str,
        calling_ae_title: str,
        received_at: dt.datetime | None = None,
        accession_number: str = "",
    ) -> bool:
        """Record one stored instance; see :meth:`record_instances`.

        Returns
        -------
        bool
            ``True`` if the instance was new.
        """
        record = InstanceRecord(
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            modality=modality,
            path=path,
            calling_ae_title=calling_ae_title,
            received_at=received_at or utcnow(),
            accession_number=accession_number,
        )
        return self.record_instances([record]) == 1

    def record_instances(self, records: Sequence[InstanceRecord]) -> int:
        """Record stored instances and note their arrival in their series, in one transaction.

        A re-sent instance (same SOP Instance UID) updates its row; a new instance arriving for a
        complete series re-opens it (it becomes a new job after the next quiet period).

        Returns
        -------
        int
            How many of the instances were new.
        """
        new_count = 0
        with self._ingest_lock, self.session() as session:
            for record in records:
                now = record.received_at
                instance = session.get(Instance, record.sop_instance_uid)
                is_new = instance is None
                if instance is None:
                    session.add(
                        Instance(
                            sop_instance_uid=record.sop_instance_uid,
                            study_instance_uid=record.study_instance_uid,
                            series_instance_uid=record.series_instance_uid,
                            sop_class_uid=record.sop_class_uid,
                            transfer_syntax_uid=record.transfer_syntax_uid,
                            path=record.path,
                            calling_ae_title=record.calling_ae_title,
                            received_at=now,
                        )
                    )
                else:
                    if instance.series_instance_uid != record.series_instance_uid:
                        # Re-sent under another series (e.g. a PACS correction): the instance
                        # leaves its old series and counts as new in the one it joins.
                        old_series = session.get(Series, instance.series_instance_uid)
                        if old_series is not None and old_series.instance_count > 0:
                            old_series.instance_count -= 1
                        instance.series_instance_uid = record.series_instance_uid
                        instance.study_instance_uid = record.study_instance_uid
                        is_new = True
                    instance.path = record.path
                    instance.transfer_syntax_uid = record.transfer_syntax_uid
                    instance.sop_class_uid = record.sop_class_uid
                    instance.received_at = now
                new_count += int(is_new)
                series = session.get(Series, record.series_instance_uid)
                if series is None:
                    session.add(
                        Series(
                            series_instance_uid=record.series_instance_uid,
                            study_instance_uid=record.study_instance_uid,
                            modality=record.modality,
                            calling_ae_title=record.calling_ae_title,
                            accession_number=record.accession_number[:16],
                            state=SeriesState.OPEN,
                            instance_count=1,
                            first_received_at=now,
                            last_received_at=now,
                        )
                    )
                    session.flush()
                else:
                    if series.state == SeriesState.COMPLETE:
                        series.state = SeriesState.OPEN
                        series.first_received_at = now
                    if is_new:
                        series.instance_count += 1
                    series.last_received_at = max(series.last_received_at, now)
                    series.calling_ae_title = record.calling_ae_title or series.calling_ae_title
                    if record.accession_number:
                        series.accession_number = record.accession_number[:16]
                session.flush()
        return new_count

    def known_sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every recorded instance (for the start-up store scan)."""
        with self.session() as session:
            return set(session.scalars(select(Instance.sop_instance_uid)))

    def series_instances(self, series_instance_uid: str) -> list[Instance]:
        """The recorded instances of a series."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Instance)
                    .where(Instance.series_instance_uid == series_instance_uid)
                    .order_by(Instance.sop_instance_uid)
                )
            )

    def complete_quiet_series(
        self, quiet_seconds: float, now: dt.datetime | None = None, max_attempts: int = 2
    ) -> list[int]:
        """Close every open series that received nothing for ``quiet_seconds``; one job each.

        ``max_attempts`` is how often the job may be run when its worker crashes.

        Returns
        -------
        list[int]
            Ids of the jobs created (state ``received``).
        """
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=quiet_seconds)
        created: list[int] = []
        with self._ingest_lock, self.session() as session:
            quiet = session.scalars(
                select(Series).where(
                    Series.state == SeriesState.OPEN, Series.last_received_at <= cutoff
                )
            ).all()
            for series in quiet:
                uids = session.scalars(
                    select(Instance.sop_instance_uid).where(
                        Instance.series_instance_uid == series.series_instance_uid
                    )
                ).all()
                series.state = SeriesState.COMPLETE
                series.completed_at = now
                job = Job(
                    study_instance_uid=series.study_instance_uid,
                    series_instance_uid=series.series_instance_uid,
                    modality=series.modality,
                    calling_ae_title=series.calling_ae_title,
                    accession_number=series.accession_number,
                    state=JobState.RECEIVED,
                    instance_count=len(uids),
                    input_fingerprint=input_fingerprint(uids),
                    max_attempts=max_attempts,
                    created_at=now,
                )
                session.add(job)
                session.flush()
                previous = session.scalar(
                    select(func.count(Job.id)).where(
                        Job.series_instance_uid == series.series_instance_uid,
                        Job.input_fingerprint == job.input_fingerprint,
                        Job.id != job.id,
                    )
                )
                note = (
                    f"; the same {len(uids)} instance(s) were processed before by "
                    f"{previous} job(s): outputs get the same UIDs and replace them"
                    if previous
                    else ""
                )
                session.add(
                    JobEvent(
                        job_id=job.id,
                        at=now,
                        message=(
                            f"series complete: {len(uids)} instance(s), nothing new for "
                            f"{quiet_seconds:g} s{note}"
                        ),
                    )
                )
                created.append(job.id)
        return created

    # -- jobs ------------------------------------------------------------------------------------

    def add_event(self, job_id: int, message: str, level: str = "info") -> None:
        """Append an event to a job's timeline."""
        with self.session() as session:
            session.add(JobEvent(job_id=job_id, message=message, level=level))

    def jobs_in_state(self, state: JobState) -> list[Job]:
        """Jobs in one state, oldest first."""
        with self.session() as session:
            return list(session.scalars(select(Job).where(Job.state == state).order_by(Job.id)))

    def set_routing(
        self, job_id: int, *, protocol: str | None, rule: str | None, reason: str
    ) -> None:
        """Record the routing decision: the job is queued, or ignored when no protocol applies."""
        with self.session() as session:
            job = session.get_one(Job, job_id)
            job.protocol = protocol
            job.routing_rule = rule
            job.routing_reason = reason
            if protocol is None:
                job.state = JobState.IGNORED
                job.finished_at = utcnow()
                message = f"ignored: {reason}"
            else:
                job.state = JobState.QUEUED
                message = f"queued for {protocol}: {reason}"
            session.add(JobEvent(job_id=job_id, message=message))

    def claim_job(self, worker: str, lease_seconds: float) -> ClaimedJob | None:
        """Atomically claim the oldest queued job for ``worker``.

        Returns
        -------
        ClaimedJob | None
            The claimed job, or ``None`` when no job is queued.
        """
        with self.session() as session:
            for _ in range(5):
                query = (
                    select(Job.id).where(Job.state == JobState.QUEUED).order_by(Job.id).limit(1)
                )
                if self.engine.dialect.name == "postgresql":
                    query = query.with_for_update(skip_locked=True)
                job_id = session.scalar(query)
                if job_id is None:
                    return None
                now = utcnow()
                result = session.execute(claim_statement(job_id, worker, lease_seconds, now))
                if result.rowcount == 1:  # type: ignore[attr-defined]
                    job = session.get_one(Job, job_id)
                    session.refresh(job)
                    session.add(
                        JobEvent(
                            job_id=job_id,
                            message=f"running {job.protocol} (attempt {job.attempts}) on {worker}",
                        )
                    )
                    return ClaimedJob(
                        id=job.id,
                        series_instance_uid=job.series_instance_uid,
                        study_instance_uid=job.study_instance_uid,
                        protocol=str(job.protocol),
                        attempt=job.attempts,
                    )
        return None

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

    # -- sends -----------------------------------------------------------------------------------

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
                self._settle_job(session, job_id)
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

        A failed attempt is retried after ``backoff_seconds * 2**(attempts-1)`` until
        ``max_attempts``; then the send, and its job, fail with the last error.

        Returns
        -------
        SendState
            The send's new state.
        """
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
                if send.attempts >= max_attempts:
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
                    delay = backoff_seconds * 2 ** (send.attempts - 1)
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
            self._settle_job(session, send.job_id)
            return send.state

    def _settle_job(self, session: Session, job_id: int) -> None:
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

    # -- recovery and admin ------------------------------------------------------------------------

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
                    .values(state=JobState.QUEUED)
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
                job.error = None
                job.finished_at = None
                job.max_attempts = job.attempts + 1
                message = "retry requested: running the job again"
            session.add(JobEvent(job_id=job_id, message=message))
            return message

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
                Job.accession_number.like(pattern, escape="\\"),
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

    # -- dashboard: status and metrics -----------------------------------------------------------------

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
        return self.jobs_in_state(JobState.RUNNING)

    def count_instances(self) -> int:
        """Number of recorded instances."""
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(Instance)) or 0)

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

    # -- dashboard: users, audit log, associations ------------------------------------------------------

    def add_user(self, name: str, password_hash: str, roles: Sequence[str]) -> None:
        """Create a local user (the hash comes from :mod:`node.users`).

        Raises
        ------
        StorageError
            If a user of that name exists.
        """
        with self.session() as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise StorageError(
                    f"user {name!r} exists; remove it first (`ainode users remove {name}`)"
                )
            session.add(User(name=name, password_hash=password_hash, roles=",".join(roles)))

    def get_user(self, name: str) -> User | None:
        """The user of that name, or ``None``."""
        with self.session() as session:
            return session.scalar(select(User).where(User.name == name))

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with self.session() as session:
            return list(session.scalars(select(User).order_by(User.name)))

    def remove_user(self, name: str) -> bool:
        """Delete a user; ``False`` if there was none."""
        with self.session() as session:
            result = session.execute(delete(User).where(User.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def set_password_hash(self, name: str, password_hash: str) -> None:
        """Replace a user's password hash (re-hash after an Argon2 parameter change)."""
        with self.session() as session:
            session.execute(update(User).where(User.name == name).values(password_hash=password_hash))

    def record_audit(
        self,
        *,
        user_name: str,
        action: str,
        job_id: int | None,
        remote_address: str,
        outcome: str,
    ) -> None:
        """Append one entry to the audit log."""
        with self.session() as session:
            session.add(
                AuditEntry(
                    user_name=user_name,
                    action=action,
                    job_id=job_id,
                    remote_address=remote_address[:64],
                    outcome=outcome,
                )
            )

    def list_audit(self, limit: int = 100, job_id: int | None = None) -> list[AuditEntry]:
        """Most recent audit entries first (optionally of one job)."""
        with self.session() as session:
            query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if job_id is not None:
                query = query.where(AuditEntry.job_id == job_id)
            return list(session.scalars(query))

    def record_association(
        self,
        *,
        calling_ae_title: str,
        address: str,
        accepted: bool,
        reason: str | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        """Log one association request seen by the listener.

        Rows older than :data:`ASSOCIATION_LOG_DAYS` days are deleted in the same transaction
        (an indexed range delete, usually of nothing), so the log stays small.
        """
        at = at or utcnow()
        with self.session() as session:
            session.execute(
                delete(AssociationRecord).where(
                    AssociationRecord.at < at - dt.timedelta(days=ASSOCIATION_LOG_DAYS)
                )
            )
            session.add(
                AssociationRecord(
                    at=at,
                    calling_ae_title=calling_ae_title[:16],
                    address=address[:64],
                    accepted=accepted,
                    reason=reason,
                )
            )

    def association_counts(self, since: dt.datetime) -> dict[str, int]:
        """Accepted and rejected association requests since ``since`` (naive UTC)."""
        with self.session() as session:
            rows = session.execute(
                select(AssociationRecord.accepted, func.count(AssociationRecord.id))
                .where(AssociationRecord.at >= since)
                .group_by(AssociationRecord.accepted)
            ).all()
        counts = {"accepted": 0, "rejected": 0}
        for accepted, count in rows:
            counts["accepted" if accepted else "rejected"] += int(count)
        return counts
