"""REST API /api/v1, /metrics and the OpenAPI schema, with TestClient on a real job database."""

from __future__ import annotations

import base64
from collections.abc import Callable
from pathlib import Path

from fastapi.testclient import TestClient
from web_helpers import (
    PASSWORDS,
    failed_job,
    job_with_key_image,
    queued_job,
    record,
    write_ct_file,
    write_sc_file,
)

from storage.database import JobDatabase


def _basic(user: str) -> dict[str, str]:
    token = base64.b64encode(f"{user}:{PASSWORDS[user]}".encode()).decode()
    return {"Authorization": f"Basic {token}"}


def test_list_filter_show_retry_cancel_delete_with_audit(
    any_web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    db = any_web_db
    failed = failed_job(db, "1.2.3.1", accession="ACC-1")
    queued = queued_job(db, "1.2.3.2")
    client = make_client(db)
    admin = _basic("alice")

    page = client.get("/api/v1/jobs", headers=admin).json()
    assert page["total"] == 2 and [j["id"] for j in page["jobs"]] == [queued, failed]
    only_failed = client.get("/api/v1/jobs", params={"state": "failed"}, headers=admin).json()
    assert [j["id"] for j in only_failed["jobs"]] == [failed]
    assert client.get("/api/v1/jobs", params={"q": "ACC-1"}, headers=admin).json()["total"] == 1
    assert client.get("/api/v1/jobs", params={"state": "bogus"}, headers=admin).status_code == 422

    detail = client.get(f"/api/v1/jobs/{failed}", headers=admin).json()
    assert detail["error"] == "pipeline error: test failure"
    assert detail["routing_reason"] == "routed by the test"
    assert detail["accession_number"] is None and detail["phi_hidden"] is True
    assert any("running" in e["message"] for e in detail["events"])
    assert client.get("/api/v1/jobs/999", headers=admin).status_code == 404
    # A number no job id can be (beyond a signed 64-bit key) is refused, not a server error.
    for huge in ("99999999999999999999", str(2**63), "0", "-1"):
        assert client.get(f"/api/v1/jobs/{huge}", headers=admin).status_code == 404, huge
        assert client.get(f"/jobs/{huge}", headers=admin).status_code < 500, huge

    retried = client.post(f"/api/v1/jobs/{failed}/retry", headers=admin)
    assert retried.status_code == 200, retried.text
    assert client.get(f"/api/v1/jobs/{failed}", headers=admin).json()["state"] == "queued"
    conflict = client.post(f"/api/v1/jobs/{failed}/retry", headers=admin)
    assert conflict.status_code == 409 and "only finished jobs" in conflict.json()["detail"]
    assert client.post(f"/api/v1/jobs/{queued}/cancel", headers=admin).status_code == 200
    assert client.delete(f"/api/v1/jobs/{queued}", headers=admin).status_code == 200
    assert db.get_job(queued) is None

    audit = client.get("/api/v1/audit", headers=admin).json()
    assert [(a["action"], a["job_id"], a["user_name"]) for a in audit] == [
        ("delete", queued, "alice"), ("cancel", queued, "alice"),
        ("retry", failed, "alice"), ("retry", failed, "alice"),
    ]
    assert audit[2]["outcome"].startswith("refused") and audit[3]["remote_address"] == "testclient"


def test_viewer_reads_but_cannot_change_and_refusals_are_audited(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    failed = failed_job(web_db, "1.2.3.1")
    client = make_client(web_db)
    viewer = _basic("victor")
    assert client.get("/api/v1/jobs", headers=viewer).json()["total"] == 1
    refused = client.post(f"/api/v1/jobs/{failed}/retry", headers=viewer)
    assert refused.status_code == 403 and "admin role" in refused.json()["detail"]
    assert client.delete(f"/api/v1/jobs/{failed}", headers=viewer).status_code == 403
    assert web_db.get_job(failed).state == "failed"
    assert client.get("/api/v1/audit", headers=viewer).status_code == 403
    entries = web_db.list_audit(job_id=failed)
    assert [(e.user_name, e.action, e.outcome) for e in entries] == [
        ("victor", "delete", "refused: admin role required"),
        ("victor", "retry", "refused: admin role required"),
    ]


def test_phi_only_for_the_phi_role(
    web_db: JobDatabase, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    path = write_ct_file(tmp_path / "ct.dcm", "Doe^Jane", "PID-4711", "ACC-77")
    job_id = queued_job(web_db, "1.2.3", path=str(path), accession="ACC-77")
    client = make_client(web_db)
    hidden = client.get(f"/api/v1/jobs/{job_id}", headers=_basic("victor"))
    assert "Doe" not in hidden.text and "PID-4711" not in hidden.text and "ACC-77" not in hidden.text
    shown = client.get(f"/api/v1/jobs/{job_id}", headers=_basic("paula")).json()
    assert shown["patient"]["name"] == "Doe^Jane" and shown["patient"]["id"] == "PID-4711"
    assert shown["accession_number"] == "ACC-77"
    html_hidden = make_client(web_db, "victor").get(f"/jobs/{job_id}").text
    assert "Doe^Jane" not in html_hidden and "hidden (needs the phi role)" in html_hidden
    assert "Doe^Jane" in make_client(web_db, "paula").get(f"/jobs/{job_id}").text


def test_node_status_metrics_and_openapi(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    failed_job(web_db, "1.2.3.1")
    queued_job(web_db, "1.2.3.2")
    queued_job(web_db, "1.2.3.3", protocol="brain-gwr")
    web_db.record_association(calling_ae_title="CT1", address="10.0.0.1", accepted=True)
    record(web_db, "1.2.3.4")
    client = make_client(web_db)
    node = client.get("/api/v1/node", headers=_basic("victor")).json()
    assert node["queue_depth_by_protocol"] == {"l3-body-composition": 1, "brain-gwr": 1}
    assert node["associations_last_hour"] == {"accepted": 1, "rejected": 0}
    assert node["jobs_by_state"] == {"failed": 1, "queued": 2}
    assert node["disk"]["free_bytes"] > 0
    assert {p["name"] for p in node["protocols"]} >= {"l3-body-composition"}
    metrics = client.get("/metrics").text
    assert 'ainode_jobs{state="failed"} 1.0' in metrics
    assert 'ainode_queue_depth{protocol="brain-gwr"} 1.0' in metrics
    assert "ainode_instances_received 4.0" in metrics
    assert 'ainode_associations_last_hour{outcome="accepted"} 1.0' in metrics
    paths = client.get("/openapi.json").json()["paths"]
    assert {"/api/v1/jobs", "/api/v1/jobs/{job_id}", "/api/v1/jobs/{job_id}/retry",
            "/api/v1/jobs/{job_id}/cancel", "/api/v1/node"} <= set(paths)
    assert "/jobs" not in paths  # HTML pages are not part of the API schema


def test_key_image_thumbnail_and_burned_in_sources(
    web_db: JobDatabase, make_client: Callable[..., TestClient], tmp_path: Path
) -> None:
    import io

    import numpy as np
    import pydicom
    from PIL import Image

    rgb = np.zeros((600, 300, 3), dtype=np.uint8)
    rgb[:, :, 0] = 200  # red, taller than wide: the thumbnail keeps the aspect ratio
    key_image = write_sc_file(tmp_path / "sc.dcm", rgb)
    clean = write_ct_file(tmp_path / "ct.dcm", "Doe^Jane", "PID-1", "A1")
    burned = write_ct_file(tmp_path / "ct_burned.dcm", "Doe^Jane", "PID-1", "A1")
    ds = pydicom.dcmread(burned)
    ds.BurnedInAnnotation = "YES"
    ds.save_as(burned)
    clean_job = job_with_key_image(web_db, "1.2.3.1", clean, key_image)
    burned_job = job_with_key_image(web_db, "1.2.3.2", burned, key_image)
    output_id = web_db.get_job(clean_job).outputs[0].id
    viewer = make_client(web_db, "victor")
    response = viewer.get(f"/jobs/{clean_job}/outputs/{output_id}/thumbnail.png")
    assert response.status_code == 200 and response.headers["content-type"] == "image/png"
    image = Image.open(io.BytesIO(response.content)).convert("RGB")
    assert image.size == (240, 480)
    assert image.getpixel((120, 240)) == (200, 0, 0)
    assert f"/jobs/{clean_job}/outputs/{output_id}/thumbnail.png" in viewer.get(f"/jobs/{clean_job}").text
    burned_output = web_db.get_job(burned_job).outputs[0].id
    url = f"/jobs/{burned_job}/outputs/{burned_output}/thumbnail.png"
    assert viewer.get(url).status_code == 403
    assert make_client(web_db, "paula").get(url).status_code == 200
    assert viewer.get(f"/jobs/{burned_job}/outputs/{output_id}/thumbnail.png").status_code == 404
    assert make_client(web_db).get(url, follow_redirects=False).status_code == 303
