"""SQLAlchemy 2.0 typed models of the job database.

Tables: ``instances`` (every acknowledged C-STORE), ``series`` (arrival tracking for series
completion), ``jobs`` (one per completed series), ``job_events`` (the timeline), ``outputs`` (the
DICOM objects a job produced) and ``sends`` (one row per output and destination, with its own
retry state, so one failing destination never holds up another). For the admin dashboard
(revision 0002): ``users`` (local accounts, Argon2 hashes), ``audit_log`` (every retry, cancel
and delete) and ``associations`` (every association request the listener saw). Revision 0003 adds
the scheduling columns of ``jobs`` (``priority``, ``queued_at``) and their indexes. Constraint names are
deterministic (naming convention below) so Alembic migrations are stable on SQLite and PostgreSQL.
All times are naive UTC (:func:`utcnow`).
"""

from __future__ import annotations

import datetime as dt
from enum import IntEnum, StrEnum

from sqlalchemy import (
    Boolean,
    ForeignKey,
    Index,
    Integer,
    MetaData,
    SmallInteger,
    String,
    Text,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship

NAMING_CONVENTION = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Current time as naive UTC (the database stores naive UTC everywhere)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


class Base(DeclarativeBase):
    metadata = MetaData(naming_convention=NAMING_CONVENTION)


class JobState(StrEnum):
    """Job life cycle: received -> queued -> running -> sending -> done; or failed / ignored.

    ``cancelled``: stopped by an admin (dashboard or API); a cancelled job is never claimed, its
    pending sends are failed, and results of a run that was already under way are discarded.
    """

    RECEIVED = "received"
    QUEUED = "queued"
    RUNNING = "running"
    SENDING = "sending"
    DONE = "done"
    FAILED = "failed"
    IGNORED = "ignored"
    CANCELLED = "cancelled"


class SeriesState(StrEnum):
    """Arrival state of a series: open while instances arrive, complete after the quiet period."""

    OPEN = "open"
    COMPLETE = "complete"


class Priority(IntEnum):
    """Scheduling priority of a job, set by its routing rule (``priority:`` in the rule).

    Stored as the integer (smaller = claimed sooner), so ``ORDER BY priority`` uses an index.
    """

    URGENT = 0
    ROUTINE = 1
    LOW = 2

    @property
    def label(self) -> str:
        """The name used in rules, the CLI, the dashboard and ``/metrics``."""
        return self.name.lower()

    @classmethod
    def parse(cls, value: str | int | Priority | None) -> Priority:
        """``"urgent"``, ``"routine"``, ``"low"`` (any case), an integer rank, or ``None``
        (routine).

        Raises
        ------
        ValueError
            If the value names no priority.
        """
        if value is None:
            return cls.ROUTINE
        if isinstance(value, int):
            return cls(value)
        try:
            return cls[str(value).strip().upper()]
        except KeyError:
            names = ", ".join(p.label for p in cls)
            raise ValueError(f"unknown priority {value!r}; use one of {names}") from None


class SendState(StrEnum):
    """State of one output to one destination."""

    PENDING = "pending"
    SENT = "sent"
    FAILED = "failed"


class Instance(Base):
    __tablename__ = "instances"

    sop_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    transfer_syntax_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class Series(Base):
    __tablename__ = "series"

    series_instance_uid: Mapped[str] = mapped_column(String(64), primary_key=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    modality: Mapped[str] = mapped_column(String(16), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[SeriesState] = mapped_column(String(16), default=SeriesState.OPEN, index=True)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    accession_number: Mapped[str] = mapped_column(String(16), default="", server_default="")
    first_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_received_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    completed_at: Mapped[dt.datetime | None] = mapped_column(default=None)


class Job(Base):
    __tablename__ = "jobs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    study_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64), index=True)
    modality: Mapped[str] = mapped_column(String(16), default="")
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    state: Mapped[JobState] = mapped_column(String(16), default=JobState.RECEIVED)
    protocol: Mapped[str | None] = mapped_column(String(64), default=None)
    routing_rule: Mapped[str | None] = mapped_column(String(128), default=None)
    routing_reason: Mapped[str | None] = mapped_column(Text, default=None)
    instance_count: Mapped[int] = mapped_column(Integer, default=0)
    input_fingerprint: Mapped[str | None] = mapped_column(String(64), default=None)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    max_attempts: Mapped[int] = mapped_column(Integer, default=2)
    error: Mapped[str | None] = mapped_column(Text, default=None)
    algorithm: Mapped[str | None] = mapped_column(String(128), default=None)
    results_json: Mapped[str | None] = mapped_column(Text, default=None)
    worker: Mapped[str | None] = mapped_column(String(128), default=None)
    lease_expires_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    updated_at: Mapped[dt.datetime] = mapped_column(default=utcnow, onupdate=utcnow)
    started_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    finished_at: Mapped[dt.datetime | None] = mapped_column(default=None)
    accession_number: Mapped[str] = mapped_column(String(16), default="", server_default="")
    #: :class:`Priority` rank from the routing rule (revision 0003); smaller runs sooner.
    priority: Mapped[int] = mapped_column(
        SmallInteger, default=int(Priority.ROUTINE), server_default=str(int(Priority.ROUTINE))
    )
    #: When the job last entered ``queued`` (routing, retry, re-queue); its wait starts here.
    queued_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    events: Mapped[list[JobEvent]] = relationship(
        back_populates="job", order_by="JobEvent.id", cascade="all, delete-orphan"
    )
    outputs: Mapped[list[Output]] = relationship(
        back_populates="job", order_by="Output.id", cascade="all, delete-orphan"
    )

    __table_args__ = (
        Index("ix_jobs_state_id", "state", "id"),
        Index("ix_jobs_created_at", "created_at"),
        Index("ix_jobs_protocol_state", "protocol", "state"),
        # Fair claims (revision 0003): queued jobs by priority, caller and age; the last start
        # per caller (least recently served first).
        Index("ix_jobs_state_priority_caller_id", "state", "priority", "calling_ae_title", "id"),
        Index("ix_jobs_caller_started_at", "calling_ae_title", "started_at"),
    )


class JobEvent(Base):
    __tablename__ = "job_events"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    level: Mapped[str] = mapped_column(String(16), default="info")
    message: Mapped[str] = mapped_column(Text)

    job: Mapped[Job] = relationship(back_populates="events")


class Output(Base):
    __tablename__ = "outputs"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    kind: Mapped[str] = mapped_column(String(8))
    sop_class_uid: Mapped[str] = mapped_column(String(64))
    sop_instance_uid: Mapped[str] = mapped_column(String(64))
    series_instance_uid: Mapped[str] = mapped_column(String(64))
    path: Mapped[str] = mapped_column(Text)
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)

    job: Mapped[Job] = relationship(back_populates="outputs")
    sends: Mapped[list[Send]] = relationship(
        back_populates="output", order_by="Send.id", cascade="all, delete-orphan"
    )


class Send(Base):
    __tablename__ = "sends"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    output_id: Mapped[int] = mapped_column(ForeignKey("outputs.id", ondelete="CASCADE"), index=True)
    job_id: Mapped[int] = mapped_column(ForeignKey("jobs.id", ondelete="CASCADE"), index=True)
    destination: Mapped[str] = mapped_column(String(128))
    state: Mapped[SendState] = mapped_column(String(16), default=SendState.PENDING)
    attempts: Mapped[int] = mapped_column(Integer, default=0)
    next_attempt_at: Mapped[dt.datetime] = mapped_column(default=utcnow)
    last_error: Mapped[str | None] = mapped_column(Text, default=None)
    sent_at: Mapped[dt.datetime | None] = mapped_column(default=None)

    output: Mapped[Output] = relationship(back_populates="sends")

    __table_args__ = (Index("ix_sends_destination_state", "destination", "state"),)


class User(Base):
    """A local dashboard account; ``roles`` is a comma-separated subset of viewer, admin, phi."""

    __tablename__ = "users"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    name: Mapped[str] = mapped_column(String(64), unique=True)
    password_hash: Mapped[str] = mapped_column(Text)
    roles: Mapped[str] = mapped_column(String(64))
    created_at: Mapped[dt.datetime] = mapped_column(default=utcnow)


class AuditEntry(Base):
    """One state-changing action of a dashboard/API user (retry, cancel, delete).

    ``job_id`` is not a foreign key: the entry outlives a deleted job.
    """

    __tablename__ = "audit_log"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    user_name: Mapped[str] = mapped_column(String(64))
    action: Mapped[str] = mapped_column(String(32))
    job_id: Mapped[int | None] = mapped_column(Integer, default=None, index=True)
    remote_address: Mapped[str] = mapped_column(String(64), default="")
    outcome: Mapped[str] = mapped_column(Text, default="")


class AssociationRecord(Base):
    """One association request seen by the DICOM listener, accepted or rejected."""

    __tablename__ = "associations"

    id: Mapped[int] = mapped_column(Integer, primary_key=True, autoincrement=True)
    at: Mapped[dt.datetime] = mapped_column(default=utcnow, index=True)
    calling_ae_title: Mapped[str] = mapped_column(String(16), default="")
    address: Mapped[str] = mapped_column(String(64), default="")
    accepted: Mapped[bool] = mapped_column(Boolean, default=True)
    reason: Mapped[str | None] = mapped_column(Text, default=None)
