"""The one training loop of ainode: every network of every protocol is trained here.

Each trainer feeds it its cases (MONAI dictionary dataset and transforms), a built network, a
loss and a validation function returning named metrics; the loop owns what they share:
AdamW with the one-cycle schedule (:func:`one_cycle_scheduler`), mixed precision
on CUDA, the metrics CSV (one row per validation), TensorBoard scalars when installed, the tqdm
progress bar on a terminal, checkpoints every ``checkpoint_every`` iterations with resume
(:func:`resume_checkpoint`), and keeping the weights of the best validation
score.

Users: :func:`training.train.train_network` (segmentation, Dice + cross-entropy, validation
Dice by MONAI; L3 tissue and level, chest, brain, neonatal-RDS lung fields) and
:func:`training.train_rds.train_classifier` (RDS classifier, cross-entropy, validation accuracy
and ROC AUC by MONAI).
"""

from __future__ import annotations

import csv
import logging
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from ainode_core.errors import ModelError

logger = logging.getLogger(__name__)

#: ``validate(network) -> {column: value or None}``; the network is in eval mode.
Validate = Callable[[torch.nn.Module], Mapping[str, float | None]]


@dataclass(frozen=True)
class LoopOutcome:
    """What :func:`run_training_loop` returns.

    Attributes
    ----------
    best_state:
        State dict (CPU tensors) of the best validation score (the last one when no
        validation gives a score).
    best_score:
        Best value of the ``score`` metric, or ``None``.
    iterations:
        Iterations run in this call (after a resumed start).
    samples_per_second, seconds:
        Throughput and wall time of this call.
    history:
        The metric rows written to the CSV by this call.
    """

    best_state: dict[str, torch.Tensor]
    best_score: float | None
    iterations: int
    samples_per_second: float
    seconds: float
    history: list[dict[str, Any]]


def one_cycle_scheduler(optimiser: torch.optim.Optimizer, learning_rate: float,
                        iterations: int) -> torch.optim.lr_scheduler.LRScheduler:
    """The trainers' learning-rate schedule: one-cycle to ``learning_rate`` over ``iterations``
    (10 % warm-up, at least 2 warm-up steps for very short runs); constant below 4 iterations."""
    if iterations >= 4:
        return torch.optim.lr_scheduler.OneCycleLR(
            optimiser, max_lr=learning_rate, total_steps=iterations,
            pct_start=min(0.5, max(0.1, 2.0 / iterations)))
    return torch.optim.lr_scheduler.LambdaLR(optimiser, lambda _: 1.0)


def resume_checkpoint(checkpoint: Path, network: torch.nn.Module, optimiser: torch.optim.Optimizer,
                      scaler: torch.amp.GradScaler, scheduler: torch.optim.lr_scheduler.LRScheduler,
                      device: str, role: str) -> tuple[int, float | None, dict[str, torch.Tensor]]:
    """Restore a training checkpoint (network, optimiser, AMP scaler, schedule position).

    Returns
    -------
    tuple
        The iteration reached, the best validation score so far (``None`` if none) and the best
        state dict.
    """
    saved = torch.load(checkpoint, map_location=device, weights_only=True)
    network.load_state_dict(saved["network"])
    optimiser.load_state_dict(saved["optimiser"])
    scaler.load_state_dict(saved["scaler"])
    start_iteration = int(saved["iteration"])
    # The one-cycle schedule spans this run's --iterations; continue it at the checkpoint.
    scheduler.last_epoch = start_iteration
    best = float(saved["best_dice"]) if saved["best_dice"] >= 0 else None
    logger.info("%s: resumed from %s at iteration %d", role, checkpoint, start_iteration)
    return start_iteration, best, saved["best_state"]


