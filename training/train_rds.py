"""Training and evaluation of the neonatal RDS model: lung-field FlexibleUNet + RDS classifier.

``ainode train neonatal-rds --phantom --out DIR`` trains two networks and writes an installable
model directory (``card.json``, ``lung.safetensors``, ``classifier.safetensors``,
``metrics.csv``, ``classifier_metrics.csv``, ``evaluation.csv``, ``checkpoints/``):

* ``lung``: MONAI ``FlexibleUNet`` (EfficientNet encoder) segmenting the lung fields of a frontal
  chest radiograph, labels of :mod:`pipelines.neonatal_rds` (0 background, 1 right lung, 2 left
  lung). Trained with :func:`training.train.train_network` (Dice + cross-entropy, MONAI
  dictionary transforms) on the whole radiograph resized to ``roi_size`` x ``roi_size``, which is
  exactly what the node's adapter (``models.inference._rds_adapter``) feeds it.
* ``classifier``: MONAI ``EfficientNetBN`` on the lung bounding box (5 % margin of the image size,
  as the adapter crops it) resized to :data:`CLASSIFIER_ROI`: class 0 no RDS, class 1 RDS;
  cross-entropy loss, validation accuracy and ROC AUC (:func:`train_classifier`, on the same
  loop as the segmentation networks, :mod:`training.loop`). Its output is
  a probability only: the pipeline never labels RDS unless the model's status is ``validated``.

Architecture choice. The study used a U-Net with an EfficientNet-B5 encoder and EfficientNet
B0/B3/B5 classifiers. B5 weights are about 120 MB (float32) per network, far too large to ship in
the repository, so the shipped phantom model uses the smallest members of the same families:
``FlexibleUNet`` with ``efficientnet-b0`` and an ``EfficientNetBN`` ``efficientnet-b0``
classifier, 128 x 128 inputs, and weights stored as float16 (loaded into float32 networks). A site
that trains its own model can select B5: :func:`train` takes ``lung_backbone`` and
``classifier_model`` (``efficientnet-b0``/``-b3``/``-b5``).

Data. Phantoms (:func:`phantom_radiograph_case`): :func:`training.phantoms.chest_radiograph.
make_chest_radiograph` with size, pixel spacing, noise, devices and photometric interpretation
varied by seed; even seeds are normal, odd seeds have the RDS-like ground-glass lungs. Each
phantom is written as a CR dataset and decoded with :func:`pipelines.radiograph.
load_projection_radiograph`, so training sees the same 0..1 image as the pipeline. A site's data
(``--data DIR``): ``DIR/images/<case>.nii.gz`` + ``DIR/labels/<case>.nii.gz`` (2D, labels 0/1/2;
intensities scaled min..max to 0..1, white = 1 as displayed) and, optionally, ``DIR/classes.csv``
with columns ``case,rds`` (0/1) to train the classifier; without it only the lung network is
trained and the pipeline reports no RDS probability.

For radiograph cases the :class:`training.datasets.Case` field ``hu`` holds the 0..1 display image
as ``(1, rows, columns)`` (not Hounsfield units); ``spacing_mm`` is ``(1.0, row_mm, column_mm)``.

Evaluation (:func:`evaluate_rds`): on held-out phantoms (seeds 10000+), the model runs as in the
node (weights verified; ``predict``, then the pipeline's post-processing
:func:`pipelines.neonatal_rds.postprocess_model_labels`; ``classify`` on the post-processed lung
mask): Dice and area error per lung, and the classifier's accuracy (threshold 0.5) and ROC AUC.
"""

from __future__ import annotations

import csv
import logging
from collections.abc import Callable, Sequence
from dataclasses import replace
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.architectures import (
    build_network,
    rds_classifier_network,
    rds_lung_network,
    save_weights,
)
from models.cards import ModelCard, NetworkSpec
from models.inference import resize_2d
from models.registry import sha256_file
from ainode_core.errors import InvalidInputError, ModelError
from pipelines.types import PRIVATE_SCHEME, ValidationStatus
from training.datasets import Case, split_cases
from training.evaluate import EvaluationReport, dice, evaluate_model_dir, mean_metric
from training.loop import run_training_loop
from training.train import (
    Sample,
    TrainConfig,
    TrainedNetwork,
    _device,
    _seed_everything,
    evaluation_cases,
    intended_use,
    train_network,
    write_evaluated_card,
)

