"""Helpers of the node tests: pynetdicom C-STORE / C-ECHO and waiting for jobs."""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from storage.database import JobDatabase
from storage.models import JobState

FINAL_STATES = (JobState.DONE, JobState.FAILED, JobState.IGNORED)


def c_store(
    path_or_ds: Any, port: int, ae_title: str = "AINODE", calling: str = "TESTSCU", raw: bool = False
) -> int:
    """C-STORE one file or dataset to 127.0.0.1:port with pynetdicom; returns the status.

    With ``raw`` a file's bytes are sent as they are: pynetdicom sends a path without decoding
    the dataset (used to send truncated files).
    """
    ds = (
        pydicom.dcmread(path_or_ds, stop_before_pixels=raw)
        if isinstance(path_or_ds, (str, Path))
        else path_or_ds
    )
    ae = AE(ae_title=calling)
    ae.add_requested_context(ds.SOPClassUID, [str(ds.file_meta.TransferSyntaxUID)])
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    assert assoc.is_established, f"association with the node on port {port} failed"
    status = assoc.send_c_store(path_or_ds if raw else ds)
    assoc.release()
    return int(status.Status)


def c_echo(port: int, ae_title: str = "AINODE", calling: str = "TESTSCU") -> int | None:
    """C-ECHO 127.0.0.1:port; returns the status, or None when no association was possible."""
    ae = AE(ae_title=calling)
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title=ae_title)
    if not assoc.is_established:
        return None
    status = assoc.send_c_echo()
    assoc.release()
    return int(status.Status) if status else None


def wait_for_jobs(
    db: JobDatabase, count: int, timeout_s: float = 120, states: tuple[JobState, ...] = FINAL_STATES
) -> list[Any]:
    """Wait until ``count`` jobs are in one of ``states``; returns them (oldest first)."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [j for j in db.list_jobs(limit=500) if j.state in states]
        if len(jobs) >= count:
            return [db.get_job(j.id) for j in sorted(jobs, key=lambda j: j.id)]
        time.sleep(0.3)
    summary = [(j.id, str(j.state), j.error) for j in db.list_jobs(limit=20)]
    raise AssertionError(f"timed out waiting for {count} job(s) in {states}: {summary}")

