"""Training cases: digital phantoms generated on the fly, or a user's labelled images.

A *case* is one labelled image volume in ainode's canonical ``"HPL"`` orientation
(:mod:`pipelines.volume`): ``hu`` ``(slices, rows, columns)`` float32 HU, ``labels`` uint8 of the
same shape in the protocol's label numbering, ``spacing_mm`` (slice, row, column), and, for the
L3 phantoms, the vertebra labels used to train the level network.

User data, in a directory given to ``ainode train --data DIR``:

* NIfTI pairs: ``DIR/images/<case>.nii.gz`` with ``DIR/labels/<case>.nii.gz`` (same grid; read
  with SimpleITK and reoriented to LPS, so the array axes are canonical);
* DICOM + DICOM-SEG: ``DIR/<case>/`` holding one CT series and one SEG whose segment numbers are
  the protocol's labels (read with highdicom; frames mapped onto the canonical volume).

The split into training and validation cases is deterministic: case ids sorted, then permuted by
a seeded generator (:func:`split_cases`).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from ainode_core.errors import InvalidInputError

logger = logging.getLogger(__name__)

#: Value of L3 in :attr:`training.phantoms.abdomen.AbdomenPhantom.vertebra_labels`.
PHANTOM_L3_VALUE = 6


@dataclass
class Case:
    """One labelled volume (see the module docstring)."""

    case_id: str
    hu: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    l3_mask: np.ndarray | None = None
    mid_l3_slice: int | None = None
    l3_slices: tuple[int, int] | None = None
    lumbar_slices: tuple[int, int] | None = None
    extra: dict[str, object] = field(default_factory=dict)


def phantom_parameters(seed: int, size: str = "standard") -> dict[str, object]:
    """Varied parameters of :func:`training.phantoms.abdomen.make_abdomen_phantom` for ``seed``.

    ``size="standard"``: 256 x 256 pixels of 1.4-1.6 mm, 60-76 slices of 4-5 mm.
    ``size="small"``: 128 x 128 pixels of 2.6 mm, 50-56 slices of 6 mm (fast, for tests).
    """
    rng = np.random.default_rng(seed + 104729)
    common = {
        "seed": int(seed),
        "noise_hu": float(rng.uniform(6.0, 14.0)),
        "sat_thickness_mm": float(rng.uniform(12.0, 32.0)),
        "muscle_wall_thickness_mm": float(rng.uniform(8.0, 16.0)),
        "n_imat_islands": int(rng.integers(2, 9)),
    }
    if size == "small":
        return {**common, "rows": 128, "columns": 128, "pixel_spacing_mm": 2.6,
                "n_slices": int(rng.integers(50, 57)), "slice_thickness_mm": 6.0}
    if size != "standard":
        raise ValueError(f"phantom size {size!r}: use 'standard' or 'small'")
    return {**common, "rows": 256, "columns": 256,
            "pixel_spacing_mm": float(rng.choice([1.4, 1.5, 1.6])),
            "n_slices": int(rng.integers(60, 77)),
            "slice_thickness_mm": float(rng.choice([4.0, 5.0]))}


def phantom_case(seed: int, size: str = "standard") -> Case:
    """An abdominal phantom as a training case (tissue labels and the L3 vertebra mask)."""
    from training.phantoms.abdomen import make_abdomen_phantom

    phantom = make_abdomen_phantom(**phantom_parameters(seed, size))  # type: ignore[arg-type]
    first = phantom.vertebra_slices["L5"][0]
    last = phantom.vertebra_slices["L1"][1]
    return Case(
        case_id=f"phantom-{seed:05d}",
        hu=phantom.hu,
        labels=phantom.labels,
        spacing_mm=tuple(float(s) for s in phantom.spacing_mm),  # type: ignore[arg-type]
        l3_mask=phantom.vertebra_labels == PHANTOM_L3_VALUE,
        mid_l3_slice=int(phantom.mid_l3_slice),
        l3_slices=phantom.vertebra_slices["L3"],
        lumbar_slices=(int(first), int(last)),
        extra={"truth_l3": dict(phantom.truth_l3), "phantom_parameters": phantom_parameters(seed, size)},
    )


def split_cases(case_ids: list[str], val_fraction: float = 0.2, seed: int = 0
                ) -> tuple[list[str], list[str]]:
    """Deterministic training/validation split.

    Case ids are sorted, then permuted with ``numpy.random.default_rng(seed)``; the first
    ``max(1, round(n * val_fraction))`` are validation (none when there is a single case).
    """
    ordered = sorted(case_ids)
    if len(ordered) < 2:
        return ordered, []
    order = np.random.default_rng(seed).permutation(len(ordered))
    n_val = max(1, round(len(ordered) * val_fraction))
    val = sorted(ordered[i] for i in order[:n_val])
    train = sorted(ordered[i] for i in order[n_val:])
    return train, val


def _read_nifti_canonical(path: Path) -> tuple[np.ndarray, tuple[float, float, float]]:
    import SimpleITK as sitk

    image = sitk.DICOMOrient(sitk.ReadImage(str(path)), "LPS")
    array = sitk.GetArrayFromImage(image)  # (z, y, x) = (feet->head, ant->post, right->left)
    sx, sy, sz = image.GetSpacing()
    if array.ndim == 2:
        array = array[None]
    return array, (float(sz), float(sy), float(sx))


def nifti_cases(data_dir: str | Path) -> list[Case]:
    """Cases from ``DATA/images/*.nii(.gz)`` + ``DATA/labels/`` of the same name.

    Raises
    ------
    InvalidInputError
        Missing directories, an image without label, or grids that differ.
    """
    root = Path(data_dir)
    images_dir, labels_dir = root / "images", root / "labels"
    if not images_dir.is_dir() or not labels_dir.is_dir():
        raise InvalidInputError(f"{root}: expected images/ and labels/ with NIfTI pairs")
    cases = []
    for image_path in sorted(images_dir.glob("*.nii*")):
        label_path = labels_dir / image_path.name
        if not label_path.is_file():
            raise InvalidInputError(f"{image_path.name}: no label file {label_path}")
        hu, spacing = _read_nifti_canonical(image_path)
        labels, label_spacing = _read_nifti_canonical(label_path)
        if hu.shape != labels.shape or not np.allclose(spacing, label_spacing, atol=1e-3):
            raise InvalidInputError(
                f"{image_path.name}: image {hu.shape} {spacing} and label {labels.shape} "
                f"{label_spacing} are not on the same grid"
            )
        case_id = image_path.name.split(".nii")[0]
        cases.append(Case(case_id, hu.astype(np.float32), labels.astype(np.uint8), spacing))
    if not cases:
        raise InvalidInputError(f"{images_dir}: no .nii/.nii.gz images")
    return cases


def dicom_seg_cases(data_dir: str | Path) -> list[Case]:
    """Cases from ``DATA/<case>/``: one CT series + one DICOM-SEG (segment number = label).

    Raises
    ------
    InvalidInputError
        A case directory without exactly one SEG, or a SEG that references no frame of the CT.
    """
    import highdicom as hd

    from pipelines.volume import load_ct_volume, read_instance

    cases = []
    for case_dir in sorted(p for p in Path(data_dir).iterdir() if p.is_dir()):
        images: list[tuple[Path, Any]] = []
        segs: list[tuple[Path, Any]] = []
        for path in sorted(case_dir.rglob("*")):
            if not path.is_file():
                continue
            try:
                ds = read_instance(path)
            except InvalidInputError:
                continue
            (segs if ds.get("Modality") == "SEG" else images).append((path, ds))
        if len(segs) != 1:
            raise InvalidInputError(f"{case_dir}: expected one DICOM-SEG, found {len(segs)}")
        volume = load_ct_volume([ds for _, ds in images])
        seg = hd.seg.segread(segs[0][0])
        uids = [str(ds.SOPInstanceUID) for ds in volume.datasets]
        referenced = {str(r[2]) for r in seg.get_source_image_uids()}
        frames_with_seg = [u for u in uids if u in referenced]
        if not frames_with_seg:
            raise InvalidInputError(f"{case_dir}: the SEG references none of the CT images")
        pixels = seg.get_pixels_by_source_instance(
            source_sop_instance_uids=frames_with_seg, combine_segments=True,
            skip_overlap_checks=True,
        )
        by_uid = dict(zip(frames_with_seg, pixels))
        labels = np.zeros(volume.hu.shape, dtype=np.uint8)
        for k in range(volume.hu.shape[0]):
            frame = volume.source_frame_of_slice(k)
            if frame is not None and uids[frame] in by_uid:
                labels[k] = _source_frame_to_canonical(volume, k, np.asarray(by_uid[uids[frame]]))
        sz, sy, sx = (float(v) for v in volume.spacing_mm)
        cases.append(Case(case_dir.name, volume.hu, labels, (sz, sy, sx)))
    if not cases:
        raise InvalidInputError(f"{data_dir}: no case directories with CT + SEG")
    return cases


def _source_frame_to_canonical(volume: object, k: int, frame_labels: np.ndarray) -> np.ndarray:
    """Map one source frame's labels onto canonical slice ``k``.

    :meth:`CTVolume.to_source_frames` is applied to images of the canonical row and column
    coordinates (split into two bytes each, as it maps ``uint8`` masks), which gives, for every
    source pixel, the canonical pixel it shows; flips and transposes of the source are handled.
    """
    hu = volume.hu  # type: ignore[attr-defined]
    rows, cols = hu.shape[1:]
    frame = volume.source_frame_of_slice(k)  # type: ignore[attr-defined]
    rr, cc = np.meshgrid(np.arange(rows), np.arange(cols), indexing="ij")
    coords = []
    for values in (rr, cc):
        hi = np.zeros(hu.shape, dtype=np.uint8)
        lo = np.zeros(hu.shape, dtype=np.uint8)
        hi[k] = (values >> 8).astype(np.uint8) + 1
        lo[k] = (values & 255).astype(np.uint8)
        src_hi = volume.to_source_frames(hi)[frame].astype(np.int64)  # type: ignore[attr-defined]
        src_lo = volume.to_source_frames(lo)[frame].astype(np.int64)  # type: ignore[attr-defined]
        coords.append(((src_hi - 1) << 8) + src_lo)
    src_r, src_c = coords
    valid = (src_r >= 0) & (src_c >= 0)
    canonical = np.zeros((rows, cols), dtype=np.uint8)
    canonical[src_r[valid], src_c[valid]] = frame_labels[valid]
    return canonical