logger = logging.getLogger(__name__)

PROTOCOL = "neonatal-rds"
#: Input size of the shipped classifier (lung bounding box resized to it).
CLASSIFIER_ROI = (128, 128)
#: Margin of the classifier crop around the lung bounding box, fraction of the image size (the
#: adapter's 5 %); training also uses jittered margins (:data:`CLASSIFIER_MARGINS`).
CLASSIFIER_MARGIN = 0.05
CLASSIFIER_MARGINS = (0.03, 0.05, 0.08)
#: Intensity "window" written in the cards: the input is the 0..1 display image, not HU.
UNIT_WINDOW = [0.0, 1.0]
#: First seed of the held-out evaluation phantoms (training uses ``seed .. seed + cases - 1``).
EVAL_SEED_OFFSET = 10_000

_SCT = "SCT"
_LUNG_CODE = {"value": "39607008", "scheme": _SCT, "meaning": "Lung"}
RDS_LUNG_LABELS = [
    {"value": 0, "name": "background"},
    {"value": 1, "name": "right lung", "code": _LUNG_CODE},
    {"value": 2, "name": "left lung", "code": _LUNG_CODE},
]
#: Classifier classes; no standard concept for "RDS class" exists (shared/reference/clinical.md
#: §5), so the pipeline's private codes are used.
RDS_CLASS_LABELS = [
    {"value": 0, "name": "no RDS", "code": {"value": "NORDS", "scheme": PRIVATE_SCHEME, "meaning": "No RDS"}},
    {"value": 1, "name": "RDS", "code": {"value": "RDS", "scheme": PRIVATE_SCHEME, "meaning": "RDS"}},
]


# -- cases ---------------------------------------------------------------------------------------


def phantom_radiograph_parameters(seed: int, size: str = "standard") -> dict[str, Any]:
    """Varied arguments of :func:`training.phantoms.chest_radiograph.make_chest_radiograph`.

    Even seeds are normal, odd seeds RDS-like (ground glass), so any run of consecutive seeds is
    balanced. ``size="standard"``: 448-512 rows of 0.28-0.36 mm, width 0.82-0.95 of the height;
    ``size="small"``: 160-192 rows of 0.75-0.9 mm (fast, for tests).

    Returns
    -------
    dict
        Keyword arguments (``rows``, ``columns``, ``pixel_spacing_mm``, ``devices``,
        ``ground_glass``, ``noise_sd``, ``seed``).
    """
    rng = np.random.default_rng(seed + 7919)
    if size == "small":
        rows = int(rng.choice([160, 176, 192]))
        spacing = float(rng.uniform(0.75, 0.9))
    elif size == "standard":
        rows = int(rng.choice([448, 480, 512]))
        spacing = float(rng.uniform(0.28, 0.36))
    else:
        raise ValueError(f"phantom size {size!r}: use 'standard' or 'small'")
    columns = int(round(rows * float(rng.uniform(0.82, 0.95)) / 8) * 8)
    return {
        "rows": rows, "columns": columns, "pixel_spacing_mm": round(spacing, 3),
        "devices": bool(rng.random() < 0.75), "ground_glass": bool(seed % 2 == 1),
        "noise_sd": float(rng.uniform(0.008, 0.025)), "seed": int(seed),
    }


def phantom_radiograph_case(seed: int, size: str = "standard") -> Case:
    """A chest-radiograph phantom as a training case, decoded as the pipeline decodes it.

    Returns
    -------
    Case
        ``hu`` ``(1, rows, columns)`` float32 0..1 display image, ``labels`` ``(1, rows,
        columns)`` uint8 (1 right lung, 2 left lung), ``spacing_mm`` ``(1.0, row, column)``,
        ``extra["rds"]`` 0/1 and the phantom parameters.
    """
    from pipelines.radiograph import load_projection_radiograph
    from training.phantoms.chest_radiograph import make_chest_radiograph, phantom_to_dataset

    params = phantom_radiograph_parameters(seed, size)
    phantom = make_chest_radiograph(**params)
    photometric = "MONOCHROME1" if seed % 3 == 0 else "MONOCHROME2"
    ds = phantom_to_dataset(phantom, photometric_interpretation=photometric)
    image = load_projection_radiograph(ds).image
    s = float(params["pixel_spacing_mm"])
    return Case(
        case_id=f"cxr-{seed:05d}", hu=np.asarray(image, np.float32)[None],
        labels=np.asarray(phantom.label_map, np.uint8)[None], spacing_mm=(1.0, s, s),
        extra={"rds": int(phantom.ground_glass), "phantom_parameters": params,
               "photometric_interpretation": photometric},
    )


