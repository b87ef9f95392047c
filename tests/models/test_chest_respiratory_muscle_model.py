"""The chest respiratory-muscle network: trainer, evaluator and the shipped phantom-trained model.

Thresholds (stated in docs/models/chest-respiratory-muscle.md): on a held-out chest phantom
(seed 31337, standard size, rotated and shifted by its seed), the SEG written by ``ainode run``
with the shipped model ``ainode-chest-phantom`` has, against the phantom's exact labels over the
whole volume, Dice >= :data:`DICE_THRESHOLD` for each of the six respiratory labels (pectoralis,
erector spinae, intercostal; right and left) and for the other thoracic muscle; the diaphragm
(a 5 mm sheet on a few slices) is reported, not thresholded.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest

from models.cards import read_card
from models.registry import ZOO_DIR
from node.cli import main
from pipelines.chest_respiratory_muscle import LABELS, SEGMENTS
from pipelines.validation import dciodvfy_available, run_dciodvfy
from training.train import TrainConfig
from training.train_chest import (
    LABEL_KEYS,
    chest_phantom_case,
    chest_phantom_parameters,
    evaluate_chest,
    train_chest,
)

SHIPPED = "ainode-chest-phantom"
PROTOCOL = "chest-respiratory-muscle"
#: Minimum Dice of labels 1..6 and 9 of the shipped model on the held-out phantom.
DICE_THRESHOLD = 0.85
THRESHOLDED_LABELS = (1, 2, 3, 4, 5, 6, 9)


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2 * (a & b).sum() / (a.sum() + b.sum()))


def _all_text(ds: pydicom.Dataset) -> str:
    return "\n".join(str(e.value) for e in ds.iterall() if isinstance(e.value, str))


def test_phantom_parameters_vary_and_fit_the_field_of_view() -> None:
    params = [chest_phantom_parameters(seed) for seed in range(12)]
    rotations = [p["rotation_deg"] for p in params]
    assert min(rotations) < -5.0 and max(rotations) > 5.0
    assert all(-15.0 <= r <= 15.0 for r in rotations)
    for p in params:
        fov = p["rows"] * p["pixel_spacing_mm"]
        assert fov >= 350.0 + 2 * max(abs(s) for s in p["shift_mm"])
    assert chest_phantom_parameters(3) == chest_phantom_parameters(3)


def test_evaluator_scores_the_truth_and_a_side_swap() -> None:
    """An oracle scores Dice 1 and zero volume error; swapping the sides scores Dice 0 for the
    lateral labels (so the metrics see a left/right mix-up)."""
    case = chest_phantom_case(7, "small")

    class Oracle:
        def __init__(self, swap: bool) -> None:
            self.swap = swap

        def predict(self, hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
            labels = case.labels.copy()
            if self.swap:
                for right in (1, 3, 5, 7):
                    labels[case.labels == right] = right + 1
                    labels[case.labels == right + 1] = right
            return labels

    perfect = evaluate_chest(Oracle(False), [case])
    assert perfect.metrics["dice_respiratory_labels_mean"] == 1.0
    assert perfect.metrics["volume_abs_error_pct_pectoralis_right_mean"] == 0.0
    swapped = evaluate_chest(Oracle(True), [case])
    assert swapped.metrics["dice_pectoralis_right_mean"] == 0.0
    assert swapped.metrics["dice_pectoralis_mean"] == 1.0  # sides merged
    assert swapped.metrics["dice_respiratory_union_mean"] == 1.0


def test_network_trains_on_tiny_phantoms_and_writes_a_card(tmp_path: Path) -> None:
    """A few iterations on three small phantoms (6 mm grid, 64-pixel patches): the loss falls;
    the card holds the evaluation of the held-out phantom; the model is phantom-only."""
    out = tmp_path / "m"
    config = TrainConfig(protocol=PROTOCOL, out_dir=out, name="chest-test-trained",
                         iterations=20, batch_size=4, learning_rate=5e-3, train_cases=3,
                         eval_cases=1, phantom_size="small", val_every=5, device="cpu")
    assert train_chest(config, None, grid_mm=6.0, roi_size=64, slices_per_case=8) == out
    with open(out / "metrics.csv") as handle:
        losses = [float(r["loss"]) for r in csv.DictReader(handle)]
    assert len(losses) == 4
    assert losses[-1] < 0.95 * losses[0], losses
    assert np.mean(losses[2:]) < np.mean(losses[:2]), losses

    card = read_card(out)
    assert card.protocol == PROTOCOL and card.validation_status.value == "phantom-only"
    spec = card.network("muscle")
    assert spec is not None and spec.architecture == "AttentionUnet"
    assert spec.input["pixel_spacing_mm"] == [6.0, 6.0] and spec.input["roi_size"] == [64, 64]
    assert [label["value"] for label in spec.labels] == [0, *LABELS]
    with open(out / "evaluation.csv") as handle:
        rows = list(csv.DictReader(handle))
    assert len(rows) == card.evaluation["cases"] == 1
    assert rows[0]["case"] == "chest-phantom-10000"
    metrics = card.evaluation["metrics"]
    assert card.evaluation["primary_metric"] == "dice_respiratory_labels_mean"
    expected = np.nanmean([float(rows[0][f"dice_{LABEL_KEYS[v]}"]) for v in (1, 2, 3, 4, 5, 6)])
    assert metrics["dice_respiratory_labels_mean"] == pytest.approx(expected, abs=1e-4)


@pytest.fixture(scope="module")
def chest_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict, np.ndarray, list[str]]:
    """``ainode run --protocol chest-respiratory-muscle`` with the shipped model on the held-out
    phantom (seed 31337); returns the JSON entry, the phantom's exact labels mapped onto the
    source frames, and the frames' SOP Instance UIDs (same order)."""
    from pipelines.volume import load_ct_volume, read_instances
    from training.phantoms.chest import make_chest_phantom, write_chest_series

    assert (ZOO_DIR / SHIPPED / "card.json").is_file(), "shipped chest model is missing"
    root = tmp_path_factory.mktemp("chest-model")
    phantom = make_chest_phantom(**chest_phantom_parameters(31_337, "standard"))
    series = root / "series"
    write_chest_series(phantom, series)
    config = root / "ainode.yaml"
    config.write_text(f"device: cpu\nmodels:\n  chest_respiratory_muscle: {SHIPPED}\n")
    import contextlib
    import io

    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    buffer = io.StringIO()
    try:
        with contextlib.redirect_stdout(buffer):
            code = main(["run", str(series), "--protocol", PROTOCOL, "--out", str(root / "out"),
                         "--config", str(config), "--data-dir", str(root / "data"), "--json"])
    finally:
        torch.set_num_threads(previous)
    assert code == 0, buffer.getvalue()
    entry = json.loads(buffer.getvalue())[0]
    volume = load_ct_volume(read_instances([series]).datasets)
    uids = [str(ds.SOPInstanceUID) for ds in volume.datasets]
    truth = volume.to_source_frames(phantom.labels)  # frame i lies on datasets[i]
    return entry, truth, uids


