"""Alembic revision 0002 (dashboard tables): upgrade from empty and from 0001 with data, on SQLite
and PostgreSQL; the migrated schema equals the models."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from pg_server import postgres_url_or_skip
from sqlalchemy import inspect, text

from storage.database import JobDatabase, alembic_config, make_engine
from storage.models import Base


@pytest.fixture(params=["sqlite", "postgresql"])
def empty_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    return postgres_url_or_skip(request)


def _upgrade(url: str, revision: str) -> None:
    engine = make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, revision)
    engine.dispose()


def _applied(url: str) -> list[str]:
    """The revisions applied to the database at ``url``: its current one and every ancestor
    (revision 0003 and later come after 0002; 0002 stays applied on the way to the head)."""
    from alembic.script import ScriptDirectory

    script = ScriptDirectory.from_config(alembic_config(url))
    current = _current(url)
    assert current == script.get_current_head()
    return [r.revision for r in script.iterate_revisions(current, "base")]


def _current(url: str) -> str | None:
    engine = make_engine(url)
    with engine.connect() as connection:
        revision = MigrationContext.configure(connection).get_current_revision()
    engine.dispose()
    return revision


def test_upgrade_from_empty_reaches_0002_and_matches_the_models(empty_url: str) -> None:
    db = JobDatabase(empty_url)
    try:
        assert "0002" in _applied(empty_url)
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
            tables = set(inspect(connection).get_table_names())
        assert {"users", "audit_log", "associations"} <= tables
    finally:
        db.close()


def test_upgrade_from_0001_keeps_jobs_and_adds_empty_accession_numbers(empty_url: str) -> None:
    _upgrade(empty_url, "0001")
    assert _current(empty_url) == "0001"
    engine = make_engine(empty_url)
    with engine.begin() as connection:
        connection.execute(text(
            "INSERT INTO series (series_instance_uid, study_instance_uid, modality, calling_ae_title,"
            " state, instance_count, first_received_at, last_received_at) VALUES ('1.2.3', '1.2',"
            " 'CT', 'PACS', 'complete', 1, '2026-01-01 10:00:00', '2026-01-01 10:00:00')"
        ))
        connection.execute(text(
            "INSERT INTO jobs (study_instance_uid, series_instance_uid, modality, calling_ae_title,"
            " state, instance_count, attempts, max_attempts, created_at, updated_at) VALUES"
            " ('1.2', '1.2.3', 'CT', 'PACS', 'failed', 1, 1, 2, '2026-01-01 10:00:10',"
            " '2026-01-01 10:00:20')"
        ))
    engine.dispose()
    db = JobDatabase(empty_url)  # migrates to head
    try:
        assert "0002" in _applied(empty_url)
        page = db.query_jobs(text="1.2.3")
        assert page.total == 1
        (job,) = page.jobs
        assert job.accession_number == "" and job.state == "failed"
        assert db.retry_job(job.id).startswith("retry requested")
        with db.engine.connect() as connection:
            assert compare_metadata(MigrationContext.configure(connection), Base.metadata) == []
    finally:
        db.close()
