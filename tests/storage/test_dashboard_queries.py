"""Dashboard reads that moved into storage: the algorithm last used per protocol."""

from __future__ import annotations

from fair_claims_helpers import queue_jobs

from storage.database import JobDatabase


def test_latest_algorithm_by_protocol_takes_the_newest_done_job(database: JobDatabase) -> None:
    assert database.latest_algorithm_by_protocol() == {}
    first, second = queue_jobs(database, "PACS", 2, protocol="brain-gwr")
    (other,) = queue_jobs(database, "PACS", 1, protocol="neonatal-rds", tag="rds")
    for _ in range(3):
        claimed = database.claim_job("w", 60)
        assert claimed is not None
        database.record_results(
            claimed.id,
            algorithm={first: "gwr 1.0", second: "gwr 1.1", other: "rds 0.3"}[claimed.id],
            results={},
            outputs=[],
            destinations=[],
        )
    (failed,) = queue_jobs(database, "PACS", 1, protocol="brain-gwr", tag="failing")
    assert database.claim_job("w", 60) is not None
    database.fail_job(failed, "boom")
    assert database.latest_algorithm_by_protocol() == {"brain-gwr": "gwr 1.1", "neonatal-rds": "rds 0.3"}
