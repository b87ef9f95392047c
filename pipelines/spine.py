"""Finding and labelling the vertebrae of a CT volume (reference method, no trained weights).

Used by the L3 body-composition protocol and meant for reuse (e.g. T4/T12 for the chest
protocol). Works on a :class:`pipelines.volume.CTVolume` in canonical ``"HPL"`` orientation
(slices feet→head, rows anterior→posterior, columns right→left).

Method
------
1. Body silhouette: the largest connected region of the z-mean of ``HU > -500`` (so a patient
   table separated from the body by air is ignored).
2. Spinal column: bone (``HU > bone_threshold_hu``) is averaged over all slices; the persistent
   bony column nearest the body's left-right centre in the posterior half is the spine.
3. Vertebral-body region of interest: the anterior part of that column (the body, not the
   posterior elements). The bone area inside it, slice by slice, is high in vertebral bodies and
   drops in intervertebral discs; runs of low slices are discs, runs of high slices vertebrae.
4. Ribs: in each slice, a bone component that is separate from the vertebra but comes within
   ``rib_gap_mm`` of it and reaches further than ``rib_min_lateral_mm`` from the midline is a rib
   at its costovertebral joint. A vertebra with such a slice bears ribs; the most caudal
   rib-bearing vertebra is T12.
5. Sacrum: a most-caudal segment whose bone is much wider than the vertebral bodies (the alae).
6. Labels are counted from T12 downwards and from the sacrum upwards; when both are found they
   must agree.

Limits (honest)
---------------
* Transitional anatomy (6 lumbar vertebrae, lumbarised S1, sacralised L5, 11 or 13 rib pairs,
  hypoplastic T12 ribs) makes both counts wrong by one level; only the disagreement of the two
  counts can reveal it, and a consistent transitional anomaly cannot be detected at all.
* Lumbar transverse processes longer than ``rib_min_lateral_mm`` fused to the vertebra are not
  mistaken for ribs, but a detached (fractured) transverse process or a lumbar rib is.
* Discs are found from bone-area minima; with thick slices (> ~7 mm), severe degeneration,
  bridging osteophytes, fusion or hardware, discs may be missed and two vertebrae merged.
* Very osteoporotic cancellous bone (below ``bone_threshold_hu``) weakens the profile; the
  cortical shell usually still carries it.
* Scoliosis or strong lordosis moves the column out of the fixed region of interest.
* Checked on digital phantoms only; not clinically validated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipelines.errors import PipelineError
from pipelines.volume import CTVolume

logger = logging.getLogger(__name__)

#: Names in caudal-to-cranial order, used for counting.
_LUMBAR = ("L5", "L4", "L3", "L2", "L1")


@dataclass(frozen=True)
class SpineParameters:
    """Parameters of the spine finder.

    Attributes
    ----------
    bone_threshold_hu:
        Bone threshold, HU. 200 HU lies above contrast-enhanced soft tissue and below cortical
        bone (about +700 HU and more) and normal cancellous bone (about +200..300 HU).
    body_threshold_hu:
        Threshold separating the body from air, HU.
    column_min_fraction:
        Minimum fraction of slices in which a pixel must be bone to belong to the column.
    disc_fraction:
        A slice is a disc when its vertebral-body bone area is below this fraction of the
        largest area within ``local_window_mm``.
    local_window_mm:
        Half-width of the window for the local maximum, mm (about one vertebral level).
    min_vertebra_height_mm:
        Shorter runs of bone slices are merged into the neighbouring disc.
    rib_gap_mm:
        A rib must come within this distance of the vertebra in the same slice.
    rib_min_lateral_mm:
        A rib must reach further than this from the midline (beyond lumbar transverse processes).
    sacrum_width_ratio:
        A caudal segment wider than this times the median vertebral width is the sacrum.
    """

    bone_threshold_hu: float = 200.0
    body_threshold_hu: float = -500.0
    column_min_fraction: float = 0.3
    disc_fraction: float = 0.4
    local_window_mm: float = 30.0
    min_vertebra_height_mm: float = 8.0
    rib_gap_mm: float = 10.0
    rib_min_lateral_mm: float = 55.0
    sacrum_width_ratio: float = 1.6


@dataclass(frozen=True)
class Vertebra:
    """One vertebra (or the sacrum) found along the slice axis.

    Attributes
    ----------
    label: str | None
        ``"T12"``, ``"L3"``, ``"S"`` (sacrum) ..., or ``None`` when it could not be counted.
    first_slice, last_slice: int
        Canonical slice range (inclusive) of its bone, between the neighbouring discs.
    centre_slice: int
        Middle slice of that range (the mid-vertebral slice).
    height_mm: float
        ``(last_slice - first_slice + 1) * slice spacing``.
    bears_ribs: bool
        A rib was found at its costovertebral joint.
    rib_slices: int
        Number of its slices with rib evidence.
    width_mm: float
        Median lateral width of its bone component, mm.
    is_sacrum: bool
        Classified as the sacrum.
    truncated: bool
        Touches the first or last slice of the volume (may be incomplete).
    """

    label: str | None
    first_slice: int
    last_slice: int
    centre_slice: int
    height_mm: float
    bears_ribs: bool
    rib_slices: int
    width_mm: float
    is_sacrum: bool
    truncated: bool


@dataclass
class SpineLabelling:
    """Result of :func:`label_vertebrae`.

    Attributes
    ----------
    vertebrae: list[Vertebra]
        Caudal to cranial.
    confidence: float
        0..1: 0.9 when the counts from the ribs and from the sacrum agree, 0.6 when only one
        landmark was found, 0.3 when they disagree, 0.0 when none was found.
    method: str
        ``"ribs+sacrum"``, ``"ribs"``, ``"sacrum"``, ``"ribs (sacrum disagrees)"`` or ``"none"``.
    evidence: list[str]
        Human-readable reasons (what was found, where).
    column_centre_rc: tuple[float, float]
        (row, column) of the vertebral-body region centre on the canonical grid.
    vertebral_body_roi: tuple[int, int, int, int]
        (row0, row1, col0, col1), half-open, of the vertebral-body region of interest.
    bone_area_profile_mm2: numpy.ndarray
        ``(slices,)`` bone area in that region per slice, mm².
    disc_slices: list[int]
        Slices classified as discs.
    """

    vertebrae: list[Vertebra]
    confidence: float
    method: str
    evidence: list[str]
    column_centre_rc: tuple[float, float]
    vertebral_body_roi: tuple[int, int, int, int]
    bone_area_profile_mm2: np.ndarray
    disc_slices: list[int] = field(default_factory=list)

    def find(self, label: str) -> Vertebra | None:
        """The vertebra with this label, or ``None``."""
        return next((v for v in self.vertebrae if v.label == label), None)


@dataclass(frozen=True)
class VertebraInSlice:
    """The vertebra found in one axial slice.

    Attributes
    ----------
    mask: numpy.ndarray
        ``(rows, columns)`` bool: its bone (holes filled).
    enclosed: numpy.ndarray
        ``(rows, columns)`` bool: bone plus what it encloses (spinal canal, marrow).
    body_centre_rc: tuple[float, float]
        (row, column) of the vertebral-body centre.
    anterior_row: int
        Most anterior row of the vertebral body.
    posterior_row: int
        Most posterior row of the vertebral body (front of the canal when it is enclosed).
    body_width_mm: float
        Lateral width of the vertebral body, mm.
    """

    mask: np.ndarray
    enclosed: np.ndarray
    body_centre_rc: tuple[float, float]
    anterior_row: int
    posterior_row: int
    body_width_mm: float


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, round(radius_px))
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r)


def largest_component(mask: np.ndarray) -> np.ndarray:
    """Largest connected component (8/26-connectivity) of a boolean mask; empty if none."""
    labels, n = ndimage.label(mask, structure=np.ones((3,) * mask.ndim, dtype=bool))
    if n == 0:
        return np.zeros(mask.shape, dtype=bool)
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return np.asarray(labels == int(np.argmax(sizes)))


def find_body_mask(
    hu_slice: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    threshold_hu: float = -500.0,
    *,
    coarse_grid_mm: float | None = None,
) -> np.ndarray:
    """Body outline of one axial slice: largest region above ``threshold_hu``, holes filled.

    A morphological opening (radius 3 mm) first cuts thin bridges to the patient table or
    blanket; the kept region is then grown back by the same radius inside the thresholded
    pixels, so the skin line is not eroded. The work is done on the bounding box of the
    thresholded pixels (padded by more than the disks' radius, so the result is the same as on
    the whole image).

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` Hounsfield units.
    pixel_spacing_mm:
        (row, column) spacing, mm.
    threshold_hu:
        Air/body threshold, HU.
    coarse_grid_mm:
        When given, the opening and growing run on every ``n``-th pixel, ``n = coarse_grid_mm //
        pixel`` (at least 1), and the grown region is intersected with the full-resolution
        threshold, so the skin line keeps full resolution (the chest pipeline uses 1.5 mm: about
        3x faster at 0.75 mm pixels; where a thin strap joins a table, a few strap pixels below
        the skin can differ from ``None``). ``None``: every pixel.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool.
    """
    above = hu_slice > threshold_hu
    out = np.zeros(above.shape, dtype=bool)
    rows = np.flatnonzero(above.any(axis=1))
    if len(rows) == 0:
        return out
    cols = np.flatnonzero(above.any(axis=0))
    pixel = float(min(pixel_spacing_mm))
    radius_px = 3.0 / pixel
    pad = round(radius_px) + 3
    r0, r1 = max(0, rows[0] - pad), min(above.shape[0], rows[-1] + pad + 1)
    c0, c1 = max(0, cols[0] - pad), min(above.shape[1], cols[-1] + pad + 1)
    crop = above[r0:r1, c0:c1]
    step = max(1, int(coarse_grid_mm // pixel)) if coarse_grid_mm is not None else 1
    coarse = crop[::step, ::step]
    opened = ndimage.binary_opening(coarse, structure=_disk(radius_px / step))
    core = largest_component(opened)
    if not core.any():
        return out
    grown = ndimage.binary_dilation(core, structure=_disk(radius_px / step + 1))
    if step > 1:
        grown = np.repeat(np.repeat(grown, step, axis=0), step, axis=1)[: crop.shape[0],
                                                                         : crop.shape[1]]
    region = largest_component(grown & crop)
    # Holes: background components (4-connected, as binary_fill_holes) not touching the crop's
    # border; one labelling, faster than binary_fill_holes' iterated dilation.
    background, n = ndimage.label(~region)
    border = np.unique(np.concatenate([background[0], background[-1], background[:, 0],
                                       background[:, -1]]))
    hole = np.ones(n + 1, dtype=bool)
    hole[border] = False
    hole[0] = False
    out[r0:r1, c0:c1] = region | hole[background]
    return out


def find_vertebra_in_slice(
    hu_slice: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    body_mask: np.ndarray | None = None,
    bone_threshold_hu: float = 200.0,
) -> VertebraInSlice | None:
    """Find the vertebra in one axial slice (canonical orientation).

    The vertebra is the largest bone component (bone = ``HU > bone_threshold_hu``, closed with a
    2 mm disk) whose centroid lies within 45 mm of the body's left-right centre and posterior to
    the body's centre. The vertebral body is its part anterior to the spinal canal.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` Hounsfield units, rows anterior→posterior, columns right→left.
    pixel_spacing_mm:
        (row, column) spacing, mm.
    body_mask:
        Body outline (:func:`find_body_mask`); computed when ``None``.
    bone_threshold_hu:
        Bone threshold, HU.

    Returns
    -------
    VertebraInSlice | None
        ``None`` when no such bone is found (e.g. a disc slice without posterior elements).
    """
    row_mm, col_mm = pixel_spacing_mm
    body = find_body_mask(hu_slice, pixel_spacing_mm) if body_mask is None else body_mask
    if not body.any():
        return None
    body_rows, body_cols = np.nonzero(body)
    centre_row = 0.5 * (body_rows.min() + body_rows.max())
    centre_col = 0.5 * (body_cols.min() + body_cols.max())
    bone = (hu_slice > bone_threshold_hu) & body
    bone = ndimage.binary_closing(bone, structure=_disk(2.0 / col_mm)) & body
    labels, n = ndimage.label(bone, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return None
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones_like(labels), labels, index)
    centroids = ndimage.center_of_mass(bone, labels, index)
    best, best_area = 0, 0.0
    for lab, area, (cr, cc) in zip(index, areas, centroids, strict=True):
        if abs(cc - centre_col) * col_mm <= 45.0 and cr > centre_row and area > best_area:
            best, best_area = int(lab), float(area)
    if best == 0 or best_area * row_mm * col_mm < 100.0:
        return None
    mask = labels == best
    enclosed = np.asarray(ndimage.binary_fill_holes(mask))
    canal = enclosed & ~np.asarray(ndimage.binary_fill_holes(_open_small(mask)))
    rows = np.flatnonzero(mask.any(axis=1))
    anterior = int(rows[0])
    if canal.any():
        canal_rows = np.flatnonzero(canal.any(axis=1))
        posterior = int(canal_rows[0]) - 1
    else:
        posterior = min(int(rows[-1]), anterior + round(32.0 / row_mm))
    posterior = max(posterior, anterior + 1)
    body_part = mask.copy()
    body_part[:anterior] = False
    body_part[posterior + 1 :] = False
    cols = np.flatnonzero(body_part.any(axis=0))
    br, bc = ndimage.center_of_mass(body_part)
    return VertebraInSlice(
        mask=mask,
        enclosed=enclosed,
        body_centre_rc=(float(br), float(bc)),
        anterior_row=anterior,
        posterior_row=posterior,
        body_width_mm=float((cols[-1] - cols[0] + 1) * col_mm) if len(cols) else 0.0,
    )


def _open_small(mask: np.ndarray) -> np.ndarray:
    # The canal is a hole of the vertebra; marrow holes (cancellous bone below threshold) are
    # usually split by trabeculae. Here: keep the mask as is; the canal is the largest hole.
    holes = np.asarray(ndimage.binary_fill_holes(mask)) & ~mask
    if not holes.any():
        return mask
    biggest = largest_component(holes)
    return np.asarray(mask | (holes & ~biggest))


def label_vertebrae(volume: CTVolume, params: SpineParameters | None = None) -> SpineLabelling:
    """Find the vertebrae of an axial CT volume and label them by counting.

    Parameters
    ----------
    volume:
        Canonical CT volume (:func:`pipelines.volume.load_ct_volume`) covering several vertebrae.
    params:
        Method parameters (defaults: :class:`SpineParameters`).

    Returns
    -------
    SpineLabelling
        Vertebrae caudal→cranial with labels, confidence and evidence.

    Raises
    ------
    PipelineError
        If no spinal column or fewer than two vertebrae are found.
    """
    return label_vertebrae_array(volume.hu, volume.spacing_mm, params)


def label_vertebrae_array(
    hu: np.ndarray,
    spacing_mm: tuple[float, float, float],
    params: SpineParameters | None = None,
) -> SpineLabelling:
    """:func:`label_vertebrae` on a bare ``(slices, rows, columns)`` HU array (canonical HPL).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` Hounsfield units, slices feet→head, rows anterior→posterior,
        columns right→left.
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        Method parameters.

    Returns
    -------
    SpineLabelling

    Raises
    ------
    PipelineError
        If no spinal column or fewer than two vertebrae are found.
    """
    p = params or SpineParameters()
    n_slices = hu.shape[0]
    dz, dr, dc = (float(s) for s in spacing_mm)
    pixel_mm2 = dr * dc

    # 1. Body silhouette over all slices.
    silhouette_fraction = np.zeros(hu.shape[1:], dtype=np.float32)
    bone_fraction = np.zeros(hu.shape[1:], dtype=np.float32)
    for k in range(n_slices):
        silhouette_fraction += hu[k] > p.body_threshold_hu
        bone_fraction += hu[k] > p.bone_threshold_hu
    silhouette_fraction /= n_slices
    bone_fraction /= n_slices
    silhouette = find_body_mask(
        np.where(silhouette_fraction >= 0.5, 0.0, -1000.0).astype(np.float32), (dr, dc)
    )
    if not silhouette.any():
        raise PipelineError(
            "no body found in the volume (nothing above -500 HU in at least half of the "
            "slices); is this a CT of a patient?"
        )
    body_rows, body_cols = np.nonzero(silhouette)
    centre_row = 0.5 * (body_rows.min() + body_rows.max())
    centre_col = 0.5 * (body_cols.min() + body_cols.max())

    # 2. Spinal column.
    inner = ndimage.binary_erosion(silhouette, structure=_disk(5.0 / dc))
    column_candidates = (bone_fraction >= p.column_min_fraction) & inner
    labels, n = ndimage.label(column_candidates, structure=np.ones((3, 3), dtype=bool))
    best, best_score = 0, 0.0
    for lab in range(1, n + 1):
        comp = labels == lab
        cr, cc = ndimage.center_of_mass(comp)
        if abs(cc - centre_col) * dc > 40.0 or cr < centre_row:
            continue
        score = float(bone_fraction[comp].sum())
        if score > best_score:
            best, best_score = lab, score
    if best == 0 or best_score * pixel_mm2 < 100.0:
        raise PipelineError(
            "no vertebral column found: no bone (> "
            f"{p.bone_threshold_hu:.0f} HU) persists along the slices near the posterior midline "
            f"of the body ({n_slices} slice(s)). The series must be an axial CT covering the "
            "lumbar spine"
        )
    column = labels == best
    col_rows = np.flatnonzero(column.any(axis=1))
    a0, a1 = int(col_rows[0]), int(col_rows[-1])
    extent_mm = (a1 - a0 + 1) * dr
    depth_mm = float(np.clip(0.42 * extent_mm, 18.0, 45.0))
    r0, r1 = a0, min(hu.shape[1], a0 + round(depth_mm / dr))
    col_cols = np.flatnonzero(column[r0:r1].any(axis=0))
    midline = float(np.mean(col_cols))
    half_width_px = round(35.0 / dc)
    c0 = max(int(col_cols[0]), int(midline) - half_width_px)
    c1 = min(int(col_cols[-1]) + 1, int(midline) + half_width_px + 1)
    roi = (r0, r1, c0, c1)
    evidence = [
        (
            f"spinal column at row {0.5 * (r0 + r1):.0f}, column {midline:.0f} "
            f"(vertebral-body region {depth_mm:.0f} mm deep)"
        )
    ]

    # 3. Bone-area profile and discs.
    profile = np.array(
        [float((hu[k, r0:r1, c0:c1] > p.bone_threshold_hu).sum()) * pixel_mm2
         for k in range(n_slices)]
    )
    window = max(1, round(p.local_window_mm / dz))
    local_max = ndimage.maximum_filter1d(profile, size=2 * window + 1, mode="nearest")
    global_ref = float(np.percentile(profile, 90)) if n_slices else 0.0
    is_bone = (profile >= p.disc_fraction * local_max) & (profile >= 0.15 * global_ref)
    is_bone &= profile > 50.0  # mm²: at least a small cortical ring
    runs = _runs(is_bone)
    min_len = max(1, int(np.ceil(p.min_vertebra_height_mm / dz - 1e-6)))
    segments = [(a, b) for a, b in runs if (b - a + 1) >= min_len or a == 0 or b == n_slices - 1]
    disc_slices = [int(k) for k in np.flatnonzero(~is_bone)]
    if len(segments) < 2:
        raise PipelineError(
            f"found {len(segments)} vertebra(e) along {n_slices} slice(s) of {dz:g} mm; at least "
            "two vertebrae separated by a disc are needed to count levels. Send a series that "
            "covers the lumbar spine with slices of 7 mm or thinner"
        )

    # 4. Ribs and widths, slice by slice, in a crop around the column.
    crop_r0 = max(0, r0 - round(20.0 / dr))
    crop_c0 = max(0, int(midline - 130.0 / dc))
    crop_c1 = min(hu.shape[2], int(midline + 130.0 / dc) + 1)
    crop_r1 = hu.shape[1]
    rib_in_slice = np.zeros(n_slices, dtype=bool)
    width_in_slice = np.zeros(n_slices, dtype=float)
    structure = np.ones((3, 3), dtype=bool)
    roi_slice = (slice(r0 - crop_r0, r1 - crop_r0), slice(c0 - crop_c0, c1 - crop_c0))
    lateral_mm = np.abs(np.arange(crop_c0, crop_c1) - midline) * dc
    for a, b in segments:
        for k in range(a, b + 1):
            bone = hu[k, crop_r0:crop_r1, crop_c0:crop_c1] > p.bone_threshold_hu
            lab, nlab = ndimage.label(bone, structure=structure)
            if nlab == 0:
                continue
            in_roi = np.bincount(lab[roi_slice].ravel(), minlength=nlab + 1)
            in_roi[0] = 0
            vert = int(np.argmax(in_roi))
            if in_roi[vert] == 0:
                continue
            vmask = lab == vert
            vcols = np.flatnonzero(vmask.any(axis=0))
            # Width of the body part (rows of the vertebral-body region), not the processes.
            body_cols = np.flatnonzero(vmask[roi_slice[0]].any(axis=0))
            width_in_slice[k] = (body_cols[-1] - body_cols[0] + 1) * dc
            # Dilate only within the vertebra's bounding box grown by the gap (fast).
            box = ndimage.find_objects(vmask.astype(np.int8))[0]
            g = int(np.ceil(p.rib_gap_mm / min(dr, dc)))
            br0, br1 = max(0, box[0].start - g), min(vmask.shape[0], box[0].stop + g)
            bc0, bc1 = max(0, box[1].start - g), min(vmask.shape[1], box[1].stop + g)
            near = ndimage.distance_transform_edt(
                ~vmask[br0:br1, bc0:bc1], sampling=(dr, dc)) <= p.rib_gap_mm
            lab_box = lab[br0:br1, bc0:bc1]
            touching = np.unique(lab_box[near & (lab_box > 0) & (lab_box != vert)])
            for t in touching:
                cols_t = np.flatnonzero((lab == t).any(axis=0))
                if lateral_mm[cols_t].max() > p.rib_min_lateral_mm:
                    rib_in_slice[k] = True
                    break
            if not rib_in_slice[k] and lateral_mm[vcols].max() > p.rib_min_lateral_mm + 10.0 \
                    and width_in_slice[k] < 2.0 * p.rib_min_lateral_mm:
                # Rib fused with the vertebra at this slice thickness, but not sacrum-wide.
                rib_in_slice[k] = True

    raw: list[_Segment] = []
    for a, b in segments:
        widths = width_in_slice[a : b + 1]
        raw.append(
            _Segment(
                first=a,
                last=b,
                ribs=int(rib_in_slice[a : b + 1].sum()),
                width_mm=float(np.median(widths[widths > 0])) if (widths > 0).any() else 0.0,
                truncated=a == 0 or b == n_slices - 1,
            )
        )
    sacrum_index: int | None = None
    first = raw[0]
    median_width = float(np.median([r.width_mm for r in raw[1:]]))
    if first.width_mm > p.sacrum_width_ratio * median_width and first.ribs == 0:
        sacrum_index = 0
        evidence.append(
            f"sacrum: caudal segment (slices {first.first}-{first.last}) is "
            f"{first.width_mm:.0f} mm wide vs {median_width:.0f} mm for the vertebrae"
        )
    rib_bearing = [i for i, r in enumerate(raw) if r.ribs > 0]
    t12_index = rib_bearing[0] if rib_bearing else None
    if t12_index is not None:
        evidence.append(
            f"last rib-bearing vertebra (T12): slices {raw[t12_index].first}-"
            f"{raw[t12_index].last}; {len(rib_bearing)} rib-bearing vertebra(e) in the volume"
        )

    # 5. Counting.
    if t12_index is not None and sacrum_index is not None:
        if t12_index - sacrum_index == 6:
            method, confidence, anchor, anchor_label = "ribs+sacrum", 0.9, t12_index, "T12"
            evidence.append("counts from the last rib and from the sacrum agree (5 lumbar)")
        else:
            method, confidence, anchor, anchor_label = (
                "ribs (sacrum disagrees)", 0.3, t12_index, "T12")
            evidence.append(
                f"counts disagree: {t12_index - sacrum_index - 1} segments between the last "
                "rib-bearing vertebra and the sacrum instead of 5 (transitional anatomy, a "
                "missed disc or a missed rib); labelled from the ribs"
            )
    elif t12_index is not None:
        method, confidence, anchor, anchor_label = "ribs", 0.6, t12_index, "T12"
        evidence.append("sacrum not identified; counted from the last rib only")
    elif sacrum_index is not None:
        method, confidence, anchor, anchor_label = "sacrum", 0.6, sacrum_index, "S"
        evidence.append("no rib-bearing vertebra in the volume; counted from the sacrum only")
    else:
        method, confidence, anchor, anchor_label = "none", 0.0, None, None
        evidence.append("neither a rib-bearing vertebra nor the sacrum was found; not labelled")

    order = ["S", *_LUMBAR, "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5", "T4", "T3",
             "T2", "T1"]
    vertebrae: list[Vertebra] = []
    for i, r in enumerate(raw):
        label: str | None = None
        if anchor is not None and anchor_label is not None:
            pos = order.index(anchor_label) + (i - anchor)
            label = order[pos] if 0 <= pos < len(order) else None
        vertebrae.append(
            Vertebra(
                label=label,
                first_slice=r.first,
                last_slice=r.last,
                centre_slice=round(0.5 * (r.first + r.last)),
                height_mm=(r.last - r.first + 1) * dz,
                bears_ribs=r.ribs > 0,
                rib_slices=r.ribs,
                width_mm=r.width_mm,
                is_sacrum=i == sacrum_index,
                truncated=r.truncated,
            )
        )
    logger.debug("spine: %s, confidence %.1f, %d segments", method, confidence, len(vertebrae))
    return SpineLabelling(
        vertebrae=vertebrae,
        confidence=confidence,
        method=method,
        evidence=evidence,
        column_centre_rc=(0.5 * (r0 + r1), midline),
        vertebral_body_roi=roi,
        bone_area_profile_mm2=profile,
        disc_slices=disc_slices,
    )


@dataclass(frozen=True)
class _Segment:
    first: int
    last: int
    ribs: int
    width_mm: float
    truncated: bool


def _runs(flags: np.ndarray) -> list[tuple[int, int]]:
    """(first, last) index of each run of ``True``."""
    labels, n = ndimage.label(flags)
    objects = ndimage.find_objects(labels)
    return [(int(s[0].start), int(s[0].stop) - 1) for s in objects[:n] if s is not None]
