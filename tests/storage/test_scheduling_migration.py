"""Alembic revision 0003 on a database with jobs from before it: queued jobs become routine with a
queued time, and the fair claim and queue places work on them."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from pg_server import postgres_url_or_skip
from sqlalchemy import text

from storage.database import JobDatabase, alembic_config, make_engine


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_revision_0003_upgrades_existing_jobs(
    backend: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    url = (
        f"sqlite:///{tmp_path / 'old.sqlite3'}"
        if backend == "sqlite"
        else postgres_url_or_skip(request)
    )
    engine = make_engine(url)
    config = alembic_config(url)
    with engine.begin() as connection:
        config.attributes["connection"] = connection
        command.upgrade(config, "0002")
    with engine.begin() as connection:
        for state in ("queued", "done"):
            connection.execute(
                text(
                    "INSERT INTO jobs (study_instance_uid, series_instance_uid, modality, "
                    "calling_ae_title, state, protocol, instance_count, attempts, max_attempts, "
                    "created_at, updated_at, accession_number) VALUES ('1.2', :series, 'CT', "
                    "'OLDPACS', :state, 'brain-gwr', 1, 0, 2, '2026-01-01 10:00:00', "
                    "'2026-01-01 10:00:00', '')"
                ),
                {"series": f"1.2.{state}", "state": state},
            )
    engine.dispose()
    db = JobDatabase(url)  # upgrades to head
    try:
        rows = {job.state: job for job in db.list_jobs()}
        assert rows["queued"].priority == 1 and rows["done"].priority == 1
        assert rows["queued"].queued_at == rows["queued"].created_at
        assert rows["done"].queued_at is None
        places = db.queue_places()
        assert places[rows["queued"].id].position == 1
        assert places[rows["queued"].id].priority == "routine"
        assert db.queue_stats_by_priority()["routine"].oldest_waiting_seconds > 3600
        claimed = db.claim_job("w", 60)
        assert claimed is not None and claimed.id == rows["queued"].id
    finally:
        db.close()
