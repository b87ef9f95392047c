"""``ainode train`` / ``ainode evaluate``: a model directory with measured metrics, resumable
training, installable and usable by ``ainode run``; deterministic splits; NIfTI cases."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from models.cards import read_card
from node.cli import main
from training.datasets import nifti_cases, split_cases

TRAIN_ARGS = [
    "--phantom", "--cases", "3", "--eval-cases", "1", "--phantom-size", "small",
    "--level-spacing-mm", "2", "--val-every", "10", "--name", "l3-test-trained", "--device", "cpu",
]


def test_train_evaluate_install_and_run(
    small_l3_phantom_series: tuple[Path, object], tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    out = tmp_path / "m"
    args = ["train", "l3-body-composition", "--out", str(out), *TRAIN_ARGS]
    assert main([*args, "--iterations", "10", "--level-iterations", "10"]) == 0
    # Resume: continues from the checkpoint at iteration 10 up to 20.
    assert main([*args, "--iterations", "20", "--level-iterations", "10", "--resume"]) == 0
    with open(out / "metrics.csv") as handle:
        rows = list(csv.DictReader(handle))
    tissue_iterations = [int(r["iteration"]) for r in rows if r["network"] == "tissue"]
    assert tissue_iterations == [10, 20]  # first run, then the resumed run from 10 to 20
    tissue_losses = [float(r["loss"]) for r in rows if r["network"] == "tissue"]
    assert tissue_losses[-1] < tissue_losses[0]
    assert (out / "checkpoints" / "tissue.pt").is_file()

    card = read_card(out)
    assert card.name == "l3-test-trained" and card.validation_status.value == "phantom-only"
    assert card.training["iterations"]["tissue"] == 10  # this run's share (resumed from 10)
    metrics = card.evaluation["metrics"]
    with open(out / "evaluation.csv") as handle:
        evaluated = list(csv.DictReader(handle))
    assert len(evaluated) == card.evaluation["cases"] == 1
    assert metrics["dice_sma_mean"] == pytest.approx(float(evaluated[0]["dice_sma"]), abs=1e-4)
    assert 0.0 < metrics["dice_sma_mean"] <= 1.0

    # `ainode evaluate` on the same held-out phantom seeds reproduces the card's Dice.
    capsys.readouterr()
    report = tmp_path / "again.csv"
    assert main(["evaluate", str(out), "--phantom", "--cases", "1", "--phantom-size", "small",
                 "--report", str(report), "--device", "cpu"]) == 0
    assert report.is_file() and "dice sma mean" in capsys.readouterr().out

    data_dir = tmp_path / "data"
    assert main(["models", "install", str(out), "--data-dir", str(data_dir)]) == 0
    config = tmp_path / "ainode.yaml"
    config.write_text("models:\n  l3_body_composition: l3-test-trained\n")
    series, _ = small_l3_phantom_series
    capsys.readouterr()
    assert main(["run", str(series), "--protocol", "l3-body-composition", "--out",
                 str(tmp_path / "out"), "--config", str(config), "--data-dir", str(data_dir),
                 "--json", "--no-validate"]) == 0
    entry = json.loads(capsys.readouterr().out)[0]
    assert entry["algorithm"] == "l3-test-trained 0.1.0"
    assert set(entry["outputs"]) == {"SEG", "SR", "SC"}
    import pydicom

    seg = pydicom.dcmread(entry["outputs"]["SEG"])
    assert seg.SegmentSequence[0].SegmentAlgorithmName == "l3-test-trained"
    sr = pydicom.dcmread(entry["outputs"]["SR"])
    assert any(e.value == "l3-test-trained" for e in sr.iterall() if isinstance(e.value, str))


def test_split_is_deterministic_and_disjoint() -> None:
    ids = [f"case-{i:02d}" for i in range(10)]
    train, val = split_cases(list(reversed(ids)), 0.2, seed=3)
    assert (train, val) == split_cases(ids, 0.2, seed=3)
    assert len(val) == 2 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_cases(ids, 0.2, seed=4) != (train, val)
    assert split_cases(["only"], 0.2) == (["only"], [])


def test_nifti_pairs_are_read_in_canonical_orientation(tmp_path: Path) -> None:
    import SimpleITK as sitk

    # A volume stored RAS-like (x to the patient's left flipped): direction diag(-1, -1, 1).
    array = np.zeros((4, 5, 6), dtype=np.int16)  # (z, y, x)
    array[1, 2, 0] = 100  # first column in storage = patient's left-most (x flipped)
    labels = (array > 0).astype(np.uint8)
    for sub, data in (("images", array), ("labels", labels)):
        (tmp_path / sub).mkdir()
        image = sitk.GetImageFromArray(data)
        image.SetDirection((-1, 0, 0, 0, -1, 0, 0, 0, 1))
        image.SetSpacing((0.8, 0.8, 2.5))
        sitk.WriteImage(image, str(tmp_path / sub / "c1.nii.gz"))
    (case,) = nifti_cases(tmp_path)
    assert case.case_id == "c1" and case.spacing_mm == pytest.approx((2.5, 0.8, 0.8))
    # Canonical: columns right->left, rows anterior->posterior, so both flip.
    assert case.hu[1, 5 - 1 - 2, 6 - 1 - 0] == 100
    assert case.labels[1, 2, 5] == 1 and case.labels.sum() == 1
