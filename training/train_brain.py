"""Training and evaluation of the ``brain-gwr`` landmark network (3D DynUNet, nnU-Net style).

``ainode train brain-gwr --phantom --out DIR`` trains the ``landmarks`` network of
:func:`models.architectures.brain_landmark_network` (MONAI ``DynUNet``, 3D full resolution in the
nnU-Net style, filters 8-16-32-64) with five side-merged output classes (:data:`MERGED_LABELS`;
the inference adapter splits them into right and left at the midline) on digital head phantoms
generated on the fly
(:mod:`training.phantoms.head`), or ``--data DIR`` on a site's labelled head CTs (NIfTI pairs or
DICOM + DICOM-SEG, :mod:`training.datasets`) whose labels use the numbering of
:data:`pipelines.brain_atlas.LANDMARK_LABELS` (1 caudate R, 2 caudate L, 3 putamen R,
4 putamen L, 5 PLIC R, 6 PLIC L, 7 corpus callosum).

Inputs (written into the card and used by ``models.inference._brain_adapter``):

* the CT clipped to :data:`BRAIN_WINDOW_HU` (0..80 HU, a brain window) and scaled to 0..1;
* resampled to an isotropic grid of :data:`BRAIN_SPACING_MM` (3 mm: coarse, so that CPU training
  takes minutes; nnU-Net's full-resolution network runs at the data's median spacing, about
  0.5 x 0.5 x 5 mm on head CT) with MONAI ``Resize`` (trilinear, the same call as in inference);
* training patches and sliding windows of :data:`BRAIN_ROI` voxels (48^3 = 144 mm).

Phantoms vary by seed (:func:`head_phantom_parameters`): head rotation (±10° about each axis)
and shift (±10 mm), gray/white-matter attenuation, noise, partial volume, pixel spacing and slice
spacing. MONAI dictionary transforms add random zoom, intensity scale/shift, Gaussian noise and
random crops (``training.train.train_network``). No left-right flip: it would swap the paired
labels. Loss: Dice + cross-entropy (``DiceCELoss``), AdamW, one-cycle schedule.

Evaluation (:func:`evaluate_brain`) runs the written model as the node does on held-out
phantoms (seeds ``10000 + seed`` ..) on their native grid: Dice per landmark, volume error, and
the GWR_BG computed by :mod:`pipelines.brain_gwr` (refinement, cores, ratio) from the predicted
labels against the same computation on the true labels.

Research use only, not for diagnosis; a phantom-trained model is ``phantom-only``.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.architectures import DEFAULT_NETWORKS, build_network, save_weights
from models.cards import ModelCard, NetworkSpec
from models.registry import sha256_file
from pipelines.brain_atlas import LANDMARK_LABELS
from ainode_core.errors import ModelError
from pipelines.types import ValidationStatus
from training.datasets import Case, split_cases
from training.evaluate import EvaluationReport, dice, evaluate_model_dir, mean_metric
from training.train import (
    Sample,
    TrainConfig,
    TrainedNetwork,
    evaluation_cases,
    intended_use,
    train_network,
    training_cases,
    write_evaluated_card,
)

logger = logging.getLogger(__name__)

PROTOCOL = "brain-gwr"
ROLE = "landmarks"
#: Input window of the network, HU (brain window; clipped and scaled to 0..1).
BRAIN_WINDOW_HU = (0.0, 80.0)
#: Isotropic grid of the network, mm.
BRAIN_SPACING_MM = 3.0
#: Training patch and sliding-window size, voxels of BRAIN_SPACING_MM.
BRAIN_ROI = (48, 48, 48)
#: Seed offset of the held-out evaluation phantoms.
EVAL_SEED_OFFSET = 10_000

_SCT = "SCT"
_CODES = {
    1: ("11000004", "Caudate Nucleus"), 2: ("11000004", "Caudate Nucleus"),
    3: ("89278009", "Putamen"), 4: ("89278009", "Putamen"),
    5: ("85637007", "internal capsule"), 6: ("85637007", "internal capsule"),
    7: ("88442005", "Corpus callosum"),
}
#: The seven landmark labels of ``pipelines.brain_gwr`` with SNOMED CT codes (laterality is in
#: the name; the SEG adds it as a modifier).
BRAIN_LABELS: list[dict[str, Any]] = [{"value": 0, "name": "background"}] + [
    {"value": value, "name": LANDMARK_LABELS[value],
     "code": {"value": _CODES[value][0], "scheme": _SCT, "meaning": _CODES[value][1]}}
    for value in sorted(LANDMARK_LABELS)
]
#: Output classes of the shipped network: the paired landmarks merged across sides (0 background,
#: 1 caudate, 2 putamen, 3 PLIC, 4 corpus callosum). The network learns four structures, and the
#: inference adapter assigns right/left by the side of the midline (card input
#: ``"paired_labels": "split-at-midline"``; ``models.inference._brain_adapter``). Trained with
#: seven sided classes for 900 iterations, the network never predicted the left caudate and the
#: left PLIC (Dice 0.00 on 4 held-out phantoms).
MERGED_LABELS: list[dict[str, Any]] = [
    {"value": 0, "name": "background"},
    {"value": 1, "name": "caudate nucleus (right and left)",
     "code": {"value": "11000004", "scheme": _SCT, "meaning": "Caudate Nucleus"}},
    {"value": 2, "name": "putamen (right and left)",
     "code": {"value": "89278009", "scheme": _SCT, "meaning": "Putamen"}},
    {"value": 3, "name": "posterior limb of internal capsule (right and left)",
     "code": {"value": "85637007", "scheme": _SCT, "meaning": "internal capsule"}},
    {"value": 4, "name": "corpus callosum",
     "code": {"value": "88442005", "scheme": _SCT, "meaning": "Corpus callosum"}},
]
#: Landmark label (0..7) -> merged class (0..4).
MERGE_LUT = np.array([0, 1, 1, 2, 2, 3, 3, 4], dtype=np.int64)
_KEYS = {1: "caudate_right", 2: "caudate_left", 3: "putamen_right", 4: "putamen_left",
         5: "plic_right", 6: "plic_left", 7: "corpus_callosum"}


# -- cases ---------------------------------------------------------------------------------------


def head_phantom_parameters(seed: int, size: str = "standard") -> dict[str, Any]:
    """Varied keyword arguments of :func:`training.phantoms.head.make_head_phantom` for ``seed``.

    ``size="standard"``: 1.5-2.5 mm pixels, 2.5-5 mm slices, 230 mm field of view.
    ``size="small"``: 3 mm pixels and slices, 220 mm field of view (fast, for tests).
    Both: rotation uniform ±10° about each axis, shift ±10 mm, gray matter 34-42 HU, white
    matter 4-10 HU lower, noise SD 2.5-6 HU, partial-volume blur 0-1 mm.

    Raises
    ------
    ValueError
        Unknown ``size``.
    """
    rng = np.random.default_rng(seed + 7919)
    gm = float(rng.uniform(34.0, 42.0))
    common: dict[str, Any] = {
        "seed": int(seed),
        "rotation_deg": tuple(float(v) for v in rng.uniform(-10.0, 10.0, 3)),
        "shift_mm": tuple(float(v) for v in rng.uniform(-10.0, 10.0, 3)),
        "gm_hu": gm,
        "wm_hu": gm - float(rng.uniform(4.0, 10.0)),
        "noise_sd_hu": float(rng.uniform(2.5, 6.0)),
        "partial_volume_sigma_mm": float(rng.uniform(0.0, 1.0)),
    }
    if size == "small":
        return {**common, "pixel_spacing_mm": 3.0, "slice_spacing_mm": 3.0,
                "field_of_view_mm": 220.0}
    if size != "standard":
        raise ValueError(f"phantom size {size!r}: use 'standard' or 'small'")
    return {**common, "pixel_spacing_mm": float(rng.choice([1.5, 2.0, 2.5])),
            "slice_spacing_mm": float(rng.choice([2.5, 3.0, 4.0, 5.0])),
            "field_of_view_mm": 230.0}


def head_case(seed: int, size: str = "standard") -> Case:
    """A head phantom (:func:`head_phantom_parameters`) as a training/evaluation case.

    ``hu`` and ``labels`` are the phantom's frames (canonical orientation: no gantry tilt, HFS,
    identity in-plane orientation); ``extra`` holds the parameters and the exact GWR.
    """
    from training.phantoms.head import make_head_phantom

    params = head_phantom_parameters(seed, size)
    phantom = make_head_phantom(**params)
    return Case(
        case_id=f"head-{seed:05d}", hu=phantom.hu, labels=phantom.labels,
        spacing_mm=tuple(float(s) for s in phantom.spacing_mm),  # type: ignore[arg-type]
        extra={"phantom_parameters": params, "expected_gwr": phantom.expected_gwr},
    )


def brain_sample(case: Case, spacing_mm: float = BRAIN_SPACING_MM, merge_sides: bool = True) -> Sample:
    """A case on the network's grid: ``image`` ``(1, z, y, x)`` float32 0..1 (window
    :data:`BRAIN_WINDOW_HU`, trilinear), ``label`` ``(1, z, y, x)`` int64 (nearest neighbour;
    with ``merge_sides`` the merged classes of :data:`MERGED_LABELS`, else labels 0..7),
    both resampled with MONAI ``Resize`` to ``round(n * spacing / spacing_mm)`` voxels per axis,
    exactly as the inference adapter does."""
    from models.inference import _resize_nd, window_to_unit

    size = tuple(max(1, round(n * s / spacing_mm)) for n, s in zip(case.hu.shape, case.spacing_mm))
    image = _resize_nd(window_to_unit(case.hu, BRAIN_WINDOW_HU)[None], size, "trilinear")
    label = _resize_nd(case.labels[None].astype(np.float32), size, "nearest-exact")
    label = label.round().astype(np.int64)
    if merge_sides:
        label = MERGE_LUT[label]
    return Sample(image.astype(np.float32), label, case.case_id)


# -- evaluation ----------------------------------------------------------------------------------


def _gwr_bg(hu: np.ndarray, labels: np.ndarray, spacing_mm: tuple[float, float, float]) -> float | None:
    """GWR_BG as :func:`pipelines.brain_gwr.measure` computes it (refined labels, cores)."""
    from pipelines.brain_gwr import (
        BrainGWRParameters,
        core_regions,
        gwr_values,
        refine_landmarks,
        region_statistics,
    )

    p = BrainGWRParameters()
    refined = refine_landmarks(hu, labels, spacing_mm, p)
    core, _ = core_regions(refined, spacing_mm, p.core_erosion_mm)
    return gwr_values(region_statistics(hu, core, spacing_mm))["gwr_bg"]


_mean = mean_metric


def evaluate_brain(model: Any, cases: list[Case]) -> EvaluationReport:
    """Evaluate a brain-gwr :class:`pipelines.types.LearnedModel` on labelled cases.

    Per case (native grid): Dice of each landmark (labels 1..7), predicted and true volume
    (cm³) and error (%), and GWR_BG from the predicted labels vs from the true labels (both
    through the pipeline's refinement and cores), plus the exact phantom GWR when known.

    Returns
    -------
    EvaluationReport
        Rows per case; metrics ``dice_<landmark>_mean``, ``dice_mean`` (all landmarks and
        cases), ``dice_min``, ``volume_abs_error_pct_mean``, ``gwr_bg_abs_error_mean``.
    """
    report = EvaluationReport()
    for case in cases:
        pred = np.asarray(model.predict(case.hu, case.spacing_mm))
        voxel_cm3 = float(np.prod(case.spacing_mm)) / 1000.0
        row: dict[str, Any] = {"case": case.case_id}
        for value, key in _KEYS.items():
            t, p = case.labels == value, pred == value
            row[f"dice_{key}"] = round(dice(p, t), 4)
            t_cm3 = float(t.sum()) * voxel_cm3
            row[f"{key}_volume_true_cm3"] = round(t_cm3, 3)
            row[f"{key}_volume_error_pct"] = (round(100 * (float(p.sum()) * voxel_cm3 - t_cm3) / t_cm3, 2)
                                              if t_cm3 else None)
        truth_gwr = _gwr_bg(case.hu, case.labels, case.spacing_mm)
        pred_gwr = _gwr_bg(case.hu, pred.astype(np.uint8), case.spacing_mm)
        row["gwr_bg_true_labels"] = None if truth_gwr is None else round(truth_gwr, 4)
        row["gwr_bg_predicted"] = None if pred_gwr is None else round(pred_gwr, 4)
        row["gwr_bg_error"] = (None if truth_gwr is None or pred_gwr is None
                               else round(pred_gwr - truth_gwr, 4))
        if "expected_gwr" in case.extra:
            row["gwr_phantom_exact"] = round(float(case.extra["expected_gwr"]), 4)  # type: ignore[arg-type]
        report.rows.append(row)
    rows = report.rows
    metrics: dict[str, float | None] = {}
    for key in _KEYS.values():
        metrics[f"dice_{key}_mean"] = _mean([r[f"dice_{key}"] for r in rows])
    all_dice = [r[f"dice_{k}"] for r in rows for k in _KEYS.values()]
    metrics["dice_mean"] = _mean(all_dice)
    clean = [d for d in all_dice if not math.isnan(d)]
    metrics["dice_min"] = round(min(clean), 4) if clean else None
    metrics["volume_abs_error_pct_mean"] = _mean(
        [abs(r[f"{k}_volume_error_pct"]) for r in rows for k in _KEYS.values()
         if r[f"{k}_volume_error_pct"] is not None])
    metrics["gwr_bg_abs_error_mean"] = _mean(
        [abs(r["gwr_bg_error"]) for r in rows if r["gwr_bg_error"] is not None])
    report.metrics = metrics
    return report


def evaluate_brain_model_dir(model_dir: str | Path, cases: list[Case],
                             report_csv: str | Path | None = None,
                             device: str = "auto") -> EvaluationReport:
    """Evaluate the brain-gwr model in ``model_dir`` (card validated, weights verified).

    :func:`training.evaluate.evaluate_model_dir` with ``protocol="brain-gwr"`` (its
    ``EVALUATORS`` dispatch to :func:`evaluate_brain`).

    Raises
    ------
    ModelError
        Invalid or tampered model, or a model of another protocol.
    """
    return evaluate_model_dir(model_dir, cases, report_csv, device=device, protocol=PROTOCOL)


# -- training ------------------------------------------------------------------------------------

#: Peak learning rate of the one-cycle schedule (AdamW); the generic trainer's 2e-3 is too slow
#: for the small 3D landmarks within a few hundred iterations.
BRAIN_LEARNING_RATE = 1e-2
_GENERIC_LEARNING_RATE = TrainConfig.__dataclass_fields__["learning_rate"].default


def brain_transforms(roi: tuple[int, int, int] = BRAIN_ROI, seed: int = 0) -> Any:
    """MONAI dictionary transforms of the 3D training volumes.

    Random zoom 0.85-1.15 (trilinear image, nearest labels), a ``roi`` patch centred on a
    landmark voxel with probability 2/3 and on any voxel otherwise (``RandCropByPosNegLabeld``;
    padded first when the volume is smaller), intensity scale (±10 %) and shift (±0.05 of the
    window), Gaussian noise (SD 0.02). No flips or large rotations: left and right are labels,
    and the phantoms already vary the head pose.
    """
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandZoomd,
        SpatialPadd,
    )

    compose = Compose([
        RandZoomd(keys=("image", "label"), prob=0.5, min_zoom=0.85, max_zoom=1.15,
                  mode=("trilinear", "nearest"), keep_size=True),
        SpatialPadd(keys=("image", "label"), spatial_size=roi),
        RandCropByPosNegLabeld(keys=("image", "label"), label_key="label", spatial_size=roi,
                               pos=2.0, neg=1.0, num_samples=1),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandGaussianNoised(keys="image", prob=0.3, std=0.02),
    ])
    compose.set_random_state(seed=seed)
    return compose



def train(config: TrainConfig, log: Callable[[str], None] | None = None) -> Path:
    """Train, evaluate and write a brain-gwr model directory (card, weights, metrics, evaluation).

    Parameters
    ----------
    config:
        Training options. Used here: ``iterations``, ``batch_size``, ``learning_rate``,
        ``train_cases``, ``eval_cases``, ``phantom_size``, ``seed``, ``val_fraction``,
        ``val_every``, ``checkpoint_every``, ``device``, ``amp``, ``resume``, ``name``,
        ``version``, ``data_dir`` (``None`` = phantoms).
    log:
        Progress callback (one line per validation).

    Returns
    -------
    pathlib.Path
        ``config.out_dir``, installable with ``ainode models install``.

    Raises
    ------
    ModelError
        No usable training data.
    """
    from training.train import _device

    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: logger.info("%s", message))
    phantom = config.data_dir is None
    cases = training_cases(config, head_case, say, what="head phantoms")
    if not cases:
        raise ModelError("no training cases")
    train_ids, val_ids = split_cases([c.case_id for c in cases], config.val_fraction, config.seed)
    by_id = {c.case_id: c for c in cases}
    samples = {c.case_id: brain_sample(c) for c in cases}
    train_samples = [samples[i] for i in train_ids]
    val_samples = [samples[i] for i in val_ids]
    arch, default_args = DEFAULT_NETWORKS[PROTOCOL][ROLE]
    args = {**default_args, "out_channels": len(MERGED_LABELS)}
    say(f"landmark network: {len(train_samples)} training / {len(val_samples)} validation volumes "
        f"on a {BRAIN_SPACING_MM:g} mm grid, patches {BRAIN_ROI}")
    from monai.losses import DiceCELoss

    learning_rate = (BRAIN_LEARNING_RATE if config.learning_rate == _GENERIC_LEARNING_RATE
                     else config.learning_rate)
    config = replace(config, learning_rate=learning_rate)
    loss = DiceCELoss(to_onehot_y=True, softmax=True, include_background=False, batch=True)
    trained: TrainedNetwork = train_network(
        ROLE, arch, args, train_samples, val_samples, config, roi=BRAIN_ROI, log=say,  # type: ignore[arg-type]
        loss_function=loss, transforms=brain_transforms(BRAIN_ROI, config.seed))
    weights = out / f"{ROLE}.safetensors"
    network = build_network(arch, args)
    network.load_state_dict(trained.state_dict)
    save_weights(network, weights)
    spec = NetworkSpec(
        role=ROLE, weights=weights.name, sha256=sha256_file(weights), architecture=arch, args=args,
        input={"spatial_dims": 3, "channels": [f"CT {BRAIN_WINDOW_HU[0]:g}..{BRAIN_WINDOW_HU[1]:g} HU"],
               "pixel_spacing_mm": [BRAIN_SPACING_MM] * 3, "roi_size": list(BRAIN_ROI),
               "intensity_window_hu": list(BRAIN_WINDOW_HU),
               "paired_labels": "split-at-midline"},
        labels=MERGED_LABELS,
        postprocessing=[
            ("volume windowed and resampled (trilinear) to the grid above; softmax; 3D "
             "sliding-window (Gaussian) inference"),
            "probabilities resampled trilinearly to the scan grid; argmax",
            ("paired classes split at the midline (plane fitted to the corpus callosum's voxels; "
             "canonical columns run patient right to left): 1 -> caudate R/L (1/2), 2 -> putamen "
             "R/L (3/4), 3 -> PLIC R/L (5/6), 4 -> corpus callosum (7)"),
            "the pipeline keeps only voxels of parenchymal attenuation (refine_landmarks)",
        ],
    )
    status = ValidationStatus.PHANTOM_ONLY if phantom else ValidationStatus.RESEARCH
    name = config.name or ("brain-gwr-phantom-local" if phantom else "brain-gwr-local")
    device = _device(config.device)
    training_data = {
        "description": (
            f"{len(cases)} digital head phantoms (training.phantoms.head, size "
            f"{config.phantom_size}, seeds {config.seed}..{config.seed + len(cases) - 1}; "
            "training.train_brain.head_phantom_parameters) with random head rotation (±10°) and "
            "shift (±10 mm), gray/white-matter attenuation, noise, partial volume, pixel and "
            "slice spacing; anatomy from the shipped Colin27-based atlas"
            if phantom else f"{len(cases)} labelled cases from {config.data_dir}"),
        "cases": len(cases),
        "split": {"train": train_ids, "validation": val_ids,
                  "method": "case ids sorted, permuted by numpy default_rng(seed)"},
        "seed": config.seed,
    }
    training = {
        "iterations": {ROLE: trained.iterations},
        "batch_size": config.batch_size, "learning_rate": learning_rate,
        "patch_size": list(BRAIN_ROI),
        "augmentation": "phantom rotation/shift/attenuation/noise by seed; MONAI RandZoomd "
                        "0.85-1.15, RandCropByPosNegLabeld (2:1), RandScaleIntensityd, RandShiftIntensityd, "
                        "RandGaussianNoised (no flips: paired labels)",
        "loss": "DiceCELoss (MONAI), softmax, one-hot, batch Dice without the background class",
        "optimiser": "AdamW, one-cycle schedule",
        "best_validation_dice": {ROLE: trained.best_val_dice},
        "samples_per_second": {ROLE: round(trained.samples_per_second, 2)},
        "device": device, "amp": config.amp and device == "cuda", "torch": torch.__version__,
    }
    card = ModelCard(
        name=name, version=config.version, protocol=PROTOCOL,
        task="brain-gwr: 3D segmentation of the GWR landmarks (caudate, putamen, posterior limb "
             "of the internal capsule, right and left; corpus callosum) on non-contrast head CT",
        validation_status=status,
        intended_use=intended_use(phantom),
        training_data=training_data,
        evaluation={"set": "pending", "metrics": {}},
        networks=[spec],
        description=(f"3D DynUNet (MONAI; nnU-Net-style full-resolution U-Net, filters "
                     f"{'-'.join(str(f) for f in args['filters'])}, instance norm, residual "
                     f"blocks) on a {BRAIN_SPACING_MM:g} mm isotropic grid"),
        source="nnU-Net 3D full resolution (Isensee et al., Nat Methods 2021), MONAI DynUNet; "
               "landmarks of Metter et al., Resuscitation 2011",
        license="Apache-2.0",
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        training=training,
    )
    card.write(out)
    eval_cases, eval_set = evaluation_cases(
        config, head_case, [by_id[i] for i in val_ids],
        what="digital head phantoms", grid="native grid", offset=EVAL_SEED_OFFSET,
    )
    report = evaluate_brain_model_dir(out, eval_cases, out / "evaluation.csv", device=config.device)
    write_evaluated_card(card, out, report, eval_set, len(eval_cases), "dice_mean")
    say(f"wrote {out} ({name} {config.version}, {status.value}); evaluation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report.metrics.items() if v is not None))
    return out


__all__ = [
    "BRAIN_LABELS",
    "BRAIN_ROI",
    "BRAIN_SPACING_MM",
    "BRAIN_WINDOW_HU",
    "MERGED_LABELS",
    "MERGE_LUT",
    "brain_sample",
    "evaluate_brain",
    "evaluate_brain_model_dir",
    "head_case",
    "head_phantom_parameters",
    "train",
]
