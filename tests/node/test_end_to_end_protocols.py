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

import pytest
from node_helpers import run_through_serve

from node.local_pacs import OrthancPACS

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def test_chest_ct_phantom_returns_class_volumes(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    from training.phantoms.chest import make_chest_phantom, write_chest_series

    phantom = make_chest_phantom(rows=192, columns=192, pixel_spacing_mm=2.0, seed=3)
    files = write_chest_series(phantom, tmp_path / "series")
    job = run_through_serve(serve_process, orthanc, files, tmp_path)
    assert job.protocol == "chest-respiratory-muscle"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    # The phantom's respiratory muscle is several hundred cm3; the SR carries the class volumes.
    assert results["total_respiratory_muscle_cm3"] > 100, results


def test_real_chest_radiograph_returns_lung_fields(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    data_store = pytest.importorskip("data_store")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / "RG1_UNCI.dcm"
    job = run_through_serve(serve_process, orthanc, [path], tmp_path)
    assert job.protocol == "neonatal-rds"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    assert results.get("rds_classification_performed") is False, results


def test_head_ct_phantom_returns_gwr(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    from training.phantoms.head import make_head_phantom, write_head_series

    phantom = make_head_phantom(seed=3, rotation_deg=(8, -5, 10), shift_mm=(6, -8, 5))
    files = write_head_series(phantom, tmp_path / "series")
    job = run_through_serve(serve_process, orthanc, files, tmp_path)
    assert job.protocol == "brain-gwr"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    # The tolerance: GWR within 0.02 of the phantom's exact value.
    assert abs(results["gwr_bg"] - phantom.expected_gwr) <= 0.02, results
