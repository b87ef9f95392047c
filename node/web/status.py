"""Node status for the dashboard's node page and ``GET /api/v1/node``.

Everything comes from the job database and the dashboard host; the dashboard never talks to the
node process, so "workers" are the jobs the database shows running (with the worker name and
lease each claim recorded), and the GPU line is what ``nvidia-smi`` shows on the dashboard host.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import subprocess
import threading
import time
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from storage.models import utcnow

_STORE_SIZE_TTL_S = 60.0
_STORE_WALK_BUDGET_S = 2.0
_GPU_TTL_S = 10.0


def software_version() -> str:
    """Installed version of ainode."""
    try:
        return version("ainode")
    except PackageNotFoundError:
        return "0+unknown"


class _Cached:
    def __init__(self, ttl_s: float) -> None:
        self.ttl_s = ttl_s
        self.value: Any = None
        self.at = -1e18
        self.lock = threading.Lock()

    def get(self, compute: Any) -> Any:
        with self.lock:
            if time.monotonic() - self.at > self.ttl_s:
                self.value = compute()
                self.at = time.monotonic()
            return self.value


_store_size = _Cached(_STORE_SIZE_TTL_S)
_gpu = _Cached(_GPU_TTL_S)


def directory_size(root: Path, budget_s: float = _STORE_WALK_BUDGET_S) -> tuple[int, int, bool]:
    """Bytes and files under ``root``; stops after ``budget_s`` (then ``complete`` is False)."""
    total = files = 0
    deadline = time.monotonic() + budget_s
    stack = [root]
    while stack:
        if time.monotonic() > deadline:
            return total, files, False
        try:
            with os.scandir(stack.pop()) as entries:
                for entry in entries:
                    if entry.is_dir(follow_symlinks=False):
                        stack.append(Path(entry.path))
                    elif entry.is_file(follow_symlinks=False):
                        total += entry.stat(follow_symlinks=False).st_size
                        files += 1
        except OSError:
            continue
    return total, files, True


def disk_status(data_dir: Path) -> dict[str, Any]:
    """Free space of the data directory's file system and the size of the instance store."""
    result: dict[str, Any] = {"data_dir": str(data_dir)}
    try:
        usage = shutil.disk_usage(data_dir)
        result.update(total_bytes=usage.total, used_bytes=usage.used, free_bytes=usage.free)
    except OSError as exc:
        result["error"] = f"cannot read {data_dir} from the dashboard host: {exc.strerror or exc}"
        return result
    size, files, complete = _store_size.get(lambda: directory_size(data_dir / "instances"))
    result.update(instance_store_bytes=size, instance_store_files=files,
                  instance_store_size_complete=complete)
    return result


def gpu_status() -> list[dict[str, Any]] | str:
    """GPUs seen by ``nvidia-smi`` on the dashboard host, or a sentence saying why none."""

    def query() -> list[dict[str, Any]] | str:
        binary = shutil.which("nvidia-smi")
        if binary is None:
            return "no NVIDIA GPU visible on the dashboard host (nvidia-smi not found)"
        try:
            out = subprocess.run(
                [binary, "--query-gpu=index,name,utilization.gpu,memory.used,memory.total",
                 "--format=csv,noheader,nounits"],
                capture_output=True, text=True, timeout=3, check=True,
            ).stdout
        except (OSError, subprocess.SubprocessError) as exc:
            return f"nvidia-smi failed: {exc}"
        gpus = []
        for line in out.strip().splitlines():
            parts = [p.strip() for p in line.split(",")]
            if len(parts) == 5:
                gpus.append({"index": parts[0], "name": parts[1], "utilization_percent": parts[2],
                             "memory_used_mib": parts[3], "memory_total_mib": parts[4]})
        return gpus or "nvidia-smi lists no GPU"

    return _gpu.get(query)


def protocol_status(database: Any) -> list[dict[str, Any]]:
    """Protocols this version knows, with the algorithm (and its version) last used for each."""
    from pipelines.registry import PROTOCOLS

    algorithms = database.latest_algorithm_by_protocol()
    return [
        {
            "name": spec.name,
            "title": spec.title,
            "modalities": list(spec.modalities),
            "implemented": spec.implemented,
            "last_algorithm": algorithms.get(spec.name),
        }
        for spec in PROTOCOLS.values()
    ]


def node_status(settings: Any, database: Any) -> dict[str, Any]:
    """Everything on the node page."""
    now = utcnow()
    running = database.running_jobs()
    workers = [
        {
            "worker": job.worker,
            "job_id": job.id,
            "protocol": job.protocol,
            "started_at": job.started_at.isoformat(timespec="seconds") + "Z" if job.started_at else None,
            "lease_expires_at": (
                job.lease_expires_at.isoformat(timespec="seconds") + "Z"
                if job.lease_expires_at else None
            ),
            "lease_expired": bool(job.lease_expires_at and job.lease_expires_at < now),
        }
        for job in running
    ]
    from storage.database import redact_url

    return {
        "version": software_version(),
        "ae_title": settings.ae_title,
        "database": redact_url(settings.resolved_database_url),
        "jobs_by_state": database.count_jobs_by_state(),
        "queue_depth_by_protocol": database.queue_depth_by_protocol(),
        "associations_last_hour": database.association_counts(now - dt.timedelta(hours=1)),
        "workers": workers,
        "configured_workers": settings.workers,
        "protocols": protocol_status(database),
        "gpu": gpu_status(),
        "disk": disk_status(Path(settings.data_dir)),
        "generated_at": now.isoformat(timespec="seconds") + "Z",
    }