def _unit_scale(image: np.ndarray) -> np.ndarray:
    image = np.asarray(image, np.float32)
    lo, hi = float(image.min()), float(image.max())
    if lo >= 0.0 and hi <= 1.0:
        return image
    return (image - lo) / max(hi - lo, 1e-6)


def _read_2d(path: Path) -> tuple[np.ndarray, tuple[float, float]]:
    """A 2D image (or a single-slice 3D one) as ``(rows, columns)`` with (row, column) spacing;
    not reoriented (a radiograph has no patient-based grid: row 0 is the top as displayed)."""
    import SimpleITK as sitk

    image = sitk.ReadImage(str(path))
    array = sitk.GetArrayFromImage(image)
    if array.ndim == 3 and array.shape[0] == 1:
        array = array[0]
    if array.ndim != 2:
        raise InvalidInputError(
            f"{path.name}: a radiograph case must be 2D, got an array of shape {array.shape}")
    spacing = image.GetSpacing()
    return array, (float(spacing[1]), float(spacing[0]))


def _radiograph_nifti_cases(data_dir: Path) -> list[Case]:
    images_dir, labels_dir = data_dir / "images", data_dir / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InvalidInputError(f"{data_dir}: expected images/ and labels/ with NIfTI pairs")
    cases = []
    for image_path in sorted(images_dir.glob("*.nii*")):
        label_path = labels_dir / image_path.name
        if not label_path.is_file():
            raise InvalidInputError(f"{image_path.name}: no label file {label_path}")
        image, spacing = _read_2d(image_path)
        labels, _ = _read_2d(label_path)
        if image.shape != labels.shape:
            raise InvalidInputError(
                f"{image_path.name}: image {image.shape} and label {labels.shape} differ in size")
        cases.append(Case(image_path.name.split(".nii")[0], image.astype(np.float32)[None],
                          labels.astype(np.uint8)[None], (1.0, *spacing)))
    if not cases:
        raise InvalidInputError(f"{images_dir}: no .nii/.nii.gz images")
    return cases


def user_radiograph_cases(data_dir: Path) -> list[Case]:
    """A site's labelled radiographs: 2D NIfTI pairs and optional ``classes.csv`` (see the module
    docstring).

    Raises
    ------
    InvalidInputError
        Missing images/labels, a case that is not 2D, labels outside 0..2, or a malformed
        ``classes.csv``.
    """
    cases = _radiograph_nifti_cases(Path(data_dir))
    classes: dict[str, int] = {}
    classes_csv = Path(data_dir) / "classes.csv"
    if classes_csv.is_file():
        with open(classes_csv, newline="") as handle:
            for row in csv.DictReader(handle):
                try:
                    classes[row["case"].strip()] = int(row["rds"])
                except (KeyError, ValueError) as exc:
                    raise InvalidInputError(
                        f"{classes_csv}: expected columns 'case,rds' with rds 0 or 1; row {row}"
                    ) from exc
    out = []
    for case in cases:
        if case.hu.shape[0] != 1:
            raise InvalidInputError(
                f"{case.case_id}: a radiograph case must be 2D, got {case.hu.shape[0]} slices")
        if int(case.labels.max()) > 2:
            raise InvalidInputError(
                f"{case.case_id}: labels must be 0 background, 1 right lung, 2 left lung; "
                f"found {int(case.labels.max())}")
        extra: dict[str, object] = {}
        if case.case_id in classes:
            extra["rds"] = classes[case.case_id]
        out.append(replace(case, hu=_unit_scale(case.hu), extra=extra))
    return out


# -- samples -------------------------------------------------------------------------------------


def lung_sample(case: Case, roi: tuple[int, int]) -> Sample:
    """The whole radiograph resized to ``roi`` (bilinear) with its labels (nearest)."""
    image = resize_2d(case.hu[:1], roi, "bilinear")
    label = resize_2d(case.labels[:1].astype(np.float32), roi, "nearest")
    return Sample(image, label.round().astype(np.int64), case.case_id)


