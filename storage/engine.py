"""The job database's engine, schema migrations and the session core every storage part shares.

SQLite in the data directory by default (WAL journal, ``busy_timeout``), PostgreSQL by URL
(``postgresql+psycopg://user:pw@host/db``). The schema is created and upgraded by Alembic
(:func:`migrate`), never by ``create_all``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, create_engine, event
from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.orm import Session, sessionmaker

from ainode_core.errors import StorageError

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


class DatabaseCore:
    """An open job database: its engine and transactional sessions.

    Every storage part (:mod:`storage.instances`, :mod:`storage.job_queue`,
    :mod:`storage.send_queue`, :mod:`storage.accounts`, :mod:`storage.associations`,
    :mod:`storage.dashboard_queries`) is a subclass that adds its queries; each can be opened on
    its own, and :class:`storage.database.JobDatabase` combines them all over one engine.

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

    def __init__(self, url: str, *, migrate_schema: bool = True) -> None:
        self.url = url
        self.engine = make_engine(url)
        if migrate_schema:
            migrate(self.engine)
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)
        # Serialises the read-modify-write of the series table within this process.
        self._ingest_lock = threading.Lock()

    @property
    def is_postgresql(self) -> bool:
        """Whether the database is PostgreSQL (row locks, ``SKIP LOCKED``)."""
        return self.engine.dialect.name == "postgresql"

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A session in a transaction, committed on success, rolled back on error.

        Raises
        ------
        StorageError
            On any database error (the transaction is rolled back).
        """
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
