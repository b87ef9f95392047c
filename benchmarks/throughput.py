"""Throughput benchmark: jobs per minute with 1 and 2 workers, local runner and Celery runner.

Builds N abdominal CT phantom series (224 x 224; ``--slices 1``: the mid-L3 slice of
``training.phantoms.abdomen``; more: consecutive 5 mm slices around L3), each under its own
Study/Series/SOP Instance UIDs, then for each configuration starts a fresh node (SQLite job
database, no destination, outputs checked with dciodvfy when installed, as in a default node),
sends all N series and waits until every job is done:

- ``local-1`` / ``local-2``: the default local runner with ``workers: 1`` / ``2`` (one spawned
  child process per job);
- ``celery-1`` / ``celery-2``: ``runner: celery`` with 1 / 2 ``ainode worker`` processes on
  loopback (jobs run inside the worker process) and a private RabbitMQ broker started for the
  benchmark (``--broker-url`` uses an existing one instead).

Jobs per minute = N / (last job finished - first job started) x 60, from the job database's
timestamps (ingest and the series quiet period are excluded). Run:

    .venv/bin/python benchmarks/throughput.py [--series 12] [--slices 1] [--configs local-1,local-2,celery-1,celery-2] [--json]

The numbers depend on the machine's cores: record them with the machine they were taken on.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "tests" / "scaleout"))

import pydicom
import yaml
from pydicom.uid import generate_uid
from tqdm import tqdm

FINAL = {"done", "failed", "ignored", "cancelled"}


def make_series(directory: Path, count: int, slices: int = 1) -> list[Path]:
    """``count`` phantom series (fresh UIDs each) of ``slices`` slices; returns the files.

    One slice: the mid-L3 slice. More: ``slices`` consecutive 5 mm slices centred on L3 (the
    phantom spans T10 to the sacrum in max(50, slices) slices).
    """
    from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series

    phantom = make_abdomen_phantom(n_slices=max(50, slices), rows=224, columns=224, seed=3)
    first = max(0, min(phantom.mid_l3_slice - slices // 2, max(50, slices) - slices))
    sources = write_phantom_series(
        phantom, directory / "source", slice_indices=list(range(first, first + slices))
    )
    templates = [pydicom.dcmread(source) for source in sources]
    files = []
    for index in range(count):
        study, series = generate_uid(), generate_uid()
        for number, template in enumerate(templates):
            ds = template.copy()
            ds.Manufacturer = "PHANTOM"  # "ainode" (the phantom's) is never re-analysed
            ds.StudyInstanceUID = study
            ds.SeriesInstanceUID = series
            ds.SOPInstanceUID = generate_uid()
            ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
            path = directory / f"series{index:03d}" / f"{number:03d}.dcm"
            path.parent.mkdir(parents=True, exist_ok=True)
            ds.save_as(path, enforce_file_format=True)
            files.append(path)
    return files


def send(files: list[Path], port: int) -> None:
    """C-STORE every file, over one association while it lasts (re-associating on an abort)."""
    from pynetdicom import AE

    datasets = [pydicom.dcmread(f) for f in files]
    ae = AE(ae_title="BENCH")
    ae.add_requested_context(datasets[0].SOPClassUID, [str(datasets[0].file_meta.TransferSyntaxUID)])
    assoc = None
    for ds in datasets:
        for _attempt in range(3):
            if assoc is None or not assoc.is_established:
                assoc = ae.associate("127.0.0.1", port, ae_title="AINODE")
                if not assoc.is_established:
                    continue
            status = assoc.send_c_store(ds)
            if "Status" in status:  # an empty response: the association was aborted
                if int(status.Status) != 0:
                    raise RuntimeError(f"C-STORE failed: 0x{int(status.Status):04X}")
                break
        else:
            raise RuntimeError(f"could not C-STORE to the node on port {port}")
    if assoc is not None and assoc.is_established:
        assoc.release()


def start_workers(
    config: Path, count: int, log_dir: Path, broker_url: str, queue: str
) -> list[subprocess.Popen[bytes]]:
    """Start ``count`` ``ainode worker`` processes; wait until all consume from ``queue``."""
    from kombu import Connection

    processes = []
    for index in range(count):
        log = log_dir / f"worker{index}.log"
        processes.append(
            subprocess.Popen(
                [sys.executable, "-m", "node", "worker", "--config", str(config)],
                stdout=log.open("wb"),
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=ROOT,
            )
        )
    deadline = time.monotonic() + 90
    with Connection(broker_url) as connection:
        while time.monotonic() < deadline:
            channel = connection.channel()
            consumers = 0
            # The queue does not exist before a worker declares it (404 closes the channel).
            with contextlib.suppress(Exception):
                consumers = channel.queue_declare(queue=queue, passive=True)[2]
            with contextlib.suppress(Exception):
                channel.close()
            if consumers >= count:
                return processes
            time.sleep(0.3)
    raise RuntimeError(
        "workers did not start: " + (log_dir / "worker0.log").read_text(errors="replace")[-2000:]
    )


def run_config(name: str, files: list[Path], work: Path, broker_url: str | None) -> dict[str, Any]:
    """Run one configuration; returns its measurements."""
    from node.config import Settings
    from node.local_pacs import find_free_port
    from node.server import Node

    series_count = len({f.parent for f in files})
    runner, workers = name.split("-")
    count = int(workers)
    data_dir = work / name
    values: dict[str, Any] = {
        "data_dir": str(data_dir),
        "quiet_seconds": 1.0,
        "runner": runner,
        "workers": count if runner == "local" else 1,
        "log_level": "WARNING",
    }
    if runner == "celery":
        values["celery"] = {"broker_url": broker_url, "default_queue": f"bench-{os.getpid()}-{name}"}
    config = work / f"{name}.yaml"
    config.write_text(yaml.safe_dump(values))
    processes: list[subprocess.Popen[bytes]] = []
    node = Node(Settings(**values, host="127.0.0.1", port=find_free_port()))
    node.start()
    try:
        if runner == "celery":
            data_dir.mkdir(parents=True, exist_ok=True)
            processes = start_workers(
                config, count, data_dir, str(broker_url), values["celery"]["default_queue"]
            )
        t0 = time.monotonic()
        send(files, node.scp.port)
        deadline = time.monotonic() + 60 * 30
        while time.monotonic() < deadline:
            jobs = node.database.list_jobs(limit=series_count + 10)
            if len(jobs) == series_count and all(str(j.state) in FINAL for j in jobs):
                break
            time.sleep(0.2)
        else:
            raise RuntimeError(f"{name}: jobs did not finish")
        wall_s = time.monotonic() - t0
        failed = [f"{j.id}: {j.error}" for j in jobs if str(j.state) != "done"]
        first_start = min(j.started_at for j in jobs if j.started_at is not None)
        last_end = max(j.finished_at for j in jobs if j.finished_at is not None)
        processing_s = (last_end - first_start).total_seconds()
        durations = sorted(
            (j.finished_at - j.started_at).total_seconds()
            for j in jobs
            if j.started_at is not None and j.finished_at is not None
        )
        return {
            "config": name,
            "jobs": len(jobs),
            "failed": failed,
            "processing_s": round(processing_s, 2),
            "jobs_per_minute": round(len(jobs) / processing_s * 60, 1),
            "median_job_s": round(durations[len(durations) // 2], 2),
            "wall_s_from_first_c_store": round(wall_s, 2),
        }
    finally:
        node.stop()
        for process in processes:
            if process.poll() is None:
                os.killpg(process.pid, signal.SIGTERM)
                try:
                    process.wait(timeout=20)
                except subprocess.TimeoutExpired:
                    os.killpg(process.pid, signal.SIGKILL)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--series", type=int, default=12, help="series (= jobs) per configuration")
    parser.add_argument("--slices", type=int, default=1, help="slices per series (1 = mid-L3)")
    parser.add_argument("--configs", default="local-1,local-2,celery-1,celery-2")
    parser.add_argument("--broker-url", help="existing RabbitMQ (default: start a private one)")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    configs = [c.strip() for c in args.configs.split(",") if c.strip()]
    work = Path(tempfile.mkdtemp(prefix="ainode-throughput-"))
    broker = None
    try:
        files = make_series(work / "series", args.series, args.slices)
        broker_url = args.broker_url
        if any(c.startswith("celery") for c in configs) and not broker_url:
            from scaleout_helpers import start_rabbitmq

            broker = start_rabbitmq()
            broker_url = broker.url
        results = []
        for name in tqdm(configs, desc="configurations", unit="config", disable=None,
                         file=sys.stderr, leave=False):
            results.append(run_config(name, files, work, broker_url))
            print(json.dumps(results[-1]), file=sys.stderr, flush=True)
    finally:
        if broker is not None:
            broker.stop()
        shutil.rmtree(work, ignore_errors=True)
    if args.json:
        print(json.dumps({"cpus": os.cpu_count(), "slices": args.slices, "results": results}, indent=2))
    else:
        print(
            f"{args.series} phantom series of {args.slices} slice(s) per configuration, "
            f"{os.cpu_count()} CPUs"
        )
        print("| configuration | jobs/min | median job (s) | processing (s) | failed |")
        print("|---|---|---|---|---|")
        for r in results:
            print(
                f"| {r['config']} | {r['jobs_per_minute']} | {r['median_job_s']} | "
                f"{r['processing_s']} | {len(r['failed'])} |"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