def lung_crop(image: np.ndarray, lung_mask: np.ndarray, margin: float = CLASSIFIER_MARGIN
              ) -> np.ndarray:
    """The lung bounding box of a ``(rows, columns)`` image with ``margin`` (fraction of the image
    size, at least one pixel), as the inference adapter crops it.

    Raises
    ------
    ModelError
        Empty lung mask.
    """
    rows, cols = np.nonzero(np.asarray(lung_mask, dtype=bool))
    if rows.size == 0:
        raise ModelError("empty lung mask: nothing to crop for the classifier")
    pad_r = max(1, round(margin * image.shape[0]))
    pad_c = max(1, round(margin * image.shape[1]))
    return np.asarray(image, np.float32)[
        max(0, rows.min() - pad_r): rows.max() + pad_r + 1,
        max(0, cols.min() - pad_c): cols.max() + pad_c + 1]


def classifier_samples(case: Case, roi: tuple[int, int] = CLASSIFIER_ROI,
                       margins: Sequence[float] = CLASSIFIER_MARGINS) -> list[Sample]:
    """Lung-box crops of a case with a class label (``extra["rds"]``), one per margin.

    Returns
    -------
    list[Sample]
        ``image`` ``(1, *roi)`` float32 0..1, ``label`` ``(1,)`` int64 (0 no RDS, 1 RDS); empty
        when the case has no class.
    """
    if "rds" not in case.extra:
        return []
    out = []
    for margin in margins:
        crop = lung_crop(case.hu[0], case.labels[0] > 0, margin)
        image = resize_2d(np.clip(crop, 0.0, 1.0)[None], roi, "bilinear")
        out.append(Sample(image, np.array([int(case.extra["rds"])], np.int64),  # type: ignore[call-overload]
                          f"{case.case_id}:m{margin}"))
    return out


# -- classifier training -------------------------------------------------------------------------


def init_classifier_head(network: torch.nn.Module, std: float = 0.01) -> None:
    """Re-initialise the final linear layer of a MONAI EfficientNet (``_fc``) with small weights
    (normal, ``std``) and zero bias, so that training starts near the uniform prediction (loss
    ln 2). MONAI's EfficientNet initialises it uniformly in +-1/sqrt(classes), which for two
    classes on 1280 features gives initial logits of tens and cross-entropy losses above 10."""
    head = getattr(network, "_fc", None)
    if isinstance(head, torch.nn.Linear):
        torch.nn.init.normal_(head.weight, std=std)
        torch.nn.init.zeros_(head.bias)


#: Batch-norm momentum used in training (PyTorch's default). MONAI's EfficientNet layers use 0.01,
#: with which the running statistics of a network trained for a few hundred iterations lag far
#: behind its weights: in evaluation mode it then predicted background everywhere.
BATCH_NORM_MOMENTUM = 0.1


def set_batch_norm_momentum(network: torch.nn.Module, momentum: float = BATCH_NORM_MOMENTUM) -> None:
    """Set the momentum of every batch-norm layer of ``network`` (running statistics only; the
    weights and the architecture in the card are unchanged)."""
    for module in network.modules():
        if isinstance(module, torch.nn.modules.batchnorm._BatchNorm):
            module.momentum = momentum


def _classifier_transforms(seed: int) -> Any:
    from monai.transforms import (
        Compose,
        RandGaussianNoised,
        RandRotated,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandZoomd,
    )

    compose = Compose([
        RandZoomd(keys="image", prob=0.5, min_zoom=0.9, max_zoom=1.1, mode="bilinear",
                  keep_size=True),
        RandRotated(keys="image", range_x=0.1, prob=0.3, mode="bilinear", padding_mode="border"),
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandGaussianNoised(keys="image", prob=0.3, std=0.02),
    ])
    compose.set_random_state(seed=seed)
    return compose


def roc_auc(scores: Sequence[float], truth: Sequence[int]) -> float | None:
    """ROC AUC of classifier ``scores`` against binary ``truth`` (1 = RDS), by MONAI's
    :func:`monai.metrics.compute_roc_auc` (ties count one half); ``None`` without both classes."""
    from monai.metrics import compute_roc_auc

    labels = [int(t) for t in truth]
    if 0 not in labels or 1 not in labels:
        return None
    return float(compute_roc_auc(torch.tensor(list(scores), dtype=torch.float64),
                                 torch.tensor(labels)))


def _classify_samples(network: torch.nn.Module, samples: Sequence[Sample], device: str) -> list[float]:
    network.eval()
    with torch.inference_mode():
        x = torch.from_numpy(np.stack([s.image for s in samples])).to(device)
        return torch.softmax(network(x).float(), dim=1)[:, 1].cpu().tolist()


