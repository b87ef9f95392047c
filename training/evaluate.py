"""Evaluation of a model directory on labelled cases: Dice, area and level errors per case.

The model runs exactly as in the node (:func:`models.inference.load_learned_model`, the weights
verified against the card), on each case's native grid; the per-case report is a CSV and the
means go into the model card (``evaluation.metrics``).

L3 metrics (per case, on the mid-L3 slice of the ground truth, or on every labelled slice of a
user case): Dice of SMA, SAT, VAT, IMAT; area error of each tissue in cm² and in % of the truth;
with a level network, the error of the mid-L3 slice in slices and mm, and whether the chosen slice
lies inside the true L3 vertebral body.
"""

from __future__ import annotations

import csv
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from pipelines.errors import ModelError
from training.datasets import Case

_L3_TISSUES = ((1, "sma"), (2, "sat"), (3, "vat"), (4, "imat"))


@dataclass
class EvaluationReport:
    """Per-case rows and summary metrics (means; ``None`` when undefined)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two boolean masks (NaN when both are empty)."""
    denom = int(pred.sum()) + int(truth.sum())
    return float(2 * int((pred & truth).sum()) / denom) if denom else math.nan


def _mean(values: list[float]) -> float | None:
    clean = [v for v in values if v is not None and not math.isnan(v)]
    return round(float(np.mean(clean)), 4) if clean else None


def evaluate_l3(model: Any, cases: list[Case]) -> EvaluationReport:
    """Evaluate an L3 :class:`pipelines.types.LearnedModel` on cases (see the module docstring)."""
    report = EvaluationReport()
    for case in cases:
        slices = ([case.mid_l3_slice] if case.mid_l3_slice is not None
                  else [k for k in range(case.labels.shape[0]) if case.labels[k].any()])
        pixel_cm2 = case.spacing_mm[1] * case.spacing_mm[2] / 100.0
        for k in slices:
            pred = np.asarray(model.predict(case.hu[k], case.spacing_mm[1:]))
            truth = case.labels[k]
            row: dict[str, Any] = {"case": case.case_id, "slice": int(k)}
            for value, key in _L3_TISSUES:
                t_area = float((truth == value).sum() * pixel_cm2)
                p_area = float((pred == value).sum() * pixel_cm2)
                row[f"dice_{key}"] = round(dice(pred == value, truth == value), 4)
                row[f"{key}_area_true_cm2"] = round(t_area, 2)
                row[f"{key}_area_error_cm2"] = round(p_area - t_area, 2)
                row[f"{key}_area_error_pct"] = (round(100 * (p_area - t_area) / t_area, 2)
                                                if t_area else None)
            if model.classify is not None and case.mid_l3_slice is not None:
                index, confidence = model.classify(case.hu, case.spacing_mm)
                error = int(index) - int(case.mid_l3_slice)
                row["level_slice"] = int(index)
                row["level_error_slices"] = error
                row["level_error_mm"] = round(error * case.spacing_mm[0], 2)
                row["level_confidence"] = round(float(confidence), 3)
                if case.l3_slices is not None:
                    row["level_in_l3"] = bool(case.l3_slices[0] <= index <= case.l3_slices[1])
            report.rows.append(row)
    rows = report.rows
    metrics: dict[str, float | None] = {}
    for _, key in _L3_TISSUES:
        metrics[f"dice_{key}_mean"] = _mean([r[f"dice_{key}"] for r in rows])
    metrics["dice_sma_min"] = (round(min(r["dice_sma"] for r in rows), 4) if rows else None)
    for _, key in _L3_TISSUES:
        metrics[f"{key}_area_abs_error_pct_mean"] = _mean(
            [abs(r[f"{key}_area_error_pct"]) for r in rows if r[f"{key}_area_error_pct"] is not None])
    if any("level_error_mm" in r for r in rows):
        errors = [abs(r["level_error_mm"]) for r in rows if "level_error_mm" in r]
        metrics["level_abs_error_mm_mean"] = _mean(errors)
        metrics["level_abs_error_mm_max"] = round(max(errors), 2)
        inside = [r["level_in_l3"] for r in rows if "level_in_l3" in r]
        metrics["level_in_l3_fraction"] = round(sum(inside) / len(inside), 4) if inside else None
    report.metrics = metrics
    return report


#: Protocol -> evaluation function (second wave adds the others).
EVALUATORS = {"l3-body-composition": evaluate_l3}


def evaluate_model_dir(model_dir: str | Path, cases: list[Case],
                       report_csv: str | Path | None = None, device: str = "auto") -> EvaluationReport:
    """Evaluate the model in ``model_dir`` (card validated, weights verified) on ``cases``.

    Parameters
    ----------
    model_dir:
        A model directory (``card.json`` + weights).
    cases:
        Labelled cases (:mod:`training.datasets`).
    report_csv:
        Where to write the per-case rows (``None``: not written).
    device:
        ``auto``, ``cpu`` or ``cuda``.

    Raises
    ------
    ModelError
        Invalid or tampered model, or a protocol without an evaluator.
    """
    from models.inference import load_learned_model, resolve_device
    from models.registry import load_entry

    entry = load_entry(model_dir, verify=True)
    evaluator = EVALUATORS.get(entry.card.protocol)
    if evaluator is None:
        raise ModelError(f"no evaluator for protocol {entry.card.protocol!r} in this version")
    model, _ = load_learned_model(entry, resolve_device(device))
    report = evaluator(model, cases)
    if report_csv is not None and report.rows:
        keys: list[str] = []
        for row in report.rows:
            keys += [k for k in row if k not in keys]
        with open(report_csv, "w", newline="") as handle:
            writer = csv.DictWriter(handle, fieldnames=keys)
            writer.writeheader()
            writer.writerows(report.rows)
    return report


def cmd_evaluate(args: Any) -> int:
    """``ainode evaluate MODEL (--phantom [--cases N] | --data DIR) [--report CSV]``."""
    from models.registry import default_install_dir, get_model
    from training.datasets import phantom_case
    from training.train import _load_user_cases

    model_dir = Path(args.model)
    if not model_dir.is_dir():
        install_dir = default_install_dir(args.data_dir) if args.data_dir else None
        model_dir = get_model(args.model, install_dir).path
    if bool(args.phantom) == bool(args.data):
        print("give exactly one of --phantom or --data DIR", file=sys.stderr)
        return 2
    if args.phantom:
        cases = [phantom_case(20_000 + i, args.phantom_size) for i in range(args.cases)]
    else:
        cases = _load_user_cases(Path(args.data))
    report = evaluate_model_dir(model_dir, cases, args.report, device=args.device)
    for key, value in report.metrics.items():
        print(f"{key}: {value}")
    if args.report:
        print(f"per-case report: {args.report}")
    return 0
