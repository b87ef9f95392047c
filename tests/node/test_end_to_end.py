"""End to end with real peers: storescu -> ainode -> Orthanc, dciodvfy on every object returned.

Also: re-sent series replace rather than duplicate, a PACS that is down, bad input, and
``kill -9`` of ``ainode serve`` while a job runs or right after an acknowledgement.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path

import pydicom
import pytest
from node_helpers import c_echo, c_store, wait_for_jobs
from peers import require_binary, storescu
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    JPEGLSLossless,
    RLELossless,
    generate_uid,
)

from node.config import Destination
from node.local_pacs import OrthancPACS, find_free_port
from node.server import Node
from pipelines.validation import run_dciodvfy
from storage.database import JobDatabase
from storage.models import JobState

pytestmark = pytest.mark.peers

DERIVED_KINDS = {"SEG", "SR", "SC"}


def _destination(pacs: OrthancPACS) -> Destination:
    return Destination(ae_title=pacs.ae_title, host=pacs.host, port=pacs.port)


def _describe(job: object) -> str:
    events = "\n".join(f"  {e.level}: {e.message}" for e in job.events)  # type: ignore[attr-defined]
    return f"job {job.id} {job.state} error={job.error}\n{events}"  # type: ignore[attr-defined]


def _check_outputs_in_pacs(job: object, pacs: OrthancPACS, source: Dataset, tmp_path: Path) -> None:
    """The PACS holds SEG, SR and SC of the job; each passes dciodvfy and joins the study."""
    outputs = {o.kind: o for o in job.outputs}  # type: ignore[attr-defined]
    assert set(outputs) == DERIVED_KINDS
    for output in outputs.values():
        assert [s.state for s in output.sends] == ["sent"]
    wanted = {o.sop_instance_uid for o in outputs.values()}
    received = pacs.wait_for_instances(
        len(wanted), timeout_s=30, predicate=lambda i: i["SOPInstanceUID"] in wanted
    )
    assert {i["SOPInstanceUID"] for i in received} == wanted
    for instance in received:
        path = tmp_path / f"{instance['SOPInstanceUID']}.dcm"
        path.write_bytes(pacs.get_instance_file(instance["ID"]))
        report = run_dciodvfy(path)
        assert report.errors == [], f"dciodvfy errors in {instance['SOPClassUID']}: {report.errors}"
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID


def _recode(source: Path, transfer_syntax: str | None, target: Path) -> Path:
    ds = pydicom.dcmread(source)
    if transfer_syntax is not None:
        ds.decompress()
        if transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax)
    ds.save_as(target, enforce_file_format=True)
    return target


@pytest.mark.parametrize(
    "transfer_syntax",
    [None, ExplicitVRLittleEndian, RLELossless, JPEGLSLossless],
    ids=["jpeg2000-as-received", "explicit-le", "rle", "jpeg-ls"],
)
def test_storescu_real_slice_returns_seg_sr_sc_to_orthanc(
    make_node: Callable[..., Node],
    orthanc: OrthancPACS,
    real_ct_slice_dcmtk_path: Path,
    tmp_path: Path,
    transfer_syntax: str | None,
) -> None:
    require_binary("storescu")
    require_binary("dciodvfy")
    node = make_node([_destination(orthanc)])
    source_path = _recode(real_ct_slice_dcmtk_path, transfer_syntax, tmp_path / "ct.dcm")
    result = storescu("127.0.0.1", node.scp.port, "AINODE", [source_path])
    assert result.returncode == 0, result.stdout + result.stderr
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.DONE, _describe(job)
    assert job.protocol == "l3-body-composition"
    results = json.loads(job.results_json)
    # A real upper-abdominal slice: plausible adult values, and the level is not verified.
    assert 60 < results["sma_cm2"] < 250
    assert -10 < results["muscle_mean_hu"] < 80
    assert results["level_verified"] is False
    source = pydicom.dcmread(source_path, stop_before_pixels=True)
    _check_outputs_in_pacs(job, orthanc, source, tmp_path)


def test_resent_series_replaces_outputs_instead_of_duplicating(
    make_node: Callable[..., Node], orthanc: OrthancPACS, real_ct_slice_path: Path
) -> None:
    node = make_node([_destination(orthanc)])
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (first,) = wait_for_jobs(node.database, 1)
    assert first.state == JobState.DONE, _describe(first)
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    jobs = wait_for_jobs(node.database, 2)
    assert jobs[1].state == JobState.DONE, _describe(jobs[1])
    first_uids = sorted(o.sop_instance_uid for o in jobs[0].outputs)
    second_uids = sorted(o.sop_instance_uid for o in jobs[1].outputs)
    assert first_uids == second_uids
    derived = [i for i in orthanc.instances() if i["Modality"] in ("SEG", "SR", "OT")]
    assert len(derived) == 3


def test_pacs_down_fails_cleanly_then_retry_sends(
    make_node: Callable[..., Node], real_ct_slice_path: Path, tmp_path: Path
) -> None:
    pacs_port = find_free_port()
    down = Destination(ae_title="ORTHANC", host="127.0.0.1", port=pacs_port)
    node = make_node([down], send_max_attempts=2, send_backoff_seconds=0.2)
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.FAILED, _describe(job)
    assert "send(s) failed" in job.error and "jobs retry" in job.error
    assert all(s.state == "failed" for o in job.outputs for s in o.sends)
    assert any("association with ORTHANC@127.0.0.1" in e.message for e in job.events)
    assert c_echo(node.scp.port) == 0  # the node keeps serving
    with OrthancPACS(tmp_path / "pacs", dicom_port=pacs_port) as pacs:
        node.database.retry_job(job.id)
        node.senders[0].wake.set()
        (job,) = wait_for_jobs(node.database, 1, states=(JobState.DONE,))
        source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
        _check_outputs_in_pacs(job, pacs, source, tmp_path)


def _non_image_sr() -> Dataset:
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = "1.2.840.10008.5.1.4.1.1.88.11"  # Basic Text SR
    ds.SOPInstanceUID = generate_uid()
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.Modality = "SR"
    ds.PatientID = "NONIMAGE"
    ds.ValueType = "CONTAINER"
    ds.ContinuityOfContent = "SEPARATE"
    return ds


def test_bad_input_gives_clear_reasons_and_the_node_keeps_serving(
    make_node: Callable[..., Node], real_ct_slice_path: Path
) -> None:
    node = make_node()
    # 1. Truncated pixel data (half the bytes of an uncompressed slice).
    truncated = pydicom.dcmread(real_ct_slice_path)
    truncated.decompress()
    truncated.SOPInstanceUID = generate_uid()
    truncated.SeriesInstanceUID = generate_uid()
    truncated.PixelData = truncated.PixelData[: len(truncated.PixelData) // 2]
    assert c_store(truncated, node.scp.port) == 0
    # 2. A non-image object.
    assert c_store(_non_image_sr(), node.scp.port) == 0
    # 3. Wrong modality: an abdominal CT relabelled MR.
    wrong = pydicom.dcmread(real_ct_slice_path)
    wrong.SOPInstanceUID, wrong.SeriesInstanceUID = generate_uid(), generate_uid()
    wrong.Modality = "MR"
    assert c_store(wrong, node.scp.port) == 0
    jobs = {j.series_instance_uid: j for j in wait_for_jobs(node.database, 3)}
    truncated_job = jobs[str(truncated.SeriesInstanceUID)]
    assert truncated_job.state == JobState.FAILED, _describe(truncated_job)
    assert "Pixel Data is truncated" in truncated_job.error
    sr_job = jobs[[uid for uid in jobs if uid not in (truncated.SeriesInstanceUID, wrong.SeriesInstanceUID)][0]]
    assert sr_job.state == JobState.IGNORED and sr_job.routing_reason
    mr_job = jobs[str(wrong.SeriesInstanceUID)]
    assert mr_job.state == JobState.IGNORED and "MR" in mr_job.routing_reason
    assert c_echo(node.scp.port) == 0


def _job_states(db_path: Path) -> list[tuple[int, str]]:
    db = JobDatabase(f"sqlite:///{db_path}", migrate_schema=False)
    try:
        return [(j.id, str(j.state)) for j in db.list_jobs()]
    finally:
        db.close()


def test_kill_9_while_a_job_runs_then_restart_completes_it(
    serve_process: Callable[..., object],
    orthanc: OrthancPACS,
    real_ct_slice_path: Path,
    tmp_path: Path,
) -> None:
    data_dir = tmp_path / "node"
    node = serve_process(data_dir, send_to=f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}")
    node.start()  # type: ignore[attr-defined]
    assert c_store(real_ct_slice_path, node.port) == 0  # type: ignore[attr-defined]
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if any(state == "running" for _, state in _job_states(data_dir / "ainode.sqlite3")):
            break
        time.sleep(0.05)
    else:
        pytest.fail(f"the job never ran: {_job_states(data_dir / 'ainode.sqlite3')}")
    node.kill9()  # type: ignore[attr-defined]
    assert _job_states(data_dir / "ainode.sqlite3")[0][1] == "running"
    node.start()  # type: ignore[attr-defined]
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        (job,) = wait_for_jobs(db, 1)
        assert job.state == JobState.DONE, _describe(job)
        assert any("resumed" in e.message for e in job.events)
    finally:
        db.close()
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    _check_outputs_in_pacs(job, orthanc, source, tmp_path)


def test_kill_9_right_after_acknowledgement_loses_nothing(
    serve_process: Callable[..., object], real_ct_slice_path: Path, tmp_path: Path
) -> None:
    data_dir = tmp_path / "node"
    node = serve_process(data_dir)
    node.start()  # type: ignore[attr-defined]
    assert c_store(real_ct_slice_path, node.port) == 0  # type: ignore[attr-defined]
    node.kill9()  # type: ignore[attr-defined]
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    stored = (
        data_dir / "instances" / source.StudyInstanceUID / source.SeriesInstanceUID
        / f"{source.SOPInstanceUID}.dcm"
    )
    assert pydicom.dcmread(stored).SOPInstanceUID == source.SOPInstanceUID
    node.start()  # type: ignore[attr-defined]
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        (job,) = wait_for_jobs(db, 1)
        assert job.state == JobState.DONE, _describe(job)
        assert job.instance_count == 1
    finally:
        db.close()


def test_a_job_over_its_time_limit_is_killed_and_failed(
    make_node: Callable[..., Node], real_ct_slice_path: Path
) -> None:
    # 0.5 s is less than a worker process needs to start: the job must time out.
    node = make_node(job_timeout_seconds=0.5)
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.FAILED, _describe(job)
    assert "timed out after 0.5 s" in job.error
    assert c_echo(node.scp.port) == 0


def test_node_with_postgresql_job_database(
    request: pytest.FixtureRequest,
    make_node: Callable[..., Node],
    orthanc: OrthancPACS,
    real_ct_slice_path: Path,
    tmp_path: Path,
) -> None:
    from pg_server import postgres_url_or_skip

    node = make_node([_destination(orthanc)], database_url=postgres_url_or_skip(request))
    assert node.database.engine.dialect.name == "postgresql"
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.DONE, _describe(job)
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    _check_outputs_in_pacs(job, orthanc, source, tmp_path)


def test_storescu_to_ainode_serve_returns_results_to_orthanc(
    serve_process: Callable[..., object],
    orthanc: OrthancPACS,
    real_ct_slice_dcmtk_path: Path,
    tmp_path: Path,
) -> None:
    """The issue's acceptance path with the real programs: storescu -> `ainode serve` -> Orthanc."""
    require_binary("storescu")
    data_dir = tmp_path / "node"
    node = serve_process(data_dir, send_to=f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}")
    node.start()  # type: ignore[attr-defined]
    result = storescu("127.0.0.1", node.port, "AINODE", [real_ct_slice_dcmtk_path])  # type: ignore[attr-defined]
    assert result.returncode == 0, result.stdout + result.stderr
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        (job,) = wait_for_jobs(db, 1)
    finally:
        db.close()
    assert job.state == JobState.DONE, _describe(job)
    source = pydicom.dcmread(real_ct_slice_dcmtk_path, stop_before_pixels=True)
    assert source.file_meta.TransferSyntaxUID == "1.2.840.10008.1.2.4.90"  # JPEG 2000 lossless
    _check_outputs_in_pacs(job, orthanc, source, tmp_path)


def test_truncated_file_is_acknowledged_then_failed_with_a_reason(
    make_node: Callable[..., Node], real_ct_slice_path: Path, tmp_path: Path
) -> None:
    """A file cut short on disk, sent as raw bytes (pynetdicom sends files without decoding)."""
    ds = pydicom.dcmread(real_ct_slice_path)
    ds.decompress()
    ds.SOPInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    whole = tmp_path / "whole.dcm"
    ds.save_as(whole, enforce_file_format=True)
    cut = tmp_path / "cut.dcm"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size - 200_000])
    node = make_node()
    assert c_store(cut, node.scp.port, raw=True) == 0  # stored as received ...
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.FAILED, _describe(job)  # ... and failed with the reason
    assert "truncated" in job.error
    assert c_echo(node.scp.port) == 0