def _state(network: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def _tensorboard(path: Path) -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        return None
    return SummaryWriter(str(path))


def run_training_loop(
    role: str,
    network: torch.nn.Module,
    data: Sequence[dict[str, Any]],
    make_transforms: Callable[[int], Any],
    loss_function: torch.nn.Module,
    validate: Validate,
    config: Any,
    *,
    iterations: int,
    device: str,
    metrics_file: str,
    metric_labels: Mapping[str, str],
    score: str,
    target: Callable[[Any], torch.Tensor] | None = None,
    log: Callable[[str], None] | None = None,
) -> LoopOutcome:
    """Train ``network`` for ``iterations`` optimiser steps and keep its best state.

    Parameters
    ----------
    role:
        Network role, e.g. ``"tissue"``: names the checkpoint (``out_dir/checkpoints/ROLE.pt``),
        the CSV rows, the TensorBoard tags and the progress bar.
    network:
        The built network, already on ``device`` and configured by the trainer.
    data:
        Training items, ``{"image": (C, ...) float32, "label": ...}`` dictionaries.
    make_transforms:
        ``make_transforms(seed)``: the MONAI training transforms (random state seeded with
        ``seed``: ``config.seed`` plus the resumed iteration, so a resumed run draws new crops).
    loss_function:
        ``loss_function(logits, target) -> scalar tensor``.
    validate:
        Validation metrics of the network (in eval mode), one CSV column each; values may be
        ``None`` (no validation samples, a class missing).
    config:
        A :class:`training.train.TrainConfig`: ``out_dir``, ``batch_size``, ``learning_rate``,
        ``amp``, ``seed``, ``val_every``, ``checkpoint_every``, ``resume``.
    iterations:
        Total optimiser steps of the schedule (a resumed run continues up to it).
    device:
        Torch device string.
    metrics_file:
        CSV file name under ``config.out_dir`` (appended; header written once). Columns:
        ``network, iteration, loss, learning_rate``, the keys of ``metric_labels`` in order,
        ``samples_per_s``.
    metric_labels:
        Column -> words of the progress line, e.g. ``{"val_dice": "val Dice"}``.
    score:
        Column whose highest value (ties: the later state) keeps the network's weights.
    target:
        Turns the batch's ``label`` into the loss target on ``device``; default
        ``label.long()``.
    log:
        Progress callback, one line per validation.

    Returns
    -------
    LoopOutcome

    Raises
    ------
    ModelError
        If ``data`` is empty.
    """
    from monai.data import DataLoader, Dataset

    if not data:
        raise ModelError(f"no training samples for the {role!r} network")
    if score not in metric_labels:
        raise ModelError(f"the score {score!r} of the {role!r} network is not one of its metrics")
    use_amp = bool(config.amp) and device == "cuda"
    optimiser = torch.optim.AdamW(network.parameters(), lr=config.learning_rate, weight_decay=1e-4)
    scheduler = one_cycle_scheduler(optimiser, config.learning_rate, iterations)
    scaler = torch.amp.GradScaler("cuda", enabled=use_amp)
    checkpoint_dir = Path(config.out_dir) / "checkpoints"
    checkpoint_dir.mkdir(parents=True, exist_ok=True)
    checkpoint = checkpoint_dir / f"{role}.pt"
    start_iteration = 0
    best: float | None = None
    best_state = _state(network)
    if config.resume and checkpoint.is_file():
        start_iteration, best, best_state = resume_checkpoint(
            checkpoint, network, optimiser, scaler, scheduler, device, role)
    dataset = Dataset(list(data), transform=make_transforms(config.seed + start_iteration))
    generator = torch.Generator().manual_seed(config.seed + start_iteration)
    loader = DataLoader(dataset, batch_size=config.batch_size, shuffle=True, num_workers=0,
                        generator=generator, drop_last=len(data) >= config.batch_size)
    if target is None:
        def target(label: Any) -> torch.Tensor:
            return label.to(device).long()
    metrics_path = Path(config.out_dir) / metrics_file
    new_file = not metrics_path.exists()
    writer_tb = _tensorboard(Path(config.out_dir) / "tensorboard")
    history: list[dict[str, Any]] = []
    iteration = start_iteration
    seen = 0
    t0 = time.perf_counter()
    running: list[float] = []
    # Progress on a terminal only (disable=None: off when stderr is not a TTY, e.g. CI logs).
    bar = tqdm(total=iterations, initial=start_iteration, desc=role, unit="it", disable=None,
               file=sys.stderr, leave=False, dynamic_ncols=True)
    with bar, open(metrics_path, "a", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=[
            "network", "iteration", "loss", "learning_rate", *metric_labels, "samples_per_s"])
        if new_file:
            writer.writeheader()
        while iteration < iterations:
            for batch in loader:
                if iteration >= iterations:
                    break
                network.train()
                x = batch["image"].to(device).float()
                y = target(batch["label"])
                optimiser.zero_grad(set_to_none=True)
                with torch.autocast("cuda", dtype=torch.float16, enabled=use_amp):
                    loss = loss_function(network(x), y)
                scaler.scale(loss).backward()
                scaler.step(optimiser)
                scaler.update()
                scheduler.step()
                iteration += 1
                seen += x.shape[0]
                running.append(float(loss.detach()))
                bar.update(1)
                if iteration % config.val_every == 0 or iteration == iterations:
                    network.eval()
                    metrics = dict(validate(network))
                    rate = seen / max(time.perf_counter() - t0, 1e-9)
                    row: dict[str, Any] = {
                        "network": role, "iteration": iteration,
                        "loss": round(float(np.mean(running)), 5),
                        "learning_rate": scheduler.get_last_lr()[0],
                    }
                    for column in metric_labels:
                        value = metrics.get(column)
                        row[column] = None if value is None else round(float(value), 4)
                    row["samples_per_s"] = round(rate, 2)
                    running = []
                    writer.writerow(row)
                    handle.flush()
                    history.append(row)
                    if writer_tb is not None:
                        writer_tb.add_scalar(f"{role}/loss", row["loss"], iteration)
                        for column in metric_labels:
                            if metrics.get(column) is not None:
                                writer_tb.add_scalar(f"{role}/{column}", metrics[column], iteration)
                    if log is not None:
                        words = " ".join(f"{label} {row[column]}"
                                         for column, label in metric_labels.items())
                        log(f"{role}: iteration {iteration}/{iterations} loss {row['loss']:.4f} "
                            f"{words} ({rate:.1f} samples/s)")
                    value = metrics.get(score)
                    if value is None or best is None or value >= best:
                        best = float(value) if value is not None else best
                        best_state = _state(network)
                if iteration % config.checkpoint_every == 0 or iteration == iterations:
                    torch.save({
                        "network": network.state_dict(), "optimiser": optimiser.state_dict(),
                        "scaler": scaler.state_dict(), "iteration": iteration,
                        # Key kept from the first trainer: the best score, whatever its metric.
                        "best_dice": -1.0 if best is None else best, "best_state": best_state,
                    }, checkpoint)
    seconds = time.perf_counter() - t0
    if writer_tb is not None:
        writer_tb.close()
    return LoopOutcome(best_state, best, iteration - start_iteration,
                       seen / max(seconds, 1e-9), seconds, history)


__all__ = [
    "LoopOutcome",
    "Validate",
    "one_cycle_scheduler",
    "resume_checkpoint",
    "run_training_loop",
]
