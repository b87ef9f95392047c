"""The shipped phantom-trained L3 model end to end through ``ainode run``.

Thresholds (stated in docs/models.md): on a held-out phantom (seed 31337, standard size), the
slice the level network picks lies inside the true L3 vertebral body and within 1 slice of the
true mid-L3 slice; on that slice the network's SEG has Dice >= 0.90 for SMA, SAT and VAT against
the phantom's exact ground truth (IMAT, islands of a few pixels, is reported, not thresholded).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from node.cli import main
from pipelines.validation import dciodvfy_available, run_dciodvfy

DICE_THRESHOLDS = {1: ("SMA", 0.90), 2: ("SAT", 0.90), 3: ("VAT", 0.90)}


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _all_text(ds: pydicom.Dataset) -> str:
    """Every string value of a dataset, nested sequences included."""
    return "\n".join(str(e.value) for e in ds.iterall() if isinstance(e.value, str))


def _run(series: Path, out: Path, config: Path, data_dir: Path) -> int:
    return main(["run", str(series), "--protocol", "l3-body-composition", "--out", str(out),
                 "--config", str(config), "--data-dir", str(data_dir), "--json"])


def test_shipped_l3_model_through_ainode_run(
    small_l3_phantom_series: tuple[Path, object], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    series, phantom = small_l3_phantom_series
    config = tmp_path / "ainode.yaml"
    config.write_text("device: cpu\nmodels:\n  l3_body_composition: ainode-l3-phantom\n")
    assert _run(series, tmp_path / "out", config, tmp_path / "data") == 0
    entry = json.loads(capsys.readouterr().out)[0]
    results = entry["results"]
    assert entry["algorithm"] == "ainode-l3-phantom 0.1.0"
    assert results["validation_status"] == "phantom-only"
    assert results["inference_device"] == "cpu" and results["inference_seconds"] > 0
    assert results["level_method"] == "network (ainode-l3-phantom 0.1.0)"
    assert any("phantom-only" in w for w in entry["warnings"])

    k = int(results["slice_index"])
    first, last = phantom.vertebra_slices["L3"]
    assert first <= k <= last, f"slice {k} outside L3 ({first}-{last})"
    assert abs(k - phantom.mid_l3_slice) <= 1

    seg = hd.seg.segread(entry["outputs"]["SEG"])
    assert {s.SegmentAlgorithmName for s in seg.SegmentSequence} == {"ainode-l3-phantom"}
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    labels = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=[results["source_sop_instance_uid"]], combine_segments=True,
        skip_overlap_checks=True,
    )[0]
    truth = phantom.labels[k]  # written HFS with identity orientation: source frame = canonical
    for value, (name, threshold) in DICE_THRESHOLDS.items():
        score = _dice(labels == value, truth == value)
        assert score >= threshold, f"{name} Dice {score:.3f} < {threshold}"

    sr = pydicom.dcmread(entry["outputs"]["SR"])
    sr_text = _all_text(sr)
    assert "ainode-l3-phantom" in sr_text and "phantom-only" in sr_text
    sc = pydicom.dcmread(entry["outputs"]["SC"])
    assert sc.ImageComments.startswith("ainode-l3-phantom 0.1.0 (phantom-only)")
    if dciodvfy_available():
        for path in entry["outputs"].values():
            assert run_dciodvfy(path).errors == [], path

    # The node's own SEG read back as a training case (DICOM + SEG input of `ainode train`).
    from training.datasets import dicom_seg_cases

    case_dir = tmp_path / "cases" / "c1"
    shutil.copytree(series, case_dir)
    shutil.copy(entry["outputs"]["SEG"], case_dir / "seg.dcm")
    (case,) = dicom_seg_cases(tmp_path / "cases")
    assert case.case_id == "c1" and case.hu.shape == phantom.hu.shape
    assert np.array_equal(case.labels[k], labels)
    assert int((case.labels > 0).sum()) == int((labels > 0).sum())  # only the measured slice


def test_tampered_installed_model_fails_the_job(
    small_l3_phantom_series: tuple[Path, object], l3_model_copy: Path, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    series, _ = small_l3_phantom_series
    data_dir = tmp_path / "data"
    assert main(["models", "install", str(l3_model_copy), "--data-dir", str(data_dir)]) == 0
    weights = data_dir / "models" / "l3-copy" / "tissue.safetensors"
    raw = bytearray(weights.read_bytes())
    raw[-2] ^= 0xFF
    weights.write_bytes(bytes(raw))
    config = tmp_path / "ainode.yaml"
    config.write_text("models:\n  l3_body_composition: l3-copy\n")
    capsys.readouterr()
    assert _run(series, tmp_path / "out", config, data_dir) == 1
    entry = json.loads(capsys.readouterr().out)[0]
    assert "tissue.safetensors has sha256" in entry["error"]
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").rglob("*.dcm"))
    shutil.rmtree(data_dir)


@pytest.mark.gpu
@pytest.mark.skipif("not __import__('torch').cuda.is_available()", reason="needs CUDA")
def test_shipped_l3_model_same_labels_on_gpu(small_l3_phantom_series: tuple[Path, object]) -> None:
    from models.inference import InferenceOptions, load_learned_model
    from models.registry import get_model

    _, phantom = small_l3_phantom_series
    entry = get_model("ainode-l3-phantom")
    k = phantom.mid_l3_slice
    spacing = tuple(phantom.spacing_mm[1:])
    cpu, _ = load_learned_model(entry, "cpu")
    gpu, _ = load_learned_model(entry, "cuda", InferenceOptions(amp=True))
    a = cpu.predict(phantom.hu[k], spacing)
    b = gpu.predict(phantom.hu[k], spacing)
    assert gpu.device == "cuda"
    assert (a == b).mean() >= 0.995
    assert gpu.locate(phantom.hu, phantom.spacing_mm)[0] == cpu.locate(phantom.hu, phantom.spacing_mm)[0]
