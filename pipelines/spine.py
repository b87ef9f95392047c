"""Finding and labelling the vertebrae of a CT volume (reference method, no trained weights).

Used by the L3 body-composition protocol and meant for reuse (e.g. T4/T12 for the chest
protocol). Works on a :class:`pipelines.volume.CTVolume` in canonical ``"HPL"`` orientation
(slices feet→head, rows anterior→posterior, columns right→left).

Method
------
1. Body silhouette: the largest connected region of the z-mean of ``HU > -500`` (so a patient
   table separated from the body by air is ignored).
2. Bone threshold adapted to the scan (:func:`scan_bone_threshold`): a third of the way from the
   scan's soft-tissue level to its bone level, at most ``bone_threshold_hu`` (osteopenic bone, soft
   kernels and low kV lower it).
3. Column followed slice by slice: per slice, the largest bone component near the posterior
   midline; a running median (about 40 mm) of its position is the column's course (lordosis,
   kyphosis, scoliosis); each slice then takes the component nearest that course and the centre of
   its vertebral body (anterior part, up to the spinal canal).
4. Bone area inside a vertebral-body window that moves with the course; its minima, at least a
   short vertebra apart and clearly deeper than the median, are discs; a gap of more than 1.7 disc
   pitches gets the missed disc at its deepest minimum; vertebrae lie between discs.
5. Ribs: in each slice, bone separate from the vertebra's own bone (body, arch, processes) that
   comes within ``rib_gap_mm`` of it and reaches ``rib_min_lateral_mm`` from the midline, or bone
   fused to the body reaching ``fused_rib_min_lateral_mm`` (beyond lumbar transverse processes).
6. Sacrum: a most-caudal segment whose bone is much wider than the vertebral bodies (the alae).
7. Two independent anchors: T12 = the last rib-bearing vertebra, provided a whole rib-free
   vertebra (or the sacrum) lies below it in the scan (otherwise every vertebra in view is thoracic
   and nothing is numbered: ``"thoracic only"``); S = the sacrum. Both agree (5 lumbar) -> labels,
   ``"ribs+sacrum"``; both found but disagreeing -> no labels, ``"anchors disagree"`` (transitional
   anatomy is flagged, not guessed); one found -> labels counted from it (``"ribs"`` /
   ``"sacrum"``).

Limits (honest)
---------------
* A consistent transitional anomaly (e.g. 13 rib pairs and 6 lumbar-type vertebrae) cannot be
  detected; a hypoplastic 12th rib shorter than ``rib_min_lateral_mm`` or a detached lumbar
  transverse process reaching beyond it changes the rib anchor.
* Discs are bone-area minima: in degenerated spines with sclerotic end-plates and osteopenic
  marrow the minimum can fall mid-body (seen on a real T11/T12 series: 6 mm off); thick slices
  (> 5 mm), bridging osteophytes, fusion or hardware can hide discs (one missing disc in a row is
  recovered from the pitch, more are not).
* The sacrum anchor uses the alae's width only (iliac wings are not used).
* Checked on digital phantoms (curved, osteopenic, thin, obese, 11/13 rib pairs, 1.6-5 mm slices)
  and one real upper-abdominal series (T11/T12, against TotalSegmentator); no real series covering
  L3 with ribs or sacrum was available. Not clinically validated.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from scipy import ndimage

from pipelines.errors import PipelineError
from pipelines.morphology import full_connectivity, largest_component
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
        A rib (a bone component separate from the vertebra's own bone: body, arch and
        processes) must come within this distance of it in the same slice (costovertebral /
        costotransverse joint, partial volume of thick slices).
    rib_min_lateral_mm:
        A rib must reach at least this far from the midline (beyond the laminae and articular
        processes, which belong to the vertebra). Lumbar transverse processes reach further but
        are attached to the vertebra, so they are part of its own bone.
    fused_rib_min_lateral_mm:
        Bone joined to the vertebral body in a slice and reaching further than this from the
        midline (beyond lumbar transverse processes) is a rib fused to it by partial volume.
    sacrum_width_ratio:
        A caudal segment wider than this times the median vertebral width is the sacrum.
    """

    bone_threshold_hu: float = 200.0
    body_threshold_hu: float = -500.0
    column_min_fraction: float = 0.3
    disc_fraction: float = 0.4
    local_window_mm: float = 30.0
    min_vertebra_height_mm: float = 8.0
    rib_gap_mm: float = 15.0
    rib_min_lateral_mm: float = 35.0
    fused_rib_min_lateral_mm: float = 65.0
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
        anchor was found, 0.2 when they disagree, 0.0 when nothing could be numbered.
    method: str
        ``"ribs+sacrum"``, ``"ribs"``, ``"sacrum"``, ``"anchors disagree"`` (no labels),
        ``"thoracic only"`` (every vertebra in view is rib-bearing or above one: no labels) or
        ``"none"``.
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
    column_course_rc: numpy.ndarray | None
        ``(slices, 2)`` (row, column) of the vertebral-body centre in each slice: the tracked
        course of the column (follows lordosis, kyphosis and scoliosis).
    bone_threshold_hu: float | None
        The bone threshold used, adapted to the scan (:func:`scan_bone_threshold`).
    """

    vertebrae: list[Vertebra]
    confidence: float
    method: str
    evidence: list[str]
    column_centre_rc: tuple[float, float]
    vertebral_body_roi: tuple[int, int, int, int]
    bone_area_profile_mm2: np.ndarray
    disc_slices: list[int] = field(default_factory=list)
    column_course_rc: np.ndarray | None = None
    bone_threshold_hu: float | None = None

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
    core = largest_component(opened, full_connectivity(opened.ndim))
    if not core.any():
        return out
    grown = ndimage.binary_dilation(core, structure=_disk(radius_px / step + 1))
    if step > 1:
        grown = np.repeat(np.repeat(grown, step, axis=0), step, axis=1)[: crop.shape[0],
                                                                         : crop.shape[1]]
    region = largest_component(grown & crop, full_connectivity(grown.ndim))
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


def vertebra_block(
    hu_slice: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    vertebra: VertebraInSlice,
    body_mask: np.ndarray,
    bone_threshold_hu: float = 200.0,
    closing_mm: float = 5.0,
) -> np.ndarray:
    """The whole vertebra in one slice with what it encloses: body (marrow included, even when
    osteopenic marrow is below the bone threshold), pedicles, laminae, spinous process and the
    spinal canal.

    The vertebral-body component is joined by the bone components that cross the posterior
    midline behind it (arch, spinous process) and those touching them; the union is closed with a
    ``closing_mm`` disk (bridging gaps of a thin or interrupted cortex and of the arch at the
    pedicles) and its holes are filled; the convex hull of the vertebral-body part is added.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` HU, canonical orientation.
    pixel_spacing_mm:
        (row, column) spacing, mm.
    vertebra:
        The vertebra found by :func:`find_vertebra_in_slice`.
    body_mask:
        ``(rows, columns)`` bool body outline.
    bone_threshold_hu:
        Bone threshold, HU.
    closing_mm:
        Radius of the closing, mm.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    bone = (hu_slice > bone_threshold_hu) & body_mask
    lab, n = ndimage.label(bone, structure=np.ones((3, 3), dtype=bool))
    own = np.zeros(n + 1, dtype=bool)
    own[np.unique(lab[vertebra.mask])] = True
    row0 = vertebra.posterior_row
    col = round(vertebra.body_centre_rc[1])
    strip = lab[row0 : row0 + round(70.0 / dr),
                max(0, col - round(6.0 / dc)) : col + round(6.0 / dc) + 1]
    own[np.unique(strip)] = True
    own[0] = False
    near = ndimage.binary_dilation(own[lab], structure=_disk(2.0 / min(dr, dc)))
    own[np.unique(lab[near])] = True
    own[0] = False
    complex_mask = own[lab] | vertebra.mask
    # Keep only what lies within the vertebra's reach (not a rib that touches a process).
    rows, cols = np.indices(hu_slice.shape)
    lateral_mm = np.abs(cols - vertebra.body_centre_rc[1]) * dc
    complex_mask &= lateral_mm <= max(60.0, 0.5 * vertebra.body_width_mm + 35.0)
    closed = ndimage.binary_closing(complex_mask, structure=_disk(closing_mm / min(dr, dc)))
    block = np.asarray(ndimage.binary_fill_holes(closed | complex_mask))
    # The vertebral body is convex: its hull holds marrow and disc even where the cortical ring
    # is open (osteopenia, a slice through the end-plate or the disc).
    body_part = vertebra.mask.copy()
    body_part[: vertebra.anterior_row] = False
    body_part[vertebra.posterior_row + 1 :] = False
    if body_part.sum() >= 3:
        from skimage.morphology import convex_hull_image

        block |= convex_hull_image(body_part)
    # Spinal canal: between the back of the body and the lamina / spinous process on the
    # midline, about half a body width wide, even where the arch is open in this slice. On the
    # midline bone profile the canal is the first gap (>= 4 mm) starting in the posterior part of
    # the body or behind it (the body is at least 0.45 widths deep: an osteopenic marrow gap
    # nearer the front is not the canal; ``posterior_row`` can fall mid-body when the cortical
    # ring is open); a gap spanning that depth is filled from ``posterior_row`` and taken as the
    # canal when that part is a canal deep (0.3 widths). The canal ends at the next bone
    # (lamina, spinous process) within 35 mm, or after a canal's depth (0.3 body widths) when
    # the arch is not in this slice.
    midline = complex_mask[:, max(0, col - 1) : col + 2].any(axis=1)
    half = round(0.25 * vertebra.body_width_mm / dc)
    top = vertebra.anterior_row
    profile = midline[top : top + round(120.0 / dr)]
    gap_labels, n_gaps = ndimage.label(~profile)
    min_start = round(0.45 * vertebra.body_width_mm / dr)
    min_len = max(2, round(4.0 / dr))
    canal_mm = 0.3 * vertebra.body_width_mm
    canal = None
    for g in range(1, n_gaps + 1):
        where = np.flatnonzero(gap_labels == g)
        start, stop = int(where[0]), int(where[-1])
        if start == 0 or stop - start + 1 < min_len:
            continue  # in front of the body, or a crack
        if start >= min_start:
            canal = (start, stop)
            break
        if stop >= min_start:
            # A gap across the body's depth: marrow of an open ring, or the canal itself of a
            # slice without posterior cortex on the midline. Filled from ``posterior_row``; it
            # is the canal only if that part is a canal deep (0.3 widths), else search on.
            first = max(start, vertebra.posterior_row - top)
            if first <= stop:
                block[top + first : top + stop + 1, max(0, col - half) : col + half + 1] = True
                if (stop - first + 1) * dr >= canal_mm:
                    break
    if canal is not None:
        start, stop = canal
        if top + stop + 1 >= top + len(profile) or (stop - start + 1) * dr > 35.0:
            stop = start + round(canal_mm / dr)
        block[top + start : top + stop + 1, max(0, col - half) : col + half + 1] = True
    return np.asarray(ndimage.binary_fill_holes(block)) & body_mask


def paraspinal_compartment(
    hu_slice: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    vertebra: VertebraInSlice,
    inside_mask: np.ndarray,
    bone_threshold_hu: float = 200.0,
    reach_widths: float = 2.0,
) -> np.ndarray:
    """The posterior (paraspinal) muscle compartment of one slice, defined from the skeleton.

    Erector spinae and multifidus (and quadratus lumborum / the back of psoas lower down) lie
    posterior to the transverse processes, laminae and rib necks/angles, on each side of the
    spinous process, bounded posteriorly by the thoracolumbar fascia; liver, spleen and kidney
    lie anterior to the posterior ribs and the diaphragm. The compartment is therefore taken
    column by column: behind the most posterior bone of that column (vertebral arch, transverse
    process, rib), for columns within ``reach_widths`` vertebral-body widths of the midline
    (at least 45 mm) and no farther out than the last such bone on that side; a column without
    bone between two that have some takes the line between them, and beyond the last bone of one
    side the line of the other side mirrored about the midline; beyond the arch the line only
    moves backwards going outwards (a forward-curving lateral rib does not open the rib cage),
    and only bone pieces of at least 15 mm² peaking 50 HU above the threshold count (not a
    bright speck of an enhanced spleen). It does not depend on fat
    planes, so it holds at coarse pixels where the fat between organs and muscles vanishes.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` HU, canonical orientation (rows anterior→posterior).
    pixel_spacing_mm:
        (row, column) spacing, mm.
    vertebra:
        The vertebra of the slice (:func:`find_vertebra_in_slice`).
    inside_mask:
        ``(rows, columns)`` bool: where the compartment may lie (inside the outer muscle surface).
    bone_threshold_hu:
        Bone threshold, HU (scan-adapted, :func:`scan_bone_threshold`).
    reach_widths:
        Lateral reach from the midline in vertebral-body widths.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool, bone excluded; empty when no posterior bone is found.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    shape = hu_slice.shape
    out = np.zeros(shape, dtype=bool)
    vb_row, vb_col = vertebra.body_centre_rc
    row0 = int(round(vb_row))
    reach_mm = reach_widths * max(vertebra.body_width_mm, 30.0)
    cols = np.arange(shape[1])
    lateral_mm = np.abs(cols - vb_col) * dc
    bone = (np.asarray(hu_slice) > bone_threshold_hu) & inside_mask
    bone[:row0] = False
    bone[:, lateral_mm > reach_mm] = False
    # Bone, not a bright speck of an enhanced organ or vessel: a piece of at least 15 mm² whose
    # peak is clearly above the threshold.
    lab, n = ndimage.label(bone, structure=np.ones((3, 3), dtype=bool))
    if n:
        area_mm2 = np.bincount(lab.ravel(), minlength=n + 1) * dr * dc
        peak = ndimage.maximum(np.asarray(hu_slice), lab, index=np.arange(n + 1))
        keep = (area_mm2 >= 15.0) & (np.asarray(peak) >= bone_threshold_hu + 50.0)
        keep[0] = False
        bone = keep[lab]
    has = bone.any(axis=0)
    if has.sum() < 2:
        return out
    last = np.where(has, shape[0] - 1 - np.argmax(bone[::-1], axis=0), -1)
    line = np.full(shape[1], np.nan)
    for side in (cols < vb_col, cols >= vb_col):
        known = np.flatnonzero(has & side)
        if len(known) == 0:
            continue
        span = np.arange(known.min(), known.max() + 1)
        line[span] = np.interp(span, known, last[known])
    # The two sides are mirror images: where a slice passes between two ribs on one side only
    # (or a rib lies out of reach), that side takes the other side's line at the same distance
    # from the midline.
    mirror = np.rint(2.0 * vb_col - cols).astype(int)
    ok = (mirror >= 0) & (mirror < shape[1])
    borrowed = np.full(shape[1], np.nan)
    borrowed[ok] = line[mirror[ok]]
    line = np.where(np.isnan(line), borrowed, line)
    # Beyond the arch (half a body width + 10 mm from the midline) the line only runs backwards
    # outwards (transverse process, rib neck, rib angle): a rib section further out that curves
    # forward, where this slice misses the posterior rib, does not open the rib cage.
    outer = lateral_mm > 0.5 * vertebra.body_width_mm + 10.0
    for order in (np.flatnonzero(cols >= vb_col), np.flatnonzero(cols < vb_col)[::-1]):
        seg = line[order]
        held = seg.copy()
        mask = outer[order] & ~np.isnan(seg)
        if mask.any():
            running = np.fmax.accumulate(np.where(mask, seg, np.nan))
            held[mask] = running[mask]
        line[order] = held
    valid = ~np.isnan(line)
    rows = np.arange(shape[0])[:, None]
    out = valid[None, :] & (rows > np.where(valid, line, shape[0])[None, :])
    out &= np.asarray(inside_mask) & ~bone & (rows >= vertebra.posterior_row)
    return out


