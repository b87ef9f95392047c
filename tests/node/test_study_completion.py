"""Study completion and series selection through a real ``ainode serve`` (issue 15).

A study built from the real head CT (2.5 mm axial, 98 slices): the original series, a 5 mm
slab-averaged reconstruction of it (pairs of slices averaged, new Series and SOP Instance UIDs)
and a one-image localizer, sent with DCMTK ``storescu``. The node waits for the study to be
quiet, routes every series, and runs brain-gwr once, on the thin series; every other series'
job says why it was skipped. A series arriving after the study was processed is re-evaluated
(``late_series``).
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from node_helpers import FINAL_STATES, wait_for_jobs
from pydicom.uid import generate_uid
from realdata_corpus import case_path, dicom_files

from storage.database import JobDatabase
from storage.models import JobState

pytestmark = [pytest.mark.peers, pytest.mark.slow]

PROTOCOL = "brain-gwr"


def _sorted_head() -> list[pydicom.Dataset]:
    datasets = [pydicom.dcmread(p) for p in dicom_files(case_path("head-ct-cranium-axial"))]
    return sorted(datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _write(datasets: list[pydicom.Dataset], folder: Path) -> list[Path]:
    folder.mkdir(parents=True)
    paths = []
    for index, ds in enumerate(datasets):
        path = folder / f"{index:04d}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _thick_copy(thin: list[pydicom.Dataset], folder: Path) -> list[Path]:
    """5 mm slabs: each pair of adjacent 2.5 mm slices averaged into one image."""
    series_uid = generate_uid()
    slabs = []
    for number, (a, b) in enumerate(zip(thin[0::2], thin[1::2], strict=False), start=1):
        ds = a.copy()
        mean = (a.pixel_array.astype(np.float64) + b.pixel_array.astype(np.float64)) / 2
        ds.PixelData = np.round(mean).astype(a.pixel_array.dtype).tobytes()
        ds.SeriesInstanceUID = series_uid
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.SeriesNumber = 4
        ds.InstanceNumber = number
        ds.SliceThickness = 5.0
        ds.ImagePositionPatient = [
            (float(x) + float(y)) / 2 for x, y in zip(a.ImagePositionPatient, b.ImagePositionPatient, strict=True)
        ]
        ds.SliceLocation = float(ds.ImagePositionPatient[2])
        slabs.append(ds)
    return _write(slabs, folder)


def _localizer(thin: list[pydicom.Dataset], folder: Path) -> list[Path]:
    ds = thin[len(thin) // 2].copy()
    ds.SeriesInstanceUID = generate_uid()
    ds.SOPInstanceUID = generate_uid()
    ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
    ds.SeriesNumber = 1
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    return _write([ds], folder)


@pytest.fixture(scope="module")
def head_study(tmp_path_factory: pytest.TempPathFactory) -> dict[str, list[Path]]:
    """The three series of one study, as files: thin, thick, localizer."""
    root = tmp_path_factory.mktemp("head-study")
    thin = _sorted_head()
    return {
        "thin": _write(thin, root / "thin"),
        "thick": _thick_copy(thin, root / "thick"),
        "localizer": _localizer(thin, root / "localizer"),
    }


def _series_uid(files: list[Path]) -> str:
    return str(pydicom.dcmread(files[0], stop_before_pixels=True).SeriesInstanceUID)


def _send(port: int, files: list[Path]) -> None:
    from peers import require_binary, storescu

    require_binary("storescu")
    result = storescu("127.0.0.1", port, "AINODE", files)
    assert result.returncode == 0, result.stdout + result.stderr


def _database(data_dir: Path) -> JobDatabase:
    return JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)


def _jobs_show(data_dir: Path, job_id: int) -> dict[str, object]:
    shown = subprocess.run(
        [sys.executable, "-m", "node", "jobs", "show", str(job_id), "--json",
         "--data-dir", str(data_dir)],
        capture_output=True, text=True, timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    return json.loads(shown.stdout)


def _sr_uid(job: object) -> str:
    (sr,) = [o for o in job.outputs if o.kind == "SR"]  # type: ignore[attr-defined]
    return str(sr.sop_instance_uid)


def test_whole_study_runs_once_on_the_thin_series(
    serve_process: Callable[..., object], head_study: dict[str, list[Path]], tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"
    node = serve_process(data_dir)
    node.start()  # type: ignore[attr-defined]
    # one association, the series interleaved the way a PACS may send them
    files = [*head_study["thick"][:20], *head_study["localizer"], *head_study["thin"],
             *head_study["thick"][20:]]
    _send(node.port, files)  # type: ignore[attr-defined]
    database = _database(data_dir)
    try:
        jobs = wait_for_jobs(database, 3, timeout_s=300)
    finally:
        database.close()
    by_series = {job.series_instance_uid: job for job in jobs}
    thin, thick, scout = (_series_uid(head_study[k]) for k in ("thin", "thick", "localizer"))
    assert set(by_series) == {thin, thick, scout}
    ran = [job for job in jobs if job.protocol == PROTOCOL]
    assert [job.series_instance_uid for job in ran] == [thin]
    events = "\n".join(e.message for e in ran[0].events)
    assert ran[0].state == JobState.DONE, f"{ran[0].error}\n{events}"
    assert ran[0].routing_reason.startswith(f"chosen for {PROTOCOL}: axial ORIGINAL")
    assert "series complete (with its study)" in events
    assert by_series[thick].state == JobState.IGNORED
    assert "5 mm thick" in by_series[thick].routing_reason
    assert "series 3" in by_series[thick].routing_reason  # the thin series' number
    assert by_series[scout].state == JobState.IGNORED
    assert "localizer" in by_series[scout].routing_reason
    # `ainode jobs show` lists every series of the study with its reason
    shown = _jobs_show(data_dir, ran[0].id)
    listed = {entry["series_instance_uid"]: entry for entry in shown["study_series"]}  # type: ignore[union-attr]
    assert set(listed) == {thin, thick, scout}
    assert all(entry["reason"] for entry in listed.values())


@pytest.mark.parametrize("late_series", ["rerun", "ignore"])
def test_a_late_series_that_would_now_be_chosen(
    late_series: str,
    serve_process: Callable[..., object],
    head_study: dict[str, list[Path]],
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AINODE_LATE_SERIES", late_series)
    data_dir = tmp_path / "node"
    node = serve_process(data_dir)
    node.start()  # type: ignore[attr-defined]
    _send(node.port, head_study["thick"])  # type: ignore[attr-defined]
    database = _database(data_dir)
    try:
        (first,) = wait_for_jobs(database, 1, timeout_s=300)
        assert first.protocol == PROTOCOL, first.routing_reason
        assert first.state == JobState.DONE, first.error
        _send(node.port, head_study["thin"])  # type: ignore[attr-defined]
        wanted = (JobState.DONE, JobState.FAILED) if late_series == "rerun" else FINAL_STATES
        jobs = wait_for_jobs(database, 2, timeout_s=300, states=wanted)
        second = jobs[-1]
        assert second.series_instance_uid == _series_uid(head_study["thin"])
        earlier = database.get_job(first.id)
    finally:
        database.close()
    assert earlier is not None
    if late_series == "rerun":
        assert second.state == JobState.DONE, second.error
        assert second.protocol == PROTOCOL
        assert f"its results replace those of job {first.id}" in second.routing_reason
        assert f"superseded by job {second.id}" in earlier.routing_reason
        # one result set per study and protocol: the re-run's SR replaces the first one
        assert _sr_uid(second) == _sr_uid(earlier)
    else:
        assert second.state == JobState.IGNORED
        assert "late_series is ignore" in second.routing_reason
        assert f"job {first.id} keeps its results" in second.routing_reason


def test_route_prints_the_choice_for_every_series_of_a_study_folder(
    head_study: dict[str, list[Path]],
) -> None:
    root = head_study["thin"][0].parent.parent
    routed = subprocess.run(
        [sys.executable, "-m", "node", "route", str(root)],
        capture_output=True, text=True, timeout=120,
    )
    assert routed.returncode == 0, routed.stderr
    lines = {line.split(" ", 1)[0]: line for line in routed.stdout.strip().splitlines()}
    thin, thick, scout = (_series_uid(head_study[k]) for k in ("thin", "thick", "localizer"))
    assert set(lines) == {thin, thick, scout}
    assert f"; chosen for {PROTOCOL}: axial ORIGINAL" in lines[thin]
    assert f"; skipped for {PROTOCOL}: 5 mm thick" in lines[thick]
    assert "-> ignored" in lines[scout] and "localizer" in lines[scout]
    explained = subprocess.run(
        [sys.executable, "-m", "node", "route", "--explain", str(root)],
        capture_output=True, text=True, timeout=120,
    )
    assert "MATCH -> brain-gwr" in explained.stdout
