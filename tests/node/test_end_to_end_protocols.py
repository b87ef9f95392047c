"""Each new protocol through the real programs: storescu -> ``ainode serve`` -> Orthanc.

The acceptance path of the protocol issues: a series sent with DCMTK's storescu to a running
``ainode serve`` is routed by the default routing table, measured, and SEG + SR + SC come back to
a real Orthanc, each with zero dciodvfy errors.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from node_helpers import wait_for_jobs
from peers import require_binary, storescu

from node.local_pacs import OrthancPACS
from pipelines.validation import run_dciodvfy
from storage.database import JobDatabase
from storage.models import JobState

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _run_through_serve(
    serve_process: Callable[..., object],
    orthanc: OrthancPACS,
    files: list[Path],
    tmp_path: Path,
) -> object:
    require_binary("storescu")
    require_binary("dciodvfy")
    data_dir = tmp_path / "node"
    node = serve_process(data_dir, send_to=f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}")
    node.start()  # type: ignore[attr-defined]
    result = storescu("127.0.0.1", node.port, "AINODE", files)  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stdout + result.stderr
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        (job,) = wait_for_jobs(db, 1, timeout_s=240)
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


def test_chest_ct_phantom_returns_class_volumes(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    from training.phantoms.chest import make_chest_phantom, write_chest_series

    phantom = make_chest_phantom(rows=192, columns=192, pixel_spacing_mm=2.0, seed=3)
    files = write_chest_series(phantom, tmp_path / "series")
    job = _run_through_serve(serve_process, orthanc, files, tmp_path)
    assert job.protocol == "chest-respiratory-muscle"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    # The phantom's respiratory muscle is several hundred cm3; the SR carries the class volumes.
    assert results["total_respiratory_muscle_cm3"] > 100, results


def test_real_chest_radiograph_returns_lung_fields(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    data_store = pytest.importorskip("data_store")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / "RG1_UNCI.dcm"
    job = _run_through_serve(serve_process, orthanc, [path], tmp_path)
    assert job.protocol == "neonatal-rds"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    assert results.get("rds_classification_performed") is False, results


def test_head_ct_phantom_returns_gwr(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    from training.phantoms.head import make_head_phantom, write_head_series

    phantom = make_head_phantom(seed=3, rotation_deg=(8, -5, 10), shift_mm=(6, -8, 5))
    files = write_head_series(phantom, tmp_path / "series")
    job = _run_through_serve(serve_process, orthanc, files, tmp_path)
    assert job.protocol == "brain-gwr"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    # The tolerance: GWR within 0.02 of the phantom's exact value.
    assert abs(results["gwr_bg"] - phantom.expected_gwr) <= 0.02, results
