"""Training of the protocols' networks and the model directory the trainer writes.

``ainode train l3-body-composition --phantom --out DIR`` (or ``--data DIR`` with labelled images,
see :mod:`training.datasets`) trains the L3 tissue U-Net (and, on phantoms, the level network on
the MIPs), evaluates the result on held-out cases (:mod:`training.evaluate`) and writes an
installable model directory: ``card.json`` with the measured metrics, one safetensors file per
network, ``metrics.csv`` (training curve), ``evaluation.csv`` (per case) and ``checkpoints/``
(resume with ``--resume``; not part of the installed model).

Segmentation networks are trained by :func:`train_network`: MONAI dictionary transforms, Dice +
cross-entropy loss (``DiceCELoss``, as in the studies), validation Dice (MONAI) every
``val_every`` iterations, fed to the one training loop of :mod:`training.loop` (AdamW, one-cycle
schedule, automatic mixed precision on CUDA, best weights kept, checkpoints every
``checkpoint_every`` iterations, metrics to CSV and TensorBoard when installed, progress bar),
which the RDS classifier (:func:`training.train_rds.train_classifier`) uses as well. A protocol
trainer (named by the protocol's spec, ``trainer``: :func:`train_l3` here,
``training.train_chest.train``, ``training.train_rds.train``, ``training.train_brain.train``)
builds its samples and card.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from models.architectures import DEFAULT_NETWORKS, build_network, save_weights
from models.cards import ModelCard, NetworkSpec
from models.inference import mip_channels, mip_target, resample_2d, window_to_unit
from models.registry import sha256_file
from ainode_core.errors import ConfigError, ModelError
from pipelines.types import ValidationStatus
from training.loop import one_cycle_scheduler, resume_checkpoint, run_training_loop
from training.datasets import Case, dicom_seg_cases, nifti_cases, phantom_case, split_cases

logger = logging.getLogger(__name__)

#: Input window of the L3 tissue network (the study's -250..250 HU).
L3_TISSUE_WINDOW_HU = (-250.0, 250.0)
#: Window of the MIPs of the level network (bone, 100..1500 HU, section-detection study).
L3_LEVEL_WINDOW_HU = (100.0, 1500.0)

_SCT = "SCT"
L3_LABELS = [
    {"value": 0, "name": "background"},
    {"value": 1, "name": "SMA", "code": {"value": "91727004", "scheme": _SCT, "meaning": "Muscle"}},
    {"value": 2, "name": "SAT", "code": {"value": "71966008", "scheme": _SCT, "meaning": "Subcutaneous tissue"}},
    {"value": 3, "name": "VAT", "code": {"value": "818987002", "scheme": _SCT, "meaning": "Abdominopelvic cavity"}},
    {"value": 4, "name": "IMAT", "code": {"value": "127954009", "scheme": _SCT, "meaning": "Skeletal muscle"}},
]
L3_LEVEL_LABELS = [
    {"value": 0, "name": "background"},
    {"value": 1, "name": "L3", "code": {"value": "36470004", "scheme": _SCT, "meaning": "L3 vertebra"}},
]


@dataclass
class TrainConfig:
    """Options of ``ainode train`` (iterations are per network)."""

    protocol: str
    out_dir: Path
    data_dir: Path | None = None
    name: str | None = None
    version: str = "0.1.0"
    iterations: int = 300
    level_iterations: int | None = None
    batch_size: int = 4
    learning_rate: float = 2e-3
    train_cases: int = 12
    eval_cases: int = 4
    phantom_size: str = "standard"
    slices_per_case: int = 8
    seed: int = 0
    val_fraction: float = 0.2
    val_every: int = 50
    checkpoint_every: int = 50
    device: str = "auto"
    amp: bool = True
    resume: bool = False
    tissue_spacing_mm: float = 2.0
    level_spacing_mm: float = 2.0  # the section-detection study used 1 mm; 2 mm: 4x cheaper
    roi_size: int = 128
    level_crop_mm: int = 224
    train_level: bool = True
    progress: bool = False

    def __post_init__(self) -> None:
        self.out_dir = Path(self.out_dir)
        if self.data_dir is not None:
            self.data_dir = Path(self.data_dir)
        if self.iterations < 1 or self.batch_size < 1:
            raise ConfigError("iterations and batch size must be at least 1")


@dataclass
class Sample:
    """One 2D training sample: ``image`` ``(channels, H, W)`` float32, ``label`` ``(1, H, W)``."""

    image: np.ndarray
    label: np.ndarray
    case_id: str


@dataclass
class TrainedNetwork:
    """What :func:`train_network` returns."""

    state_dict: dict[str, torch.Tensor]
    best_val_dice: float | None
    iterations: int
    samples_per_second: float
    seconds: float
    history: list[dict[str, Any]] = field(default_factory=list)


def _device(setting: str) -> str:
    from models.inference import resolve_device

    return resolve_device(setting)


def intended_use(phantom: bool, note: str = "") -> str:
    """The card's intended use: research only, and phantom-trained or trained on the site's data
    (``note`` is inserted after the first sentence)."""
    return ("Research use only, not for diagnosis. " + note
            + ("Phantom-trained: demonstrates the machinery; not for patient images."
               if phantom else "Trained on the site's own labelled data; not clinically validated."))


def held_out_phantom_seeds(config: TrainConfig, offset: int = 10_000) -> range:
    """Seeds of the held-out evaluation phantoms: ``offset + seed ..`` (``config.eval_cases``)."""
    first = offset + config.seed
    return range(first, first + config.eval_cases)


def training_cases(
    config: TrainConfig,
    phantom_case: Callable[[int, str], Case],
    say: Callable[[str], None],
    *,
    what: str = "training phantoms",
    user_cases: Callable[[Path], list[Case]] | None = None,
) -> list[Case]:
    """The training cases: ``config.train_cases`` phantoms from ``config.seed`` on, or the
    user's labelled data in ``config.data_dir`` (read by ``user_cases``, default NIfTI pairs or
    DICOM + DICOM-SEG)."""
    if config.data_dir is None:
        cases = [phantom_case(seed, config.phantom_size)
                 for seed in range(config.seed, config.seed + config.train_cases)]
        say(f"generated {len(cases)} {what} ({config.phantom_size})")
        return cases
    cases = (user_cases or _load_user_cases)(config.data_dir)
    say(f"read {len(cases)} labelled cases from {config.data_dir}")
    return cases


def evaluation_cases(
    config: TrainConfig,
    phantom_case: Callable[[int, str], Case],
    validation: list[Case],
    *,
    what: str,
    details: str = "",
    grid: str,
    offset: int = 10_000,
) -> tuple[list[Case], str]:
    """Held-out evaluation cases and their description for the card: new phantom seeds
    (:func:`held_out_phantom_seeds`), or the validation split of the user's data."""
    if config.data_dir is None:
        seeds = held_out_phantom_seeds(config, offset)
        cases = [phantom_case(seed, config.phantom_size) for seed in seeds]
        description = (f"{len(cases)} held-out {what} (seeds {seeds.start}.."
                       f"{seeds.start + len(cases) - 1}, size {config.phantom_size}{details}), "
                       f"{grid}")
        return cases, description
    return validation, f"validation split of the user's data ({len(validation)} cases)"