def train_classifier(
    role: str,
    architecture: str,
    args: dict[str, Any],
    train: Sequence[Sample],
    val: Sequence[Sample],
    config: TrainConfig,
    *,
    iterations: int | None = None,
    log: Callable[[str], None] | None = None,
) -> TrainedNetwork:
    """Train a classifier with cross-entropy; keep the weights of the best validation accuracy.

    Parameters
    ----------
    role, architecture, args:
        The network (see :mod:`models.architectures`), e.g. ``EfficientNetBN``.
    train, val:
        Samples with ``image`` ``(1, H, W)`` and ``label`` ``(1,)`` (class index).
    config:
        Batch size, learning rate, device, AMP, seed, ``val_every``, checkpoints, resume.
    iterations:
        Overrides ``config.iterations``.
    log:
        Progress callback (one line per validation).

    Returns
    -------
    TrainedNetwork
        Best state dict (CPU tensors); ``best_val_dice`` holds the best validation *accuracy*
        (ties go to the lower loss seen later); the history rows are also appended to
        ``out_dir/classifier_metrics.csv`` (loss, accuracy, ROC AUC).

    Raises
    ------
    ModelError
        No training samples, or only one class.
    """
    if not train:
        raise ModelError(f"no training samples for the {role!r} network")
    if len({int(s.label[0]) for s in train}) < 2:
        raise ModelError(f"the {role!r} network needs training samples of both classes")
    iterations = iterations or config.iterations
    device = _device(config.device)
    _seed_everything(config.seed)
    network = build_network(architecture, args).to(device)
    set_batch_norm_momentum(network)
    init_classifier_head(network)
    truth = [int(s.label[0]) for s in val]

    def validate(net: torch.nn.Module) -> dict[str, float | None]:
        if not val:
            return {"val_accuracy": None, "val_auc": None}
        scores = _classify_samples(net, val, device)
        accuracy = float(np.mean([(p >= 0.5) == bool(t) for p, t in zip(scores, truth)]))
        return {"val_accuracy": accuracy, "val_auc": roc_auc(scores, truth)}

    outcome = run_training_loop(
        role, network, [{"image": s.image, "label": int(s.label[0])} for s in train],
        _classifier_transforms, torch.nn.CrossEntropyLoss(), validate, config,
        iterations=iterations, device=device, metrics_file="classifier_metrics.csv",
        metric_labels={"val_accuracy": "val accuracy", "val_auc": "AUC"}, score="val_accuracy",
        target=lambda label: torch.as_tensor(label).to(device).long().reshape(-1), log=log)
    return TrainedNetwork(outcome.best_state, outcome.best_score, outcome.iterations,
                          outcome.samples_per_second, outcome.seconds, outcome.history)


# -- evaluation ----------------------------------------------------------------------------------


