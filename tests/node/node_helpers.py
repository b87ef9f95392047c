"""Helpers of the node tests: pynetdicom C-STORE / C-ECHO and waiting for jobs."""

from __future__ import annotations

import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pydicom
from pynetdicom import AE

from node.local_pacs import OrthancPACS
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


def run_through_serve(
    serve_process: Callable[..., object],
    orthanc: OrthancPACS,
    files: list[Path],
    tmp_path: Path,
    timeout_s: float = 240,
) -> object:
    """Send ``files`` with storescu to a new ``ainode serve``; check the job and its outputs.

    The job must end DONE with SEG, SR and SC; all three must reach ``orthanc``, pass dciodvfy
    with zero errors and lie in the source's study. Returns the job.
    """
    from peers import require_binary, storescu

    from pipelines.validation import run_dciodvfy

    require_binary("storescu")
    require_binary("dciodvfy")
    data_dir = tmp_path / "node"
    node = serve_process(data_dir, send_to=f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}")
    node.start()  # type: ignore[attr-defined]
    result = storescu("127.0.0.1", node.port, "AINODE", files)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stdout + result.stderr
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        (job,) = wait_for_jobs(db, 1, timeout_s=timeout_s)
    finally:
        db.close()
    events = "\n".join(f"  {e.level}: {e.message}" for e in job.events)
    assert job.state == JobState.DONE, f"job {job.id} {job.state} {job.error}\n{events}"
    outputs = {o.kind: o for o in job.outputs}
    assert set(outputs) == {"SEG", "SR", "SC"}
    wanted = {o.sop_instance_uid for o in outputs.values()}
    received = orthanc.wait_for_instances(
        len(wanted), timeout_s=60, predicate=lambda i: i["SOPInstanceUID"] in wanted
    )
    assert {i["SOPInstanceUID"] for i in received} == wanted
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    for instance in received:
        path = tmp_path / f"{instance['SOPInstanceUID']}.dcm"
        path.write_bytes(orthanc.get_instance_file(instance["ID"]))
        report = run_dciodvfy(path)
        assert report.errors == [], f"dciodvfy errors in {instance['SOPClassUID']}: {report.errors}"
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
    return job
