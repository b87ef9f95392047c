"""Dashboard benchmark: job list response time with 10,000 jobs in the job database.

Fills a fresh job database (SQLite in a temporary directory by default, or ``--database-url``
for an empty PostgreSQL database) with N jobs (default 10,000) of mixed states, each with one
input instance, a timeline of four events and, when done, three outputs; then serves the
dashboard with uvicorn on a loopback port and times, over real HTTP with a signed-in session
(httpx), each request ``--repeat`` times (default 30) after two warm-up requests:

* ``GET /jobs`` — the HTML job list, first page (50 rows, total count, filter menus);
* ``GET /api/v1/jobs`` — the same page as JSON;
* ``GET /jobs?state=failed`` — filtered;
* ``GET /jobs?q=<accession number>`` — text search (substring of UIDs / accession number, exact
  SOP Instance UID of inputs and outputs);
* ``GET /jobs?page_number=200`` — the last page (offset 9,950);
* ``GET /jobs/<id>`` — one job page.

Reports median and 95th percentile in milliseconds. The goal (issue 8) is under 200 ms for the
job list. Run:

    .venv/bin/python benchmarks/dashboard.py [--jobs 10000] [--repeat 30] [--json]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import httpx
import uvicorn
from sqlalchemy import insert
from tqdm import tqdm

from node.config import Settings
from node.local_pacs import find_free_port
from node.users import hash_password
from node.web import create_app
from storage.database import JobDatabase
from storage.models import Instance, Job, JobEvent, JobState, Output

STATES = [JobState.DONE] * 7 + [JobState.FAILED, JobState.IGNORED, JobState.QUEUED]
PASSWORD = "benchmark-password"


def fill(db: JobDatabase, count: int) -> None:
    """Insert ``count`` jobs with instances, events and outputs in bulk."""
    t0 = dt.datetime(2026, 1, 1)
    jobs: list[dict[str, Any]] = []
    instances: list[dict[str, Any]] = []
    events: list[dict[str, Any]] = []
    outputs: list[dict[str, Any]] = []
    for k in range(1, count + 1):
        state = STATES[k % len(STATES)]
        created = t0 + dt.timedelta(minutes=k)
        series = f"1.2.826.0.1.3680043.10.1.{k}"
        jobs.append({
            "id": k, "study_instance_uid": f"1.2.826.0.1.3680043.10.0.{k // 3}",
            "series_instance_uid": series, "modality": "CT",
            "calling_ae_title": f"CT{k % 4}", "state": state.value,
            "protocol": None if state == JobState.IGNORED else "l3-body-composition",
            "routing_rule": "abdomen", "routing_reason": "abdominal CT", "instance_count": 1,
            "attempts": 1, "max_attempts": 2,
            "error": "pipeline error: benchmark" if state == JobState.FAILED else None,
            "algorithm": "ainode-l3-reference 0.1.0", "results_json": '{"sma_cm2": 120.5}',
            "created_at": created, "updated_at": created, "started_at": created,
            "finished_at": created + dt.timedelta(seconds=20), "accession_number": f"A{k:08d}",
        })
        instances.append({
            "sop_instance_uid": f"{series}.1", "study_instance_uid": "1.2", "series_instance_uid": series,
            "sop_class_uid": "1.2.840.10008.5.1.4.1.1.2", "transfer_syntax_uid": "1.2.840.10008.1.2.1",
            "path": f"/data/{series}.dcm", "calling_ae_title": "CT", "received_at": created,
        })
        for n in range(4):
            events.append({"job_id": k, "at": created, "level": "info", "message": f"event {n}"})
        if state == JobState.DONE:
            for kind in ("SEG", "SR", "SC"):
                outputs.append({
                    "job_id": k, "kind": kind, "sop_class_uid": "1.2.840.10008.5.1.4.1.1.7",
                    "sop_instance_uid": f"2.25.{k}{len(outputs)}", "series_instance_uid": f"2.25.{k}",
                    "path": f"/data/out/{k}/{kind}.dcm", "created_at": created,
                })
    with db.session() as session:
        for model, rows in ((Job, jobs), (Instance, instances), (JobEvent, events), (Output, outputs)):
            for start in range(0, len(rows), 5000):
                session.execute(insert(model), rows[start:start + 5000])


def time_requests(client: httpx.Client, url: str, repeat: int) -> dict[str, float]:
    """Median and p95 (ms) of ``repeat`` GETs after two warm-ups; raises on a non-200."""
    for _ in range(2):
        client.get(url).raise_for_status()
    samples = []
    for _ in range(repeat):
        start = time.perf_counter()
        response = client.get(url)
        samples.append((time.perf_counter() - start) * 1000)
        response.raise_for_status()
    samples.sort()
    return {"median_ms": round(statistics.median(samples), 1),
            "p95_ms": round(samples[max(0, round(0.95 * len(samples)) - 1)], 1)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--jobs", type=int, default=10_000)
    parser.add_argument("--repeat", type=int, default=30)
    parser.add_argument("--database-url", help="an EMPTY database (default: SQLite in a temp dir)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)

    work = Path(tempfile.mkdtemp(prefix="ainode-dashboard-bench-"))
    url = args.database_url or f"sqlite:///{work / 'ainode.sqlite3'}"
    db = JobDatabase(url)
    started = time.perf_counter()
    fill(db, args.jobs)
    fill_s = time.perf_counter() - started
    db.add_user("bench", hash_password(PASSWORD), ["admin"])
    settings = Settings(data_dir=work)
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings, db), host="127.0.0.1", port=port,
                                           log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.05)
    base = f"http://127.0.0.1:{port}"
    results: dict[str, Any] = {"jobs": args.jobs, "database": db.engine.dialect.name,
                               "fill_s": round(fill_s, 1), "repeat": args.repeat, "timings": {}}
    try:
        with httpx.Client(base_url=base, timeout=30, follow_redirects=False) as client:
            form = client.get("/login").text
            token = form.split('name="csrf_token" value="')[1].split('"')[0]
            client.post("/login", data={"username": "bench", "password": PASSWORD,
                                        "csrf_token": token}, follow_redirects=True).raise_for_status()
            last_page = -(-args.jobs // 50)
            for name, path in tqdm((
                ("GET /jobs", "/jobs"),
                ("GET /api/v1/jobs", "/api/v1/jobs"),
                ("GET /jobs?state=failed", "/jobs?state=failed"),
                ("GET /jobs?q=<accession>", f"/jobs?q=A{args.jobs // 2:08d}"),
                (f"GET /jobs?page_number={last_page}", f"/jobs?page_number={last_page}"),
                ("GET /jobs/<id>", f"/jobs/{args.jobs // 2}"),
            ), desc="timing pages", unit="page", disable=None, file=sys.stderr, leave=False):
                results["timings"][name] = time_requests(client, path, args.repeat)
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        db.close()
    if args.json:
        print(json.dumps(results, indent=2))
    else:
        print(f"{args.jobs} jobs in {results['database']} (filled in {results['fill_s']} s); "
              f"{args.repeat} requests each over HTTP on loopback")
        for name, timing in results["timings"].items():
            print(f"  {name:<32} median {timing['median_ms']:>7.1f} ms   p95 {timing['p95_ms']:>7.1f} ms")
    return 0


if __name__ == "__main__":
    sys.exit(main())