def test_shipped_chest_model_through_ainode_run(chest_run: tuple[dict, np.ndarray, list[str]]) -> None:
    entry, truth, uids = chest_run
    card = read_card(ZOO_DIR / SHIPPED)
    results = entry["results"]
    assert entry["algorithm"] == f"{SHIPPED} {card.version}"
    assert results["inference_device"] == "cpu" and results["inference_seconds"] > 0

    seg = hd.seg.segread(entry["outputs"]["SEG"])
    assert {s.SegmentAlgorithmName for s in seg.SegmentSequence} == {SHIPPED}
    assert {s.SegmentAlgorithmType for s in seg.SegmentSequence} == {"AUTOMATIC"}
    # Segments are numbered in order of the labels present; map them back by their label.
    value_of = {segment.label: segment.number for segment in SEGMENTS}
    numbers = {int(s.SegmentNumber): value_of[str(s.SegmentLabel)] for s in seg.SegmentSequence}
    masks = seg.get_pixels_by_source_instance(
        source_sop_instance_uids=uids, segment_numbers=sorted(numbers), combine_segments=False,
        skip_overlap_checks=True, assert_missing_frames_are_empty=True,
    )
    labels = np.zeros(masks.shape[:3], dtype=np.uint8)
    for i, number in enumerate(sorted(numbers)):
        labels[masks[..., i] > 0] = numbers[number]
    assert labels.shape == truth.shape
    scores = {LABEL_KEYS[v]: _dice(labels == v, truth == v) for v in LABELS}
    for value in THRESHOLDED_LABELS:
        key = LABEL_KEYS[value]
        assert scores[key] >= DICE_THRESHOLD, f"{key} Dice {scores[key]:.3f} < {DICE_THRESHOLD}"
    assert _dice(labels > 0, truth > 0) >= 0.9

    sr = pydicom.dcmread(entry["outputs"]["SR"])
    assert SHIPPED in _all_text(sr)
    if dciodvfy_available():
        for path in entry["outputs"].values():
            assert run_dciodvfy(path).errors == [], path


def test_phantom_only_model_result_carries_the_warning(
    chest_run: tuple[dict, np.ndarray, list[str]],
) -> None:
    entry, _, _ = chest_run
    assert entry["results"]["validation_status"] == "phantom-only"
    warnings = [w for w in entry["warnings"] if "phantom-only" in w]
    assert len(warnings) == 1 and SHIPPED in warnings[0]
    assert "not meaningful" in warnings[0]
    sr_text = _all_text(pydicom.dcmread(entry["outputs"]["SR"]))
    assert "phantom-only" in sr_text
    sc = pydicom.dcmread(entry["outputs"]["SC"])
    assert sc.ImageComments.startswith(f"{SHIPPED} ") and "(phantom-only)" in sc.ImageComments
