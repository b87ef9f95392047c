"""``ainode evaluate``: the shipped chest model on one small held-out phantom of its own protocol,
and a model of a protocol without an evaluator refused with a usage error."""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path

import pytest

from models.registry import ZOO_DIR
from node.cli import main
from training.evaluate import CLI_PHANTOM_SEED, EVALUATORS, PHANTOM_CASES

SHIPPED_CHEST = "ainode-chest-phantom"


def test_every_evaluator_has_a_phantom() -> None:
    assert set(EVALUATORS) == set(PHANTOM_CASES)
    assert {"l3-body-composition", "chest-respiratory-muscle", "neonatal-rds", "brain-gwr"} <= set(EVALUATORS)


def test_evaluate_shipped_chest_model_on_a_small_phantom(
        tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    report = tmp_path / "report.csv"
    status = main(["evaluate", str(ZOO_DIR / SHIPPED_CHEST), "--phantom", "--cases", "1",
                   "--phantom-size", "small", "--device", "cpu", "--report", str(report)])
    assert status == 0
    printed = dict(line.split(": ", 1) for line in capsys.readouterr().out.splitlines() if ": " in line)
    # The chest evaluator's metrics, not the L3 ones: the case was a chest phantom.
    # Printed for people: metric names with spaces (the CSV report keeps the machine keys).
    assert "dice respiratory labels mean" in printed and "dice sma mean" not in printed
    with open(report, newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert [row["case"] for row in rows] == [f"chest-phantom-{CLI_PHANTOM_SEED:05d}"]
    # A 3 mm phantom on the model's own 3 mm grid: all thoracic muscle is found well.
    assert float(rows[0]["dice_thoracic_union"]) >= 0.8
    assert float(printed["dice thoracic union mean"]) == pytest.approx(
        float(rows[0]["dice_thoracic_union"]), abs=1e-4)


def test_evaluate_refuses_an_unknown_protocol(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    target = tmp_path / "other-model"
    shutil.copytree(ZOO_DIR / SHIPPED_CHEST, target)
    card = json.loads((target / "card.json").read_text())
    card["protocol"] = "unknown-protocol"
    (target / "card.json").write_text(json.dumps(card, indent=2))
    status = main(["evaluate", str(target), "--phantom", "--cases", "1", "--phantom-size", "small",
                   "--device", "cpu"])
    assert status == 2
    assert "no phantom for protocol 'unknown-protocol'" in capsys.readouterr().err


def test_l3_evaluation_scores_the_level_network(shipped_l3_dir: Path) -> None:
    """The L3 evaluator runs the level network (``LearnedModel.locate``): on the card's first
    held-out phantom (seed 10000) it reproduces the card's row (mid-L3 slice 29 found exactly)."""
    from training.evaluate import evaluate_model_dir, phantom_cases

    report = evaluate_model_dir(shipped_l3_dir, phantom_cases("l3-body-composition", 1, "standard", 10_000),
                                device="cpu")
    row = report.rows[0]
    assert row["slice"] == 29 and row["level_slice"] == 29 and row["level_error_slices"] == 0
    assert row["level_in_l3"] is True
    assert report.metrics["level_in_l3_fraction"] == 1.0
    assert row["dice_sma"] >= 0.95
