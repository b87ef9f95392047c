"""Concurrent job claims: 4 worker processes, each with its own database connection, over 210
queued jobs on SQLite and on PostgreSQL (``SELECT ... FOR UPDATE SKIP LOCKED``); every job runs
exactly once. Also the scale-out claim of a named job under duplicated deliveries, the lease, and
the guard against a job that kills every worker."""

from __future__ import annotations

import multiprocessing
import random
from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest
from pg_server import postgres_url_or_skip
from scaleout_helpers import claim_worker

from storage.database import ClaimRefusal, InstanceRecord, JobDatabase
from storage.models import JobState, utcnow

JOB_COUNT = 210
WORKERS = 4


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """URL of a fresh, migrated job database."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        url = postgres_url_or_skip(request)
    JobDatabase(url).close()  # migrate once, before the workers connect
    yield url


def _queued_jobs(database: JobDatabase, count: int) -> list[int]:
    now = utcnow()
    database.record_instances(
        [
            InstanceRecord(
                sop_instance_uid=f"1.2.3.{i}.1",
                study_instance_uid="1.2.3",
                series_instance_uid=f"1.2.3.{i}",
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT",
                path=f"/store/{i}.dcm",
                calling_ae_title="PACS",
                received_at=now,
            )
            for i in range(count)
        ]
    )
    job_ids = database.complete_quiet_series(0)
    for job_id in job_ids:
        database.set_routing(job_id, protocol="l3-body-composition", rule="test", reason="test")
    return job_ids


def _run_workers(url: str, mode: str, job_ids: list[int]) -> dict[str, list[int]]:
    context = multiprocessing.get_context("spawn")
    go = context.Event()
    results = context.Queue()
    processes = []
    for index in range(WORKERS):
        ids = list(job_ids)
        random.Random(index).shuffle(ids)  # every worker gets every id, in its own order
        process = context.Process(
            target=claim_worker, args=(url, f"w{index}", mode, ids, go, results)
        )
        process.start()
        processes.append(process)
    go.set()
    ran = dict(results.get(timeout=120) for _ in processes)
    for process in processes:
        process.join(30)
        assert process.exitcode == 0
    return ran


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["oldest", "by-id"])
def test_four_worker_processes_run_every_job_exactly_once(database_url: str, mode: str) -> None:
    database = JobDatabase(database_url, migrate_schema=False)
    try:
        job_ids = _queued_jobs(database, JOB_COUNT)
        assert len(job_ids) == JOB_COUNT
        ran = _run_workers(database_url, mode, job_ids)
        runs = Counter(job_id for ids in ran.values() for job_id in ids)
        assert sorted(runs) == sorted(job_ids)
        assert set(runs.values()) == {1}, [j for j, n in runs.items() if n > 1]
        # The work was shared (each process started with the same chance).
        assert sum(1 for ids in ran.values() if ids) >= 2
        for job in database.list_jobs(limit=JOB_COUNT):
            assert job.state == JobState.DONE and job.attempts == 1
        for job_id in random.Random(0).sample(job_ids, 10):
            job = database.get_job(job_id)
            assert job is not None
            assert sum(e.message.startswith("running ") for e in job.events) == 1
            assert sum(e.message.startswith("outputs written") for e in job.events) == 1
    finally:
        database.close()


def test_claim_by_id_lease_and_ownership(database_url: str) -> None:
    database = JobDatabase(database_url, migrate_schema=False)
    try:
        (job_id,) = _queued_jobs(database, 1)
        first = database.claim_job_by_id(job_id, "a", 30)
        assert first.job is not None and first.job.attempt == 1
        # A duplicate delivery finds it running.
        second = database.claim_job_by_id(job_id, "b", 30)
        assert second.job is None and second.refusal == ClaimRefusal.NOT_QUEUED
        assert second.state == "running"
        assert database.owns_job(job_id, "a", 1) and not database.owns_job(job_id, "b", 1)
        assert database.renew_lease(job_id, "a", 30)
        assert not database.renew_lease(job_id, "b", 30)
        # Worker a dies: its lease expires, the node re-queues, b claims attempt 2.
        later = utcnow().replace(year=utcnow().year + 1)
        assert database.expire_leases(now=later) == [job_id]
        assert not database.renew_lease(job_id, "a", 30)  # a's late renewal is refused
        third = database.claim_job_by_id(job_id, "b", 30)
        assert third.job is not None and third.job.attempt == 2
        assert not database.owns_job(job_id, "a", 1)
        # b dies too (max_job_attempts 2): the next delivery fails the job instead of a 3rd run.
        assert database.expire_leases(now=later) == [job_id]
        fourth = database.claim_job_by_id(job_id, "c", 30)
        assert fourth.job is None and fourth.refusal == ClaimRefusal.LOST
        job = database.get_job(job_id)
        assert job is not None and job.state == JobState.FAILED and job.attempts == 2
        assert "worker was lost" in (job.error or "")
        assert database.claim_job_by_id(10_000, "a", 30).refusal == ClaimRefusal.UNKNOWN
    finally:
        database.close()
