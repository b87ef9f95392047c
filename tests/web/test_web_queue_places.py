"""Queue places in the dashboard: a queued job's projected position, priority and wait in the
API job view and the job page, and queue depth and oldest wait per priority at ``/metrics``."""

from __future__ import annotations

import base64
import re
from collections.abc import Callable

from fastapi.testclient import TestClient
from web_helpers import PASSWORDS, record

from storage.database import JobDatabase


def _basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def _queue(db: JobDatabase, series: str, caller: str, priority: str) -> int:
    record(db, series, calling=caller)
    (job_id,) = db.complete_quiet_series(0)
    db.set_routing(job_id, protocol="l3-body-composition", rule="r", reason="r", priority=priority)
    return job_id


def test_job_view_and_metrics_show_queue_places(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    batch = [_queue(web_db, f"1.2.3.{i}", "RESEARCH", "routine") for i in range(3)]
    low = _queue(web_db, "1.2.3.9", "ARCHIVE", "low")
    urgent = _queue(web_db, "1.2.3.8", "CT_ER", "urgent")
    client = make_client(web_db, "victor")

    view = client.get(f"/api/v1/jobs/{urgent}", headers=_basic("victor")).json()
    assert view["priority"] == "urgent"
    assert view["queue"]["position"] == 1 and view["queue"]["queued"] == 5
    assert view["queue"]["waiting_s"] >= 0
    assert client.get(f"/api/v1/jobs/{low}", headers=_basic("victor")).json()["queue"]["position"] == 5
    page = client.get(f"/jobs/{batch[1]}").text
    assert re.search(r"#3 of 5 queued", page), page

    claimed = web_db.claim_job("w", 60)
    assert claimed is not None and claimed.id == urgent
    assert client.get(f"/api/v1/jobs/{urgent}", headers=_basic("victor")).json()["queue"] is None

    metrics = client.get("/metrics").text
    assert 'ainode_queue_depth_by_priority{priority="routine"} 3.0' in metrics
    assert 'ainode_queue_depth_by_priority{priority="low"} 1.0' in metrics
    assert 'ainode_queue_depth_by_priority{priority="urgent"} 0.0' in metrics
    oldest = re.search(r'ainode_queue_oldest_wait_seconds\{priority="routine"\} ([0-9.e+-]+)', metrics)
    assert oldest is not None and float(oldest.group(1)) >= 0