def _open_small(mask: np.ndarray) -> np.ndarray:
    # The canal is a hole of the vertebra; marrow holes (cancellous bone below threshold) are
    # usually split by trabeculae. Here: keep the mask as is; the canal is the largest hole.
    holes = np.asarray(ndimage.binary_fill_holes(mask)) & ~mask
    if not holes.any():
        return mask
    biggest = largest_component(holes, full_connectivity(holes.ndim))
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


def scan_bone_threshold(
    hu: np.ndarray, body_threshold_hu: float = -500.0, upper_hu: float = 200.0
) -> tuple[float, float, float]:
    """Bone threshold adapted to the scan's own soft-tissue and bone levels.

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` (or ``(rows, columns)``) Hounsfield units.
    body_threshold_hu:
        Pixels above this are in the body (or the table).
    upper_hu:
        The threshold never exceeds this (200 HU: above enhanced soft tissue, below cortical bone
        and normal cancellous bone).

    Returns
    -------
    tuple[float, float, float]
        ``(threshold_hu, soft_tissue_hu, bone_hu)``: the soft-tissue level is the median of the
        body's pixels in the muscle band -29..150 HU (clinical.md §1), the bone level the 99.7th
        percentile of the body's pixels; the threshold is a third of the way from soft tissue to bone, at least 90 HU
        above soft tissue and at most ``upper_hu`` (``upper_hu`` when the bone level is less
        than 250 HU above soft tissue: no bone to adapt to). On a normal adult scan this is ``upper_hu``;
        on osteopenic bone or a low-kV/soft kernel it drops so the cortex still counts as bone.
    """
    step = max(1, hu.shape[0] // 24) if hu.ndim == 3 else 1
    sample = hu[::step] if hu.ndim == 3 else hu
    sample = sample[..., ::2, ::2]
    values = sample[sample > body_threshold_hu]
    if values.size == 0:
        return upper_hu, 40.0, 1000.0
    soft_values = values[(values >= -29.0) & (values <= 150.0)]
    soft = float(np.median(soft_values)) if soft_values.size else 40.0
    bone = float(np.percentile(values, 99.7))
    if bone - soft < 250.0:
        # No bone clearly above soft tissue: keep the fixed threshold (nothing to adapt to).
        return upper_hu, soft, bone
    threshold = float(np.clip(soft + (bone - soft) / 3.0, soft + 90.0, upper_hu))
    return threshold, soft, bone


@dataclass
class _Track:
    """Per-slice position of the vertebral body along a (possibly curved) column."""

    row: np.ndarray  # (slices,) vertebral-body centre row
    col: np.ndarray  # (slices,) vertebral-body centre column
    found: np.ndarray  # (slices,) bool: a vertebra was seen in the slice
    depth_px: float  # antero-posterior depth of the vertebral body, rows
    half_width_px: float  # half lateral width of the vertebral body, columns


def _column_candidates(
    bone: np.ndarray, dr: float, dc: float
) -> tuple[np.ndarray, list[tuple[int, float, float, float]]]:
    """Bone components of one slice: the label image and, per component of at least 60 mm²,
    (label, area mm², centroid row, centroid column)."""
    lab, n = ndimage.label(bone, structure=np.ones((3, 3), dtype=bool))
    if n == 0:
        return lab, []
    index = np.arange(1, n + 1)
    areas = ndimage.sum_labels(np.ones(bone.shape), lab, index) * dr * dc
    cents = ndimage.center_of_mass(bone, lab, index)
    return lab, [(int(i), float(a), float(c[0]), float(c[1]))
                 for i, a, c in zip(index, areas, cents, strict=True) if a >= 60.0]


def _body_part(mask: np.ndarray, dr: float) -> tuple[float, float, int, int, float]:
    """Vertebral-body part of a vertebra component: centre (row, col), anterior and posterior
    rows, width (px). The body is the anterior part, up to the spinal canal when it is enclosed,
    else up to 45 % of the component's depth (18..45 mm)."""
    rows = np.flatnonzero(mask.any(axis=1))
    anterior = int(rows[0])
    enclosed = np.asarray(ndimage.binary_fill_holes(mask))
    canal = enclosed & ~np.asarray(ndimage.binary_fill_holes(_open_small(mask)))
    depth_px = float(np.clip(0.45 * (rows[-1] - rows[0] + 1), 18.0 / dr, 45.0 / dr))
    posterior = anterior + round(depth_px)
    if canal.any():
        canal_rows = np.flatnonzero(canal.any(axis=1))
        if canal_rows[0] - anterior >= 12.0 / dr:
            posterior = int(canal_rows[0]) - 1
    part = mask.copy()
    part[:anterior] = False
    part[posterior + 1 :] = False
    if not part.any():
        part = mask
    cols = np.flatnonzero(part.any(axis=0))
    br, bc = ndimage.center_of_mass(part)
    return float(br), float(bc), anterior, posterior, float(cols[-1] - cols[0] + 1)


def _track_column(
    hu: np.ndarray, silhouette: np.ndarray, threshold: float, spacing: tuple[float, float, float]
) -> _Track:
    """Follow the vertebral body slice by slice.

    Pass 1 takes, in each slice, the largest bone component near the posterior midline; a robust
    running median (about 40 mm) of its position along the slices is the column's course (it
    follows lordosis, kyphosis and scoliosis). Pass 2 re-picks, in each slice, the component
    nearest that course (so an enhanced aorta or a rib is not taken for the spine) and
    interpolates slices without one (discs).
    """
    dz, dr, dc = spacing
    n = hu.shape[0]
    rows, cols = np.nonzero(silhouette)
    centre_row = 0.5 * (rows.min() + rows.max())
    centre_col = 0.5 * (cols.min() + cols.max())
    inner = ndimage.binary_erosion(silhouette, structure=_disk(5.0 / dc))
    # Crop: posterior two thirds of the body, +-120 mm around the centre (fast, and enough for a
    # scoliotic column).
    r0 = max(0, int(rows.min() + 0.3 * (rows.max() - rows.min())))
    r1 = int(rows.max()) + 1
    c0 = max(0, int(centre_col - 120.0 / dc))
    c1 = min(hu.shape[2], int(centre_col + 120.0 / dc) + 1)
    closing = _disk(1.5 / dc)

    def slice_bone(k: int) -> np.ndarray:
        bone = (hu[k, r0:r1, c0:c1] > threshold) & inner[r0:r1, c0:c1]
        return ndimage.binary_closing(bone, structure=closing) & inner[r0:r1, c0:c1]

    first = np.full((n, 2), np.nan)
    for k in range(n):
        _, cands = _column_candidates(slice_bone(k), dr, dc)
        best_rc, best_area = None, 0.0
        for _, area, cr, cc in cands:
            if abs(cc + c0 - centre_col) * dc <= 60.0 and cr + r0 > centre_row - 20.0 / dr \
                    and area > best_area:
                best_rc, best_area = (cr + r0, cc + c0), area
        if best_rc is not None and best_area >= 150.0:
            first[k] = best_rc
    ok = ~np.isnan(first[:, 0])
    if ok.sum() < max(1, 0.3 * n):
        return _Track(np.full(n, np.nan), np.full(n, np.nan), np.zeros(n, bool), 0.0, 0.0)
    window = max(3, 2 * round(20.0 / dz) + 1)
    course = np.empty((n, 2))
    idx = np.flatnonzero(ok)
    for j in range(2):
        filled = np.interp(np.arange(n), idx, first[idx, j])
        course[:, j] = ndimage.median_filter(filled, size=window, mode="nearest")
    row = np.full(n, np.nan)
    col = np.full(n, np.nan)
    depths, widths = [], []
    max_jump = 20.0
    for k in range(n):
        lab, cands = _column_candidates(slice_bone(k), dr, dc)
        rk = int(np.clip(round(course[k, 0] - r0), 0, lab.shape[0] - 1))
        ck = int(np.clip(round(course[k, 1] - c0), 0, lab.shape[1] - 1))
        best_label, best_d = 0, np.inf
        for label_id, area, cr, cc in cands:
            if area < 100.0:
                continue
            d = 0.0 if lab[rk, ck] == label_id else float(
                np.hypot((cr + r0 - course[k, 0]) * dr, (cc + c0 - course[k, 1]) * dc))
            if d < best_d:
                best_label, best_d = label_id, d
        if best_label == 0 or best_d > max_jump:
            continue
        best = lab == best_label
        br, bc, ant, post, width = _body_part(best, dr)
        row[k], col[k] = br + r0, bc + c0
        depths.append(post - ant + 1)
        widths.append(width)
    found = ~np.isnan(row)
    if found.sum() == 0:
        return _Track(row, col, found, 0.0, 0.0)
    fidx = np.flatnonzero(found)
    row_s = ndimage.median_filter(np.interp(np.arange(n), fidx, row[fidx]), size=window,
                                  mode="nearest")
    col_s = ndimage.median_filter(np.interp(np.arange(n), fidx, col[fidx]), size=window,
                                  mode="nearest")
    return _Track(row_s, col_s, found, float(np.median(depths)), 0.5 * float(np.median(widths)))


def _discs_from_profile(profile: np.ndarray, dz: float, min_pitch_mm: float) -> list[int]:
    """Disc slices: minima of the bone-area profile at least ``min_pitch_mm`` apart, with a
    prominence of at least 20 % of the profile's median; a gap between discs longer than 1.7
    times the median pitch gets another disc at its deepest minimum (a missed disc)."""
    from scipy.signal import find_peaks

    if len(profile) < 3:
        return []
    smooth = ndimage.gaussian_filter1d(profile, sigma=max(0.0, 1.5 / dz)) if dz < 2.0 \
        else profile
    scale = float(np.median(profile[profile > 0])) if (profile > 0).any() else 1.0
    distance = max(1, int(round(min_pitch_mm / dz)))
    peaks, _ = find_peaks(-smooth, distance=distance, prominence=0.2 * scale)
    discs = sorted(int(p) for p in peaks)
    if len(discs) >= 3:
        pitch = float(np.median(np.diff(discs)))
        added = True
        while added:
            added = False
            for a, b in zip(discs[:-1], discs[1:], strict=True):
                if b - a > 1.7 * pitch:
                    lo, hi = a + round(0.35 * pitch), b - round(0.35 * pitch)
                    if hi > lo:
                        discs.append(int(lo + np.argmin(smooth[lo : hi + 1])))
                        discs.sort()
                        added = True
                        break
    return discs


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

    # 1. Body silhouette over all slices, and the scan's own bone threshold.
    silhouette_fraction = np.zeros(hu.shape[1:], dtype=np.float32)
    for k in range(n_slices):
        silhouette_fraction += hu[k] > p.body_threshold_hu
    silhouette_fraction /= n_slices
    silhouette = find_body_mask(
        np.where(silhouette_fraction >= 0.5, 0.0, -1000.0).astype(np.float32), (dr, dc)
    )
    if not silhouette.any():
        raise PipelineError(
            "no body found in the volume (nothing above -500 HU in at least half of the "
            "slices); is this a CT of a patient?"
        )
    threshold, soft_hu, bone_hu = scan_bone_threshold(hu, p.body_threshold_hu,
                                                      p.bone_threshold_hu)
    evidence = [
        f"bone threshold {threshold:.0f} HU (soft tissue {soft_hu:.0f} HU, bone "
        f"{bone_hu:.0f} HU in this scan)"
    ]

    # 2. Spinal column, followed slice by slice.
    track = _track_column(hu, silhouette, threshold, (dz, dr, dc))
    if track.found.sum() < max(2, 0.3 * n_slices) or track.depth_px <= 0:
        raise PipelineError(
            f"no vertebral column found: no bone (> {threshold:.0f} HU) persists along the "
            f"slices near the posterior midline of the body ({n_slices} slice(s)). The series "
            "must be an axial CT covering the lumbar spine"
        )
    half_depth = max(2, round(0.4 * track.depth_px))
    half_width = max(2, round(0.8 * track.half_width_px))
    lateral_shift_mm = float(np.ptp(track.col) * dc)
    ap_shift_mm = float(np.ptp(track.row) * dr)
    evidence.append(
        f"spinal column followed through {int(track.found.sum())} of {n_slices} slices "
        f"(vertebral body {track.depth_px * dr:.0f} mm deep, {2 * track.half_width_px * dc:.0f} "
        f"mm wide; course moves {ap_shift_mm:.0f} mm antero-posteriorly and "
        f"{lateral_shift_mm:.0f} mm laterally)"
    )

    # 3. Bone-area profile inside the vertebral-body region that follows the column; discs.
    profile = np.zeros(n_slices)
    for k in range(n_slices):
        rc, cc = round(track.row[k]), round(track.col[k])
        a0, a1 = max(0, rc - half_depth), min(hu.shape[1], rc + half_depth + 1)
        b0, b1 = max(0, cc - half_width), min(hu.shape[2], cc + half_width + 1)
        profile[k] = float((hu[k, a0:a1, b0:b1] > threshold).sum()) * pixel_mm2
    discs = _discs_from_profile(profile, dz, p.min_vertebra_height_mm + 10.0)
    bounds = [-1, *discs, n_slices]
    segments = []
    for a, b in zip(bounds[:-1], bounds[1:], strict=True):
        first_k, last_k = a + 1, b - 1
        if last_k < first_k:
            continue
        # The disc may span more than its deepest slice: trim low-bone end slices.
        level = 0.5 * float(np.median(profile[first_k : last_k + 1]))
        while first_k < last_k and a >= 0 and profile[first_k] < level:
            first_k += 1
        while last_k > first_k and b < n_slices and profile[last_k] < level:
            last_k -= 1
        segments.append((first_k, last_k))
    disc_slices = list(discs)
    mid = n_slices // 2
    r0 = max(0, round(track.row[mid]) - half_depth)
    r1 = min(hu.shape[1], round(track.row[mid]) + half_depth + 1)
    c0 = max(0, round(track.col[mid]) - half_width)
    c1 = min(hu.shape[2], round(track.col[mid]) + half_width + 1)
    roi = (r0, r1, c0, c1)
    if len(segments) < 2:
        raise PipelineError(
            f"found {len(segments)} vertebra(e) along {n_slices} slice(s) of {dz:g} mm; at least "
            "two vertebrae separated by a disc are needed to count levels. Send a series that "
            "covers the lumbar spine with slices of 5 mm or thinner"
        )

    # 4. Ribs and widths, slice by slice, around the tracked column.
    rib_in_slice = np.zeros(n_slices, dtype=bool)
    width_in_slice = np.zeros(n_slices, dtype=float)
    structure = np.ones((3, 3), dtype=bool)
    for k in range(n_slices):
        midline = float(track.col[k])
        crop_r0 = max(0, round(track.row[k] - half_depth - 25.0 / dr))
        crop_r1 = hu.shape[1]
        crop_c0 = max(0, int(midline - 140.0 / dc))
        crop_c1 = min(hu.shape[2], int(midline + 140.0 / dc) + 1)
        bone = hu[k, crop_r0:crop_r1, crop_c0:crop_c1] > threshold
        bone &= silhouette[crop_r0:crop_r1, crop_c0:crop_c1]
        lab, nlab = ndimage.label(bone, structure=structure)
        if nlab == 0:
            continue
        rc = round(track.row[k]) - crop_r0
        roi_k = (slice(max(0, rc - half_depth), rc + half_depth + 1),
                 slice(max(0, round(midline) - half_width - crop_c0),
                       round(midline) + half_width + 1 - crop_c0))
        in_roi = np.bincount(lab[roi_k].ravel(), minlength=nlab + 1)
        in_roi[0] = 0
        vert = int(np.argmax(in_roi))
        if in_roi[vert] == 0:
            continue
        vmask = lab == vert
        vcols = np.flatnonzero(vmask.any(axis=0))
        body_cols = np.flatnonzero(vmask[roi_k[0]].any(axis=0))
        width_in_slice[k] = (body_cols[-1] - body_cols[0] + 1) * dc
        lateral_mm = np.abs(np.arange(crop_c0, crop_c1) - midline) * dc
        # The vertebra's own bone: the body, what crosses the posterior midline (laminae,
        # spinous process) and what touches those (pedicles, transverse and articular
        # processes). A rib is separated from it by a joint.
        strip = lab[rc : rc + round(80.0 / dr),
                    max(0, round(midline - 6.0 / dc) - crop_c0) : round(midline + 6.0 / dc) + 1
                    - crop_c0]
        own = np.zeros(nlab + 1, dtype=bool)
        own[vert] = True
        own[np.unique(strip)] = True
        own[0] = False
        grow = _disk(2.0 / min(dr, dc))
        for _ in range(2):
            near_own = ndimage.binary_dilation(own[lab], structure=grow)
            own[np.unique(lab[near_own])] = True
            own[0] = False
        complex_mask = own[lab]
        distance = ndimage.distance_transform_edt(~complex_mask, sampling=(dr, dc))
        for t in np.flatnonzero(~own):
            if t == 0:
                continue
            comp = lab == t
            if comp.sum() * pixel_mm2 < 15.0:
                continue
            rows_t, cols_t = np.nonzero(comp)
            if (distance[comp].min() <= p.rib_gap_mm
                    and lateral_mm[cols_t].max() >= p.rib_min_lateral_mm
                    and rows_t.min() >= rc - half_depth):
                rib_in_slice[k] = True
                break
        if not rib_in_slice[k] and lateral_mm[vcols].max() > p.fused_rib_min_lateral_mm \
                and width_in_slice[k] < 2.0 * p.fused_rib_min_lateral_mm - 20.0:
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
    # A rib seen only in a slice or two of a vertebra (a rib from the level above sloping down
    # past it) does not make it rib-bearing when the level above has clearly more.
    min_rib_slices = max(1, round(3.0 / dz))
    sacrum_index: int | None = None
    first = raw[0]
    median_width = float(np.median([r.width_mm for r in raw[1:]]))
    if first.width_mm > p.sacrum_width_ratio * median_width and first.ribs == 0:
        sacrum_index = 0
        evidence.append(
            f"sacrum: caudal segment (slices {first.first}-{first.last}) is "
            f"{first.width_mm:.0f} mm wide vs {median_width:.0f} mm for the vertebrae"
        )
    rib_bearing = [i for i, r in enumerate(raw) if r.ribs >= min_rib_slices]
    t12_index = rib_bearing[0] if rib_bearing else None
    # The last rib-bearing vertebra is T12 only when the vertebra below it is seen whole and
    # bears no rib; when the scan ends at or just below it, the last rib may lie below the scan.
    min_whole = max(1, int(np.ceil(p.min_vertebra_height_mm / dz - 1e-6)))
    ribs_to_edge = t12_index is not None and (
        t12_index == 0
        or (raw[t12_index - 1].truncated
            and raw[t12_index - 1].last - raw[t12_index - 1].first + 1 < 2 * min_whole
            and t12_index - 1 != sacrum_index)
    )
    if t12_index is not None:
        if ribs_to_edge:
            evidence.append(
                f"ribs reach the caudal end of the scan: the lowest rib-bearing vertebra in view "
                f"(slices {raw[t12_index].first}-{raw[t12_index].last}) has no whole rib-free "
                "vertebra below it in the scan, so it may not be the last rib-bearing one (T12); "
                "it and every vertebra above it are thoracic, the lumbar spine lies below the "
                "scanned range; not numbered"
            )
        else:
            evidence.append(
                f"last rib-bearing vertebra (T12): slices {raw[t12_index].first}-"
                f"{raw[t12_index].last}; {len(rib_bearing)} rib-bearing vertebra(e) in the volume"
            )

    # 5. Counting from two independent anchors.
    anchor: int | None
    anchor_label: str | None
    if t12_index is not None and sacrum_index is not None:
        if t12_index - sacrum_index == 6:
            method, confidence, anchor, anchor_label = "ribs+sacrum", 0.9, t12_index, "T12"
            evidence.append("counts from the last rib and from the sacrum agree (5 lumbar)")
        else:
            method, confidence, anchor, anchor_label = "anchors disagree", 0.2, None, None
            evidence.append(
                f"counts disagree: {t12_index - sacrum_index - 1} segments between the last "
                "rib-bearing vertebra and the sacrum instead of 5 (transitional anatomy: 4 or 6 "
                "lumbar-type vertebrae, 11 or 13 rib pairs, or a missed disc); not labelled"
            )
    elif t12_index is not None:
        if ribs_to_edge:
            method, confidence, anchor, anchor_label = "thoracic only", 0.0, None, None
        else:
            method, confidence, anchor, anchor_label = "ribs", 0.6, t12_index, "T12"
            evidence.append("sacrum not in view or not identified; counted from the last rib "
                            "(T12) only")
    elif sacrum_index is not None:
        method, confidence, anchor, anchor_label = "sacrum", 0.6, sacrum_index, "S"
        evidence.append("no rib-bearing vertebra in the volume; counted from the sacrum (S1) "
                        "only")
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
                bears_ribs=r.ribs >= min_rib_slices,
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
        column_centre_rc=(float(np.mean(track.row)), float(np.mean(track.col))),
        vertebral_body_roi=roi,
        bone_area_profile_mm2=profile,
        disc_slices=disc_slices,
        column_course_rc=np.stack([track.row, track.col], axis=1),
        bone_threshold_hu=threshold,
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
