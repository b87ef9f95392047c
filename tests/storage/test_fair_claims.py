"""Fair scheduling on SQLite and PostgreSQL: priority first, round robin between calling AE
titles, then age; the projected queue places match the claims; claims stay exclusive with two
claiming processes."""

from __future__ import annotations

import multiprocessing
from collections import Counter
from pathlib import Path

import pytest
from fair_claims_helpers import claim_until_empty, queue_jobs
from pg_server import postgres_url_or_skip

from storage.database import JobDatabase, ProtocolFilter
from storage.models import JobState, Priority


def _claim_ids(database: JobDatabase, count: int) -> list[int]:
    ids = []
    for _ in range(count):
        job = database.claim_job("w", 60)
        assert job is not None
        ids.append(job.id)
    return ids


@pytest.mark.slow
def test_a_new_caller_is_claimed_within_two_claims_behind_2000_series_of_another(
    database: JobDatabase,
) -> None:
    # The other caller was served before the batch arrived (its last job is older).
    (earlier,) = queue_jobs(database, "CT_ER", 1, tag="er-earlier")
    assert _claim_ids(database, 1) == [earlier]
    batch = queue_jobs(database, "RESEARCH", 2000)
    assert _claim_ids(database, 3) == batch[:3]  # only one caller waits: its oldest first
    (new,) = queue_jobs(database, "CT_ER", 1, tag="er-new")

    places = database.queue_places()
    assert len(places) == 1998
    assert places[new].position <= 2
    assert places[new].queued == 1998
    assert places[new].waiting_seconds is not None and places[new].waiting_seconds >= 0
    assert places[batch[3]].position <= 2  # the batch continues right after
    assert places[batch[-1]].position == 1998

    assert new in _claim_ids(database, 2)
    job = database.get_job(new)
    assert job is not None and job.state == JobState.RUNNING
    assert any("queued" in e.message and "running" in e.message for e in job.events)


def test_urgent_before_any_routine_and_low_last(database: JobDatabase) -> None:
    low = queue_jobs(database, "ARCHIVE", 2, priority="low")
    routine_a = queue_jobs(database, "PACS_A", 3)
    routine_b = queue_jobs(database, "PACS_B", 2)
    (served,) = _claim_ids(database, 1)  # PACS_A's oldest: never served, first by AE title
    assert served == routine_a[0]
    # The urgent study comes from a caller served a moment ago.
    urgent = queue_jobs(database, "PACS_A", 1, priority="urgent", tag="urgent")
    stats = database.queue_stats_by_priority()
    assert stats["urgent"].depth == 1 and stats["routine"].depth == 4 and stats["low"].depth == 2
    assert stats["low"].oldest_waiting_seconds >= stats["urgent"].oldest_waiting_seconds
    assert database.queue_places(urgent)[urgent[0]].position == 1
    assert database.queue_places(urgent)[urgent[0]].priority == "urgent"

    order = _claim_ids(database, 7)
    assert order[0] == urgent[0]
    # PACS_B has not been served, PACS_A just was (and again by the urgent job): B, A, B, A.
    assert order[1:5] == [routine_b[0], routine_a[1], routine_b[1], routine_a[2]]
    assert order[5:] == low
    assert database.claim_job("w", 60) is None
    stats = database.queue_stats_by_priority()
    assert all(s.depth == 0 for s in stats.values())


def test_round_robin_between_callers_and_projection_matches_claims(database: JobDatabase) -> None:
    a = queue_jobs(database, "A", 4)
    b = queue_jobs(database, "B", 2)
    c = queue_jobs(database, "C", 1)
    urgent = queue_jobs(database, "C", 1, priority="urgent", tag="c-urgent")
    projected = sorted(database.queue_places().items(), key=lambda item: item[1].position)
    order = _claim_ids(database, 8)
    assert [job_id for job_id, _ in projected] == order
    assert order[0] == urgent[0]
    # Never-served callers by AE title, then least recently served: C was just served.
    assert order[1:] == [a[0], b[0], c[0], a[1], b[1], a[2], a[3]]


