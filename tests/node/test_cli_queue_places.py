"""`ainode jobs list/show` print each queued job's projected place, priority and wait."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from storage.database import InstanceRecord, JobDatabase
from storage.models import utcnow


def _queue(db: JobDatabase, series: str, caller: str, priority: str) -> int:
    db.record_instances(
        [
            InstanceRecord(
                sop_instance_uid=f"{series}.1",
                study_instance_uid="1.2",
                series_instance_uid=series,
                sop_class_uid="1.2.840.10008.5.1.4.1.1.2",
                transfer_syntax_uid="1.2.840.10008.1.2.1",
                modality="CT",
                path=f"/store/{series}.dcm",
                calling_ae_title=caller,
                received_at=utcnow(),
            )
        ]
    )
    (job_id,) = db.complete_quiet_series(0)
    db.set_routing(job_id, protocol="brain-gwr", rule="r", reason="r", priority=priority)
    return job_id


def _ainode(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=120
    )


def test_jobs_list_and_show_give_queue_places(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    data_dir.mkdir()
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}")
    try:
        routine = [_queue(db, f"1.2.3.{i}", "RESEARCH", "routine") for i in range(2)]
        urgent = _queue(db, "1.2.3.9", "CT_ER", "urgent")
    finally:
        db.close()
    listed = _ainode("jobs", "list", "--data-dir", str(data_dir), "--json")
    assert listed.returncode == 0, listed.stderr
    by_id = {job["id"]: job for job in json.loads(listed.stdout)}
    assert by_id[urgent]["queue_position"] == 1 and by_id[urgent]["priority"] == "urgent"
    assert [by_id[j]["queue_position"] for j in routine] == [2, 3]
    assert all(job["queued"] == 3 and job["waiting_seconds"] >= 0 for job in by_id.values())
    table = _ainode("jobs", "list", "--data-dir", str(data_dir)).stdout
    assert "#1 of 3 (urgent, waiting" in table
    shown = _ainode("jobs", "show", str(routine[1]), "--data-dir", str(data_dir))
    assert shown.returncode == 0, shown.stderr
    assert "#3 of 3 (routine, waiting" in shown.stdout
