"""Running registry models: load onto CUDA or the CPU, sliding-window inference, LearnedModel wrap.

:func:`load_configured_model` is what the node calls in a job's process: it resolves the
configured selection (``"reference"``, a model name, ``"best-validated"``) through
:mod:`models.registry`, verifies the weights, builds the MONAI network from the card, loads the
safetensors weights and wraps the network as a :class:`pipelines.types.LearnedModel` whose
``predict`` (and ``classify``) have the signature the protocol module documents. Loaded models
are cached per process, so a worker that runs several jobs keeps its model warm.

The pre-processing here (:func:`window_to_unit`, :func:`resample_2d`, :func:`mip_channels`) is the
one the trainers use, so training and inference see the same input.

Every protocol has an inference adapter (:data:`ADAPTERS`) with the ``predict``/``classify``
signature its pipeline documents; only the L3 model is trained and shipped so far (the others'
adapters are checked with random-weight networks, see docs/models.md).
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from monai.inferers import sliding_window_inference
from monai.transforms import Resize

from models.architectures import build_network, load_weights
from models.cards import ModelCard, NetworkSpec
from models.registry import ModelEntry, select_model
from ainode_core.errors import ModelError, PipelineError
from pipelines.registry import SpecObjects
from pipelines.types import AlgorithmInfo, LearnedModel, ValidationStatus

logger = logging.getLogger(__name__)

#: Warning added to every result of a phantom-only model.
PHANTOM_ONLY_WARNING = (
    "model {name} {version} is phantom-only: trained and evaluated on digital phantoms, not on "
    "patient images; its output on patient images is not meaningful (research use, not for "
    "diagnosis)"
)


@dataclass(frozen=True)
class InferenceOptions:
    """Inference settings from the node configuration.

    Attributes
    ----------
    overlap:
        Sliding-window overlap, 0..<1 (MONAI ``sliding_window_inference``).
    sw_batch_size:
        Windows per forward pass.
    amp:
        Automatic mixed precision (float16 autocast) on CUDA; ignored on the CPU.
    """

    overlap: float = 0.25
    sw_batch_size: int = 4
    amp: bool = True


@dataclass
class InferenceStats:
    """Per-process counters of a loaded model (read into the job's results summary)."""

    calls: int = 0
    seconds: float = 0.0
    load_seconds: float = 0.0
    extra: dict[str, Any] = field(default_factory=dict)


def resolve_device(setting: str = "auto") -> str:
    """``"cuda"`` or ``"cpu"`` for the ``device`` setting (``auto``/``cpu``/``cuda``).

    Raises
    ------
    ModelError
        If ``cuda`` is requested and torch sees no CUDA device.
    """
    if setting == "cpu":
        return "cpu"
    available = torch.cuda.is_available()
    if setting == "cuda":
        if not available:
            raise ModelError(
                "device 'cuda' is configured but torch sees no CUDA device; install the CUDA "
                "build of torch and a driver, or set device to 'auto' or 'cpu'"
            )
        return "cuda"
    if setting != "auto":
        raise ModelError(f"device {setting!r}: use 'auto', 'cpu' or 'cuda'")
    return "cuda" if available else "cpu"


# -- pre-processing shared with training -------------------------------------------------------


def window_to_unit(hu: np.ndarray, window_hu: tuple[float, float] | list[float]) -> np.ndarray:
    """Clip Hounsfield units to ``window_hu`` (lower, upper) and scale linearly to 0..1.

    Parameters
    ----------
    hu:
        Any shape, float HU.
    window_hu:
        (lower, upper) HU, e.g. (-250, 250) for the L3 tissue network (study input window).

    Returns
    -------
    numpy.ndarray
        ``float32``, same shape, 0..1.
    """
    lo, hi = float(window_hu[0]), float(window_hu[1])
    return np.clip((np.asarray(hu, dtype=np.float32) - lo) / (hi - lo), 0.0, 1.0)


def resample_2d(image: np.ndarray, spacing_mm: tuple[float, float],
                target_mm: tuple[float, float] | list[float], mode: str = "bilinear") -> np.ndarray:
    """Resample a ``(channels, rows, columns)`` image from ``spacing_mm`` to ``target_mm``.

    The new size is ``round(size * spacing / target)`` per axis (pixel centres, MONAI ``Resize``;
    ``mode`` ``"bilinear"`` for images, ``"nearest"`` for labels).
    """
    size = [max(1, round(n * s / t)) for n, s, t in zip(image.shape[1:], spacing_mm, target_mm)]
    return resize_2d(image, size, mode)


def resize_2d(image: np.ndarray, size: list[int] | tuple[int, ...], mode: str = "bilinear") -> np.ndarray:
    """Resize a ``(channels, rows, columns)`` array to ``size`` (MONAI ``Resize``)."""
    if tuple(image.shape[1:]) == tuple(size):
        return np.asarray(image, dtype=np.float32)
    kwargs: dict[str, Any] = {"mode": mode}
    if mode in ("bilinear", "bicubic"):
        kwargs["align_corners"] = False
    if mode == "nearest":
        kwargs = {"mode": "nearest-exact"}
    resize = Resize(spatial_size=tuple(int(s) for s in size), anti_aliasing=False, **kwargs)
    out = resize(np.asarray(image, dtype=np.float32))  # type: ignore[arg-type]
    return np.asarray(out, dtype=np.float32)


def pad_to_multiple(image: np.ndarray, multiple: int = 16) -> np.ndarray:
    """Zero-pad the last two axes of ``image`` at the end to a multiple of ``multiple``."""
    pads = [(0, 0)] * (image.ndim - 2) + [(0, (-n) % multiple) for n in image.shape[-2:]]
    return np.pad(image, pads)


def mip_channels(hu: np.ndarray, spacing_mm: tuple[float, float, float],
                 target_mm: float, window_hu: tuple[float, float] | list[float],
                 ) -> tuple[np.ndarray, int]:
    """Frontal and sagittal maximum-intensity projections as a 2-channel image.

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` float HU, canonical HPL (slices feet->head, rows
        anterior->posterior, columns right->left).
    spacing_mm:
        (slice, row, column) spacing, mm.
    target_mm:
        Pixel size of the projections, mm (1 mm in the section-detection study).
    window_hu:
        Window applied to the projections (100..1500 HU: bone).

    Returns
    -------
    tuple[numpy.ndarray, int]
        ``(2, H, W)`` ``float32`` 0..1 (channel 0 frontal: max over rows, so ``H`` runs
        feet->head and ``W`` right->left; channel 1 sagittal: max over columns, ``W`` anterior
        ->posterior; both zero-padded to one width and to multiples of 16), and ``H`` before
        padding (image row ``i`` lies at slice ``(i + 0.5) * slices / H - 0.5``).
    """
    frontal = window_to_unit(hu.max(axis=1), window_hu)[None]
    sagittal = window_to_unit(hu.max(axis=2), window_hu)[None]
    frontal = resample_2d(frontal, (spacing_mm[0], spacing_mm[2]), (target_mm, target_mm))
    sagittal = resample_2d(sagittal, (spacing_mm[0], spacing_mm[1]), (target_mm, target_mm))
    height = frontal.shape[1]
    width = max(frontal.shape[2], sagittal.shape[2])
    stacked = np.zeros((2, height, width), dtype=np.float32)
    stacked[0, :, : frontal.shape[2]] = frontal[0]
    stacked[1, :, : sagittal.shape[2]] = sagittal[0]
    return pad_to_multiple(stacked), height


def mip_target(vertebra_mask: np.ndarray, spacing_mm: tuple[float, float, float],
               target_mm: float) -> np.ndarray:
    """Training target of the level network: the projected vertebra mask on the MIP grid.

    ``vertebra_mask``: ``(slices, rows, columns)`` bool of the L3 vertebra. Returns ``(H, W)``
    ``int64`` (0/1), padded like :func:`mip_channels`.
    """
    mask = np.asarray(vertebra_mask, dtype=bool)
    frontal = resample_2d(np.asarray(mask.any(axis=1))[None].astype(np.float32),
                          (spacing_mm[0], spacing_mm[2]), (target_mm, target_mm), "nearest")
    sagittal = resample_2d(np.asarray(mask.any(axis=2))[None].astype(np.float32),
                           (spacing_mm[0], spacing_mm[1]), (target_mm, target_mm), "nearest")
    width = max(frontal.shape[2], sagittal.shape[2])
    target = np.zeros((2, frontal.shape[1], width), dtype=np.float32)
    target[0, :, : frontal.shape[2]] = frontal[0]
    target[1, :, : sagittal.shape[2]] = sagittal[0]
    # One target for both channels: the network output is one map over the stacked grid;
    # a pixel is L3 when it is L3 in either projection.
    return pad_to_multiple(target.max(axis=0)[None])[0].round().astype(np.int64)


def level_from_probability(prob: np.ndarray, height: int, n_slices: int) -> tuple[int, float]:
    """Mid-L3 slice from the level network's L3 probability map.

    The row profile (summed probability per row) is thresholded at half its maximum; the largest
    run of rows above it is L3 and its probability-weighted centre the mid-L3 row, mapped back to
    a canonical slice index.

    Returns
    -------
    tuple[int, float]
        Slice index and confidence (mean probability of the pixels called L3, 0..1).

    Raises
    ------
    PipelineError
        If the network marks no pixel as L3.
    """
    prob = prob[:height]
    profile = prob.sum(axis=1)
    called = prob > 0.5
    if not called.any():
        raise PipelineError(
            "the L3 level network found no L3 vertebra on the projections; send a CT covering "
            "the lumbar spine, or use the reference method"
        )
    rows = profile >= 0.5 * profile.max()
    from scipy import ndimage

    runs, n = ndimage.label(rows)
    sizes = ndimage.sum(profile, runs, index=range(1, n + 1))
    best = int(np.argmax(sizes)) + 1
    idx = np.nonzero(runs == best)[0]
    centre_row = float((idx * profile[idx]).sum() / profile[idx].sum())
    slice_f = (centre_row + 0.5) * n_slices / height - 0.5
    index = int(np.clip(round(slice_f), 0, n_slices - 1))
    return index, float(prob[called].mean())


# -- loading ------------------------------------------------------------------------------------


def load_network(entry: ModelEntry, role: str, device: str) -> tuple[torch.nn.Module, NetworkSpec]:
    """Build the network with ``role`` of a (verified) model and load its weights.

    Raises
    ------
    ModelError
        If the card has no such network or the weights do not fit the architecture.
    """
    spec = entry.card.network(role)
    if spec is None:
        raise ModelError(f"model {entry.name} has no {role!r} network")
    network = build_network(spec.architecture, spec.args)
    try:
        load_weights(network, entry.path / spec.weights)
    except ModelError as exc:
        raise ModelError(f"model {entry.name}: {exc} (card arguments {spec.args})") from exc
    return network.to(device).eval(), spec


@contextlib.contextmanager
def _autocast(device: str, amp: bool) -> Iterator[None]:
    if amp and device == "cuda":
        with torch.autocast("cuda", dtype=torch.float16):
            yield
    else:
        yield


def segment_slice(network: torch.nn.Module, spec: NetworkSpec, hu_slice: np.ndarray,
                  pixel_spacing_mm: tuple[float, float], device: str,
                  options: InferenceOptions) -> np.ndarray:
    """Segment one 2D slice with sliding-window inference on the card's grid.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` float HU.
    pixel_spacing_mm:
        (row, column) spacing, mm.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` ``uint8``: argmax class of the softmax, resampled back to the input
        grid (output channel ``c`` is label value ``c``).
    """
    image = window_to_unit(hu_slice, spec.input["intensity_window_hu"])[None]
    target = spec.input.get("pixel_spacing_mm", list(pixel_spacing_mm))[:2]
    image = resample_2d(image, pixel_spacing_mm, target)
    roi = tuple(spec.input.get("roi_size", [128, 128])[:2])
    x = torch.from_numpy(image)[None].to(device)
    with torch.inference_mode(), _autocast(device, options.amp):
        logits = sliding_window_inference(
            x, roi_size=roi, sw_batch_size=options.sw_batch_size, predictor=network,
            overlap=options.overlap, mode="gaussian",
        )
    assert isinstance(logits, torch.Tensor)
    prob = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
    prob = resize_2d(prob, hu_slice.shape, "bilinear")
    return np.asarray(prob.argmax(axis=0), dtype=np.uint8)


# -- protocol adapters ---------------------------------------------------------------------------


def _algorithm(card: ModelCard) -> AlgorithmInfo:
    source = card.source or f"{card.task}; {', '.join(f'{n.role}: {n.architecture}' for n in card.networks)}"
    return AlgorithmInfo(
        name=card.name, version=card.version, validation_status=card.validation_status,
        is_ai=True, source=source,
    )


def _l3_adapter(entry: ModelEntry, device: str, options: InferenceOptions,
                stats: InferenceStats) -> LearnedModel:
    """L3: ``predict(hu_slice, pixel_spacing_mm) -> (rows, columns) uint8`` (1 SMA, 2 SAT, 3 VAT,
    4 IMAT) and, when the model has a ``"level"`` network, ``locate(hu, spacing_mm) ->
    (slice_index, confidence)`` locating mid-L3 (the documented signature of
    :mod:`pipelines.l3_body_composition`)."""
    tissue, tissue_spec = load_network(entry, "tissue", device)

    def predict(hu_slice: np.ndarray, pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
        spacing = (float(pixel_spacing_mm[0]), float(pixel_spacing_mm[1]))
        return segment_slice(tissue, tissue_spec, np.asarray(hu_slice, np.float32), spacing,
                             device, options)

    locator: Callable[..., tuple[int, float]] | None = None
    if entry.card.network("level") is not None:
        level, level_spec = load_network(entry, "level", device)
        target_mm = float(level_spec.input.get("pixel_spacing_mm", [1.0, 1.0])[0])

        def locate(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> tuple[int, float]:
            image, height = mip_channels(np.asarray(hu, np.float32), spacing_mm, target_mm,
                                         level_spec.input["intensity_window_hu"])
            x = torch.from_numpy(image)[None].to(device)
            with torch.inference_mode(), _autocast(device, options.amp):
                logits = level(x)
            prob = torch.softmax(logits.float(), dim=1)[0, 1].cpu().numpy()
            return level_from_probability(prob, height, hu.shape[0])

        locator = locate
    return LearnedModel(algorithm=_algorithm(entry.card), predict=_timed(predict, stats),
                        locate=_timed(locator, stats) if locator is not None else None,
                        device=device)


def _chest_adapter(entry: ModelEntry, device: str, options: InferenceOptions,
                   stats: InferenceStats) -> LearnedModel:
    """Chest: ``predict(hu, spacing_mm) -> (slices, rows, columns) uint8`` in the numbering of
    ``pipelines.chest_respiratory_muscle.LABELS``: the 2D ``"muscle"`` network slice by slice
    (:func:`segment_slice` on the card's grid)."""
    network, spec = load_network(entry, "muscle", device)

    def predict(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
        volume = np.asarray(hu, np.float32)
        spacing = (float(spacing_mm[1]), float(spacing_mm[2]))
        out = np.zeros(volume.shape, dtype=np.uint8)
        for k in range(volume.shape[0]):
            out[k] = segment_slice(network, spec, volume[k], spacing, device, options)
        return out

    return LearnedModel(algorithm=_algorithm(entry.card), predict=_timed(predict, stats),
                        device=device)


def _resize_nd(array: np.ndarray, size: tuple[int, ...], mode: str) -> np.ndarray:
    """Resize a ``(channels, *spatial)`` array with MONAI ``Resize`` (2D or 3D)."""
    kwargs: dict[str, Any] = {"mode": mode}
    if mode in ("bilinear", "trilinear"):
        kwargs["align_corners"] = False
    resize = Resize(spatial_size=size, anti_aliasing=False, **kwargs)
    return np.asarray(resize(np.asarray(array, dtype=np.float32)), dtype=np.float32)  # type: ignore[arg-type]


def split_at_midline(merged: np.ndarray) -> np.ndarray:
    """Right/left landmark labels from side-merged classes (brain-gwr ``"split-at-midline"``).

    Parameters
    ----------
    merged:
        ``(slices, rows, columns)`` integer classes: 0 background, 1 caudate, 2 putamen,
        3 posterior limb of the internal capsule (each right and left), 4 corpus callosum;
        canonical orientation (columns run from the patient's right to left).

    Returns
    -------
    numpy.ndarray
        ``uint8`` labels of ``pipelines.brain_gwr`` (1/2 caudate R/L, 3/4 putamen R/L, 5/6 PLIC
        R/L, 7 corpus callosum). The midline is the plane ``column = a + b*row + c*slice``
        fitted (least squares) to the corpus callosum's voxels, a midline structure; with fewer
        than 20 such voxels, the column of the centroid of all landmark voxels. Voxels at smaller
        columns than the midline are right.
    """
    merged = np.asarray(merged)
    out = np.zeros(merged.shape, dtype=np.uint8)
    cc = np.argwhere(merged == 4)
    if len(cc) >= 20:
        design = np.column_stack([np.ones(len(cc)), cc[:, 1], cc[:, 0]]).astype(np.float64)
        coef, *_ = np.linalg.lstsq(design, cc[:, 2].astype(np.float64), rcond=None)
    else:
        any_label = np.argwhere(merged > 0)
        centre = float(any_label[:, 2].mean()) if len(any_label) else merged.shape[2] / 2.0
        coef = np.array([centre, 0.0, 0.0])
    for merged_class, (right, left) in {1: (1, 2), 2: (3, 4), 3: (5, 6)}.items():
        idx = np.argwhere(merged == merged_class)
        if not len(idx):
            continue
        midline = coef[0] + coef[1] * idx[:, 1] + coef[2] * idx[:, 0]
        out[tuple(idx.T)] = np.where(idx[:, 2] < midline, right, left).astype(np.uint8)
    out[merged == 4] = 7
    return out


def _brain_adapter(entry: ModelEntry, device: str, options: InferenceOptions,
                   stats: InferenceStats) -> LearnedModel:
    """Brain GWR: ``predict(hu, spacing_mm) -> (slices, rows, columns) uint8`` (labels of
    ``pipelines.brain_gwr``): resample to the card's 3D ``pixel_spacing_mm``, 3D sliding-window
    inference with ``roi_size``, probabilities resampled back, argmax. When the card's input has
    ``"paired_labels": "split-at-midline"``, the network's classes are side-merged (0 background,
    1 caudate, 2 putamen, 3 PLIC, 4 corpus callosum) and :func:`split_at_midline` assigns right
    and left."""
    network, spec = load_network(entry, "landmarks", device)
    target = [float(v) for v in spec.input.get("pixel_spacing_mm", [1.0, 1.0, 1.0])]
    roi = tuple(int(v) for v in spec.input.get("roi_size", [96, 96, 96]))
    paired = spec.input.get("paired_labels")
    if paired not in (None, "split-at-midline"):
        raise ModelError(f"model {entry.name}: paired_labels {paired!r} is not one ainode knows "
                         "(only 'split-at-midline')")

    def predict(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
        volume = window_to_unit(hu, spec.input["intensity_window_hu"])[None]
        size = tuple(max(1, round(n * s / t)) for n, s, t in zip(hu.shape, spacing_mm, target))
        image = _resize_nd(volume, size, "trilinear")
        x = torch.from_numpy(image)[None].to(device)
        with torch.inference_mode(), _autocast(device, options.amp):
            logits = sliding_window_inference(
                x, roi_size=roi, sw_batch_size=options.sw_batch_size, predictor=network,
                overlap=options.overlap, mode="gaussian")
        assert isinstance(logits, torch.Tensor)
        prob = torch.softmax(logits.float(), dim=1)[0].cpu().numpy()
        prob = _resize_nd(prob, tuple(hu.shape), "trilinear")
        labels = np.asarray(prob.argmax(axis=0), dtype=np.uint8)
        return split_at_midline(labels) if paired == "split-at-midline" else labels

    return LearnedModel(algorithm=_algorithm(entry.card), predict=_timed(predict, stats),
                        device=device)


def _rds_adapter(entry: ModelEntry, device: str, options: InferenceOptions,
                 stats: InferenceStats) -> LearnedModel:
    """Neonatal RDS: ``predict(image, pixel_spacing_mm) -> (rows, columns) uint8`` (0 background,
    1 right lung, 2 left lung) with ``image`` already 0..1: the whole image resized to the
    ``"lung"`` network's ``roi_size``, softmax, resized back, argmax (the study's median filter
    and rotation averaging run in the pipeline). ``classify(image, lung_mask) -> float``: the
    ``"classifier"`` network's class-1 (RDS) softmax on the lung bounding box (5 % margin)
    resized to its ``roi_size``."""
    lung, lung_spec = load_network(entry, "lung", device)
    lung_size = tuple(int(v) for v in lung_spec.input.get("roi_size", [512, 512]))

    def _run(network: torch.nn.Module, image: np.ndarray, size: tuple[int, ...]) -> np.ndarray:
        resized = _resize_nd(image[None], size, "bilinear")
        x = torch.from_numpy(resized)[None].to(device)
        with torch.inference_mode(), _autocast(device, options.amp):
            logits = network(x)
        return torch.softmax(logits.float(), dim=1)[0].cpu().numpy()

    def predict(image: np.ndarray, pixel_spacing_mm: tuple[float, float] | None = None) -> np.ndarray:
        picture = np.clip(np.asarray(image, np.float32), 0.0, 1.0)
        prob = _resize_nd(_run(lung, picture, lung_size), picture.shape, "bilinear")
        return np.asarray(prob.argmax(axis=0), dtype=np.uint8)

    classify: Callable[..., float] | None = None
    if entry.card.network("classifier") is not None:
        classifier, class_spec = load_network(entry, "classifier", device)
        class_size = tuple(int(v) for v in class_spec.input.get("roi_size", [256, 256]))

        def rds_probability(image: np.ndarray, lung_mask: np.ndarray) -> float:
            rows, cols = np.nonzero(np.asarray(lung_mask, dtype=bool))
            if rows.size == 0:
                raise PipelineError("no lung pixels to classify; the lung segmentation is empty")
            pad_r = max(1, round(0.05 * image.shape[0]))
            pad_c = max(1, round(0.05 * image.shape[1]))
            crop = np.asarray(image, np.float32)[
                max(0, rows.min() - pad_r): rows.max() + pad_r + 1,
                max(0, cols.min() - pad_c): cols.max() + pad_c + 1]
            resized = _resize_nd(np.clip(crop, 0.0, 1.0)[None], class_size, "bilinear")
            x = torch.from_numpy(resized)[None].to(device)
            with torch.inference_mode(), _autocast(device, options.amp):
                logits = classifier(x)
            return float(torch.softmax(logits.float(), dim=1)[0, 1].cpu())

        classify = rds_probability
    return LearnedModel(algorithm=_algorithm(entry.card), predict=_timed(predict, stats),
                        classify=_timed(classify, stats) if classify is not None else None,
                        device=device)


#: Protocol -> adapter building its LearnedModel, with the signatures the pipelines document,
#: read from each protocol's spec (``adapter``); a phantom-only model of each shipped protocol
#: ships in models/zoo (docs/models.md).
ADAPTERS: Mapping[str, Callable[[ModelEntry, str, InferenceOptions, InferenceStats],
                                LearnedModel]] = SpecObjects("adapter")


def _timed(function: Callable[..., Any], stats: InferenceStats) -> Callable[..., Any]:
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return function(*args, **kwargs)
        finally:
            if torch.cuda.is_available():
                torch.cuda.synchronize()
            stats.calls += 1
            stats.seconds += time.perf_counter() - start

    wrapper.__doc__ = function.__doc__
    return wrapper


_CACHE: dict[tuple[Any, ...], tuple[LearnedModel, InferenceStats]] = {}


def load_learned_model(entry: ModelEntry, device: str = "cpu",
                       options: InferenceOptions | None = None) -> tuple[LearnedModel, InferenceStats]:
    """Wrap a verified registry model as a :class:`LearnedModel` for its protocol (cached).

    Returns
    -------
    tuple[LearnedModel, InferenceStats]
        The model and its per-process timing counters.

    Raises
    ------
    ModelError
        If the protocol has no inference adapter yet, or the weights do not load.
    """
    options = options or InferenceOptions()
    key = (entry.name, entry.card.version, str(entry.path), device, options,
           tuple(n.sha256 for n in entry.card.networks))
    if key in _CACHE:
        return _CACHE[key]
    adapter = ADAPTERS.get(entry.card.protocol)
    if adapter is None:
        raise ModelError(
            f"model {entry.name}: protocol {entry.card.protocol!r} has no inference adapter in "
            "this version (see docs/models.md, 'What remains'); use the reference method"
        )
    stats = InferenceStats()
    start = time.perf_counter()
    model = adapter(entry, device, options, stats)
    stats.load_seconds = time.perf_counter() - start
    logger.info("model %s %s loaded on %s in %.2f s", entry.name, entry.card.version, device,
                stats.load_seconds)
    _CACHE[key] = (model, stats)
    return model, stats


def load_configured_model(
    protocol: str,
    selection: str,
    *,
    install_dir: str | Path | None = None,
    device: str = "auto",
    options: InferenceOptions | None = None,
) -> tuple[LearnedModel, InferenceStats] | None:
    """The model the configuration selects for ``protocol``, loaded, or ``None`` (reference).

    Parameters
    ----------
    protocol:
        Protocol name.
    selection:
        ``"reference"``, ``"best-validated"`` or a model name (see :func:`models.registry.select_model`).
    install_dir:
        Installed models directory (``<data_dir>/models``).
    device:
        ``auto``, ``cpu`` or ``cuda``.
    options:
        Sliding-window and AMP settings.

    Raises
    ------
    ModelError
        Unknown, tampered or mismatched model; CUDA requested but absent.
    """
    entry = select_model(protocol, selection, install_dir)
    if entry is None:
        return None
    return load_learned_model(entry, resolve_device(device), options)


def phantom_only_warning(algorithm: AlgorithmInfo) -> str | None:
    """The warning a result of ``algorithm`` must carry, or ``None``."""
    if algorithm.validation_status == ValidationStatus.PHANTOM_ONLY:
        return PHANTOM_ONLY_WARNING.format(name=algorithm.name, version=algorithm.version)
    return None


__all__ = [
    "ADAPTERS",
    "InferenceOptions",
    "InferenceStats",
    "level_from_probability",
    "load_configured_model",
    "load_learned_model",
    "load_network",
    "mip_channels",
    "mip_target",
    "phantom_only_warning",
    "resample_2d",
    "resize_2d",
    "resolve_device",
    "segment_slice",
    "split_at_midline",
    "window_to_unit",
]
