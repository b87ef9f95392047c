"""Trainer and evaluator of the ``chest-respiratory-muscle`` network (one multi-class Attention U-Net).

``ainode train chest-respiratory-muscle --phantom --out DIR`` (or ``--data DIR`` with labelled
chest CT, see :mod:`training.datasets`) trains a 2D MONAI ``AttentionUnet`` slice by slice for the
ten classes of :data:`pipelines.chest_respiratory_muscle.LABELS` (0 background, 1/2 pectoralis
right/left, 3/4 erector spinae, 5/6 intercostal, 7/8 diaphragm, 9 other thoracic muscle),
evaluates it on held-out phantoms exactly as the node runs it (weights verified,
``LearnedModel.predict`` on each case's native grid) and writes an installable model directory:
``card.json`` with the measured metrics (status ``phantom-only`` for phantom training),
``muscle.safetensors``, ``metrics.csv`` (training curve), ``evaluation.csv`` (per case) and
``checkpoints/``.

One network instead of the study's cascade
------------------------------------------
Choi et al. (PLoS One 2024;19(7):e0306789) run three Attention U-Nets in turn: thoracic muscle,
then respiratory muscle, then the three classes (pectoralis, erector spinae, intercostal). The
last stage's classes, with their sides and the other-muscle class, already contain the first two
stages' masks as their unions (respiratory = labels 1..6, thoracic = labels 1..9), so one
multi-class network (output channel = label value) gives the same three outputs in one pass and
one weights file, and its Dice/cross-entropy loss trains the three decisions jointly. The cascade
would triple the CPU inference time and the shipped size. A site that wants the cascade can ship
it as three networks (roles ``thoracic``, ``respiratory``, ``classes``) in one card; the adapter
in :mod:`models.inference` runs the ``muscle`` role only.

Inputs (written into the card)
------------------------------
* Window :data:`CHEST_WINDOW_HU` (-160..240 HU) clipped and scaled to 0..1: it spans fat
  (-100 HU), the muscle band (-29..150 HU) whose classes differ by a few tens of HU, and the
  edges of lung and bone (which only need to be recognised as such).
* Grid :data:`CHEST_GRID_MM` (3 mm pixels) and patch :data:`CHEST_ROI` (128 x 128 = 384 mm): the
  patch covers a whole chest cross-section, so every window sees the spine and the heart and can
  tell the patient's left from right (labels 1..8 carry the side). Clinical fields of view above
  384 mm run as several overlapping windows (Gaussian-weighted sliding window).

Phantoms (:func:`chest_phantom_parameters`): :mod:`training.phantoms.chest` with the anatomy
rotated about the cranio-caudal axis by -15..15 degrees and shifted in-plane, noise 6..14 HU,
pixel spacing 1.4/1.5 mm and slice thickness 4/5 mm, varied by seed; labels are exact (computed in
the body frame, so they rotate with the anatomy). Training samples are axial slices
(:func:`chest_slice_samples`), augmented by :func:`training.train.train_network`'s MONAI
transforms (zoom, intensity scale/shift, noise, crops).
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.architectures import DEFAULT_NETWORKS, build_network, save_weights
from models.cards import ModelCard, NetworkSpec
from models.inference import resample_2d, window_to_unit
from models.registry import sha256_file
from pipelines.chest_respiratory_muscle import LABELS, RESPIRATORY_LABELS, SEGMENTS
from ainode_core.errors import ModelError
from pipelines.types import ValidationStatus
from training.datasets import Case, split_cases
from training.evaluate import EvaluationReport, dice, evaluate_model_dir, mean_metric
from training.train import (
    Sample,
    TrainConfig,
    TrainedNetwork,
    _device,
    evaluation_cases,
    intended_use,
    train_network,
    training_cases,
    write_evaluated_card,
)

logger = logging.getLogger(__name__)

PROTOCOL = "chest-respiratory-muscle"
#: Role of the network in the card (the adapter in models.inference loads this role).
ROLE = "muscle"
#: Input window of the network, HU (clipped and scaled to 0..1).
CHEST_WINDOW_HU = (-160.0, 240.0)
#: Pixel spacing of the grid the network runs on, mm (3 mm: CPU training budget, see docs).
CHEST_GRID_MM = 3.0
#: Training patch and sliding-window size, pixels of the grid (128 x 3 mm = 384 mm).
CHEST_ROI = 128
#: Axial slices taken from each training case.
CHEST_SLICES_PER_CASE = 20
#: Validation slices (at most) used for the best-weights choice during training.
CHEST_MAX_VAL_SLICES = 16
#: Held-out phantom seeds start here (training seeds start at ``config.seed``).
EVAL_SEED_OFFSET = 10_000

#: Class key -> label values (both sides), for the side-merged metrics.
CLASS_LABELS: dict[str, tuple[int, ...]] = {}
for _value, (_key, _side) in LABELS.items():
    CLASS_LABELS.setdefault(_key, ())
    CLASS_LABELS[_key] += (_value,)

#: Short metric names per label value.
LABEL_KEYS: dict[int, str] = {
    value: key if side is None else f"{key}_{side}" for value, (key, side) in LABELS.items()
}


def card_labels() -> list[dict[str, Any]]:
    """The card's label list: background + one entry per label of ``LABELS`` with its SNOMED CT
    property code (the SEG segment's Segmented Property Type; the side is in the name)."""
    labels: list[dict[str, Any]] = [{"value": 0, "name": "background"}]
    for segment in SEGMENTS:
        code = segment.property_type
        labels.append({"value": int(segment.number), "name": segment.label,
                       "code": {"value": code.value, "scheme": code.scheme, "meaning": code.meaning}})
    return labels


def chest_phantom_parameters(seed: int, size: str = "standard") -> dict[str, Any]:
    """Varied keyword arguments of :func:`training.phantoms.chest.make_chest_phantom` for ``seed``.

    Parameters
    ----------
    seed:
        Phantom seed (noise, rotation, shift, spacing).
    size:
        ``"standard"``: 256 x 256 pixels of 1.4 or 1.5 mm, slices of 4 or 5 mm (89-111 slices).
        ``"small"``: 128 x 128 pixels of 3.0 mm, 6 mm slices (fast, for tests).

    Returns
    -------
    dict
        Rotation -15..15 degrees about the cranio-caudal axis, in-plane shift up to 10 mm (within
        what the field of view allows), noise SD 6..14 HU, and the grid.

    Raises
    ------
    ValueError
        Unknown ``size``.
    """
    rng = np.random.default_rng(seed + 7919)
    if size == "small":
        grid: dict[str, Any] = {"rows": 128, "columns": 128, "pixel_spacing_mm": 3.0,
                                "slice_thickness_mm": 6.0}
    elif size == "standard":
        grid = {"rows": 256, "columns": 256, "pixel_spacing_mm": float(rng.choice([1.4, 1.5])),
                "slice_thickness_mm": float(rng.choice([4.0, 5.0]))}
    else:
        raise ValueError(f"phantom size {size!r}: use 'standard' or 'small'")
    fov_mm = grid["rows"] * grid["pixel_spacing_mm"]
    max_shift = max(0.0, min(10.0, (fov_mm - 350.0) / 2.0 - 0.5))
    return {
        **grid,
        "seed": int(seed),
        "noise_hu": float(rng.uniform(6.0, 14.0)),
        "rotation_deg": float(rng.uniform(-15.0, 15.0)),
        "shift_mm": (float(rng.uniform(-max_shift, max_shift)),
                     float(rng.uniform(-max_shift, max_shift))),
    }


def chest_phantom_case(seed: int, size: str = "standard") -> Case:
    """A chest phantom (:func:`chest_phantom_parameters`) as a training/evaluation case."""
    from training.phantoms.chest import make_chest_phantom

    parameters = chest_phantom_parameters(seed, size)
    phantom = make_chest_phantom(**parameters)
    return Case(
        case_id=f"chest-phantom-{seed:05d}",
        hu=phantom.hu,
        labels=phantom.labels,
        spacing_mm=tuple(float(s) for s in phantom.spacing_mm),  # type: ignore[arg-type]
        extra={"phantom_parameters": parameters, "lung_slab": phantom.lung_slab},
    )


def chest_slice_samples(case: Case, grid_mm: float = CHEST_GRID_MM,
                        n_slices: int | None = CHEST_SLICES_PER_CASE) -> list[Sample]:
    """Axial training samples of a case on the network's grid.

    Parameters
    ----------
    case:
        Labelled volume (canonical axes; labels in the numbering of ``LABELS``).
    grid_mm:
        Pixel spacing of the network's grid, mm.
    n_slices:
        Slices taken: evenly spaced over the labelled slices, plus up to 2 slices holding the
        diaphragm (labels 7/8, a thin sheet present on few slices) when the even spacing misses
        them. ``None`` takes every labelled slice.

    Returns
    -------
    list[Sample]
        ``image`` ``(1, H, W)`` float32 0..1 (:data:`CHEST_WINDOW_HU`), ``label`` ``(1, H, W)``
        int64, both resampled to ``grid_mm`` (bilinear / nearest).
    """
    labelled = np.flatnonzero(case.labels.reshape(case.labels.shape[0], -1).any(axis=1))
    if len(labelled) == 0:
        return []
    if n_slices is None or n_slices >= len(labelled):
        picks = set(labelled.tolist())
    else:
        picks = set(labelled[np.linspace(0, len(labelled) - 1, n_slices).round().astype(int)].tolist())
        diaphragm = np.flatnonzero(np.isin(case.labels, (7, 8)).reshape(case.labels.shape[0], -1)
                                   .any(axis=1))
        missing = [int(k) for k in diaphragm if int(k) not in picks]
        if missing and not picks & set(diaphragm.tolist()):
            picks.update(missing[:: max(1, len(missing) // 2)][:2])
    target = (grid_mm, grid_mm)
    samples = []
    for k in sorted(picks):
        image = resample_2d(window_to_unit(case.hu[k], CHEST_WINDOW_HU)[None], case.spacing_mm[1:],
                            target)
        label = resample_2d(case.labels[k][None].astype(np.float32), case.spacing_mm[1:], target,
                            "nearest")
        samples.append(Sample(image, label.round().astype(np.int64), f"{case.case_id}:{k}"))
    return samples


def chest_loss() -> torch.nn.Module:
    """Dice + cross-entropy (MONAI ``DiceCELoss``, softmax, one-hot) with the Dice computed over
    the whole batch (``batch=True``, as nnU-Net does).

    Most classes are absent from many slices (pectoralis T2..T7, diaphragm on a few slices). A
    per-slice Dice scores an absent class that is not predicted as perfect and any prediction of
    it as a total miss, which drove the network to predict only the erector spinae (present on
    every slice) in a first training run; the batch Dice counts each class over all slices.
    """
    from monai.losses import DiceCELoss

    return DiceCELoss(to_onehot_y=True, softmax=True, batch=True)


def chest_transforms(roi: tuple[int, int], seed: int) -> Any:
    """MONAI dictionary transforms of the training slices.

    In-plane rotation -15..15 degrees (``RandRotated``, bilinear image / nearest label; on top of
    the phantoms' own rotation), zoom 0.85..1.15, pad and crop to ``roi``, intensity scale and
    shift, Gaussian noise.
    """
    from monai.transforms import (
        Compose,
        RandGaussianNoised,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        RandZoomd,
        SpatialPadd,
    )

    keys = ("image", "label")
    compose = Compose([
        RandRotated(keys=keys, range_x=math.radians(15.0), prob=0.5, mode=("bilinear", "nearest"),
                    padding_mode="zeros", keep_size=True),
        RandZoomd(keys=keys, prob=0.5, min_zoom=0.85, max_zoom=1.15, mode=("bilinear", "nearest"),
                  keep_size=True),
        SpatialPadd(keys=keys, spatial_size=roi),
        RandSpatialCropd(keys=keys, roi_size=roi, random_size=False),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandGaussianNoised(keys="image", prob=0.3, std=0.02),
    ])
    compose.set_random_state(seed=seed)
    return compose


# -- evaluation ---------------------------------------------------------------------------------


def evaluate_chest(model: Any, cases: list[Case]) -> EvaluationReport:
    """Evaluate a chest :class:`pipelines.types.LearnedModel` on labelled volumes.

    Per case, on the whole volume at its native grid: Dice of each label (1..9), of each class
    with both sides merged (pectoralis, erector spinae, intercostal, diaphragm), of the three
    respiratory classes together (labels 1..6 as one mask) and of all thoracic muscle (1..9 as one
    mask), and the volume error of each label in cm³ and in % of the truth.

    Parameters
    ----------
    model:
        ``predict(hu, spacing_mm) -> (slices, rows, columns) uint8``.
    cases:
        Labelled cases in the numbering of ``LABELS``.

    Returns
    -------
    training.evaluate.EvaluationReport
        Per-case rows and the means: ``dice_<label>_mean`` per label, ``dice_<class>_mean`` per
        class (sides merged), ``dice_respiratory_labels_mean`` (mean of the Dice of labels 1..6;
        the card's primary metric), ``dice_respiratory_union_mean``, ``dice_thoracic_union_mean``,
        ``dice_min_respiratory_label`` (worst label 1..6 over the cases) and
        ``volume_abs_error_pct_<label>_mean``.
    """
    report = EvaluationReport()
    for case in cases:
        pred = np.asarray(model.predict(case.hu, case.spacing_mm))
        truth = case.labels
        voxel_cm3 = float(np.prod(case.spacing_mm)) / 1000.0
        row: dict[str, Any] = {"case": case.case_id, "slices": int(truth.shape[0])}
        params = case.extra.get("phantom_parameters")
        if isinstance(params, dict):
            row["rotation_deg"] = round(float(params["rotation_deg"]), 2)
        counts_pred = np.bincount(pred.ravel(), minlength=10)
        counts_true = np.bincount(truth.ravel(), minlength=10)
        for value, key in LABEL_KEYS.items():
            row[f"dice_{key}"] = round(dice(pred == value, truth == value), 4)
        for key, values in CLASS_LABELS.items():
            if len(values) > 1:
                row[f"dice_{key}"] = round(dice(np.isin(pred, values), np.isin(truth, values)), 4)
        row["dice_respiratory_union"] = round(
            dice(np.isin(pred, RESPIRATORY_LABELS), np.isin(truth, RESPIRATORY_LABELS)), 4)
        row["dice_thoracic_union"] = round(dice(pred > 0, truth > 0), 4)
        for value, key in LABEL_KEYS.items():
            t_cm3 = float(counts_true[value]) * voxel_cm3
            p_cm3 = float(counts_pred[value]) * voxel_cm3
            row[f"volume_true_cm3_{key}"] = round(t_cm3, 2)
            row[f"volume_error_cm3_{key}"] = round(p_cm3 - t_cm3, 2)
            row[f"volume_error_pct_{key}"] = round(100 * (p_cm3 - t_cm3) / t_cm3, 2) if t_cm3 else None
        report.rows.append(row)
    rows = report.rows
    metrics: dict[str, float | None] = {}
    respiratory_keys = [LABEL_KEYS[v] for v in RESPIRATORY_LABELS]
    metrics["dice_respiratory_labels_mean"] = mean_metric(
        [r[f"dice_{k}"] for r in rows for k in respiratory_keys])
    worst = [r[f"dice_{k}"] for r in rows for k in respiratory_keys if not math.isnan(r[f"dice_{k}"])]
    metrics["dice_min_respiratory_label"] = round(min(worst), 4) if worst else None
    metrics["dice_respiratory_union_mean"] = mean_metric([r["dice_respiratory_union"] for r in rows])
    metrics["dice_thoracic_union_mean"] = mean_metric([r["dice_thoracic_union"] for r in rows])
    for key, values in CLASS_LABELS.items():
        if len(values) > 1:
            metrics[f"dice_{key}_mean"] = mean_metric([r[f"dice_{key}"] for r in rows])
    for key in LABEL_KEYS.values():
        metrics[f"dice_{key}_mean"] = mean_metric([r[f"dice_{key}"] for r in rows])
    for key in LABEL_KEYS.values():
        metrics[f"volume_abs_error_pct_{key}_mean"] = mean_metric(
            [abs(r[f"volume_error_pct_{key}"]) for r in rows if r[f"volume_error_pct_{key}"] is not None])
    report.metrics = metrics
    return report


def evaluate_chest_model_dir(model_dir: str | Path, cases: list[Case],
                             report_csv: str | Path | None = None, device: str = "auto") -> EvaluationReport:
    """Evaluate the chest model in ``model_dir`` (card validated, weights verified) on ``cases``
    with :func:`evaluate_chest`; the per-case rows go to ``report_csv`` when given.

    Raises
    ------
    ModelError
        Invalid or tampered model, or a model of another protocol.
    """
    return evaluate_model_dir(model_dir, cases, report_csv, device=device, protocol=PROTOCOL)


# -- training -----------------------------------------------------------------------------------


def train_chest(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    *,
    grid_mm: float = CHEST_GRID_MM,
    roi_size: int = CHEST_ROI,
    slices_per_case: int | None = CHEST_SLICES_PER_CASE,
) -> Path:
    """Train, evaluate and write a chest respiratory-muscle model directory.

    Parameters
    ----------
    config:
        Training options. Used here: ``out_dir``, ``data_dir`` (``None``: phantoms),
        ``name``, ``version``, ``iterations``, ``batch_size``, ``learning_rate``, ``train_cases``,
        ``eval_cases``, ``phantom_size``, ``seed``, ``val_fraction``, ``val_every``,
        ``checkpoint_every``, ``device``, ``amp``, ``resume``. ``slices_per_case``,
        ``roi_size`` and ``tissue_spacing_mm`` of the config are the L3 network's and are ignored.
    log:
        Progress callback (one line per validation).
    grid_mm:
        Pixel spacing of the network's grid, mm (card ``pixel_spacing_mm``).
    roi_size:
        Training patch and sliding-window size, pixels (card ``roi_size``).
    slices_per_case:
        Axial slices per training case (:func:`chest_slice_samples`); ``None``: all.

    Returns
    -------
    pathlib.Path
        The model directory (``config.out_dir``), installable with ``ainode models install``.

    Raises
    ------
    ModelError
        No usable training data.
    """
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: logger.info("%s", message))
    phantom = config.data_dir is None
    cases = training_cases(config, chest_phantom_case, say, what="training chest phantoms")
    for case in cases:
        unknown = sorted(set(np.unique(case.labels).tolist()) - {0, *LABELS})
        if unknown:
            raise ModelError(f"case {case.case_id}: labels {unknown} are not in the chest numbering "
                             f"(0..{max(LABELS)}, pipelines.chest_respiratory_muscle.LABELS)")
    train_ids, val_ids = split_cases([c.case_id for c in cases], config.val_fraction, config.seed)
    by_id = {c.case_id: c for c in cases}
    train_samples = [s for i in train_ids
                     for s in chest_slice_samples(by_id[i], grid_mm, slices_per_case)]
    val_all = [s for i in val_ids for s in chest_slice_samples(by_id[i], grid_mm, slices_per_case)]
    # Evenly spread over the validation slices (not only the first case's).
    step = max(1, math.ceil(len(val_all) / CHEST_MAX_VAL_SLICES))
    val_samples = val_all[::step]
    arch, args = DEFAULT_NETWORKS[PROTOCOL][ROLE]
    roi = (roi_size, roi_size)
    say(f"muscle network: {len(train_samples)} training / {len(val_samples)} validation slices")
    trained: TrainedNetwork = train_network(
        ROLE, arch, args, train_samples, val_samples, config, roi=roi, log=say,
        loss_function=chest_loss(), transforms=chest_transforms(roi, config.seed))
    weights = out / f"{ROLE}.safetensors"
    network = build_network(arch, args)
    network.load_state_dict(trained.state_dict)
    save_weights(network, weights)
    spec = NetworkSpec(
        role=ROLE, weights=weights.name, sha256=sha256_file(weights), architecture=arch, args=args,
        input={"spatial_dims": 2,
               "channels": [f"CT {CHEST_WINDOW_HU[0]:g}..{CHEST_WINDOW_HU[1]:g} HU"],
               "pixel_spacing_mm": [grid_mm, grid_mm], "roi_size": list(roi),
               "intensity_window_hu": list(CHEST_WINDOW_HU)},
        labels=card_labels(),
        postprocessing=["each axial slice on its own (2D)",
                        "softmax; sliding-window (Gaussian) on the pixel grid above",
                        "probabilities resampled bilinearly to the slice grid; argmax"],
    )
    status = ValidationStatus.PHANTOM_ONLY if phantom else ValidationStatus.RESEARCH
    name = config.name or ("chest-phantom-local" if phantom else "chest-local")
    training_data = {
        "description": (
            f"{len(cases)} digital chest phantoms (training.phantoms.chest via "
            f"training.train_chest.chest_phantom_parameters, size {config.phantom_size}, seeds "
            f"{config.seed}..{config.seed + len(cases) - 1}) rotated -15..15 degrees about the "
            "cranio-caudal axis and shifted in-plane, with varied noise, pixel spacing and slice "
            f"thickness; {slices_per_case or 'all'} axial slices per case"
            if phantom else f"{len(cases)} labelled cases from {config.data_dir}"),
        "cases": len(cases),
        "split": {"train": train_ids, "validation": val_ids, "method":
                  "case ids sorted, permuted by numpy default_rng(seed)"},
        "seed": config.seed,
    }
    device = _device(config.device)
    training = {
        "iterations": {ROLE: trained.iterations},
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
        "loss": "DiceCELoss (MONAI), softmax, one-hot, batch Dice",
        "optimiser": "AdamW, one-cycle schedule",
        "augmentation": "phantom rotation -15..15 deg and shift; MONAI RandRotated -15..15 deg, "
                        "RandZoomd 0.85-1.15, RandScaleIntensityd, RandShiftIntensityd, "
                        f"RandGaussianNoised, {roi_size}x{roi_size} crops",
        "best_validation_dice": {ROLE: trained.best_val_dice},
        "samples_per_second": {ROLE: round(trained.samples_per_second, 2)},
        "device": device, "amp": config.amp and device == "cuda",
        "torch": torch.__version__,
    }
    card = ModelCard(
        name=name, version=config.version, protocol=PROTOCOL,
        task="Chest CT respiratory muscles: pectoralis, erector spinae, intercostal and diaphragm "
             "(right/left) and other thoracic muscle, axial slice by slice",
        validation_status=status,
        intended_use=intended_use(phantom),
        training_data=training_data,
        evaluation={"set": "pending", "metrics": {}},
        networks=[spec],
        description="2D Attention U-Net (MONAI AttentionUnet), one multi-class network for the "
                    "classes of the study's three-stage cascade (thoracic muscle, respiratory "
                    "muscle, three classes), which are unions of its labels",
        source="Architecture after Choi et al., PLoS One 2024;19(7):e0306789 (Attention U-Net); "
               "one network instead of the cascade (see training/train_chest.py)",
        license="Apache-2.0",
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        training=training,
    )
    card.write(out)
    eval_cases, eval_set = evaluation_cases(
        config, chest_phantom_case, [by_id[i] for i in val_ids],
        what="digital chest phantoms", details=", rotated and shifted",
        grid="whole volume at the native grid", offset=EVAL_SEED_OFFSET,
    )
    report = evaluate_chest_model_dir(out, eval_cases, out / "evaluation.csv", device=config.device)
    write_evaluated_card(card, out, report, eval_set, len(eval_cases), "dice_respiratory_labels_mean")
    say(f"wrote {out} ({name} {config.version}, {status.value}); evaluation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report.metrics.items()
                    if v is not None and k.startswith("dice_") and k.endswith("_mean")))
    return out


def train(config: TrainConfig, log: Callable[[str], None] | None = None) -> Path:
    """The trainer named by the protocol's spec (``pipelines/protocols/chest_respiratory_muscle.py``;
    see :func:`train_chest`)."""
    return train_chest(config, log)


__all__ = [
    "CHEST_GRID_MM",
    "CHEST_ROI",
    "CHEST_WINDOW_HU",
    "CLASS_LABELS",
    "LABEL_KEYS",
    "card_labels",
    "chest_loss",
    "chest_phantom_case",
    "chest_phantom_parameters",
    "chest_slice_samples",
    "chest_transforms",
    "evaluate_chest",
    "evaluate_chest_model_dir",
    "train",
    "train_chest",
]