def write_evaluated_card(card: ModelCard, out: Path, report: Any, eval_set: str, cases: int,
                         primary_metric: str) -> ModelCard:
    """Write ``card`` again with its ``evaluation`` (set, case count, the report's metrics and the
    primary metric) and return it."""
    evaluation = {"set": eval_set, "cases": cases, "metrics": report.metrics,
                  "primary_metric": primary_metric}
    card = ModelCard(**{**card.__dict__, "evaluation": evaluation})
    card.write(out)
    return card


def _seed_everything(seed: int) -> None:
    from monai.utils import set_determinism

    set_determinism(seed=seed)
    torch.manual_seed(seed)


def _transforms(roi: tuple[int, int], level: bool, seed: int) -> Any:
    """MONAI dictionary transforms of the training samples."""
    from monai.transforms import (
        Compose,
        RandCropByPosNegLabeld,
        RandGaussianNoised,
        RandScaleIntensityd,
        RandShiftIntensityd,
        RandSpatialCropd,
        RandZoomd,
        SpatialPadd,
    )

    steps: list[Any] = []
    if level:
        # Crops of fixed height centred anywhere on L3, so its absolute position varies.
        steps += [
            SpatialPadd(keys=("image", "label"), spatial_size=roi),
            RandCropByPosNegLabeld(keys=("image", "label"), label_key="label",
                                   spatial_size=(roi[0], -1), pos=1.0, neg=0.0, num_samples=1),
        ]
    else:
        steps += [
            RandZoomd(keys=("image", "label"), prob=0.5, min_zoom=0.85, max_zoom=1.15,
                      mode=("bilinear", "nearest"), keep_size=True),
            SpatialPadd(keys=("image", "label"), spatial_size=roi),
            RandSpatialCropd(keys=("image", "label"), roi_size=roi, random_size=False),
        ]
    steps += [
        RandScaleIntensityd(keys="image", factors=0.1, prob=0.5),
        RandShiftIntensityd(keys="image", offsets=0.05, prob=0.5),
        RandGaussianNoised(keys="image", prob=0.3, std=0.02),
    ]
    compose = Compose(steps)
    compose.set_random_state(seed=seed)
    return compose


