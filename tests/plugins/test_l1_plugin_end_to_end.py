"""The L1 plug-in installed from ``examples/`` and run end to end, without a line of the core
naming it.

* ``ainode serve`` (a subprocess whose ``PYTHONPATH`` holds the plug-in's install folder) with a
  routing table that sends axial CT to ``l1-trabecular-attenuation``: storescu sends a phantom
  series, the node runs the job and sends SEG + SR + SC to Orthanc; each passes dciodvfy with
  zero errors and the SR carries the measured mean HU.
* The plug-in shows in the core's listings: the registry, ``ainode route`` with the shipped
  default table (its rule fires only for a series whose description asks for bone density),
  ``ainode models list``, ``ainode train --help`` and the dashboard's protocol list.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pydicom
import pytest
import yaml
from pynetdicom import AE

from node.local_pacs import OrthancPACS, find_free_port
from peers import require_binary, storescu
from pipelines.validation import run_dciodvfy
from storage.database import JobDatabase
from storage.models import JobState
from training.phantoms.abdomen import AbdomenPhantom, make_abdomen_phantom, write_phantom_series

PROTOCOL = "l1-trabecular-attenuation"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"
COMPREHENSIVE_3D_SR = "1.2.840.10008.5.1.4.1.1.88.34"
SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return make_abdomen_phantom(seed=31, cancellous_bone_hu=100.0, cortical_bone_hu=350.0)


def _ainode(env: dict[str, str], *args: str, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          env=env, timeout=timeout, check=False)


def _echo(port: int) -> bool:
    ae = AE(ae_title="TESTSCU")
    ae.add_requested_context("1.2.840.10008.1.1")
    ae.acse_timeout = ae.network_timeout = 5
    assoc = ae.associate("127.0.0.1", port, ae_title="AINODE")
    if not assoc.is_established:
        return False
    status = assoc.send_c_echo()
    assoc.release()
    return bool(status) and int(status.Status) == 0


@pytest.fixture
def serve(tmp_path: Path, plugin_env: dict[str, str]) -> Iterator[list[subprocess.Popen[bytes]]]:
    processes: list[subprocess.Popen[bytes]] = []
    yield processes
    for process in processes:
        if process.poll() is None:
            process.send_signal(signal.SIGTERM)
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait(timeout=10)


def _wait_for_job(db: JobDatabase, timeout_s: float) -> object:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        jobs = [j for j in db.list_jobs(limit=10)
                if j.state in (JobState.DONE, JobState.FAILED, JobState.IGNORED)]
        if jobs:
            return db.get_job(jobs[0].id)
        time.sleep(0.5)
    raise AssertionError(f"no finished job after {timeout_s} s: {db.list_jobs(limit=10)}")


@pytest.mark.peers
@pytest.mark.slow
def test_serve_routes_runs_and_sends_valid_seg_sr_sc(
    phantom: AbdomenPhantom, tmp_path: Path, plugin_env: dict[str, str], orthanc: OrthancPACS,
    serve: list[subprocess.Popen[bytes]],
) -> None:
    require_binary("storescu")
    require_binary("dciodvfy")
    files = write_phantom_series(phantom, tmp_path / "series",
                                 series_description="CT abdomen axial")
    config = tmp_path / "ainode.yaml"
    config.write_text(yaml.safe_dump({
        "routing_rules": [
            {"name": "ainode-output", "protocol": None, "description": "our own output",
             "match": {"series_description": r"^\s*ainode"}},
            {"name": "l1-screening", "protocol": PROTOCOL,
             "description": "this site screens every axial CT for L1 attenuation",
             "match": {"modality": ["CT"], "orientation": ["axial"]}},
        ],
        "protocol_parameters": {PROTOCOL: {"threshold_hu": 160}},
    }), encoding="utf-8")
    checked = _ainode(plugin_env, "check-config", str(config))
    assert checked.returncode == 0, checked.stdout + checked.stderr

    port = find_free_port()
    data_dir = tmp_path / "node"
    log = tmp_path / "serve.log"
    process = subprocess.Popen(
        [sys.executable, "-m", "node", "serve", "--config", str(config), "--data-dir",
         str(data_dir), "--port", str(port), "--host", "127.0.0.1", "--quiet-seconds", "1",
         "--send-to", f"{orthanc.ae_title}@127.0.0.1:{orthanc.port}"],
        stdout=log.open("ab"), stderr=subprocess.STDOUT, env=plugin_env, start_new_session=True,
    )
    serve.append(process)
    deadline = time.monotonic() + 60
    while not _echo(port):
        assert process.poll() is None, log.read_text()[-3000:]
        assert time.monotonic() < deadline, log.read_text()[-3000:]
        time.sleep(0.3)

    sent = storescu("127.0.0.1", port, "AINODE", files)
    assert sent.returncode == 0, sent.stdout + sent.stderr
    db = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}", migrate_schema=False)
    try:
        job = _wait_for_job(db, timeout_s=240)
    finally:
        db.close()
    events = "\n".join(f"  {e.level}: {e.message}" for e in job.events)  # type: ignore[attr-defined]
    assert job.protocol == PROTOCOL  # type: ignore[attr-defined]
    assert job.state == JobState.DONE, f"{job.state} {job.error}\n{events}"  # type: ignore[attr-defined]
    outputs = {o.kind: o for o in job.outputs}  # type: ignore[attr-defined]
    assert set(outputs) == {"SEG", "SR", "SC"}

    wanted = {o.sop_instance_uid for o in outputs.values()}
    received = orthanc.wait_for_instances(
        len(wanted), timeout_s=60, predicate=lambda i: i["SOPInstanceUID"] in wanted
    )
    assert {i["SOPInstanceUID"] for i in received} == wanted
    source = pydicom.dcmread(files[0], stop_before_pixels=True)
    by_class: dict[str, pydicom.Dataset] = {}
    for instance in received:
        path = tmp_path / f"{instance['SOPInstanceUID']}.dcm"
        path.write_bytes(orthanc.get_instance_file(instance["ID"]))
        report = run_dciodvfy(path)
        assert report.errors == [], f"dciodvfy errors in {instance['SOPClassUID']}: {report.errors}"
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        by_class[str(ds.SOPClassUID)] = ds

    # The SR reports the ROI mean near the phantom's 100 HU and the low-attenuation finding at
    # the site's 160 HU threshold.
    values = [
        float(item.MeasuredValueSequence[0].NumericValue)
        for item in _content_items(by_class[COMPREHENSIVE_3D_SR])
        if "MeasuredValueSequence" in item
        and item.ConceptNameCodeSequence[0].CodeMeaning == "Attenuation Coefficient"
        and item.MeasuredValueSequence[0].MeasurementUnitsCodeSequence[0].CodeValue == "[hnsf'U]"
    ]
    assert any(abs(v - 100.0) <= 3.0 for v in values), values
    seg = by_class[SEGMENTATION]
    assert seg.SegmentSequence[0].SegmentLabel == "L1 ROI"
    assert seg.SegmentSequence[0].AnatomicRegionSequence[0].CodeValue == "66794005"
    pixels = by_class[SECONDARY_CAPTURE].pixel_array
    assert pixels.ndim == 3 and pixels.shape[2] == 3
    assert pixels.shape[1] > pixels.shape[0] * 0.8  # axial panel with the sagittal beside it


def _content_items(ds: pydicom.Dataset) -> Iterator[pydicom.Dataset]:
    for item in ds.get("ContentSequence", []):
        yield item
        yield from _content_items(item)


def test_core_listings_name_the_plugin(
    phantom: AbdomenPhantom, tmp_path: Path, plugin_env: dict[str, str], l1_plugin_site: Path,
) -> None:
    from ainode_core.errors import ConfigError
    from pipelines.registry import check_parameters, get_protocol, load_errors, protocols

    assert PROTOCOL in protocols()
    assert not [entry for entry in load_errors() if PROTOCOL in entry]
    spec = get_protocol(PROTOCOL)
    assert spec.input_kind == "ct-volume" and spec.modalities == ("CT",)
    assert [row.key for row in spec.measurements] == [
        "l1_trabecular_mean_hu", "l1_trabecular_sd_hu", "l1_roi_area_mm2"]
    # The core validates the plug-in's parameters with its pydantic model, naming the parameter.
    check_parameters(PROTOCOL, {"threshold_hu": 160})
    with pytest.raises(ConfigError, match="threshold_hu"):
        check_parameters(PROTOCOL, {"threshold_hu": "abc"})
    with pytest.raises(ConfigError, match="cortex_margin_mm"):
        check_parameters(PROTOCOL, {"cortex_margin_mm": 0.0})
    with pytest.raises(ConfigError, match="roi_size"):
        check_parameters(PROTOCOL, {"roi_size": 3})

    # Default table: the plug-in's rule fires only for series that ask for bone density.
    asked = write_phantom_series(phantom, tmp_path / "asked", shuffle=False,
                                 series_description="CT abdomen L1 bone density")
    plain = write_phantom_series(phantom, tmp_path / "plain", shuffle=False,
                                 series_description="CT abdomen portal venous")
    routed = _ainode(plugin_env, "route", str(asked[0].parent))
    assert routed.returncode == 0, routed.stdout + routed.stderr
    assert PROTOCOL in routed.stdout and "l1-trabecular-by-description" in routed.stdout
    other = _ainode(plugin_env, "route", str(plain[0].parent))
    assert other.returncode == 0, other.stdout + other.stderr
    assert PROTOCOL not in other.stdout



def test_models_list_and_train_help_name_the_plugin(plugin_env: dict[str, str]) -> None:
    models = _ainode(plugin_env, "models", "list")
    assert models.returncode == 0, models.stdout + models.stderr
    (line,) = [ln for ln in models.stdout.splitlines() if ln.startswith(PROTOCOL)]
    assert "reference" in line and "no trainer" in line
    train = _ainode(plugin_env, "train", "--help")
    assert train.returncode == 0, train.stdout + train.stderr
    assert PROTOCOL in train.stdout and "reference method only" in train.stdout

    # Without the plug-in on the path, neither names it.
    bare_env = {k: v for k, v in plugin_env.items() if k != "PYTHONPATH"}
    for args in (("models", "list"), ("train", "--help")):
        bare = _ainode(bare_env, *args)
        assert bare.returncode == 0, bare.stdout + bare.stderr
        assert PROTOCOL not in bare.stdout


def test_dashboard_lists_the_plugin(l1_plugin_site: Path, tmp_path: Path) -> None:
    from node.web.status import protocol_status

    db = JobDatabase(f"sqlite:///{tmp_path / 'ainode.sqlite3'}")
    try:
        names = [row["name"] for row in protocol_status(db)]
    finally:
        db.close()
    assert PROTOCOL in names
