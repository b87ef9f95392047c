"""The neonatal-RDS networks: training falls, and the shipped phantom model end to end.

Thresholds (stated in docs/models/neonatal-rds.md): on a held-out normal and a held-out RDS-like
phantom (seeds 31336 and 31337, standard size, not in the training or evaluation seeds), the
shipped model's SEG, read back from ``ainode run``, has Dice >= 0.93 per lung against the
phantom's exact lung masks; the RDS probability of the RDS-like phantom is at least 0.3 above the
normal one's; no RDS label is written (the model is phantom-only); SEG, SR and key image name
``ainode-rds-phantom 0.1.0`` and the result carries the phantom-only warning.
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pydicom
import pytest

from models.registry import ZOO_DIR
from node.cli import main
from pipelines.validation import dciodvfy_available, run_dciodvfy
from training.train import TrainConfig, train_network
from training.train_rds import (
    classifier_samples,
    lung_sample,
    phantom_radiograph_case,
    phantom_radiograph_parameters,
    set_batch_norm_momentum,
    train_classifier,
)

SHIPPED_RDS = "ainode-rds-phantom"
LUNG_DICE_THRESHOLD = 0.93
PROBABILITY_GAP = 0.3


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _all_text(ds: pydicom.Dataset) -> str:
    return "\n".join(str(e.value) for e in ds.iterall() if isinstance(e.value, str))


def _seg_label_map(path: str | Path, shape: tuple[int, int]) -> np.ndarray:
    """The lung label map (1 right, 2 left) of a single-image radiograph SEG, read with pydicom
    (highdicom 0.28's ``segread`` refuses a projection-radiograph SEG: its Pixel Measures have no
    Slice Thickness)."""
    seg = pydicom.dcmread(path)
    labels = {int(s.SegmentNumber): str(s.SegmentLabel) for s in seg.SegmentSequence}
    value = {"Right lung": 1, "Left lung": 2}
    frames = seg.pixel_array.reshape(-1, *shape)
    out = np.zeros(shape, dtype=np.uint8)
    for frame, group in zip(frames, seg.PerFrameFunctionalGroupsSequence):
        number = int(group.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        out[frame > 0] = value[labels[number]]
    return out


def test_phantom_cases_are_balanced_and_decoded_like_the_pipeline() -> None:
    params = [phantom_radiograph_parameters(seed, "small") for seed in range(4)]
    assert [p["ground_glass"] for p in params] == [False, True, False, True]
    case = phantom_radiograph_case(3, "small")
    assert case.hu.shape == case.labels.shape == (1, params[3]["rows"], params[3]["columns"])
    assert case.hu.dtype == np.float32 and 0.0 <= case.hu.min() and case.hu.max() <= 1.0
    assert set(np.unique(case.labels)) == {0, 1, 2} and case.extra["rds"] == 1
    # Aerated (normal) lungs are darker than ground-glass lungs on the decoded 0..1 image.
    normal = phantom_radiograph_case(2, "small")
    assert np.median(normal.hu[normal.labels > 0]) + 0.05 < np.median(case.hu[case.labels > 0])


def test_lung_network_and_classifier_losses_fall(tmp_path: Path) -> None:
    cases = [phantom_radiograph_case(seed, "small") for seed in range(4)]
    config = TrainConfig(protocol="neonatal-rds", out_dir=tmp_path, iterations=12, batch_size=2,
                         val_every=6, checkpoint_every=100, device="cpu", seed=0)
    roi = (64, 64)
    from models.architectures import rds_classifier_network, rds_lung_network

    arch, args = rds_lung_network("efficientnet-b0")
    lung = train_network("lung", arch, args, [lung_sample(c, roi) for c in cases], [], config,
                         roi=roi, configure=set_batch_norm_momentum)
    first, last = lung.history[0]["loss"], lung.history[-1]["loss"]
    assert last < 0.95 * first, f"lung loss {first} -> {last}"

    carch, cargs = rds_classifier_network("efficientnet-b0")
    samples = [s for c in cases for s in classifier_samples(c, roi=(64, 64))]
    class_config = TrainConfig(protocol="neonatal-rds", out_dir=tmp_path, iterations=16,
                               batch_size=4, learning_rate=1e-3, val_every=8,
                               checkpoint_every=100, device="cpu", seed=0)
    classifier = train_classifier("classifier", carch, cargs, samples, samples[:4], class_config)
    # Mean cross-entropy of iterations 1-8 and 9-16 (starts near ln 2 = 0.69: small head init).
    first, last = classifier.history[0]["loss"], classifier.history[-1]["loss"]
    assert first < 1.0, f"first classifier loss {first}: the head initialisation is not small"
    assert last < first, f"classifier loss {first} -> {last}"
    rows = (tmp_path / "classifier_metrics.csv").read_text().splitlines()
    assert rows[0].startswith("network,iteration,loss") and len(rows) == 3


@pytest.fixture(scope="module")
def rds_phantom_files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, tuple[Path, object]]:
    """A held-out normal (seed 31336) and RDS-like (seed 31337) phantom, each one CR file."""
    from training.phantoms.chest_radiograph import make_chest_radiograph, phantom_to_dataset

    out: dict[str, tuple[Path, object]] = {}
    for name, seed in (("normal", 31_336), ("rds", 31_337)):
        params = phantom_radiograph_parameters(seed, "standard")
        assert params["ground_glass"] is (name == "rds")
        phantom = make_chest_radiograph(**params)
        directory = tmp_path_factory.mktemp(f"rds-{name}")
        path = directory / "cr.dcm"
        phantom_to_dataset(phantom).save_as(path, enforce_file_format=True)
        out[name] = (path, phantom)
    return out


def test_shipped_rds_model_through_ainode_run(
    rds_phantom_files: dict[str, tuple[Path, object]], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    assert (ZOO_DIR / SHIPPED_RDS / "card.json").is_file()
    config = tmp_path / "ainode.yaml"
    config.write_text(f"device: cpu\nmodels:\n  neonatal_rds: {SHIPPED_RDS}\n")
    probabilities = {}
    for name, (path, phantom) in rds_phantom_files.items():
        out = tmp_path / f"out-{name}"
        code = main(["run", str(path), "--protocol", "neonatal-rds", "--out", str(out),
                     "--config", str(config), "--data-dir", str(tmp_path / "data"), "--json"])
        assert code == 0
        entry = json.loads(capsys.readouterr().out)[0]
        results = entry["results"]
        assert entry["algorithm"] == f"{SHIPPED_RDS} 0.1.0"
        assert results["validation_status"] == "phantom-only"
        assert results["inference_device"] == "cpu" and results["inference_seconds"] > 0
        # (c) the phantom-only warning, and a probability without a label.
        assert any("phantom-only" in w and "not meaningful" in w for w in entry["warnings"])
        assert results["rds_classification_performed"] is True
        assert results["rds_label"] is None
        probabilities[name] = float(results["rds_probability"])

        seg = pydicom.dcmread(entry["outputs"]["SEG"])
        assert {s.SegmentAlgorithmName for s in seg.SegmentSequence} == {SHIPPED_RDS}
        assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
        source_uid = pydicom.dcmread(path, stop_before_pixels=True).SOPInstanceUID
        referenced = {str(item.ReferencedSOPInstanceUID)
                      for series in seg.ReferencedSeriesSequence
                      for item in series.ReferencedInstanceSequence}
        assert referenced == {str(source_uid)}
        truth = phantom.label_map  # type: ignore[attr-defined]
        labels = _seg_label_map(entry["outputs"]["SEG"], truth.shape)
        for value, side in ((1, "right"), (2, "left")):
            score = _dice(labels == value, truth == value)
            assert score >= LUNG_DICE_THRESHOLD, f"{name}: {side} lung Dice {score:.3f}"

        sr_text = _all_text(pydicom.dcmread(entry["outputs"]["SR"]))
        assert SHIPPED_RDS in sr_text and "phantom-only" in sr_text
        sc = pydicom.dcmread(entry["outputs"]["SC"])
        assert sc.ImageComments.startswith(f"{SHIPPED_RDS} 0.1.0 (phantom-only)")
        if dciodvfy_available():
            for output in entry["outputs"].values():
                assert run_dciodvfy(output).errors == [], output
    assert 0.0 <= probabilities["normal"] <= 1.0 and 0.0 <= probabilities["rds"] <= 1.0
    assert probabilities["rds"] >= probabilities["normal"] + PROBABILITY_GAP, probabilities


def test_site_data_nifti_pairs_with_classes_train_a_research_model(tmp_path: Path) -> None:
    """``--data DIR``: 2D NIfTI pairs + classes.csv -> both networks, status ``research``, the
    card's evaluation on the validation split (2 iterations each: the machinery, not the fit)."""
    import SimpleITK as sitk

    from training.train_rds import train

    data = tmp_path / "data"
    (data / "images").mkdir(parents=True)
    (data / "labels").mkdir()
    rows = ["case,rds"]
    for seed in range(4):
        case = phantom_radiograph_case(seed, "small")
        image = sitk.GetImageFromArray((case.hu[0] * 4095).astype(np.uint16))
        labels = sitk.GetImageFromArray(case.labels[0])
        for item in (image, labels):
            item.SetSpacing((case.spacing_mm[2], case.spacing_mm[1]))
        sitk.WriteImage(image, str(data / "images" / f"c{seed}.nii.gz"))
        sitk.WriteImage(labels, str(data / "labels" / f"c{seed}.nii.gz"))
        rows.append(f"c{seed},{case.extra['rds']}")
    (data / "classes.csv").write_text("\n".join(rows) + "\n")
    config = TrainConfig(protocol="neonatal-rds", out_dir=tmp_path / "model", data_dir=data,
                         iterations=2, batch_size=2, val_every=2, device="cpu", roi_size=64)
    card = json.loads((train(config) / "card.json").read_text())
    assert card["validation_status"] == "research"
    assert [n["role"] for n in card["networks"]] == ["lung", "classifier"]
    assert card["evaluation"]["cases"] == len(card["training_data"]["split"]["validation"]) == 1
    assert 0.0 <= card["evaluation"]["metrics"]["dice_lung_mean"] <= 1.0
    assert card["training"]["weights_dtype"] == "float16"