def _dice_per_class(pred: np.ndarray, truth: np.ndarray, n_classes: int) -> list[float]:
    """Dice of each foreground class 1..n_classes-1 (NaN where the class is in neither)."""
    from training.evaluate import dice

    return [dice(pred == c, truth == c) for c in range(1, n_classes)]


def _predict_full(network: torch.nn.Module, image: np.ndarray, device: str,
                  roi: tuple[int, int] | None) -> np.ndarray:
    from monai.inferers import sliding_window_inference

    x = torch.from_numpy(image)[None].to(device)
    with torch.inference_mode():
        if roi is None:
            logits = network(x)
        else:
            logits = sliding_window_inference(x, roi, 4, network, overlap=0.25, mode="gaussian")
    return logits.argmax(dim=1)[0].cpu().numpy()


def train_network(
    role: str,
    architecture: str,
    args: dict[str, Any],
    train: Sequence[Sample],
    val: Sequence[Sample],
    config: TrainConfig,
    *,
    roi: tuple[int, int],
    level: bool = False,
    iterations: int | None = None,
    log: Callable[[str], None] | None = None,
    configure: Callable[[torch.nn.Module], None] | None = None,
    loss_function: torch.nn.Module | None = None,
    transforms: Any | None = None,
) -> TrainedNetwork:
    """Train one network with Dice + cross-entropy; keep the weights of the best validation Dice.

    Parameters
    ----------
    role, architecture, args:
        The network (see :mod:`models.architectures`).
    train, val:
        Samples; every sample of a network has the same channel count.
    config:
        Training options (batch size, learning rate, device, AMP, checkpoints, resume).
    roi:
        Training patch size (rows, columns).
    level:
        Level-network sampling (crops of fixed height around L3; full-image validation).
    iterations:
        Overrides ``config.iterations``.
    log:
        Progress callback (one line per validation), e.g. ``print`` in the CLI.
    configure:
        Called on the freshly built network before training (e.g. the neonatal-RDS trainer sets
        the batch-norm momentum of the EfficientNet encoder to 0.1).
    loss_function:
        Replaces the default ``DiceCELoss(to_onehot_y=True, softmax=True)`` (e.g. the brain
        trainer's batch Dice without the background class, for small 3D landmarks).
    transforms:
        Replaces the default MONAI training transforms (a callable on ``{"image", "label"}``
        dictionaries; its random state is the caller's).

    Returns
    -------
    TrainedNetwork
        Best state dict (CPU tensors), best validation Dice, throughput and the history rows
        (also appended to ``out_dir/metrics.csv``).

    Raises
    ------
    ModelError
        If there are no training samples.
    """
    from monai.losses import DiceCELoss

    if not train:
        raise ModelError(f"no training samples for the {role!r} network")
    iterations = iterations or config.iterations
    device = _device(config.device)
    _seed_everything(config.seed)
    network = build_network(architecture, args).to(device)
    if configure is not None:
        configure(network)
    if loss_function is None:
        loss_function = DiceCELoss(to_onehot_y=True, softmax=True)
    n_classes = int(args["out_channels"])

    def make_transforms(seed: int) -> Any:
        return transforms if transforms is not None else _transforms(roi, level, seed)

    outcome = run_training_loop(
        role, network, [{"image": s.image, "label": s.label} for s in train], make_transforms,
        loss_function,
        lambda net: {"val_dice": _validate(net, val, n_classes, device, None if level else roi)},
        config, iterations=iterations, device=device, metrics_file="metrics.csv",
        metric_labels={"val_dice": "val Dice"}, score="val_dice", log=log)
    return TrainedNetwork(outcome.best_state, outcome.best_score, outcome.iterations,
                          outcome.samples_per_second, outcome.seconds, outcome.history)


