"""The job database: one object over every storage part (what the node, CLI and dashboard open).

The queries live in cohesive parts, each a :class:`storage.engine.DatabaseCore` subclass that can
be opened on its own:

========================================  ===================================================
part                                      what it holds
========================================  ===================================================
:mod:`storage.engine`                     engine, Alembic migrations, transactional sessions
:mod:`storage.instances`                  stored instances, series arrival, quiet series to jobs
:mod:`storage.job_queue`                  routing into the queue, fair claims and leases,
                                          failures, results, recovery, retry/cancel/delete
:mod:`storage.scheduling`                 the fair order (priority, caller round robin, age)
:mod:`storage.send_queue`                 sends per output and destination, retry policy
:mod:`storage.accounts`                   dashboard users and the audit log
:mod:`storage.associations`               the association log
:mod:`storage.dashboard_queries`          job lists, search, counts, queue places and stats
========================================  ===================================================

:class:`JobDatabase` combines them over one engine, so callers keep one handle; the names that
used to be defined here are re-exported.
"""

from __future__ import annotations

from storage.accounts import Accounts
from storage.associations import ASSOCIATION_LOG_DAYS, AssociationLog
from storage.dashboard_queries import DashboardQueries, JobPage, PriorityQueueStats, QueuePlace
from storage.engine import (
    MIGRATIONS_DIR,
    DatabaseCore,
    alembic_config,
    default_sqlite_url,
    make_engine,
    migrate,
    redact_url,
)
from storage.instances import InstanceLedger, InstanceRecord, input_fingerprint
from storage.job_queue import (
    CANCELLABLE_STATES,
    DELETABLE_STATES,
    ClaimedJob,
    ClaimRefusal,
    ClaimResult,
    JobQueue,
    claim_statement,
)
from storage.scheduling import ProtocolFilter
from storage.send_queue import RetryPolicy, SendQueue

__all__ = [
    "ASSOCIATION_LOG_DAYS",
    "CANCELLABLE_STATES",
    "DELETABLE_STATES",
    "MIGRATIONS_DIR",
    "ClaimRefusal",
    "ClaimResult",
    "ClaimedJob",
    "DatabaseCore",
    "InstanceRecord",
    "JobDatabase",
    "JobPage",
    "PriorityQueueStats",
    "ProtocolFilter",
    "QueuePlace",
    "RetryPolicy",
    "alembic_config",
    "claim_statement",
    "default_sqlite_url",
    "input_fingerprint",
    "make_engine",
    "migrate",
    "redact_url",
]


class JobDatabase(InstanceLedger, JobQueue, SendQueue, Accounts, AssociationLog, DashboardQueries):
    """All reads and writes of the job database: every storage part over one engine.

    Parameters
    ----------
    url:
        SQLAlchemy URL (``sqlite:///...`` or ``postgresql+psycopg://...``).
    migrate_schema:
        Run Alembic migrations on open (default ``True``).

    Raises
    ------
    StorageError
        If the database cannot be opened or migrated.
    """
