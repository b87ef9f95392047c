"""Evaluation of a model directory on labelled cases: Dice, area and level errors per case.

The model runs exactly as in the node (:func:`models.inference.load_learned_model`, the weights
verified against the card), on each case's native grid; the per-case report is a CSV and the
means go into the model card (``evaluation.metrics``).

L3 metrics (per case, on the mid-L3 slice of the ground truth, or on every labelled slice of a
user case): Dice of SMA, SAT, VAT, IMAT; area error of each tissue in cm² and in % of the truth;
with a level network, the error of the mid-L3 slice in slices and mm, and whether the chosen slice
lies inside the true L3 vertebral body. The other protocols' evaluators live beside their trainers
(:func:`training.train_chest.evaluate_chest`, :func:`training.train_rds.evaluate_rds`,
:func:`training.train_brain.evaluate_brain`); every protocol's evaluator, phantom and reader of
labelled cases are named by its spec (:mod:`pipelines.protocols`) and imported when first used.
"""

from __future__ import annotations

import csv
import math
import sys
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, cast

import numpy as np
from tqdm import tqdm

from ainode_core.errors import ModelError
from pipelines.registry import SpecObjects
from training.datasets import Case

_L3_TISSUES = ((1, "sma"), (2, "sat"), (3, "vat"), (4, "imat"))


@dataclass
class EvaluationReport:
    """Per-case rows and summary metrics (means; ``None`` when undefined)."""

    rows: list[dict[str, Any]] = field(default_factory=list)
    metrics: dict[str, float | None] = field(default_factory=dict)


def dice(pred: np.ndarray, truth: np.ndarray) -> float:
    """Dice coefficient 2|A∩B| / (|A| + |B|) of two boolean masks of one shape (any axes).

    Computed by MONAI's :func:`monai.metrics.compute_dice`; NaN when both masks are empty
    (undefined, left out of the means), 0 when only one is.
    """
    import torch
    from monai.metrics import compute_dice

    pred, truth = np.asarray(pred, dtype=bool), np.asarray(truth, dtype=bool)
    if not pred.any() and not truth.any():
        return math.nan
    as_tensor = lambda mask: torch.from_numpy(mask[None, None].astype(np.float32))  # noqa: E731
    score = compute_dice(as_tensor(pred), as_tensor(truth), include_background=True,
                         ignore_empty=False)
    return float(score.item())


def mean_metric(values: Iterable[Any]) -> float | None:
    """Mean of the defined values (``None`` and NaN left out), rounded to 4 decimals; ``None``
    when no value is defined."""
    clean = [float(v) for v in values if v is not None and not math.isnan(float(v))]
    return round(float(np.mean(clean)), 4) if clean else None


_mean = mean_metric


def write_report_csv(rows: Sequence[dict[str, Any]], path: str | Path) -> None:
    """Write per-case rows as CSV; the columns are the union of the rows' keys in first-seen order
    (a row without a column leaves it empty)."""
    keys: list[str] = []
    for row in rows:
        keys += [k for k in row if k not in keys]
    with open(path, "w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=keys)
        writer.writeheader()
        writer.writerows(rows)


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
            locate = getattr(model, "locate", None)  # the level network (LearnedModel.locate)
            if locate is not None and case.mid_l3_slice is not None:
                index, confidence = locate(case.hu, case.spacing_mm)
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


#: Protocol -> evaluation function ``(model, cases) -> EvaluationReport``, from each protocol's
#: spec (``evaluator``).
EVALUATORS: Mapping[str, Callable[[Any, list[Case]], EvaluationReport]] = SpecObjects("evaluator")

#: Protocol -> ``(seed, size) -> Case``: the digital phantom case of that protocol (spec
#: ``phantom_case``).
PHANTOM_CASES: Mapping[str, Callable[[int, str], Case]] = SpecObjects("phantom_case")

#: Protocol -> ``(data_dir) -> list[Case]``: labelled user cases of that protocol (spec
#: ``user_cases``).
USER_CASES: Mapping[str, Callable[[Path], list[Case]]] = SpecObjects("user_cases")

#: First seed of the phantoms of ``ainode evaluate --phantom`` (outside every trainer's seeds:
#: training uses ``seed .. seed + cases - 1``, the trainers' held-out cases ``10_000 + seed ..``).
CLI_PHANTOM_SEED = 20_000


def _registered(table: Mapping[str, Any], protocol: str, what: str) -> Any:
    try:
        return table[protocol]
    except KeyError:
        raise ModelError(
            f"no {what} for protocol {protocol!r} in this version; known protocols: "
            f"{', '.join(sorted(table))}") from None


def user_cases(protocol: str, data_dir: Path) -> list[Case]:
    """The labelled cases of ``protocol`` in ``data_dir`` (see :data:`USER_CASES`).

    Raises
    ------
    ModelError
        A protocol without a reader of labelled data.
    """
    read = _registered(USER_CASES, protocol, "reader of labelled data")
    cases: list[Case] = read(data_dir)
    return cases


def phantom_cases(protocol: str, count: int, size: str = "standard",
                  first_seed: int = CLI_PHANTOM_SEED) -> list[Case]:
    """``count`` held-out digital phantom cases of ``protocol`` (seeds ``first_seed ..``).

    Raises
    ------
    ModelError
        A protocol without a phantom.
    """
    make = _registered(PHANTOM_CASES, protocol, "phantom")
    seeds = tqdm(range(first_seed, first_seed + count), desc="making phantoms", unit="case",
                 disable=None, file=sys.stderr, leave=False)
    return [make(seed, size) for seed in seeds]


def evaluate_model_dir(model_dir: str | Path, cases: list[Case],
                       report_csv: str | Path | None = None, device: str = "auto",
                       protocol: str | None = None) -> EvaluationReport:
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
    protocol:
        When given, the protocol the model must serve (a model of another protocol is refused).

    Raises
    ------
    ModelError
        Invalid or tampered model, a model of another protocol than ``protocol``, or a protocol
        without an evaluator.
    """
    from models.inference import load_learned_model, resolve_device
    from models.registry import load_entry

    entry = load_entry(model_dir, verify=True)
    if protocol is not None and entry.card.protocol != protocol:
        raise ModelError(f"model {entry.name} is for {entry.card.protocol!r}, not {protocol!r}")
    evaluator = _registered(EVALUATORS, entry.card.protocol, "evaluator")
    model, _ = load_learned_model(entry, resolve_device(device))
    # The evaluators iterate over the cases once: a tqdm over the list shows the progress on a
    # terminal (disable=None: quiet when stderr is not a TTY).
    with tqdm(cases, desc=f"evaluating {entry.name}", unit="case", disable=None,
              file=sys.stderr, leave=False) as shown:
        report = evaluator(model, cast(list[Case], shown))
    if report_csv is not None and report.rows:
        write_report_csv(report.rows, report_csv)
    return report