def evaluate_rds(model: Any, cases: list[Case]) -> EvaluationReport:
    """Evaluate a neonatal-RDS :class:`pipelines.types.LearnedModel` on radiograph cases.

    The lung map is ``model.predict`` followed by the pipeline's post-processing (median filter,
    rotation fallback; default :class:`pipelines.neonatal_rds.NeonatalRDSParameters`); the RDS
    probability is ``model.classify`` on that map's lungs (when the model has a classifier and
    the case a class).

    Returns
    -------
    EvaluationReport
        Rows per case: Dice of the right and left lung, both lungs, area error per lung (cm² and
        % of the truth), and ``rds_true``/``rds_probability``. Metrics: ``dice_right_mean``,
        ``dice_left_mean``, ``dice_lung_mean``, ``dice_lung_min``, ``area_abs_error_pct_mean``
        and, with a classifier, ``classifier_accuracy`` (threshold 0.5), ``classifier_auc``,
        ``rds_probability_mean_rds`` and ``rds_probability_mean_normal``.
    """
    from pipelines.neonatal_rds import NeonatalRDSParameters, postprocess_model_labels

    parameters = NeonatalRDSParameters()
    report = EvaluationReport()
    for case in cases:
        image = case.hu[0]
        spacing = (float(case.spacing_mm[1]), float(case.spacing_mm[2]))
        pixel_cm2 = spacing[0] * spacing[1] / 100.0

        def predict(picture: np.ndarray, spacing: tuple[float, float] = spacing) -> np.ndarray:
            return np.asarray(model.predict(picture, spacing), dtype=np.uint8)

        fields = postprocess_model_labels(predict(image), image, predict, parameters)
        pred, truth = fields.label_map, case.labels[0]
        row: dict[str, Any] = {"case": case.case_id}
        for value, key in ((1, "right"), (2, "left")):
            t_area = float((truth == value).sum() * pixel_cm2)
            p_area = float((pred == value).sum() * pixel_cm2)
            row[f"dice_{key}"] = round(dice(pred == value, truth == value), 4)
            row[f"{key}_area_true_cm2"] = round(t_area, 2)
            row[f"{key}_area_error_cm2"] = round(p_area - t_area, 2)
            row[f"{key}_area_error_pct"] = round(100 * (p_area - t_area) / t_area, 2) if t_area else None
        row["dice_lung"] = round(dice(pred > 0, truth > 0), 4)
        row["rotation_fallback"] = bool(fields.rotation_fallback_applied)
        if "rds" in case.extra:
            row["rds_true"] = int(case.extra["rds"])  # type: ignore[call-overload]
        if model.classify is not None and (pred > 0).any():
            row["rds_probability"] = round(float(model.classify(image, pred > 0)), 4)
        report.rows.append(row)
    rows = report.rows
    mean = mean_metric

    metrics: dict[str, float | None] = {
        "dice_right_mean": mean([r["dice_right"] for r in rows]),
        "dice_left_mean": mean([r["dice_left"] for r in rows]),
        "dice_lung_mean": mean([r["dice_lung"] for r in rows]),
        "dice_lung_min": round(min(min(r["dice_right"], r["dice_left"]) for r in rows), 4) if rows else None,
        "area_abs_error_pct_mean": mean([abs(r[f"{k}_area_error_pct"]) for r in rows
                                         for k in ("right", "left")
                                         if r[f"{k}_area_error_pct"] is not None]),
    }
    scored = [r for r in rows if "rds_probability" in r and "rds_true" in r]
    if scored:
        probs = [r["rds_probability"] for r in scored]
        truth_c = [r["rds_true"] for r in scored]
        metrics["classifier_accuracy"] = round(
            float(np.mean([(p >= 0.5) == bool(t) for p, t in zip(probs, truth_c)])), 4)
        metrics["classifier_auc"] = roc_auc(probs, truth_c)
        metrics["rds_probability_mean_rds"] = mean([p for p, t in zip(probs, truth_c) if t == 1])
        metrics["rds_probability_mean_normal"] = mean([p for p, t in zip(probs, truth_c) if t == 0])
    report.metrics = metrics
    return report


def evaluate_rds_model_dir(model_dir: str | Path, cases: list[Case],
                           report_csv: str | Path | None = None,
                           device: str = "auto") -> EvaluationReport:
    """Evaluate the neonatal-RDS model in ``model_dir`` (card validated, weights verified).

    Raises
    ------
    ModelError
        Invalid or tampered model, or a model of another protocol.
    """
    return evaluate_model_dir(model_dir, cases, report_csv, device=device, protocol=PROTOCOL)


# -- trainer -------------------------------------------------------------------------------------


def _save(network_args: tuple[str, dict[str, Any]], state: dict[str, torch.Tensor], path: Path,
          float16: bool) -> str:
    architecture, args = network_args
    network = build_network(architecture, args)
    network.load_state_dict(state)
    if float16:
        network = network.half()
    save_weights(network, path)
    return sha256_file(path)


