"""Real scans through the real programs: storescu -> ``ainode serve`` -> Orthanc.

One real case per protocol kind of input from ``../shared/realdata`` (README there: sources and
licences) is sent as a PACS would send it, routed by the default routing table (no protocol is
named), measured, and SEG + SR + SC must come back to Orthanc with zero dciodvfy errors. The
L3 protocol's real single slice takes the same path in ``test_end_to_end.py``. What each
protocol measures on these cases is checked in ``tests/realdata``.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path

import pytest
from node_helpers import run_through_serve
from realdata_corpus import case_path, dicom_files

from node.local_pacs import OrthancPACS

pytestmark = [pytest.mark.peers, pytest.mark.slow]


def _files(name: str) -> list[Path]:
    return [Path(p) for p in dicom_files(case_path(name))]


def test_real_chest_ct_with_per_slice_frames_of_reference(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    """LIDC-IDRI-0314: 275 slices, each with its own Frame of Reference UID, sent as is."""
    job = run_through_serve(serve_process, orthanc, _files("chest-ct-lidc-0314"), tmp_path,
                            timeout_s=420)
    assert job.protocol == "chest-respiratory-muscle"  # type: ignore[attr-defined]
    events = " ".join(e.message for e in job.events)  # type: ignore[attr-defined]
    assert "Frame of Reference" in events, "the repair must be stated in the job log"
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    assert results["total_respiratory_muscle_cm3"] > 100, results


def test_real_chest_radiograph_kept_as_secondary_capture(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    """SIIM: a CR chest radiograph stored as Secondary Capture, Patient's Age '62' (invalid AS)."""
    job = run_through_serve(serve_process, orthanc, _files("chest-cr-siim"), tmp_path)
    assert job.protocol == "neonatal-rds"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    assert results.get("rds_classification_performed") is False, results


def test_real_head_ct(
    serve_process: Callable[..., object], orthanc: OrthancPACS, tmp_path: Path
) -> None:
    """The real head CT (axial 2.5 mm reconstruction, frontal pole out of view)."""
    job = run_through_serve(serve_process, orthanc, _files("head-ct-cranium-axial"), tmp_path,
                            timeout_s=420)
    assert job.protocol == "brain-gwr"  # type: ignore[attr-defined]
    results = json.loads(job.results_json)  # type: ignore[attr-defined]
    assert 1.0 < results["gwr_bg"] < 1.6, results
