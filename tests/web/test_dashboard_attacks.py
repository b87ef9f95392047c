"""The dashboard under attack (issue 14): password floods, lockout abuse, stolen cookies, ids, PHI.

Loopback only and bounded: the flood is 200 requests against one real ``ainode dashboard``
process (uvicorn); the other cases use the in-process app (TestClient) on a real SQLite database.
"""

from __future__ import annotations

import asyncio
import base64
import os
import secrets
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import httpx
import pytest
import yaml
from fastapi.testclient import TestClient
from pydicom.dataset import Dataset
from web_helpers import PASSWORDS, ROLES, queued_job

from node.config import Settings, WebSettings
from node.local_pacs import find_free_port
from node.routing import RoutingRule, route_series
from node.users import add_user
from storage.database import JobDatabase

FLOOD_REQUESTS = 200
FLOOD_ADDRESSES = 20
RSS_LIMIT_MB = 300.0
HEALTHZ_LIMIT_S = 0.200
HEALTHZ_WORST_S = 2.0


def _basic(name: str, password: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{name}:{password}".encode()).decode()}


def _csrf(html: str) -> str:
    return html.split('name="csrf_token" value="')[1].split('"')[0]


def _status_kb(pid: int, field: str) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise AssertionError(f"no {field} in /proc/{pid}/status")


def _cpu_s(pid: int) -> float:
    """User + system CPU time of a process, seconds."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


@pytest.fixture
def dashboard_process(tmp_path: Path) -> Iterator[tuple[subprocess.Popen[bytes], str]]:
    """``ainode dashboard`` as its own process behind a trusted proxy (127.0.0.1), with alice."""
    data_dir = tmp_path / "data"
    port = find_free_port()
    config = tmp_path / "ainode.yaml"
    config.write_text(yaml.safe_dump({
        "data_dir": str(data_dir),
        "web": {"port": port, "trusted_proxies": ["127.0.0.1"]},
    }))
    data_dir.mkdir()
    database = JobDatabase(Settings(data_dir=data_dir).resolved_database_url)
    add_user(database, "alice", PASSWORDS["alice"], ROLES["alice"])
    database.close()
    log_path = tmp_path / "dashboard.log"
    with log_path.open("wb") as log:
        process = subprocess.Popen(
            [sys.executable, "-m", "node", "dashboard", "--config", str(config)],
            stdout=log, stderr=subprocess.STDOUT,
        )
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 60
        while True:
            assert process.poll() is None, log_path.read_text()
            try:
                if httpx.get(f"{base}/healthz", timeout=1).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "ainode dashboard did not answer in 60 s"
            time.sleep(0.3)
        yield process, base
    finally:
        process.terminate()
        process.wait(timeout=20)


async def _flood(base: str) -> list[int]:
    """FLOOD_REQUESTS concurrent sign-ins with random user names and passwords: half by HTTP
    Basic on the API, half by the sign-in form (with a valid CSRF token, as a scripted attacker
    would fetch it)."""
    limits = httpx.Limits(max_connections=FLOOD_REQUESTS, max_keepalive_connections=0)
    async with httpx.AsyncClient(base_url=base, timeout=120, limits=limits) as client:
        token = _csrf((await client.get("/login")).text)

        async def one(index: int) -> int:
            name, password = "u" + secrets.token_hex(6), secrets.token_hex(8)
            address = {"X-Forwarded-For": f"10.66.0.{index % FLOOD_ADDRESSES + 1}"}
            if index % 2:
                form = {"username": name, "password": password, "csrf_token": token}
                response = await client.post("/login", data=form, headers=address)
            else:
                response = await client.get("/api/v1/me", headers={**_basic(name, password),
                                                                    **address})
            return response.status_code

        return list(await asyncio.gather(*(one(i) for i in range(FLOOD_REQUESTS))))


#: Times GET /healthz every 50 ms until a line arrives on stdin; prints one duration (s) a line.
_PROBE = """
import sys, threading, time, httpx
stop = threading.Event()
threading.Thread(target=lambda: (sys.stdin.readline(), stop.set()), daemon=True).start()
with httpx.Client(base_url=sys.argv[1], timeout=10) as client:
    while not stop.is_set():
        started = time.perf_counter()
        assert client.get("/healthz").status_code == 200
        print(time.perf_counter() - started, flush=True)
        stop.wait(0.05)
"""


@pytest.mark.slow
def test_password_flood_keeps_the_dashboard_small_and_responsive(
    dashboard_process: tuple[subprocess.Popen[bytes], str],
) -> None:
    process, base = dashboard_process
    # The probe runs in its own process, so the flood client's own load cannot slow it down.
    prober = subprocess.Popen([sys.executable, "-c", _PROBE, base], stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, text=True)
    time.sleep(0.5)
    started = time.monotonic()
    cpu_before = _cpu_s(process.pid)
    try:
        statuses = asyncio.run(_flood(base))
    finally:
        flood_s = time.monotonic() - started
        output, _ = prober.communicate("stop\n", timeout=30)
    latencies = [float(line) for line in output.split()]
    cpu_s = _cpu_s(process.pid) - cpu_before
    peak_mb = _status_kb(process.pid, "VmHWM") / 1024
    print(f"\nflood of {FLOOD_REQUESTS} from {FLOOD_ADDRESSES} addresses: {flood_s:.1f} s; "
          f"statuses { {s: statuses.count(s) for s in set(statuses)} }; dashboard peak RSS "
          f"{peak_mb:.0f} MB, CPU {cpu_s:.2f} s; /healthz n={len(latencies)} median "
          f"{statistics.median(latencies) * 1000:.1f} ms, max {max(latencies) * 1000:.1f} ms")
    assert set(statuses) <= {401, 429}, statuses
    assert statuses.count(429) > 0  # the throttle refused part of the flood
    assert peak_mb < RSS_LIMIT_MB
    # A burst of 200 requests reaches the one event loop at once, and this 2-core machine is
    # shared: single probes may wait behind the burst, so 90 % of them must meet the limit and
    # none may take longer than HEALTHZ_WORST_S (before the throttle: 6 s, issue 14).
    assert len(latencies) >= 5
    ordered = sorted(latencies)
    assert ordered[int(0.9 * (len(ordered) - 1))] < HEALTHZ_LIMIT_S, ordered[-10:]
    assert ordered[-1] < HEALTHZ_WORST_S, ordered[-10:]
    # The real user still gets in once the flood is over (the throttle is per address).
    me = httpx.get(f"{base}/api/v1/me", headers=_basic("alice", PASSWORDS["alice"]), timeout=30)
    assert me.status_code == 200 and me.json()["name"] == "alice"


def test_an_outsider_cannot_lock_the_admin_out(
    web_db: JobDatabase, make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    proxied = web_settings.model_copy(update={"web": WebSettings(trusted_proxies=["testclient"])})
    client = make_client(web_db, settings=proxied)
    outsider = {"X-Forwarded-For": "203.0.113.66"}
    token = _csrf(client.get("/login").text)
    answers = [
        client.post("/login", headers=outsider,
                    data={"username": "alice", "password": f"guess-{i}",
                          "csrf_token": token}).status_code
        for i in range(30)
    ]
    assert answers[0] == 401 and answers[-1] == 429, answers
    basic = [client.get("/api/v1/me", headers={**outsider, **_basic("alice", "guess")}).status_code
             for _ in range(3)]
    assert basic == [429] * 3
    # The outsider's address is locked out for alice even with the right password ...
    good = {"username": "alice", "password": PASSWORDS["alice"], "csrf_token": token}
    right = client.post("/login", headers=outsider, follow_redirects=False, data=good)
    assert right.status_code == 429 and int(right.headers["retry-after"]) >= 1
    # ... while alice, from her own address, signs in by form and by HTTP Basic.
    admin = {"X-Forwarded-For": "198.51.100.7"}
    signed_in = client.post("/login", headers=admin, follow_redirects=False, data=good)
    assert signed_in.status_code == 303, signed_in.text
    fresh = make_client(web_db, settings=proxied)
    me = fresh.get("/api/v1/me", headers={**admin, **_basic("alice", PASSWORDS["alice"])})
    assert me.status_code == 200 and me.json()["roles"] == ["admin"]


def test_a_signed_out_cookie_is_refused_by_every_dashboard_process(
    web_db: JobDatabase, make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    client = make_client(web_db, "alice")
    stolen = client.cookies.get("ainode_session")
    assert stolen
    other_process = make_client(web_db)  # a second dashboard process on the same database
    other_process.cookies.set("ainode_session", stolen, domain="127.0.0.1")
    assert other_process.get("/api/v1/me").status_code == 200  # control: the copy works
    token = _csrf(client.get("/jobs").text)
    signed_out = client.post("/logout", data={"csrf_token": token}, follow_redirects=False)
    assert signed_out.status_code == 303
    assert client.get("/jobs", follow_redirects=False).status_code == 303
    replay = make_client(web_db)
    replay.cookies.set("ainode_session", stolen, domain="127.0.0.1")
    assert replay.get("/jobs", follow_redirects=False).status_code == 303
    assert replay.get("/api/v1/me").status_code == 401
    time.sleep(1.1)  # the other process reads new sign-outs at most every second
    assert other_process.get("/api/v1/me").status_code == 401
    assert other_process.get("/jobs", follow_redirects=False).status_code == 303
    # A restarted dashboard (new app, same database) refuses it too.
    restarted = make_client(web_db)
    restarted.cookies.set("ainode_session", stolen, domain="127.0.0.1")
    assert restarted.get("/api/v1/me").status_code == 401
    assert any(e.action == "sign-out" and e.user_name == "alice" for e in web_db.list_audit())


def test_session_cookie_is_secure_over_tls_or_a_trusted_proxy_that_says_so(
    web_db: JobDatabase, make_client: Callable[..., TestClient], web_settings: Settings
) -> None:
    def cookie_after_sign_in(client: TestClient, headers: dict[str, str]) -> str:
        token = _csrf(client.get("/login", headers=headers).text)
        response = client.post("/login", headers=headers, follow_redirects=False,
                               data={"username": "victor", "password": PASSWORDS["victor"],
                                     "csrf_token": token})
        assert response.status_code == 303, response.text
        return response.headers["set-cookie"].lower()

    def first_cookie(client: TestClient, headers: dict[str, str]) -> str:
        # The sign-in form already sets the session cookie (it holds the CSRF token).
        return client.get("/login", headers=headers).headers["set-cookie"].lower()

    plain = make_client(web_db)
    assert "secure" not in cookie_after_sign_in(plain, {})
    proxied_settings = web_settings.model_copy(
        update={"web": WebSettings(trusted_proxies=["testclient"])})
    proxied = make_client(web_db, settings=proxied_settings)
    assert "; secure" in first_cookie(proxied, {"X-Forwarded-Proto": "https"})
    assert "secure" not in first_cookie(proxied, {"X-Forwarded-Proto": "http"})
    untrusted_settings = web_settings.model_copy(
        update={"web": WebSettings(trusted_proxies=["10.9.9.9"])})
    untrusted = make_client(web_db, settings=untrusted_settings)
    assert "secure" not in first_cookie(untrusted, {"X-Forwarded-Proto": "https"})
    with TestClient(make_client(web_db).app, base_url="https://127.0.0.1") as tls:
        assert "; secure" in cookie_after_sign_in(tls, {})


def test_huge_and_negative_job_ids_are_not_found(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    job_id = queued_job(web_db, "1.2.3.9")
    client = make_client(web_db, "alice")
    script, admin = make_client(web_db), _basic("alice", PASSWORDS["alice"])
    assert client.get(f"/api/v1/jobs/{job_id}").status_code == 200  # control
    for bad in ("99999999999999999999", str(2**63), "0", "-1", "-99999999999999999999"):
        assert client.get(f"/api/v1/jobs/{bad}").status_code == 404, bad
        assert client.get(f"/jobs/{bad}").status_code == 404, bad
        assert client.get(f"/jobs/{bad}/outputs/1/thumbnail.png").status_code == 404, bad
        assert script.post(f"/api/v1/jobs/{bad}/retry", headers=admin).status_code == 404, bad
        assert script.delete(f"/api/v1/jobs/{bad}", headers=admin).status_code == 404, bad


def test_a_viewer_cannot_spell_out_an_accession_number(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    accession = "ACC-4711"
    queued_job(web_db, "1.2.3.1", accession=accession)
    queued_job(web_db, "1.2.3.2", accession="OTHER-1")
    viewer, phi = make_client(web_db, "victor"), make_client(web_db, "paula")

    def found(client: TestClient, q: str) -> int:
        return int(client.get("/api/v1/jobs", params={"q": q}).json()["total"])

    prefixes = [accession[:n] for n in range(1, len(accession))] + ["4711", "CC-47"]
    assert [found(viewer, q) for q in prefixes] == [0] * len(prefixes)
    assert found(viewer, accession) == 1  # the full number still finds its job
    page = viewer.get("/jobs", params={"q": "ACC-47"}).text
    assert "1.2.3.1" not in page
    assert found(phi, "ACC-47") == 1 and found(phi, "4711") == 1  # phi users search substrings
    assert "1.2.3.1" in phi.get("/jobs", params={"q": "ACC-47"}).text


def _ct_header(study: str, series: str) -> Dataset:
    ds = Dataset()
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.2"
    ds.Modality = "CT"
    ds.StudyDescription = study
    ds.SeriesDescription = series
    ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
    return ds


def test_a_viewer_never_sees_descriptions_in_reasons_or_the_timeline(
    web_db: JobDatabase, make_client: Callable[..., TestClient]
) -> None:
    study, series = "DOE^JANE KNEE FOLLOW-UP", "O'BRIEN SCOUT PATRICK"
    stored = (f"no routing rule matched: Modality CT, Body Part (none), Study Description "
              f"{study!r}, Series Description {series!r}, 1 image(s)")
    quoted = queued_job(web_db, "1.2.3.1")
    web_db.set_routing(quoted, protocol=None, rule=None, reason=stored)
    # And whatever the real routing writes for such a series today.
    rules = [RoutingRule.model_validate({"name": "abdomen", "protocol": "l3-body-composition",
                                         "match": {"series_description": "(?i)abdomen"}})]
    decision = route_series([_ct_header(study, series)], rules)
    routed = queued_job(web_db, "1.2.3.2")
    web_db.set_routing(routed, protocol=decision.protocol, rule=decision.rule,
                       reason=decision.reason)

    viewer = make_client(web_db, "victor")
    for job_id in (quoted, routed):
        detail = viewer.get(f"/api/v1/jobs/{job_id}")
        page = viewer.get(f"/jobs/{job_id}")
        listing = viewer.get("/api/v1/jobs")
        assert detail.status_code == page.status_code == 200
        for text in (detail.text, page.text, listing.text):
            for secret in ("DOE", "JANE", "BRIEN", "PATRICK", "KNEE"):
                assert secret not in text, (job_id, secret)
    shown = viewer.get(f"/api/v1/jobs/{quoted}").json()
    assert "Study Description [hidden]" in shown["routing_reason"]
    assert any("Series Description [hidden]" in e["message"] for e in shown["events"])
    phi = make_client(web_db, "paula").get(f"/api/v1/jobs/{quoted}").json()
    assert study in phi["routing_reason"]  # the phi role sees the stored text


def test_lockout_wait_doubles_per_name_and_address_and_buckets_refill() -> None:
    from node.web.throttle import (
        LOCKOUT_AFTER,
        LOCKOUT_MAX_S,
        PER_ADDRESS_BURST,
        PER_ADDRESS_RATE,
        SignInGuard,
        SignInRefused,
    )

    now = [1000.0]
    guard = SignInGuard(clock=lambda: now[0])
    waits = [guard.failed("alice", "203.0.113.66") for _ in range(LOCKOUT_AFTER + 12)]
    assert waits[: LOCKOUT_AFTER - 1] == [0.0] * (LOCKOUT_AFTER - 1)
    steps = waits[LOCKOUT_AFTER - 1:]
    assert all(b == min(2 * a, LOCKOUT_MAX_S) for a, b in zip(steps, steps[1:])), steps
    assert steps[0] > 0 and steps[-1] == LOCKOUT_MAX_S
    with pytest.raises(SignInRefused, match="this user from this address") as refused:
        guard.admit("alice", "203.0.113.66")
    assert refused.value.retry_after_s == LOCKOUT_MAX_S
    guard.admit("alice", "198.51.100.7")  # another address is not locked
    guard.admit("bob", "203.0.113.66")  # nor another name from that address
    # The per-address bucket: a burst, then refusal, then refill with time.
    for index in range(int(PER_ADDRESS_BURST)):
        guard.admit(f"u{index}", "192.0.2.9")
    with pytest.raises(SignInRefused, match="from this address"):
        guard.admit("x", "192.0.2.9")
    now[0] += 1.0 / PER_ADDRESS_RATE
    guard.admit("x", "192.0.2.9")
    now[0] += LOCKOUT_MAX_S
    guard.admit("alice", "203.0.113.66")  # the wait is over
