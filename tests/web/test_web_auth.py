"""Sign-in, sessions, CSRF, roles, trusted proxy header and HTTP Basic of the dashboard."""

from __future__ import annotations

import base64
import json
import time
from collections.abc import Callable

from fastapi.testclient import TestClient
from itsdangerous import TimestampSigner
from web_helpers import PASSWORDS, failed_job, sign_in

from node.config import Settings, WebSettings
from node.web.app import load_secret_key
from node.web.auth import SESSION_SIGNED_IN_AT
from storage.database import JobDatabase


def _csrf(html: str) -> str:
    return html.split('name="csrf_token" value="')[1].split('"')[0]


def test_pages_need_sign_in_and_wrong_passwords_are_refused(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(web_db)
    redirect = client.get("/jobs/1?x=1", follow_redirects=False)
    assert redirect.status_code == 303 and redirect.headers["location"] == "/login?next=%2Fjobs%2F1%3Fx%3D1"
    assert client.get("/api/v1/jobs").status_code == 401
    assert "www-authenticate" not in client.get("/api/v1/jobs").headers  # browsers never cache Basic
    token = _csrf(client.get("/login").text)
    wrong = client.post("/login", data={"username": "alice", "password": "nope", "csrf_token": token})
    assert wrong.status_code == 401 and "Wrong user name or password" in wrong.text
    no_csrf = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"]})
    assert no_csrf.status_code == 403
    evil = client.post("/login", data={"username": "alice", "password": PASSWORDS["alice"],
                                       "csrf_token": token, "next": "//evil.example/"},
                       follow_redirects=False)
    assert evil.status_code == 303 and evil.headers["location"] == "/jobs"  # no open redirect
    page = client.get("/jobs")
    assert page.status_code == 200 and 'id="signed-in-as">alice<' in page.text
    assert page.headers["x-frame-options"] == "DENY"
    assert "frame-ancestors 'none'" in page.headers["content-security-policy"]


def test_repeated_failures_block_sign_in_for_that_name(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    client = make_client(web_db)
    token = _csrf(client.get("/login").text)
    for _ in range(5):
        client.post("/login", data={"username": "victor", "password": "wrong-pw", "csrf_token": token})
    blocked = client.post("/login", data={"username": "victor", "password": PASSWORDS["victor"],
                                          "csrf_token": token})
    assert blocked.status_code == 429


def test_state_changing_forms_need_the_csrf_token_and_the_admin_role(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    job_id = failed_job(web_db, "1.2.3.1")
    admin = make_client(web_db, "alice")
    assert admin.post(f"/jobs/{job_id}/retry", data={}).status_code == 403
    assert admin.post(f"/api/v1/jobs/{job_id}/retry").status_code == 403  # session, no header
    assert web_db.get_job(job_id).state == "failed"
    token = _csrf(admin.get(f"/jobs/{job_id}").text)
    done = admin.post(f"/jobs/{job_id}/retry", data={"csrf_token": token}, follow_redirects=False)
    assert done.status_code == 303 and web_db.get_job(job_id).state == "queued"
    me = admin.get("/api/v1/me").json()
    assert me["roles"] == ["admin"] and me["via"] == "session"
    cancel = admin.post(f"/api/v1/jobs/{job_id}/cancel", headers={"X-CSRF-Token": me["csrf_token"]})
    assert cancel.status_code == 200 and web_db.get_job(job_id).state == "cancelled"

    viewer = make_client(web_db, "victor")
    page = viewer.get(f"/jobs/{job_id}").text
    assert 'id="retry"' not in page and 'id="delete"' not in page
    forged = viewer.post(f"/jobs/{job_id}/retry", data={"csrf_token": _csrf(page)})
    assert forged.status_code == 403 and "admin role" in forged.text
    assert web_db.get_job(job_id).state == "cancelled"
    assert viewer.get("/audit").status_code == 403
    actions = [(e.user_name, e.action, e.outcome.split(":")[0]) for e in web_db.list_audit()]
    assert actions[0] == ("victor", "retry", "refused")
    assert ("alice", "retry", "retry requested") in actions


def test_sessions_expire_and_removed_users_lose_access(
    web_db: JobDatabase, make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    short = web_settings.model_copy(update={"web": WebSettings(session_lifetime_minutes=1)})
    client = make_client(web_db, "victor", settings=short)
    assert client.get("/jobs", follow_redirects=False).status_code == 200
    web_db.remove_user("victor")
    assert client.get("/jobs", follow_redirects=False).status_code == 303
    client2 = make_client(web_db, "alice", settings=short)
    # Age the session by re-signing it one hour back: the app must refuse it.
    cookie = client2.cookies.get("ainode_session")
    data = json.loads(base64.b64decode(cookie.split(".")[0] + "=="))
    signer = TimestampSigner(load_secret_key(short))  # the signer SessionMiddleware uses

    def resigned(signed_in_at: float) -> str:
        payload = json.dumps({**data, SESSION_SIGNED_IN_AT: signed_in_at}).encode()
        return signer.sign(base64.b64encode(payload)).decode()

    client2.cookies.clear()
    client2.cookies.set("ainode_session", resigned(time.time() - 10), domain="127.0.0.1")
    assert client2.get("/jobs", follow_redirects=False).status_code == 200  # control: accepted
    client2.cookies.clear()
    client2.cookies.set("ainode_session", resigned(time.time() - 3600), domain="127.0.0.1")
    assert client2.get("/jobs", follow_redirects=False).status_code == 303


def test_trusted_proxy_header_only_from_trusted_addresses(
    web_db: JobDatabase, make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    proxied = web_settings.model_copy(update={"web": WebSettings(
        trusted_user_header="X-Remote-User", trusted_proxies=["testclient"])})
    client = make_client(web_db, settings=proxied)
    assert client.get("/api/v1/me", headers={"X-Remote-User": "paula"}).json()["roles"] == ["phi", "viewer"]
    assert client.get("/api/v1/me", headers={"X-Remote-User": "mallory"}).status_code == 401
    untrusted = web_settings.model_copy(update={"web": WebSettings(
        trusted_user_header="X-Remote-User", trusted_proxies=["10.9.9.9"])})
    assert make_client(web_db, settings=untrusted).get(
        "/api/v1/me", headers={"X-Remote-User": "alice"}).status_code == 401


def test_metrics_can_require_authentication(
    web_db: JobDatabase, make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    private = web_settings.model_copy(update={"web": WebSettings(metrics_public=False)})
    client = make_client(web_db, settings=private)
    assert client.get("/metrics").status_code == 401
    token = base64.b64encode(f"victor:{PASSWORDS['victor']}".encode()).decode()
    assert client.get("/metrics", headers={"Authorization": f"Basic {token}"}).status_code == 200
    sign_in(client, "alice")
    assert client.get("/metrics").status_code == 200
