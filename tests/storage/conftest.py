"""Fixtures for the job database: SQLite per test, and PostgreSQL when a server is available."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import postgres_url_or_skip

from storage.database import JobDatabase


@pytest.fixture(params=["sqlite", "postgresql"])
def database(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobDatabase]:
    """A fresh, migrated job database: SQLite in tmp_path, or a new PostgreSQL database."""
    if request.param == "sqlite":
        db = JobDatabase(f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    else:
        db = JobDatabase(postgres_url_or_skip(request))
    yield db
    db.close()