def train(
    config: TrainConfig,
    log: Callable[[str], None] | None = None,
    *,
    lung_backbone: str = "efficientnet-b0",
    classifier_model: str = "efficientnet-b0",
    float16_weights: bool = True,
) -> Path:
    """Train, evaluate and write a neonatal-RDS model directory (lung network + classifier).

    Parameters
    ----------
    config:
        ``ainode train`` options. ``iterations``: lung network; ``level_iterations`` (CLI
        ``--level-iterations``): classifier (default: ``iterations``); ``roi_size``: the lung
        network's square input size (a multiple of 32); ``train_level=False`` skips the
        classifier; ``phantom_size`` ``standard`` or ``small``; ``train_cases`` phantoms (even
        seeds normal, odd seeds RDS-like); ``eval_cases`` held-out phantoms.
    log:
        Progress callback.
    lung_backbone:
        FlexibleUNet encoder: ``efficientnet-b0`` (shipped) .. ``efficientnet-b5`` (the study's).
    classifier_model:
        ``efficientnet-b0`` (shipped), ``-b3`` or ``-b5`` (the study's three classifiers).
    float16_weights:
        Store the weights as float16 (half the size; loaded into float32 networks).

    Returns
    -------
    pathlib.Path
        The model directory, installable with ``ainode models install``.

    Raises
    ------
    ModelError
        No usable training data, or a lung input size that is not a multiple of 32.
    """
    if config.roi_size % 32:
        raise ModelError(f"roi_size {config.roi_size}: the FlexibleUNet input must be a multiple of 32")
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: logger.info("%s", message))
    phantom = config.data_dir is None
    if phantom:
        cases = [phantom_radiograph_case(seed, config.phantom_size)
                 for seed in range(config.seed, config.seed + config.train_cases)]
        say(f"generated {len(cases)} chest-radiograph phantoms ({config.phantom_size}; "
            f"{sum(int(c.extra['rds']) for c in cases)} RDS-like)")  # type: ignore[call-overload]
    else:
        assert config.data_dir is not None
        cases = user_radiograph_cases(config.data_dir)
        say(f"read {len(cases)} labelled radiographs from {config.data_dir}")
    train_ids, val_ids = split_cases([c.case_id for c in cases], config.val_fraction, config.seed)
    by_id = {c.case_id: c for c in cases}
    roi = (config.roi_size, config.roi_size)

    lung_net = rds_lung_network(lung_backbone)
    lung_train = [lung_sample(by_id[i], roi) for i in train_ids]
    lung_val = [lung_sample(by_id[i], roi) for i in val_ids]
    say(f"lung network ({lung_backbone}): {len(lung_train)} training / {len(lung_val)} validation images")
    lung = train_network("lung", lung_net[0], lung_net[1], lung_train, lung_val, config,
                         roi=roi, log=say, configure=set_batch_norm_momentum)
    trained: list[tuple[str, tuple[str, dict[str, Any]], TrainedNetwork, dict[str, Any],
                        list[dict[str, Any]], list[str]]] = [(
        "lung", lung_net, lung,
        {"spatial_dims": 2, "channels": ["radiograph, display intensity 0..1 (0 black)"],
         "roi_size": list(roi), "intensity_window_hu": UNIT_WINDOW},
        RDS_LUNG_LABELS,
        [f"whole image resized (bilinear) to {roi[0]} x {roi[1]}; softmax resized back; argmax",
         ("pipeline: median filter; labels averaged over the image rotated +-90 degrees when the "
          "lung area is below the small-area fraction (the study's post-processing)")],
    )]
    class_train = [s for i in train_ids for s in classifier_samples(by_id[i])]
    class_val = [s for i in val_ids for s in classifier_samples(by_id[i], margins=(CLASSIFIER_MARGIN,))]
    if config.train_level and len({int(s.label[0]) for s in class_train}) == 2:
        class_net = rds_classifier_network(classifier_model)
        say(f"classifier ({classifier_model}): {len(class_train)} training / {len(class_val)} "
            "validation lung crops")
        classifier = train_classifier("classifier", class_net[0], class_net[1], class_train,
                                      class_val, config,
                                      iterations=config.level_iterations or config.iterations,
                                      log=say)
        trained.append((
            "classifier", class_net, classifier,
            {"spatial_dims": 2, "channels": ["lung bounding box, display intensity 0..1"],
             "roi_size": list(CLASSIFIER_ROI), "intensity_window_hu": UNIT_WINDOW},
            RDS_CLASS_LABELS,
            [(f"input: bounding box of the predicted lungs with a {CLASSIFIER_MARGIN:.0%} margin, "
              f"resized (bilinear) to {CLASSIFIER_ROI[0]} x {CLASSIFIER_ROI[1]}"),
             "output: softmax of class 1 = RDS probability (no label unless the model is validated)"],
        ))
    elif config.train_level:
        say("classifier not trained: the data hold no cases of both classes (classes.csv)")
    specs = []
    for role, net, result, input_spec, labels, post in trained:
        weights = out / f"{role}.safetensors"
        digest = _save(net, result.state_dict, weights, float16_weights)
        specs.append(NetworkSpec(role=role, weights=weights.name, sha256=digest,
                                 architecture=net[0], args=net[1], input=input_spec,
                                 labels=labels, postprocessing=post))
    status = ValidationStatus.PHANTOM_ONLY if phantom else ValidationStatus.RESEARCH
    name = config.name or ("rds-phantom-local" if phantom else "rds-local")
    device = _device(config.device)
    training_data = {
        "description": (
            f"{len(cases)} synthetic neonatal chest radiographs (training.phantoms.chest_radiograph, "
            f"size {config.phantom_size}, seeds {config.seed}..{config.seed + len(cases) - 1}; odd "
            "seeds RDS-like ground glass) with varied size, pixel spacing, noise, devices and "
            "photometric interpretation, decoded as the pipeline decodes them"
            if phantom else f"{len(cases)} labelled radiographs from {config.data_dir}"),
        "cases": len(cases),
        "split": {"train": train_ids, "validation": val_ids,
                  "method": "case ids sorted, permuted by numpy default_rng(seed)"},
        "seed": config.seed,
    }
    training = {
        "iterations": {role: r.iterations for role, _, r, _, _, _ in trained},
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
        "loss": {"lung": "DiceCELoss (MONAI), softmax, one-hot",
                 "classifier": "cross-entropy (torch.nn.CrossEntropyLoss)"},
        "optimiser": "AdamW, one-cycle schedule",
        "batch_norm_momentum": BATCH_NORM_MOMENTUM,
        "classifier_head_init": "normal, std 0.01; bias 0",
        "best_validation": {role: r.best_val_dice for role, _, r, _, _, _ in trained},
        "best_validation_metric": {"lung": "mean Dice of both lungs", "classifier": "accuracy"},
        "samples_per_second": {role: round(r.samples_per_second, 2) for role, _, r, _, _, _ in trained},
        "device": device, "amp": config.amp and device == "cuda",
        "weights_dtype": "float16" if float16_weights else "float32",
        "torch": torch.__version__,
    }
    shipped_note = (
        "The study used an EfficientNet-B5 encoder and B0/B3/B5 classifiers; this model uses "
        f"{lung_backbone} and {classifier_model}"
        + (" (the smallest of the family: B5 weights are about 120 MB per network, too large to "
           "ship in the repository)" if lung_backbone == "efficientnet-b0" else "")
        + f", {roi[0]} x {roi[1]} lung input"
        + (", weights stored as float16." if float16_weights else ".")
    )
    card = ModelCard(
        name=name, version=config.version, protocol=PROTOCOL,
        task="Neonatal RDS: right and left lung fields on a frontal chest radiograph and an RDS "
             "probability from the lung region",
        validation_status=status,
        intended_use=intended_use(phantom, "The RDS output is a probability only; "
                                    "the pipeline gives no RDS label unless the model is validated. "),
        training_data=training_data,
        evaluation={"set": "pending", "metrics": {}},
        networks=specs,
        description="MONAI FlexibleUNet (EfficientNet encoder) lung fields"
                    + (" and MONAI EfficientNetBN RDS classifier on the lung box" if len(specs) > 1 else "")
                    + ". " + shipped_note,
        source="Architectures after the neonatal RDS seed study (U-Net with EfficientNet encoder, "
               "EfficientNet classifiers; see docs/models/neonatal-rds.md)",
        license="Apache-2.0",
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        training=training,
    )
    card.write(out)
    eval_cases, eval_set = evaluation_cases(
        config, phantom_radiograph_case, [by_id[i] for i in val_ids],
        what="synthetic radiographs", details=", half RDS-like",
        grid="source grid, pipeline post-processing", offset=EVAL_SEED_OFFSET,
    )
    report = evaluate_rds_model_dir(out, eval_cases, out / "evaluation.csv", device=config.device)
    write_evaluated_card(card, out, report, eval_set, len(eval_cases), "dice_lung_mean")
    say(f"wrote {out} ({name} {config.version}, {status.value}); evaluation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report.metrics.items() if v is not None))
    return out


__all__ = [
    "CLASSIFIER_ROI",
    "RDS_CLASS_LABELS",
    "RDS_LUNG_LABELS",
    "classifier_samples",
    "evaluate_rds",
    "evaluate_rds_model_dir",
    "init_classifier_head",
    "lung_crop",
    "lung_sample",
    "phantom_radiograph_case",
    "phantom_radiograph_parameters",
    "roc_auc",
    "set_batch_norm_momentum",
    "train",
    "train_classifier",
    "user_radiograph_cases",
]