def _validate(network: torch.nn.Module, val: Sequence[Sample], n_classes: int, device: str,
              roi: tuple[int, int] | None) -> float | None:
    """Mean foreground Dice over the validation samples (classes absent in both are skipped)."""
    if not val:
        return None
    network.eval()
    scores: list[float] = []
    for sample in val:
        pred = _predict_full(network, sample.image, device, roi)
        scores += [d for d in _dice_per_class(pred, sample.label[0], n_classes) if not math.isnan(d)]
    return float(np.mean(scores)) if scores else None


# -- L3 ---------------------------------------------------------------------------------------


def l3_tissue_samples(case: Case, config: TrainConfig, all_slices: bool = False) -> list[Sample]:
    """Tissue samples of a case: labelled axial slices (for phantoms, lumbar slices L1..L5 and
    mid-L3), windowed to -250..250 HU and resampled to ``tissue_spacing_mm``."""
    if case.lumbar_slices is not None and not all_slices:
        lo, hi = case.lumbar_slices
        picks = set(np.linspace(lo, hi, config.slices_per_case).round().astype(int).tolist())
        if case.mid_l3_slice is not None:
            picks.add(case.mid_l3_slice)
        indices = sorted(picks)
    else:
        indices = [k for k in range(case.labels.shape[0]) if case.labels[k].any()]
    target = (config.tissue_spacing_mm, config.tissue_spacing_mm)
    samples = []
    for k in indices:
        image = resample_2d(window_to_unit(case.hu[k], L3_TISSUE_WINDOW_HU)[None],
                            case.spacing_mm[1:], target)
        label = resample_2d(case.labels[k][None].astype(np.float32), case.spacing_mm[1:], target,
                            "nearest")
        samples.append(Sample(image, label.round().astype(np.int64), f"{case.case_id}:{k}"))
    return samples


def l3_level_sample(case: Case, config: TrainConfig) -> Sample | None:
    """Level sample of a case with an L3 vertebra mask: 2-channel MIPs and projected L3 mask."""
    if case.l3_mask is None:
        return None
    image, _ = mip_channels(case.hu, case.spacing_mm, config.level_spacing_mm, L3_LEVEL_WINDOW_HU)
    label = mip_target(case.l3_mask, case.spacing_mm, config.level_spacing_mm)
    return Sample(image, label[None], case.case_id)


def _pad_width(samples: list[Sample], width: int) -> list[Sample]:
    out = []
    for s in samples:
        pad = width - s.image.shape[-1]
        out.append(Sample(np.pad(s.image, ((0, 0), (0, 0), (0, pad))),
                          np.pad(s.label, ((0, 0), (0, 0), (0, pad))), s.case_id))
    return out


def _load_user_cases(data_dir: Path) -> list[Case]:
    if (data_dir / "images").is_dir():
        return nifti_cases(data_dir)
    return dicom_seg_cases(data_dir)