def test_the_age_order_within_a_caller_and_a_protocol_filter(database: JobDatabase) -> None:
    cpu = queue_jobs(database, "PACS", 2, protocol="neonatal-rds")
    gpu = queue_jobs(database, "PACS", 2, protocol="brain-gwr", priority="urgent")
    only_cpu = ProtocolFilter(only=frozenset({"neonatal-rds"}))
    first = database.claim_job("cpu-worker", 60, protocols=only_cpu)
    assert first is not None and first.id == cpu[0]  # the urgent gpu jobs are not this queue's
    not_cpu = ProtocolFilter(excluded=frozenset({"neonatal-rds"}))
    assert [database.claim_job("gpu", 60, protocols=not_cpu).id for _ in gpu] == gpu  # type: ignore[union-attr]
    assert database.claim_job("gpu", 60, protocols=not_cpu) is None
    second = database.claim_job("cpu-worker", 60, protocols=only_cpu)
    assert second is not None and second.id == cpu[1]


def test_a_retried_job_keeps_its_priority_and_gets_a_new_queued_time(database: JobDatabase) -> None:
    (job_id,) = queue_jobs(database, "PACS", 1, priority="low")
    claimed = database.claim_job("w", 60)
    assert claimed is not None
    queued_first = database.get_job(job_id).queued_at  # type: ignore[union-attr]
    assert database.fail_job(job_id, "boom", retry=True) == JobState.QUEUED
    job = database.get_job(job_id)
    assert job is not None and Priority(job.priority) == Priority.LOW
    assert job.queued_at is not None and queued_first is not None and job.queued_at >= queued_first


def test_an_unknown_priority_is_refused_with_the_choices(database: JobDatabase) -> None:
    (job_id,) = queue_jobs(database, "PACS", 1)
    with pytest.raises(ValueError, match="urgent, routine, low"):
        database.set_routing(job_id, protocol="brain-gwr", rule="r", reason="r", priority="stat")


@pytest.fixture(params=["sqlite", "postgresql"])
def database_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'jobs.sqlite3'}"
    else:
        url = postgres_url_or_skip(request)
    JobDatabase(url).close()  # migrate once, before the claimers connect
    return url


@pytest.mark.slow
def test_two_claiming_processes_never_take_one_job_twice(database_url: str) -> None:
    database = JobDatabase(database_url, migrate_schema=False)
    try:
        job_ids = (
            queue_jobs(database, "A", 120)
            + queue_jobs(database, "B", 60, priority="urgent")
            + queue_jobs(database, "C", 60, priority="low")
        )
        context = multiprocessing.get_context("spawn")
        go, results = context.Event(), context.Queue()
        processes = [
            context.Process(target=claim_until_empty, args=(database_url, f"w{i}", go, results))
            for i in range(2)
        ]
        for process in processes:
            process.start()
        go.set()
        ran = dict(results.get(timeout=180) for _ in processes)
        for process in processes:
            process.join(30)
            assert process.exitcode == 0
        runs = Counter(job_id for ids in ran.values() for job_id in ids)
        assert sorted(runs) == sorted(job_ids)
        assert set(runs.values()) == {1}, [j for j, n in runs.items() if n > 1]
        for job in database.list_jobs(limit=len(job_ids)):
            assert job.state == JobState.DONE and job.attempts == 1
    finally:
        database.close()


def test_routing_takes_callers_in_turn_in_bounded_batches(database: JobDatabase) -> None:
    from fair_claims_helpers import receive_series

    flood = receive_series(database, "RESEARCH", 30)
    (er,) = receive_series(database, "CT_ER", 1)
    first = [job.id for job in database.jobs_to_route(limit=5)]
    assert first == [flood[0], er, *flood[1:4]]
    everything = [job.id for job in database.jobs_to_route(limit=100)]
    assert sorted(everything) == sorted([*flood, er]) and everything[:2] == [flood[0], er]
    for job_id in first:
        database.set_routing(job_id, protocol=None, rule=None, reason="test")
    assert [job.id for job in database.jobs_to_route(limit=2)] == flood[4:6]
