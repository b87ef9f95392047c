"""The one training loop (training.loop): best-state keeping by the named score, the metrics CSV,
checkpoints and resume, on a tiny linear classifier (the protocol trainers' own tests train the
real networks through it)."""

from __future__ import annotations

import csv
from pathlib import Path

import numpy as np
import pytest
import torch

from ainode_core.errors import ModelError
from training.loop import run_training_loop
from training.train import TrainConfig


def _data(n: int = 16) -> list[dict[str, object]]:
    rng = np.random.default_rng(0)
    items = []
    for i in range(n):
        label = i % 2
        image = rng.normal(loc=2.0 * label - 1.0, size=(4,)).astype(np.float32)
        items.append({"image": image, "label": label})
    return items


def _run(config: TrainConfig, network: torch.nn.Module, scores: list[float | None],
         states: list[dict[str, torch.Tensor]], iterations: int = 6):
    """Train with a validation that returns ``scores`` in turn and records the states it saw."""
    calls = iter(scores)

    def validate(net: torch.nn.Module) -> dict[str, float | None]:
        assert not net.training
        states.append({k: v.detach().clone() for k, v in net.state_dict().items()})
        return {"val_score": next(calls), "val_other": 0.5}

    return run_training_loop(
        "toy", network, _data(), lambda seed: None, torch.nn.CrossEntropyLoss(), validate, config,
        iterations=iterations, device="cpu", metrics_file="toy_metrics.csv",
        metric_labels={"val_score": "score", "val_other": "other"}, score="val_score",
        target=lambda label: torch.as_tensor(label).long().reshape(-1))


def test_best_state_follows_the_score_and_resume_continues(tmp_path: Path) -> None:
    torch.manual_seed(0)
    config = TrainConfig(protocol="toy", out_dir=tmp_path, batch_size=4, learning_rate=0.05,
                         val_every=2, checkpoint_every=2, device="cpu", amp=False)
    network = torch.nn.Linear(4, 2)
    states: list[dict[str, torch.Tensor]] = []
    # Validations at iterations 2, 4 and 6; the best is the second.
    outcome = _run(config, network, [0.2, 0.9, 0.5], states)
    assert outcome.iterations == 6
    assert outcome.best_score == pytest.approx(0.9)
    for key, value in outcome.best_state.items():
        assert torch.equal(value, states[1][key])
        assert not torch.equal(value, states[2][key])  # the network moved on after it
    with open(tmp_path / "toy_metrics.csv", newline="") as handle:
        rows = list(csv.DictReader(handle))
    assert list(rows[0]) == ["network", "iteration", "loss", "learning_rate", "val_score",
                             "val_other", "samples_per_s"]
    assert [int(r["iteration"]) for r in rows] == [2, 4, 6]
    assert [float(r["val_score"]) for r in rows] == [0.2, 0.9, 0.5]
    saved = torch.load(tmp_path / "checkpoints" / "toy.pt", weights_only=True)
    assert saved["iteration"] == 6 and saved["best_dice"] == pytest.approx(0.9)

    # Resume to 8 iterations: one more validation, whose lower score keeps the earlier best.
    resumed = TrainConfig(protocol="toy", out_dir=tmp_path, batch_size=4, learning_rate=0.05,
                          val_every=2, checkpoint_every=2, device="cpu", amp=False, resume=True)
    more: list[dict[str, torch.Tensor]] = []
    again = _run(resumed, torch.nn.Linear(4, 2), [0.7], more, iterations=8)
    assert again.iterations == 2
    assert again.best_score == pytest.approx(0.9)
    for key, value in again.best_state.items():
        assert torch.equal(value, states[1][key])
    with open(tmp_path / "toy_metrics.csv", newline="") as handle:
        assert [int(r["iteration"]) for r in csv.DictReader(handle)] == [2, 4, 6, 8]


def test_empty_data_and_unknown_score_are_refused(tmp_path: Path) -> None:
    config = TrainConfig(protocol="toy", out_dir=tmp_path, device="cpu")
    with pytest.raises(ModelError, match="no training samples"):
        run_training_loop("toy", torch.nn.Linear(4, 2), [], lambda seed: None,
                          torch.nn.CrossEntropyLoss(), lambda net: {}, config, iterations=2,
                          device="cpu", metrics_file="m.csv", metric_labels={"a": "a"},
                          score="a")
    with pytest.raises(ModelError, match="not one of its metrics"):
        run_training_loop("toy", torch.nn.Linear(4, 2), _data(), lambda seed: None,
                          torch.nn.CrossEntropyLoss(), lambda net: {}, config, iterations=2,
                          device="cpu", metrics_file="m.csv", metric_labels={"a": "a"},
                          score="b")