def train_l3(config: TrainConfig, log: Callable[[str], None] | None = None) -> Path:
    """Train, evaluate and write an L3 body-composition model directory.

    Returns
    -------
    pathlib.Path
        The model directory (``config.out_dir``), installable with ``ainode models install``.

    Raises
    ------
    ModelError
        No usable training data.
    """
    from training.evaluate import evaluate_model_dir

    protocol = "l3-body-composition"
    out = config.out_dir
    out.mkdir(parents=True, exist_ok=True)
    say = log or (lambda message: logger.info("%s", message))
    phantom = config.data_dir is None
    cases = training_cases(config, phantom_case, say)
    train_ids, val_ids = split_cases([c.case_id for c in cases], config.val_fraction, config.seed)
    by_id = {c.case_id: c for c in cases}
    roi = (config.roi_size, config.roi_size)
    tissue_train = [s for i in train_ids for s in l3_tissue_samples(by_id[i], config)]
    tissue_val = [s for i in val_ids for s in l3_tissue_samples(by_id[i], config)][:16]
    arch, args = DEFAULT_NETWORKS[protocol]["tissue"]
    say(f"tissue network: {len(tissue_train)} training / {len(tissue_val)} validation slices")
    tissue = train_network("tissue", arch, args, tissue_train, tissue_val, config, roi=roi, log=say)
    networks: list[tuple[str, str, dict[str, Any], TrainedNetwork, dict[str, Any], list[dict[str, Any]], list[str]]] = [(
        "tissue", arch, args, tissue,
        {"spatial_dims": 2, "channels": ["CT -250..250 HU"],
         "pixel_spacing_mm": [config.tissue_spacing_mm] * 2, "roi_size": list(roi),
         "intensity_window_hu": list(L3_TISSUE_WINDOW_HU)},
        L3_LABELS,
        ["softmax; sliding-window (Gaussian) on the pixel grid above",
         "probabilities resampled bilinearly to the slice grid; argmax"],
    )]
    level_cases = [c for c in cases if c.l3_mask is not None]
    if config.train_level and level_cases:
        level_train = [s for i in train_ids if (s := l3_level_sample(by_id[i], config)) is not None]
        level_val = [s for i in val_ids if (s := l3_level_sample(by_id[i], config)) is not None]
        width = max(s.image.shape[-1] for s in level_train + level_val)
        level_train, level_val = _pad_width(level_train, width), _pad_width(level_val, width)
        larch, largs = DEFAULT_NETWORKS[protocol]["level"]
        crop = max(32, round(config.level_crop_mm / config.level_spacing_mm) // 16 * 16)
        say(f"level network: {len(level_train)} training / {len(level_val)} validation MIP pairs")
        level = train_network("level", larch, largs, level_train, level_val, config,
                              roi=(crop, width), level=True,
                              iterations=config.level_iterations or config.iterations, log=say)
        networks.append((
            "level", larch, largs, level,
            {"spatial_dims": 2, "channels": ["frontal MIP 100..1500 HU", "sagittal MIP 100..1500 HU"],
             "pixel_spacing_mm": [config.level_spacing_mm] * 2,
             "intensity_window_hu": list(L3_LEVEL_WINDOW_HU)},
            L3_LEVEL_LABELS,
            [("softmax; L3 = rows whose summed L3 probability is at least half the maximum "
              "(largest run); mid-L3 = probability-weighted centre row, mapped to the slice")],
        ))
    specs = []
    for role, a, kw, trained, input_spec, labels, post in networks:
        weights = out / f"{role}.safetensors"
        network = build_network(a, kw)
        network.load_state_dict(trained.state_dict)
        save_weights(network, weights)
        specs.append(NetworkSpec(role=role, weights=weights.name, sha256=sha256_file(weights),
                                 architecture=a, args=kw, input=input_spec, labels=labels,
                                 postprocessing=post))
    status = ValidationStatus.PHANTOM_ONLY if phantom else ValidationStatus.RESEARCH
    name = config.name or ("l3-phantom-local" if phantom else "l3-local")
    training_data = {
        "description": (
            f"{len(cases)} digital abdominal phantoms (training.phantoms.abdomen, size "
            f"{config.phantom_size}, seeds {config.seed}..{config.seed + len(cases) - 1}) with "
            "varied fat and muscle thickness, noise, pixel spacing and slice thickness"
            if phantom else f"{len(cases)} labelled cases from {config.data_dir}"),
        "cases": len(cases),
        "split": {"train": train_ids, "validation": val_ids, "method":
                  "case ids sorted, permuted by numpy default_rng(seed)"},
        "seed": config.seed,
    }
    training = {
        "iterations": {role: t.iterations for role, _, _, t, _, _, _ in networks},
        "batch_size": config.batch_size, "learning_rate": config.learning_rate,
        "loss": "DiceCELoss (MONAI), softmax, one-hot",
        "optimiser": "AdamW, one-cycle schedule",
        "best_validation_dice": {role: t.best_val_dice for role, _, _, t, _, _, _ in networks},
        "samples_per_second": {role: round(t.samples_per_second, 2) for role, _, _, t, _, _, _ in networks},
        "device": _device(config.device), "amp": config.amp and _device(config.device) == "cuda",
        "torch": torch.__version__,
    }
    card = ModelCard(
        name=name, version=config.version, protocol=protocol,
        task="L3 body composition: mid-L3 slice from frontal/sagittal MIPs and SMA/SAT/VAT/IMAT "
             "segmentation of the slice",
        validation_status=status,
        intended_use=intended_use(phantom),
        training_data=training_data,
        evaluation={"set": "pending", "metrics": {}},
        networks=specs,
        description="2D U-Net (MONAI BasicUNet) tissue segmentation at mid-L3"
                    + (" and a 2D U-Net L3 locator on MIPs" if len(specs) > 1 else ""),
        source="Architectures after the L3 body-composition studies (see docs/models.md)",
        license="Apache-2.0",
        created=datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        training=training,
    )
    card.write(out)
    # Held-out evaluation: new phantom seeds, or the validation split of the user's data.
    eval_cases, eval_set = evaluation_cases(
        config, phantom_case, [by_id[i] for i in val_ids],
        what="digital phantoms", grid="mid-L3 slice at the native grid",
    )
    report = evaluate_model_dir(out, eval_cases, out / "evaluation.csv")
    write_evaluated_card(card, out, report, eval_set, len(eval_cases), "dice_sma_mean")
    say(f"wrote {out} ({name} {config.version}, {status.value}); evaluation: "
        + ", ".join(f"{k} {v:.3f}" for k, v in report.metrics.items() if v is not None))
    return out


def _trainer(protocol: str) -> Callable[[TrainConfig, Callable[[str], None] | None], Path] | None:
    """The trainer of ``protocol`` from its spec (``trainer``: ``"module:function"`` with the
    signature ``(config, log) -> Path``), or ``None`` when it declares none."""
    from pipelines.registry import declared_object

    trainer: Callable[[TrainConfig, Callable[[str], None] | None], Path] | None = (
        declared_object(protocol, "trainer")
    )
    return trainer


def trainable_protocols() -> list[str]:
    """Names of the registered protocols whose spec declares a trainer."""
    from pipelines.registry import protocols

    return [name for name, spec in protocols().items() if spec.trainer]


def train(config: TrainConfig, log: Callable[[str], None] | None = None) -> Path:
    """Train the model of ``config.protocol`` with the trainer its spec declares.

    Raises
    ------
    ModelError
        If the protocol has no trainer yet.
    """
    trainer = _trainer(config.protocol)
    if trainer is None:
        known = trainable_protocols()
        raise ModelError(
            f"no trainer for protocol {config.protocol!r} in this version (known: "
            f"{', '.join(known)}); its architectures are in models.architectures"
        )
    return trainer(config, log)


__all__ = [
    "Sample",
    "TrainConfig",
    "TrainedNetwork",
    "train",
    "train_l3",
    "train_network",
    "trainable_protocols",
]
