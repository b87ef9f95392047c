"""Fixtures of the dashboard tests: a job database (SQLite, or PostgreSQL), users, an app client."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from pg_server import postgres_url_or_skip
from web_helpers import PASSWORDS, ROLES, sign_in

from node.config import Settings
from node.users import hash_password
from node.web import create_app
from storage.database import JobDatabase

_HASHES: dict[str, str] = {}


def _with_users(db: JobDatabase) -> JobDatabase:
    """Add the three test users (Argon2 hashes computed once per session: they are slow)."""
    for name, password in PASSWORDS.items():
        if name not in _HASHES:
            _HASHES[name] = hash_password(password)
        db.add_user(name, _HASHES[name], ROLES[name])
    return db


@pytest.fixture
def web_db(tmp_path: Path) -> Iterator[JobDatabase]:
    """A migrated SQLite job database with users alice (admin), victor (viewer), paula (phi)."""
    db = _with_users(JobDatabase(f"sqlite:///{tmp_path / 'jobs.sqlite3'}"))
    yield db
    db.close()


@pytest.fixture(params=["sqlite", "postgresql"])
def any_web_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[JobDatabase]:
    """Like :func:`web_db`, on SQLite and on a real PostgreSQL server."""
    url = (
        f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
        if request.param == "sqlite"
        else postgres_url_or_skip(request)
    )
    db = _with_users(JobDatabase(url))
    yield db
    db.close()


@pytest.fixture
def web_settings(tmp_path: Path) -> Settings:
    """Settings with the data directory (and session key) in tmp_path."""
    return Settings(data_dir=tmp_path / "data")


@pytest.fixture
def make_client(web_settings: Settings) -> Iterator[Callable[..., TestClient]]:
    """Factory: a TestClient of the dashboard on a database, optionally signed in."""
    clients: list[TestClient] = []

    def factory(db: JobDatabase, user: str | None = None, settings: Settings | None = None) -> TestClient:
        client = TestClient(create_app(settings or web_settings, db), base_url="http://127.0.0.1")
        clients.append(client)
        if user is not None:
            sign_in(client, user)
        return client

    yield factory
    for client in clients:
        client.close()
