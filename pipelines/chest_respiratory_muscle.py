"""Chest CT respiratory muscles: volume and density of pectoralis, erector spinae, intercostal
muscles (and, lower-confidence, the diaphragm), plus the single-slice PMA at T4 and ESMA at T12.

Protocol ``chest-respiratory-muscle``. Research use only, not for diagnosis; checked on digital
phantoms, one real (cropped) chest slice and one real chest CT (LIDC-IDRI-0314).

Structure
---------
``segment_reference(hu, spacing_mm, params)`` → label map (numbering :data:`LABELS`) and the
anatomy it found; ``measure(volume, label_map, ...)`` → :class:`~pipelines.types.PipelineResult`.
A trained network replaces the first step: ``model.predict(hu, spacing_mm) -> label_map`` with
``hu`` the ``(slices, rows, columns)`` ``float32`` HU volume in canonical HPL orientation
(:mod:`pipelines.volume`), ``spacing_mm`` its (slice, row, column) spacing, and the result a
``uint8`` array of the same shape in the numbering of :data:`LABELS` (the seed study's classes:
Choi I et al., PLoS One 2024;19(7):e0306789, Attention U-Net). Measurement and outputs are the
same for both.

Reference method (no trained weights), canonical axes: slices feet→head, rows anterior→posterior,
columns right→left
-------------------------------------------------------------------------------------------------
1. Body: per slice, :func:`body_mask_slice` (the rule of :func:`pipelines.spine.find_body_mask`:
   largest region above -500 HU, computed faster). The later steps work on the bounding box of
   the body plus 10 mm.
2. Lungs: 3-D connected regions below ``lung_threshold_hu`` that are not outside air (air touching
   the image border with median below -960 HU), whose median HU is above ``gas_max_median_hu``
   (bowel gas is about -1000 HU), which fill at least ``min_lung_fraction`` of the body in some
   slice and lie at least half inside the body's convex outline (not the air between the back
   and a curved table). The measured slab is the slices holding lung.
3. Bone: ``HU > bone_threshold_hu``.
4. Skeletal muscle: -29..+150 HU (Alberta protocol, usually credited to Mitsiopoulos et al., J Appl
   Physiol 1998; clinical.md §1.1) inside the body minus ``skin_mm``, outside lungs and bone.
5. Mid-sagittal plane: through the median vertebral-body centre
   (:func:`pipelines.spine.find_vertebra_in_slice`), directed along the minor axis of the body
   outline (the chest is wider than deep); left/right = side of this plane.
6. Classes, in this order:

   * diaphragm (optional, lower-confidence): muscle-band voxels directly below a lung base (lung
     within ``diaphragm_thickness_mm`` above in the same column, none within
     ``diaphragm_clear_below_mm`` below);
   * intercostal: muscle with rib bone both above and below it in its column within
     ``intercostal_max_gap_mm`` ("between adjacent ribs"), outside the paravertebral region;
   * erector spinae (:func:`erector_spinae_slice`): along dorsal rays, the muscle directly
     behind the lamina, transverse process or rib (or the lung) up to the first fat plane
     (``erector_fat_plane_mm``), medial to the rib angle and more than ``erector_min_depth_mm``
     dorsal to the vertebral-body centre; trapezius and rhomboids beyond the fat plane are not
     counted;
   * thoracic cavity (excluded): per slice, the convex hull of the lungs and of the rib bone within
     ``cage_window_mm`` (outside the paravertebral region): heart, liver, mediastinum;
   * pectoralis: the remaining (superficial) muscle within ``pectoralis_max_angle_deg`` of the
     anterior direction about the lungs' centre, at least ``pectoralis_apex_margin_mm`` below the
     lung apices (so sternocleidomastoid and scalenes are not counted);
   * other thoracic skeletal muscle: the rest (serratus, latissimus, trapezius, ...).

7. Levels (:func:`pipelines.thorax.label_thoracic_levels`): the rib pairs leaving the followed
   vertebral column are counted from the first rib (T1: lung apex at its neck, column continuing
   above it, a short first rib) or from the last (T12: column continuing below it without a
   rib); both anchors must agree on 12 pairs for the highest confidence. PMA = pectoralis area
   on the mid-T4 slice (T4 convention
   of Moon SW et al., J Cachexia Sarcopenia Muscle 2022; McDonald et al. use the slice just above
   the aortic arch); ESMA = erector spinae area on the mid-T12 slice (Tanimura et al., Ann Am Thorac
   Soc 2016;13(3):334-341).

Measurements: per class and side volume (cm³), mean and median HU and the low-attenuation fraction
(share of muscle voxels from -29 to +29 HU, i.e. below the +30..+150 HU "normal attenuation" band of
Kim DW et al., Korean J Radiol 2021; a myosteatosis measure); total respiratory-muscle volume (the
three seed classes) and total thoracic skeletal muscle; volume / height² when Patient's Size is
present; PMA and ESMA (cm², mean HU). Each carries its slab in ``summary``.

Outputs: one SEG segment per class and side, the side as the segment's laterality (Segmented
Property Type Modifier in the SEG, finding-site laterality in the SR; PS3.16 CID 244). PMA and ESMA
per side are standard Area (SCT 42798000) and mean attenuation (DCM 112031, Mean) measurements of
the pectoralis / erector spinae segment of that side on the measured slice (``frame_index``: a
planar ROI group referencing that SEG frame); their right + left totals stay in the summary group
(private codes ``PMA-T4``, ``ESMA-T12``: no standard concept names "PMA at T4").

Limits (honest)
---------------
* The diaphragm is a 5 mm sheet assumed under the lung bases; against liver, spleen and heart it
  has no HU contrast, and its crura and the central tendon under the heart are missed.
* Intercostal muscle needs neighbouring slices; on a single slice it cannot be separated and is
  counted with the superficial muscle. Thick slices (> ~5 mm) blur the rib-above/rib-below rule.
* Trapezius and rhomboids overlying the erector spinae are counted with it where no fat plane of
  ``erector_fat_plane_mm`` separates them; breast tissue and axillary soft tissue in the band
  can be counted as
  pectoralis; arms lying against the trunk add "other" muscle.
* Costal cartilage (often in the muscle band) beside the sternum is counted as muscle where it is
  not calcified.
* Vertebral levels: transitional anatomy (11 or 13 rib pairs) shifts T4 and T12 by one level.
* Checked on digital phantoms and one real chest CT (LIDC-IDRI-0314); not clinically validated.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage
from scipy.spatial import ConvexHull, QhullError

from pipelines.errors import ConfigError, PipelineError, UnsupportedInputError
from pipelines.measurement_tables.chest_respiratory_muscle import MEASUREMENTS
from pipelines.measurement_text import (
    ascii_unit,
    measurement_text,
    measurements_line,
    number_text,
    short_name,
    table_rows,
    value_text,
)
from pipelines.parameters.chest_respiratory_muscle import ChestParameters  # the parameter model lives with the spec
from pipelines.protocol import PatientContext
from pipelines.spine import (
    find_body_mask,
    find_vertebra_in_slice,
)
from pipelines.thorax import ThoracicLevels, label_thoracic_levels
from pipelines.types import (
    DCM_ATTENUATION,
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    SCT_ANATOMICAL_STRUCTURE,
    SCT_AREA,
    SCT_LEFT,
    SCT_MEAN,
    SCT_MEDIAN,
    SCT_RIGHT,
    SCT_TISSUE,
    SCT_VOLUME,
    SOFT_TISSUE_WINDOW_HU,
    UCUM_CM2,
    UCUM_CM3,
    UCUM_HU,
    UCUM_PERCENT,
    AlgorithmInfo,
    CodedTerm,
    KeyImageAnnotation,
    KeyImagePanel,
    KeyImageSpec,
    LearnedModel,
    Measurement,
    PipelineResult,
    SegmentDefinition,
    ValidationStatus,
)
from pipelines.volume import CTVolume, load_ct_volume

logger = logging.getLogger(__name__)

PROTOCOL_NAME = "chest-respiratory-muscle"

ALGORITHM = AlgorithmInfo(
    name="ainode-chest-muscle-reference",
    version="0.2.0",
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source=(
        "Rule-based: muscle band -29..150 HU (Alberta protocol); classes of Choi et al., PLoS One "
        "2024 by anatomy (ribs, spine, lungs; erector spinae from the spine to the fat plane under "
        "the superficial back muscles); T4/T12 by counting rib-bearing vertebrae from the first "
        "or last rib"
    ),
)

#: Label numbering of the label map (reference method and networks alike).
LABEL_PECTORALIS_RIGHT = 1
LABEL_PECTORALIS_LEFT = 2
LABEL_ERECTOR_SPINAE_RIGHT = 3
LABEL_ERECTOR_SPINAE_LEFT = 4
LABEL_INTERCOSTAL_RIGHT = 5
LABEL_INTERCOSTAL_LEFT = 6
LABEL_DIAPHRAGM_RIGHT = 7
LABEL_DIAPHRAGM_LEFT = 8
LABEL_OTHER_MUSCLE = 9

#: label value -> (class key, side) for every label of the map.
LABELS: dict[int, tuple[str, str | None]] = {
    LABEL_PECTORALIS_RIGHT: ("pectoralis", "right"),
    LABEL_PECTORALIS_LEFT: ("pectoralis", "left"),
    LABEL_ERECTOR_SPINAE_RIGHT: ("erector_spinae", "right"),
    LABEL_ERECTOR_SPINAE_LEFT: ("erector_spinae", "left"),
    LABEL_INTERCOSTAL_RIGHT: ("intercostal", "right"),
    LABEL_INTERCOSTAL_LEFT: ("intercostal", "left"),
    LABEL_DIAPHRAGM_RIGHT: ("diaphragm", "right"),
    LABEL_DIAPHRAGM_LEFT: ("diaphragm", "left"),
    LABEL_OTHER_MUSCLE: ("other_thoracic_muscle", None),
}
#: The seed study's three respiratory-muscle classes (Choi et al. 2024).
RESPIRATORY_LABELS = (1, 2, 3, 4, 5, 6)

_PECTORALIS = CodedTerm("60005003", "SCT", "Pectoralis major muscle")
_ERECTOR = CodedTerm("44947003", "SCT", "Erector spinae muscle")
_CHEST_WALL_MUSCLE = CodedTerm("372074006", "SCT", "Chest wall muscle")
_DIAPHRAGM = CodedTerm("5798000", "SCT", "Diaphragm")
_MUSCLE = CodedTerm("91727004", "SCT", "Muscle")
_THORAX = CodedTerm("816094009", "SCT", "Thorax")

_CLASS_TEXT = {
    "pectoralis": ("Pectoralis", "Pectoralis major and minor", _PECTORALIS, (230, 60, 60)),
    "erector_spinae": ("Erector spinae", "Erector spinae (paravertebral)", _ERECTOR,
                       (60, 200, 90)),
    "intercostal": ("Intercostal", "Intercostal muscles (between ribs)", _CHEST_WALL_MUSCLE,
                    (70, 120, 255)),
    "diaphragm": ("Diaphragm", "Diaphragm below lung bases (lower confidence)", _DIAPHRAGM,
                  (250, 210, 60)),
}


def _segments() -> list[SegmentDefinition]:
    segments: list[SegmentDefinition] = []
    for number, (key, side) in LABELS.items():
        if key == "other_thoracic_muscle":
            segments.append(SegmentDefinition(
                number=number, label="Other thoracic muscle",
                description="Other thoracic skeletal muscle, -29..150 HU",
                category=SCT_TISSUE, property_type=_MUSCLE, anatomic_region=_THORAX,
                tracking_id="Other thoracic skeletal muscle", display_rgb=(170, 110, 200)))
            continue
        label, description, code, rgb = _CLASS_TEXT[key]
        assert side is not None
        if side == "left":
            rgb = tuple(min(255, int(v * 0.6 + 100)) for v in rgb)  # type: ignore[assignment]
        segments.append(SegmentDefinition(
            number=number, label=f"{label}, {side}",
            description=f"{description}, {side}, -29..150 HU",
            category=SCT_ANATOMICAL_STRUCTURE, property_type=code, anatomic_region=None,
            laterality=SCT_RIGHT if side == "right" else SCT_LEFT,
            tracking_id=f"{label}, {side}", display_rgb=rgb))  # type: ignore[arg-type]
    return segments


#: One SEG segment per class and side; the side is the segment's laterality (SEG Segmented
#: Property Type Modifier, SR finding-site laterality; PS3.16 CID 244) and is in its label.
SEGMENTS: list[SegmentDefinition] = _segments()

# Private concepts (no standard concept exists; clinical.md §5).
LOW_ATTENUATION_FRACTION = CodedTerm("LOWATTFRAC", PRIVATE_SCHEME,
                                     "Low-attenuation muscle fraction -29..29 HU")
TOTAL_RESPIRATORY_VOLUME = CodedTerm("RESPMUSVOL", PRIVATE_SCHEME,
                                     "Total respiratory muscle volume")
TOTAL_THORACIC_VOLUME = CodedTerm("THORMUSVOL", PRIVATE_SCHEME,
                                  "Total thoracic skeletal muscle volume")
RESPIRATORY_INDEX = CodedTerm("RESPMUSIDX", PRIVATE_SCHEME,
                              "Respiratory muscle volume / height squared")
UCUM_CM3_PER_M2 = CodedTerm("cm3/m2", "UCUM", "cubic centimeter per square meter")
SLAB_LENGTH = CodedTerm("SLABLEN", PRIVATE_SCHEME, "Length of the measured slab")
UCUM_MM = CodedTerm("mm", "UCUM", "millimeter")


def _slice_concept(code: str, meaning: str) -> CodedTerm:
    return CodedTerm(code, PRIVATE_SCHEME, meaning)


@dataclass
class ChestAnatomy:
    """What :func:`segment_reference` found (for measurement, key image and tests).

    Attributes
    ----------
    lungs: numpy.ndarray
        ``(slices, rows, columns)`` bool.
    slab: tuple[int, int]
        First and last canonical slice holding lung (inclusive).
    origin_rc: tuple[float, float]
        (row, column) of the vertebral-body centre, canonical pixels.
    ap_unit_rc: tuple[float, float]
        Unit vector (row, column components, in mm space) pointing posterior along the
        mid-sagittal plane.
    lung_centre_rc: tuple[float, float]
        (row, column) of the lungs' centroid.
    rotation_deg: float
        Angle of the mid-sagittal plane from the row axis, degrees.
    body_touches_edge: bool
        The body outline reaches at least two edges of the image in the slab (cropped field of
        view).
    evidence: list[str]
        Human-readable notes.
    thoracic: ThoracicLevels | None
        Column track, ribs and thoracic levels (:func:`pipelines.thorax.label_thoracic_levels`)
        in the coordinates of the body's bounding box; ``None`` for a single slice.
    column_offset_rc: tuple[float, float]
        (row, column) of that bounding box in the image (add to ``thoracic.column_rc``).
    """

    lungs: np.ndarray
    slab: tuple[int, int]
    origin_rc: tuple[float, float]
    ap_unit_rc: tuple[float, float]
    lung_centre_rc: tuple[float, float]
    rotation_deg: float
    body_touches_edge: bool = False
    evidence: list[str] = field(default_factory=list)
    thoracic: ThoracicLevels | None = None
    column_offset_rc: tuple[float, float] = (0.0, 0.0)


# ------------------------------------------------------------------------------------------
# Reference segmentation.
# ------------------------------------------------------------------------------------------


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, round(radius_px))
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r)


def find_lungs(
    hu: np.ndarray, body: np.ndarray, spacing_mm: tuple[float, float, float],
    params: ChestParameters | None = None,
) -> np.ndarray:
    """Lung mask of a canonical volume (step 2 of the reference method).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` HU, canonical HPL.
    body:
        ``(slices, rows, columns)`` bool body outline (holes filled).
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        Thresholds.

    Returns
    -------
    numpy.ndarray
        ``(slices, rows, columns)`` bool.
    """
    p = params or ChestParameters()
    air = hu < p.lung_threshold_hu
    labels, n = ndimage.label(air)
    if n == 0:
        return np.zeros(hu.shape, dtype=bool)
    n_slices = hu.shape[0]
    border = np.zeros(n + 1, dtype=bool)
    for edge in (labels[:, 0, :], labels[:, -1, :], labels[:, :, 0], labels[:, :, -1]):
        border[np.unique(edge)] = True
    body_area = body.reshape(n_slices, -1).sum(axis=1).astype(float)
    flat = labels.reshape(n_slices, -1)
    best_fraction = np.zeros(n + 1)
    for k in range(n_slices):
        if body_area[k] > 0:
            counts = np.bincount(flat[k], minlength=n + 1).astype(float)
            np.maximum(best_fraction, counts / body_area[k], out=best_fraction)
    best_fraction[0] = 0.0
    keep = np.zeros(n + 1, dtype=bool)
    objects = ndimage.find_objects(labels)
    candidates = np.flatnonzero(best_fraction >= p.min_lung_fraction)
    hulls: dict[int, np.ndarray] = {}
    for lab in candidates:
        region = objects[lab - 1]
        if region is None:
            continue
        component = labels[region] == lab
        values = hu[region][component]
        # The median of a large region (the air around the patient) from an even subsample of
        # at most about a million voxels: the thresholds below are tens of HU apart.
        median = float(np.median(values[:: max(1, values.size // 1_000_000)]))
        outside_air = bool(border[lab]) and median < -960.0
        gas = median <= p.gas_max_median_hu
        if outside_air or gas:
            continue
        # Lungs lie within the body's convex outline (air under the back on a curved table
        # does not).
        inside = 0
        for i, k in enumerate(range(region[0].start, region[0].stop)):
            if k not in hulls:
                hulls[k] = _hull_mask(body[k])
            inside += int((component[i] & hulls[k][region[1:]]).sum())
        keep[lab] = inside >= 0.5 * component.sum()
    return np.asarray(keep[labels])


#: Grid of the body outline's opening, mm (every second pixel at 0.75 mm; about 3x faster than
#: every pixel; see :func:`body_mask_slice`).
BODY_COARSE_GRID_MM = 1.5


def body_mask_slice(
    hu_slice: np.ndarray, pixel_spacing_mm: tuple[float, float], threshold_hu: float = -500.0
) -> np.ndarray:
    """Body outline of one axial slice: :func:`pipelines.spine.find_body_mask` on a coarse grid.

    Largest region above ``threshold_hu`` after an opening with a 3 mm disk (cuts thin bridges to
    the table), grown back by the same radius inside the thresholded pixels, holes filled; the
    opening runs on a grid of :data:`BODY_COARSE_GRID_MM` (every second pixel at 0.75 mm) and the
    outline keeps full resolution (the grown region is intersected with the full-resolution
    threshold). Identical to the every-pixel rule on the chest phantom; where a thin strap joins
    a table, a few strap pixels below the skin can differ.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` Hounsfield units.
    pixel_spacing_mm:
        (row, column) spacing, mm.
    threshold_hu:
        Air/body threshold, HU.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool.
    """
    return find_body_mask(hu_slice, pixel_spacing_mm, threshold_hu, coarse_grid_mm=BODY_COARSE_GRID_MM)


def _touches_edges(body: np.ndarray) -> bool:
    """Whether the body reaches at least two of the four image edges (cropped field of view)."""
    edges = [body[:, 0, :], body[:, -1, :], body[:, :, 0], body[:, :, -1]]
    return sum(bool(edge.sum() > 0.05 * edge.size) for edge in edges) >= 2


def _hull_mask(points_mask: np.ndarray) -> np.ndarray:
    """Filled convex hull of the True pixels of a 2-D mask (empty if fewer than 3 points).

    The hull is that of the first and last True pixel of each row (the same hull as of all
    pixels, from at most two points per row).
    """
    out = np.zeros(points_mask.shape, dtype=bool)
    rows = np.flatnonzero(points_mask.any(axis=1))
    if len(rows) == 0:
        return out
    first = points_mask[rows].argmax(axis=1)
    last = points_mask.shape[1] - 1 - points_mask[rows, ::-1].argmax(axis=1)
    pts = np.unique(np.concatenate([np.stack([rows, first], axis=1),
                                    np.stack([rows, last], axis=1)]), axis=0)
    if len(pts) < 3:
        out[points_mask] = True
        return out
    try:
        hull = ConvexHull(pts)
    except QhullError:
        return out
    out = _fill_convex_polygon(points_mask.shape, pts[hull.vertices])
    out[points_mask] = True
    return out


def _fill_convex_polygon(shape: tuple[int, int], vertices_rc: np.ndarray) -> np.ndarray:
    """Scan-line fill of a convex polygon given by its ``(n, 2)`` (row, column) vertices.

    On each row between the top and bottom vertex, the pixels from the leftmost to the
    rightmost edge crossing (each rounded to the nearest column) are set, as Pillow's polygon
    fill does (the same pixels up to ties at exactly half a pixel).
    """
    y0 = vertices_rc[:, 0].astype(float)
    x0 = vertices_rc[:, 1].astype(float)
    y1, x1 = np.roll(y0, -1), np.roll(x0, -1)
    rows = np.arange(int(y0.min()), int(y0.max()) + 1)
    r = rows[:, None].astype(float)
    crosses = (r >= np.minimum(y0, y1)) & (r <= np.maximum(y0, y1))
    flat = y0 == y1
    t = (r - y0) / np.where(flat, 1.0, y1 - y0)
    x_left = np.where(flat, np.minimum(x0, x1), x0 + t * (x1 - x0))
    x_right = np.where(flat, np.maximum(x0, x1), x_left)
    left = np.floor(np.where(crosses, x_left, np.inf).min(axis=1) + 0.5)
    right = np.ceil(np.where(crosses, x_right, -np.inf).max(axis=1) - 0.5)
    columns = np.arange(shape[1])
    fill = (columns >= left[:, None]) & (columns <= right[:, None])
    out = np.zeros(shape, dtype=bool)
    inside = (rows >= 0) & (rows < shape[0])
    out[rows[inside]] = fill[inside]
    return out


def _midsagittal(
    hu: np.ndarray, body: np.ndarray, slab: tuple[int, int], spacing_mm: tuple[float, float, float],
    params: ChestParameters, evidence: list[str],
) -> tuple[tuple[float, float], tuple[float, float], float]:
    """Vertebral-body centre and posterior unit vector of the mid-sagittal plane."""
    dr, dc = float(spacing_mm[1]), float(spacing_mm[2])
    k0, k1 = slab
    samples = np.unique(np.linspace(k0, k1, num=min(15, k1 - k0 + 1)).round().astype(int))
    centres = []
    for k in samples:
        found = find_vertebra_in_slice(hu[k], (dr, dc), body[k], params.bone_threshold_hu)
        if found is not None:
            centres.append(found.body_centre_rc)
    footprint = body[k0 : k1 + 1].sum(axis=0).astype(float)
    rows, cols = np.nonzero(footprint)
    weights = footprint[rows, cols]
    if centres:
        origin = (float(np.median([c[0] for c in centres])),
                  float(np.median([c[1] for c in centres])))
        evidence.append(f"vertebral-body centre found in {len(centres)} of {len(samples)} "
                        f"sampled slices at row {origin[0]:.0f}, column {origin[1]:.0f}")
    else:
        # Fallback: the largest bone component near the left-right centre.
        k = int(samples[len(samples) // 2])
        bone = (hu[k] > params.bone_threshold_hu) & body[k]
        lab, _ = ndimage.label(bone)
        centre_col = float(np.average(cols, weights=weights)) if len(cols) else hu.shape[2] / 2
        best, best_size = None, 0
        for i, sl in enumerate(ndimage.find_objects(lab), start=1):
            if sl is None:
                continue
            comp = lab[sl] == i
            cr, cc = ndimage.center_of_mass(comp)
            cc += sl[1].start
            size = int(comp.sum())
            if abs(cc - centre_col) * dc <= 45.0 and size > best_size:
                best, best_size = (cr + sl[0].start, cc), size
        if best is None:
            raise PipelineError(
                "no vertebra found near the left-right centre of the body, so left and right "
                "cannot be told apart; the series must be an axial chest CT including the spine"
            )
        origin = (float(best[0]), float(best[1]))
        evidence.append("vertebral body not recognised; the largest midline bone was used as "
                        "the spine centre (lower confidence)")
    # Orientation: minor axis of the body outline (weighted second moments, in mm).
    if len(rows) > 10:
        y = (rows - np.average(rows, weights=weights)) * dr
        x = (cols - np.average(cols, weights=weights)) * dc
        cov = np.cov(np.vstack([y, x]), aweights=weights)
        evals, evecs = np.linalg.eigh(cov)
        minor = evecs[:, 0]
        anisotropy = float(np.sqrt(evals[1] / max(evals[0], 1e-9)))
    else:
        minor, anisotropy = np.array([1.0, 0.0]), 1.0
    if anisotropy < 1.1:
        minor = np.array([1.0, 0.0])
        evidence.append("body outline nearly round or cropped: mid-sagittal plane taken along "
                        "the image rows")
    if minor[0] < 0:
        minor = -minor
    angle = float(np.degrees(np.arctan2(minor[1], minor[0])))
    if abs(angle) > 30.0:
        evidence.append(f"body outline suggests {angle:.0f} degrees rotation; limited to the "
                        "image rows (implausible)")
        minor, angle = np.array([1.0, 0.0]), 0.0
    evidence.append(f"mid-sagittal plane rotated {angle:.1f} degrees from the image rows")
    return origin, (float(minor[0]), float(minor[1])), angle


def _rib_angle_mm(
    bone: np.ndarray, near_lung: np.ndarray, ap_k: np.ndarray, lat_k: np.ndarray
) -> tuple[float, float]:
    """Lateral distance (mm) of the rib angle on the right and left of one slice: the most
    dorsal rib bone lining the lung, 25-120 mm from the midline (NaN where none).

    Parameters
    ----------
    bone, near_lung:
        ``(rows, columns)`` bool: bone, and pixels within 12 mm of the lung.
    ap_k, lat_k:
        ``(rows, columns)`` mm dorsal of the vertebral-body centre and to the patient's left.
    """
    out = []
    for sign in (-1.0, 1.0):
        side = bone & near_lung & (sign * lat_k > 25.0) & (sign * lat_k < 120.0) & (ap_k > 0.0)
        if not side.any():
            out.append(float("nan"))
            continue
        depth = np.where(side, ap_k, -np.inf)
        r, c = np.unravel_index(int(np.argmax(depth)), depth.shape)
        out.append(float(abs(lat_k[r, c])))
    return out[0], out[1]


def erector_spinae_slice(
    hu_k: np.ndarray, muscle_k: np.ndarray, bone_k: np.ndarray, lungs_k: np.ndarray,
    body_k: np.ndarray, ap_k: np.ndarray, lat_k: np.ndarray,
    lateral_limit_mm: tuple[float, float], row_mm: float, params: ChestParameters,
    scapula_possible: bool = True,
) -> np.ndarray:
    """Erector spinae on one axial slice, from anatomy (step 6 of the module docstring).

    Along each image column (a ray running dorsally, rows anterior -> posterior), the deep back
    muscle lies directly behind the deepest bone of the spine or ribs (lamina, transverse
    process, rib at or medial to its angle) or behind the lung: the first muscle within
    ``erector_max_gap_mm`` dorsal of it, up to the first fat plane (``erector_fat_plane_mm`` of
    fat), bone (the scapula) or the body's edge. Trapezius and rhomboids, superficial to that fat
    plane, are not counted. The rays are limited to ``erector_min_depth_mm`` dorsal of the
    vertebral-body centre and medial to the rib angle (``lateral_limit_mm``).

    Parameters
    ----------
    hu_k:
        ``(rows, columns)`` HU.
    muscle_k, bone_k, lungs_k, body_k:
        ``(rows, columns)`` bool masks of the slice (muscle band without skin, bone, lung,
        body outline).
    ap_k, lat_k:
        ``(rows, columns)`` mm dorsal of the vertebral-body centre and to the patient's left.
    lateral_limit_mm:
        (right, left) lateral limit, mm from the midline.
    row_mm:
        Row spacing, mm.
    params:
        Thresholds.
    scapula_possible:
        Whether the scapula may lie behind the ribs (lungs large on this slice): then only bone
        of the spine (within 30 mm of the midline) or lining the lung (within 12 mm) starts a
        ray; otherwise any bone does (the 11th and 12th ribs below the lungs).

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool.
    """
    p = params
    limit = np.where(lat_k > 0.0, lateral_limit_mm[1], lateral_limit_mm[0])
    zone = (ap_k > p.erector_min_depth_mm) & (np.abs(lat_k) < limit) & body_k
    if not zone.any():
        return np.zeros(hu_k.shape, dtype=bool)
    cols = np.flatnonzero(zone.any(axis=0))
    rows_any = np.flatnonzero(zone.any(axis=1))
    r0, r1 = int(rows_any[0]), int(rows_any[-1]) + 1
    c0, c1 = int(cols[0]), int(cols[-1]) + 1
    box = (slice(0, r1), slice(c0, c1))
    zone_b, ap_b, lat_b = zone[box], ap_k[box], lat_k[box]
    n_rows = zone_b.shape[0]
    rr = np.arange(n_rows)[:, None]
    # Deep structures of each ray: lung, and bone of the spine or of the ribs lining the lung.
    near = max(1, round(12.0 / row_mm))
    near_lung = ndimage.maximum_filter(lungs_k[box].view(np.uint8), size=2 * near + 1) > 0
    deep_bone = bone_k[box] & (near_lung | (np.abs(lat_b) < 30.0)) if scapula_possible \
        else bone_k[box]
    deep = (lungs_k[box] | deep_bone) & \
        (ap_b > -10.0) & (np.abs(lat_b) < limit[box] + 10.0)
    start = np.where(deep.any(axis=0), n_rows - 1 - np.argmax(deep[::-1], axis=0), -1)
    front = np.where(zone_b.any(axis=0), np.argmax(zone_b, axis=0) - 1, n_rows)
    start = np.maximum(start, front)
    # Behind the lung (between two ribs) the rib's thickness (about 10 mm) adds to the gap.
    lung_b = lungs_k[box]
    lung_last = np.where(lung_b.any(axis=0), n_rows - 1 - np.argmax(lung_b[::-1], axis=0), -n_rows)
    behind_lung = (start - lung_last) * row_mm <= 3.0
    gap_mm = p.erector_max_gap_mm + np.where(behind_lung, 10.0, 0.0)
    candidate = muscle_k[box] & zone_b & (rr > start[None, :])
    has = candidate.any(axis=0)
    first = np.argmax(candidate, axis=0)
    has &= (first - start) * row_mm <= gap_mm
    # Fat plane on a 3 x 3 median of the HU (noise and streaks do not open a plane).
    run = max(2, round(p.erector_fat_plane_mm / row_mm))
    fat = (ndimage.median_filter(hu_k[box], size=3) < p.muscle_hu[0]) & body_k[box]
    plane = ndimage.binary_opening(fat, structure=np.ones((run, 1), dtype=bool))
    stop = (plane | bone_k[box] | ~body_k[box]) & (rr > first[None, :])
    first_stop = np.where(stop.any(axis=0), np.argmax(stop, axis=0), n_rows)
    # Neighbouring rays agree: a ray that stops early on a fatty septum inside the muscle (or a
    # fatty spot) is lengthened to the depth most of its neighbours within about 4 mm reach
    # (80th percentile), while the fat plane under the superficial muscles runs across all of
    # them.
    width = max(3, 2 * round(4.0 / row_mm) + 1)
    stop_s = ndimage.percentile_filter(np.where(has, first_stop, -1), 80, size=width,
                                       mode="nearest")
    first_s = ndimage.percentile_filter(np.where(has, first, n_rows), 20, size=width,
                                        mode="nearest")
    first_stop = np.where(has, np.maximum(first_stop, stop_s), first_stop)
    first = np.where(has, np.minimum(first, np.maximum(first_s, start + 1)), first)
    span = (zone_b & (rr >= first[None, :]) & (rr < first_stop[None, :]) & (rr > start[None, :])
            & has[None, :] & ~bone_k[box] & body_k[box])
    # Strands one or two rays wide (the tapering lateral edge) are not muscle belly: opening
    # with a 1.5 mm disk; the erector spinae is the muscle-band part of what remains.
    span = ndimage.binary_opening(span, structure=_disk(1.5 / row_mm))
    es_b = span & muscle_k[box]
    out = np.zeros(hu_k.shape, dtype=bool)
    out[box] = es_b
    return out


def segment_reference(
    hu: np.ndarray,
    spacing_mm: tuple[float, float, float],
    params: ChestParameters | None = None,
) -> tuple[np.ndarray, ChestAnatomy]:
    """Reference segmentation of the thoracic muscles (steps 1-6 of the module docstring).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` ``float32`` HU, canonical HPL (feet→head, anterior→posterior,
        right→left).
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        Method parameters.

    Returns
    -------
    tuple[numpy.ndarray, ChestAnatomy]
        ``uint8`` label map of the shape of ``hu`` (numbering :data:`LABELS`; 0 outside the lung
        slab, except the erector spinae, measured down to ``erector_extension_mm`` below it) and
        the anatomy found.

    Raises
    ------
    UnsupportedInputError
        If no lungs are found, or the lung slab is shorter than ``min_slab_mm`` (volumes).
    PipelineError
        If no spine is found to tell left from right.
    """
    p = params or ChestParameters()
    dz, dr, dc = (float(s) for s in spacing_mm)
    n_slices = hu.shape[0]
    full_shape = hu.shape
    body_full = np.zeros(full_shape, dtype=bool)
    for k in range(n_slices):
        body_full[k] = body_mask_slice(hu[k], (dr, dc))
    # Work on the bounding box of the body (all slices) plus 10 mm: the air around the patient
    # and the table are not needed, and every later step is proportional to the voxel count.
    any_rows = np.flatnonzero(body_full.any(axis=(0, 2)))
    any_cols = np.flatnonzero(body_full.any(axis=(0, 1)))
    if len(any_rows) == 0:
        raise UnsupportedInputError("no body found (nothing above -500 HU); send a chest CT")
    margin_r, margin_c = int(np.ceil(10.0 / dr)), int(np.ceil(10.0 / dc))
    r0 = max(0, int(any_rows[0]) - margin_r)
    r1 = min(full_shape[1], int(any_rows[-1]) + margin_r + 1)
    c0 = max(0, int(any_cols[0]) - margin_c)
    c1 = min(full_shape[2], int(any_cols[-1]) + margin_c + 1)
    hu = hu[:, r0:r1, c0:c1]
    body = body_full[:, r0:r1, c0:c1]
    lungs = find_lungs(hu, body, spacing_mm, p)
    with_lung = np.flatnonzero(lungs.reshape(n_slices, -1).any(axis=1))
    if len(with_lung) == 0:
        raise UnsupportedInputError(
            "no lungs found (no air region below "
            f"{p.lung_threshold_hu:.0f} HU filling {100 * p.min_lung_fraction:.0f} % of the body "
            "in any slice, other than bowel gas); this protocol measures chest CT. Route "
            "abdomen or head CT elsewhere"
        )
    # Column, ribs and thoracic levels (pipelines.thorax); the lung apex is the highest lung
    # beside the midline (the trachea joins the lungs and runs up the neck).
    thoracic = (label_thoracic_levels(hu, lungs, spacing_mm, body) if n_slices > 1 else None)
    apex = thoracic.apex_slice if thoracic is not None else None
    top = int(with_lung[-1]) if apex is None else min(int(apex), int(with_lung[-1]))
    slab = (int(with_lung[0]), top)
    slab_mm = (slab[1] - slab[0] + 1) * dz
    if n_slices > 1 and slab_mm < p.min_slab_mm:
        raise UnsupportedInputError(
            f"the lungs cover only {slab_mm:.0f} mm ({slab[1] - slab[0] + 1} slice(s)); at least "
            f"{p.min_slab_mm:.0f} mm are needed to measure muscle volumes. Send a chest CT from "
            "the lung apices to below the diaphragm"
        )
    evidence = [f"lungs in slices {slab[0]}-{slab[1]} ({slab_mm:.0f} mm)"]
    origin, ap_unit, angle = _midsagittal(hu, body, slab, spacing_mm, p, evidence)
    # Per-slice shift of the vertebral-body centre along the column track (kyphosis, lordosis).
    shift_ap = np.zeros(n_slices)
    shift_lat = np.zeros(n_slices)
    if thoracic is not None:
        track = thoracic.column_rc
        known = ~np.isnan(track[:, 0])
        in_slab = known.copy()
        in_slab[: slab[0]] = False
        in_slab[slab[1] + 1 :] = False
        if in_slab.any():
            ref = np.median(track[in_slab], axis=0)
            d_r = np.where(known, track[:, 0] - ref[0], 0.0) * dr
            d_c = np.where(known, track[:, 1] - ref[1], 0.0) * dc
            shift_ap = d_r * ap_unit[0] + d_c * ap_unit[1]
            shift_lat = -d_r * ap_unit[1] + d_c * ap_unit[0]
            evidence.append("vertebral column followed slice by slice: the body centre moves "
                            f"{np.ptp(shift_ap[known]):.0f} mm front-back and "
                            f"{np.ptp(shift_lat[known]):.0f} mm left-right")
    lung_rc = np.argwhere(lungs[slab[0] : slab[1] + 1].any(axis=0))
    lung_centre = (float(lung_rc[:, 0].mean()), float(lung_rc[:, 1].mean()))

    # In-plane frame (mm): ap positive posterior, lat positive to the patient's left.
    rr, cc = np.meshgrid(np.arange(hu.shape[1]), np.arange(hu.shape[2]), indexing="ij")
    ry, rx = (rr - origin[0]) * dr, (cc - origin[1]) * dc
    ap = ry * ap_unit[0] + rx * ap_unit[1]
    lat = -ry * ap_unit[1] + rx * ap_unit[0]
    ly, lx = (rr - lung_centre[0]) * dr, (cc - lung_centre[1]) * dc
    ap_c = ly * ap_unit[0] + lx * ap_unit[1]
    lat_c = -ly * ap_unit[1] + lx * ap_unit[0]
    from_anterior_deg = np.degrees(np.arctan2(np.abs(lat_c), -ap_c))
    # Spine region: vertebral body (from 25 mm ventral of its centre) and everything dorsal,
    # per slice about the column's centre on that slice.
    paravertebral = np.empty(hu.shape, dtype=bool)
    spine_crop = np.empty(hu.shape, dtype=bool)
    left = np.empty(hu.shape, dtype=bool)
    for k in range(n_slices):
        ap_k, lat_k = ap - shift_ap[k], lat - shift_lat[k]
        paravertebral[k] = (np.abs(lat_k) < p.paravertebral_half_width_mm) & (ap_k > -25.0)
        spine_crop[k] = (np.abs(lat_k) < 25.0) & (ap_k > -30.0) & (ap_k < 70.0)
        left[k] = lat_k > 0.0
    spine_any = spine_crop.any(axis=0)

    k0, k1 = slab
    sub = slice(k0, k1 + 1)
    bone = hu > p.bone_threshold_hu
    skin_px = p.skin_mm / min(dr, dc)
    # The erector spinae is also measured below the lungs (down to mid-T12 and beyond).
    ke0 = max(0, k0 - round(p.erector_extension_mm / dz)) if n_slices > 1 else k0
    muscle = (hu >= p.muscle_hu[0]) & (hu <= p.muscle_hu[1]) & ~lungs & ~bone
    muscle[:ke0] = False
    muscle[k1 + 1 :] = False
    skin = _disk(skin_px)
    for k in range(ke0, k1 + 1):
        muscle[k] &= ndimage.binary_erosion(body[k], structure=skin)
    # Spinal canal and marrow: what the vertebra's bone encloses, carried over the discs
    # (computed on the bounding box of the spine region only).
    box_r = np.flatnonzero(spine_any.any(axis=1))
    box_c = np.flatnonzero(spine_any.any(axis=0))
    if len(box_r) and len(box_c):
        pad = int(np.ceil(4.0 / min(dr, dc))) + 1
        sr0, sr1 = max(0, box_r[0] - pad), min(hu.shape[1], box_r[-1] + pad + 1)
        sc0, sc1 = max(0, box_c[0] - pad), min(hu.shape[2], box_c[-1] + pad + 1)
        crop_bone = bone[:, sr0:sr1, sc0:sc1]
        crop_zone = spine_crop[:, sr0:sr1, sc0:sc1]
        enclosed = np.zeros(crop_bone.shape, dtype=bool)
        closing = _disk(4.0 / min(dr, dc))
        for k in range(ke0, k1 + 1):
            spine_bone = ndimage.binary_closing(crop_bone[k] & crop_zone[k], structure=closing)
            enclosed[k] = ndimage.binary_fill_holes(spine_bone) & ~crop_bone[k]
        n_disc = max(1, round(10.0 / dz))
        enclosed = ndimage.maximum_filter1d(enclosed.view(np.uint8), size=2 * n_disc + 1,
                                            axis=0).astype(bool)
        muscle[:, sr0:sr1, sc0:sc1] &= ~enclosed
        del enclosed

    below_slab = muscle[:k0].copy()
    muscle[:k0] = False
    labels = np.zeros(hu.shape, dtype=np.uint8)

    def assign(mask: np.ndarray, right: int, left_label: int | None) -> None:
        labels[mask & ~left] = right
        labels[mask & left] = left_label if left_label is not None else right

    # Diaphragm: directly below a lung base.
    taken = np.zeros(hu.shape, dtype=bool)
    if p.include_diaphragm and n_slices > 1:
        n_above = max(1, round(p.diaphragm_thickness_mm / dz))
        n_below = max(1, round(p.diaphragm_clear_below_mm / dz))
        above = np.zeros(hu.shape, dtype=bool)
        below = np.zeros(hu.shape, dtype=bool)
        for j in range(1, n_above + 1):
            above[:-j] |= lungs[j:]
        for j in range(1, n_below + 1):
            below[j:] |= lungs[:-j]
        dia = muscle & above & ~below
        del above, below
        assign(dia, LABEL_DIAPHRAGM_RIGHT, LABEL_DIAPHRAGM_LEFT)
        taken |= dia

    # Intercostal: rib bone above and below in the same column.
    if n_slices > 1:
        n_gap = max(1, int(np.ceil(p.intercostal_max_gap_mm / dz)))
        rib = bone & ~paravertebral
        above = np.zeros(hu.shape, dtype=bool)
        below = np.zeros(hu.shape, dtype=bool)
        for j in range(1, n_gap + 1):
            above[:-j] |= rib[j:]
            below[j:] |= rib[:-j]
        ic = muscle & above & below & ~taken & ~paravertebral
        del above, below
        assign(ic, LABEL_INTERCOSTAL_RIGHT, LABEL_INTERCOSTAL_LEFT)
        taken |= ic

    muscle[:k0] = below_slab
    del below_slab
    # Erector spinae: the deep back muscle between the spine, the ribs up to their angle and
    # the fat plane under the trapezius and rhomboids (erector_spinae_slice).
    lo_mm, hi_mm = p.erector_lateral_mm
    near = max(1, round(12.0 / min(dr, dc)))
    angles = np.full((n_slices, 2), np.nan)
    # The rib angle is read where the lungs are large (not at the apices and bases, where the
    # ribs lining a small lung are only their necks).
    lung_area = lungs.reshape(n_slices, -1).sum(axis=1)
    for k in range(ke0, k1 + 1):
        if lung_area[k] >= 0.3 * lung_area.max():
            near_lung = ndimage.maximum_filter(lungs[k].view(np.uint8), size=2 * near + 1) > 0
            angles[k] = _rib_angle_mm(bone[k], near_lung, ap - shift_ap[k], lat - shift_lat[k])
    half = max(1, round(15.0 / dz))
    limits = np.full((n_slices, 2), 0.5 * (lo_mm + hi_mm))
    known_angle = ~np.isnan(angles)
    for side in (0, 1):
        if known_angle[:, side].any():
            fallback = float(np.nanmedian(angles[:, side]))
            for k in range(ke0, k1 + 1):
                window = angles[max(0, k - half) : k + half + 1, side]
                window = window[~np.isnan(window)]
                value = float(np.median(window)) if len(window) else fallback
                limits[k, side] = float(np.clip(value + p.erector_angle_margin_mm, lo_mm, hi_mm))
    es = np.zeros(hu.shape, dtype=bool)
    # The laminae and ribs shingle: the bone behind which the muscle lies may belong to the
    # level above or below, so the deep bone of a slice is that within 5 mm in height.
    n_shingle = max(1, round(5.0 / dz))
    for k in range(ke0, k1 + 1):
        if not muscle[k].any():
            continue
        near_bone = bone[max(0, k - n_shingle) : k + n_shingle + 1].any(axis=0)
        es[k] = erector_spinae_slice(
            hu[k], muscle[k] & ~taken[k], near_bone, lungs[k], body[k], ap - shift_ap[k],
            lat - shift_lat[k], (float(limits[k, 0]), float(limits[k, 1])), dr, p,
            scapula_possible=bool(lung_area[k] >= 0.3 * lung_area.max()))
    assign(es, LABEL_ERECTOR_SPINAE_RIGHT, LABEL_ERECTOR_SPINAE_LEFT)
    taken |= es
    evidence.append("erector spinae lateral limit (rib angle + margin) "
                    f"{np.median(limits[ke0 : k1 + 1, 0]):.0f} mm right, "
                    f"{np.median(limits[ke0 : k1 + 1, 1]):.0f} mm left (median)")

    # Thoracic cavity per slice: hull of lungs and nearby rib bone (outside the spine region).
    n_window = max(0, round(p.cage_window_mm / dz))
    rib_outside = bone & ~paravertebral & body
    window = (ndimage.maximum_filter1d(rib_outside[sub].view(np.uint8), size=2 * n_window + 1,
                                       axis=0, mode="constant").astype(bool)
              if n_window > 0 else rib_outside[sub])
    near_cage = max(1, round(10.0 / min(dr, dc)))
    apex_limit = k1 - round(p.pectoralis_apex_margin_mm / dz)
    pec_zone = from_anterior_deg < p.pectoralis_max_angle_deg
    for i, k in enumerate(range(k0, k1 + 1)):
        remaining = muscle[k] & ~taken[k]
        if not remaining.any():
            continue
        # Rib bone of the neighbouring slices lines the lung; other bone (clavicle, scapula,
        # humerus, a rib of another level sloping in front of the chest wall) does not bound the
        # cavity of this slice.
        near = ndimage.maximum_filter(lungs[k].view(np.uint8), size=2 * near_cage + 1) > 0
        cavity = _hull_mask(lungs[k] | (window[i] & near) | rib_outside[k])
        superficial = remaining & ~cavity
        pec = superficial & pec_zone if (k <= apex_limit or n_slices == 1) else \
            np.zeros_like(superficial)
        labels[k][pec & ~left[k]] = LABEL_PECTORALIS_RIGHT
        labels[k][pec & left[k]] = LABEL_PECTORALIS_LEFT
        labels[k][superficial & ~pec] = LABEL_OTHER_MUSCLE
    labels_full = np.zeros(full_shape, dtype=np.uint8)
    labels_full[:, r0:r1, c0:c1] = labels
    lungs_full = np.zeros(full_shape, dtype=bool)
    lungs_full[:, r0:r1, c0:c1] = lungs
    anatomy = ChestAnatomy(
        lungs=lungs_full, slab=slab,
        origin_rc=(origin[0] + r0, origin[1] + c0), ap_unit_rc=ap_unit,
        lung_centre_rc=(lung_centre[0] + r0, lung_centre[1] + c0),
        rotation_deg=angle, evidence=evidence, thoracic=thoracic,
        column_offset_rc=(float(r0), float(c0)),
        body_touches_edge=_touches_edges(body_full[k0 : k1 + 1]),
    )
    return labels_full, anatomy


# ------------------------------------------------------------------------------------------
# Levels.
# ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LevelSlices:
    """Mid-vertebral slices of T4 and T12 (canonical indices) and how they were found.

    Attributes
    ----------
    t4, t12: int | None
        Canonical slice at the middle of the vertebral body, or ``None`` if not found.
    method: str
        How the levels were counted (``"ribs, anchor T1"``, ``"ribs, anchor T1+T12"``, ...).
    confidence: float
        0..1.
    evidence: list[str]
        Human-readable reasons.
    anchor: str
        ``"T1"``, ``"T12"``, ``"T1+T12"``, ``"T1 (T12 disagrees)"`` or ``"none"``.
    rib_levels: list[tuple[str, int]]
        (label, canonical slice of the rib neck) of every rib-bearing vertebra found, head to
        foot; the label is empty where it could not be named.
    mid_slices: dict[str, int]
        Mid-vertebra canonical slice of every named level.
    column_rc: numpy.ndarray | None
        ``(slices, 2)`` (row, column) of the vertebral column in the image (NaN where not
        followed), for the key image.
    """

    t4: int | None
    t12: int | None
    method: str
    confidence: float
    evidence: list[str]
    anchor: str = "none"
    rib_levels: list[tuple[str, int]] = field(default_factory=list)
    mid_slices: dict[str, int] = field(default_factory=dict)
    column_rc: np.ndarray | None = None


def levels_from_thorax(
    thoracic: ThoracicLevels | None, offset_rc: tuple[float, float] = (0.0, 0.0)
) -> LevelSlices:
    """Mid-T4 / mid-T12 from the rib count of :func:`pipelines.thorax.label_thoracic_levels`.

    Parameters
    ----------
    thoracic:
        Rib count and labels; ``None`` (single slice) gives no level.
    offset_rc:
        (row, column) of the box the thoracic search ran in (:attr:`ChestAnatomy.column_offset_rc`).

    Returns
    -------
    LevelSlices
        Never raises for a missing level: the level is ``None`` and the evidence says why.
    """
    if thoracic is None:
        return LevelSlices(None, None, "none", 0.0, ["single slice: no vertebral level"])
    evidence = list(thoracic.evidence)
    found: dict[str, int | None] = {}
    for name in ("T4", "T12"):
        found[name] = thoracic.mid_slices.get(name)
        if found[name] is None:
            if name == "T12" and thoracic.anchor.startswith("T1") and thoracic.labels and \
                    "T11" in thoracic.labels and thoracic.labels[-1] == "T11" and \
                    not thoracic.bottom_in_view:
                evidence.append("T12 is below the series: 11 rib pairs counted from T1 and "
                                "the 12th rib pair is not in view")
            else:
                evidence.append(f"{name} not identified in the volume")
    rib_levels = [(name, round(z)) for (z, _), name in
                  zip(thoracic.rib_pairs, thoracic.labels or [""] * len(thoracic.rib_pairs),
                      strict=True)]
    column = thoracic.column_rc + np.asarray(offset_rc, dtype=float)[None, :]
    return LevelSlices(found["T4"], found["T12"], f"ribs, anchor {thoracic.anchor}",
                       thoracic.confidence, evidence, thoracic.anchor, rib_levels,
                       dict(thoracic.mid_slices), column)


def locate_levels(
    hu: np.ndarray, spacing_mm: tuple[float, float, float],
    params: ChestParameters | None = None,
) -> LevelSlices:
    """Find mid-T4 and mid-T12 by counting the ribs along the vertebral column.

    Body outline and lungs as in :func:`segment_reference`, then
    :func:`pipelines.thorax.label_thoracic_levels` and :func:`levels_from_thorax`.

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` HU, canonical HPL.
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        Thresholds.

    Returns
    -------
    LevelSlices
    """
    p = params or ChestParameters()
    dr, dc = float(spacing_mm[1]), float(spacing_mm[2])
    body = np.stack([body_mask_slice(h, (dr, dc)) for h in hu])
    lungs = find_lungs(hu, body, spacing_mm, p)
    return levels_from_thorax(label_thoracic_levels(hu, lungs, spacing_mm, body))


# ------------------------------------------------------------------------------------------
# Measurement.
# ------------------------------------------------------------------------------------------


def _slab(volume: CTVolume, mask: np.ndarray) -> dict[str, float | int] | None:
    """Cranio-caudal extent of a canonical mask: slices and patient z (mm) of their centres."""
    ks = np.flatnonzero(mask.reshape(mask.shape[0], -1).any(axis=1))
    if len(ks) == 0:
        return None
    affine = np.asarray(volume.volume.affine)
    z = [float((affine @ np.array([k, 0, 0, 1.0]))[2]) for k in (ks[0], ks[-1])]
    return {
        "first_slice": int(ks[0]),
        "last_slice": int(ks[-1]),
        "z_min_mm": round(min(z), 2),
        "z_max_mm": round(max(z), 2),
        "length_mm": round(float((ks[-1] - ks[0] + 1) * volume.spacing_mm[0]), 1),
    }


def measure(
    volume: CTVolume,
    label_map: np.ndarray,
    params: ChestParameters | None = None,
    *,
    algorithm: AlgorithmInfo = ALGORITHM,
    levels: LevelSlices | None = None,
    anatomy: ChestAnatomy | None = None,
    warnings: list[str] | None = None,
    context: PatientContext | None = None,
) -> PipelineResult:
    """Measure a canonical label map (reference or network) and build the result.

    Parameters
    ----------
    volume:
        The canonical CT volume.
    label_map:
        ``(slices, rows, columns)`` ``uint8`` in the numbering of :data:`LABELS`.
    params:
        HU bands.
    algorithm:
        The algorithm that produced ``label_map`` (reference method or the network's card).
    levels:
        Mid-T4/T12 slices (:func:`locate_levels`); ``None`` for a single slice.
    anatomy:
        What the reference segmentation found (lung slab, for the coverage statement).
    warnings:
        Warnings collected so far (extended in place).
    context:
        Patient's height and the acquisition's kVp, slice thickness and contrast
        (:class:`pipelines.protocol.PatientContext`, read by the core from the headers); ``None``
        reads it from ``volume.datasets`` with the same rule.

    Returns
    -------
    PipelineResult

    Raises
    ------
    PipelineError
        If the label map has the wrong shape, unknown labels or no muscle at all.
    """
    p = params or ChestParameters()
    warnings = warnings if warnings is not None else []
    label_map = np.asarray(label_map)
    if label_map.shape != volume.hu.shape:
        raise PipelineError(
            f"label map shape {label_map.shape} differs from the volume {volume.hu.shape}"
        )
    unknown = sorted(set(np.unique(label_map).tolist()) - {0, *LABELS})
    if unknown:
        raise PipelineError(f"label map holds values {unknown} outside {sorted(LABELS)}")
    if not label_map.any():
        raise PipelineError("no thoracic skeletal muscle was found in the lung slab")
    label_map = label_map.astype(np.uint8, copy=False)
    single = volume.is_single_slice
    dz, dr, dc = volume.spacing_mm
    voxel_cm3 = dz * dr * dc / 1000.0
    pixel_cm2 = dr * dc / 100.0
    hu = volume.hu
    low0, low1 = p.low_attenuation_hu

    if context is None:
        context = PatientContext.from_headers(volume.datasets)
    height_m = context.height_m
    if height_m is not None and not 0.4 <= height_m <= 2.5:
        warnings.append(f"Patient's Size {height_m:g} is not a height in metres; no index")
        height_m = None

    measurements: list[Measurement] = []
    classes: dict[str, dict[str, Any]] = {}
    counts = np.bincount(label_map.ravel(), minlength=max(LABELS) + 1)
    # Class statistics on the rows and columns that hold labels (all slices, so that slice
    # indices stay those of the volume).
    labelled_rows = np.flatnonzero(label_map.any(axis=(0, 2)))
    labelled_cols = np.flatnonzero(label_map.any(axis=(0, 1)))
    box = (slice(None), slice(int(labelled_rows[0]), int(labelled_rows[-1]) + 1),
           slice(int(labelled_cols[0]), int(labelled_cols[-1]) + 1))
    label_box, hu_box = label_map[box], hu[box]
    for number, (key, side) in LABELS.items():
        mask = label_box == number
        name = key if side is None else f"{key}_{side}"
        if not counts[number]:
            if single and key in ("intercostal", "diaphragm"):
                classes[name] = {"area_cm2": None, "slab": None,
                                 "not_measured": "needs the neighbouring slices"}
            else:
                # Zero voxels is "not found", not a measured zero: no value, and say so.
                classes[name] = {"area_cm2" if single else "volume_cm3": None, "slab": None,
                                 "not_measured": "not found in the segmentation"}
                if key != "diaphragm" or p.include_diaphragm:
                    warnings.append(f"{name.replace('_', ' ')}: not found in the segmentation; "
                                    "no volume or attenuation is reported for it")
            continue
        values = hu_box[mask]
        mean = float(values.mean())
        median = float(np.median(values))
        low_fraction = 100.0 * float(((values >= low0) & (values <= low1)).mean())
        entry: dict[str, Any] = {
            "mean_hu": round(mean, 2), "median_hu": round(median, 2),
            "low_attenuation_percent": round(low_fraction, 2), "slab": _slab(volume, mask),
        }
        segment_label = next(s.label for s in SEGMENTS if s.number == number)
        if single:
            area = float(counts[number] * pixel_cm2)
            entry["area_cm2"] = round(area, 2)
            measurements.append(Measurement(f"{name}_area_cm2", SCT_AREA, area, UCUM_CM2, number,
                                            None, f"{segment_label} area"))
        else:
            vol = float(counts[number] * voxel_cm3)
            entry["volume_cm3"] = round(vol, 2)
            measurements.append(Measurement(f"{name}_volume_cm3", SCT_VOLUME, vol, UCUM_CM3,
                                            number, None, f"{segment_label} volume"))
        measurements += [
            Measurement(f"{name}_mean_hu", DCM_ATTENUATION, mean, UCUM_HU, number, SCT_MEAN,
                        f"{segment_label} mean HU"),
            Measurement(f"{name}_median_hu", DCM_ATTENUATION, median, UCUM_HU, number,
                        SCT_MEDIAN, f"{segment_label} median HU"),
            Measurement(f"{name}_low_attenuation_percent", LOW_ATTENUATION_FRACTION,
                        low_fraction, UCUM_PERCENT, number, None,
                        f"{segment_label} -29..29 HU fraction"),
        ]
        classes[name] = entry

    summary: dict[str, Any] = {
        "protocol": PROTOCOL_NAME,
        "algorithm": algorithm.name,
        "algorithm_version": algorithm.version,
        "validation_status": algorithm.validation_status.value,
        "disclaimer": RESEARCH_USE_DISCLAIMER,
        "single_slice": single,
        "classes": classes,
        "hu_bands": {"muscle": list(p.muscle_hu), "low_attenuation": list(p.low_attenuation_hu)},
        "height_m": height_m,
        "contrast": context.contrast,
        "kvp": context.kvp,
        "slice_thickness_mm": context.slice_thickness_mm,
        "spacing_mm": [round(float(s), 4) for s in volume.spacing_mm],
    }
    resp = np.isin(label_box, RESPIRATORY_LABELS)
    all_muscle = label_box > 0
    summary["respiratory_muscle_slab"] = _slab(volume, resp)
    summary["thoracic_muscle_slab"] = _slab(volume, all_muscle)
    if not single:
        resp_cm3 = float(resp.sum() * voxel_cm3)
        total_cm3 = float(all_muscle.sum() * voxel_cm3)
        summary["total_respiratory_muscle_cm3"] = round(resp_cm3, 2)
        summary["total_thoracic_muscle_cm3"] = round(total_cm3, 2)
        measurements += [
            Measurement("total_respiratory_muscle_cm3", TOTAL_RESPIRATORY_VOLUME, resp_cm3,
                        UCUM_CM3, None, None, "Respiratory muscle volume"),
            Measurement("total_thoracic_muscle_cm3", TOTAL_THORACIC_VOLUME, total_cm3, UCUM_CM3,
                        None, None, "Thoracic skeletal muscle volume"),
        ]
        slab = summary["thoracic_muscle_slab"]
        if slab is not None:
            measurements.append(Measurement("measured_slab_length_mm", SLAB_LENGTH,
                                            float(slab["length_mm"]), UCUM_MM, None, None,
                                            "Slab length"))
        if height_m is not None:
            index = resp_cm3 / height_m**2
            summary["respiratory_muscle_index_cm3_per_m2"] = round(index, 2)
            measurements.append(Measurement("respiratory_muscle_index_cm3_per_m2",
                                            RESPIRATORY_INDEX, index, UCUM_CM3_PER_M2, None,
                                            None, "Respiratory muscle volume / height2"))
        else:
            summary["respiratory_muscle_index_cm3_per_m2"] = None
            warnings.append("Patient's Size (0010,1020) missing: volume not indexed to height²")
    else:
        summary["total_thoracic_muscle_cm2"] = round(float(all_muscle.sum() * pixel_cm2), 2)

    # Single-slice measures at T4 (pectoralis) and T12 (erector spinae).
    slice_measures: dict[str, Any] = {}
    for level, key, short, numbers in (
        ("T4", "pma_t4", "PMA", (LABEL_PECTORALIS_RIGHT, LABEL_PECTORALIS_LEFT)),
        ("T12", "esma_t12", "ESMA", (LABEL_ERECTOR_SPINAE_RIGHT, LABEL_ERECTOR_SPINAE_LEFT)),
    ):
        k = None if levels is None else (levels.t4 if level == "T4" else levels.t12)
        if k is None:
            slice_measures[key] = None
            if not single:
                reason = next((e for e in (levels.evidence if levels else [])
                               if e.startswith(level + " ")), "not identified")
                warnings.append(f"{short} not measured: mid-{level} {reason}"
                                if reason == "not identified" else
                                f"{short} not measured: {reason}")
            continue
        lab_k = label_map[k]
        both = np.isin(lab_k, numbers)
        area = float(both.sum() * pixel_cm2)
        mean = float(hu[k][both].mean()) if both.any() else float("nan")
        source = volume.source_frame_of_slice(k)
        entry = {
            "slice_index": int(k),
            "source_sop_instance_uid": (str(volume.datasets[source].SOPInstanceUID)
                                        if source is not None else None),
            "area_cm2": round(area, 2),
            "mean_hu": round(mean, 2) if both.any() else None,
            "slab": _slab(volume, (np.arange(hu.shape[0]) == k)[:, None, None]),
        }
        code = short + "-" + level
        # Totals (right + left) in the summary group: no standard concept for "PMA at T4".
        measurements.append(
            Measurement(f"{key}_cm2", _slice_concept(code, f"{short} at mid-{level}"), area,
                        UCUM_CM2, None, None, f"{short} {level}"))
        if both.any():
            measurements.append(Measurement(
                f"{key}_mean_hu", _slice_concept(code + "-HU", f"{short} mean HU at mid-{level}"),
                mean, UCUM_HU, None, None, f"{short} {level} HU"))
        # Per side: standard Area and mean attenuation of that segment on that slice (a planar
        # ROI group referencing the SEG frame of the slice).
        for side, number in zip(("right", "left"), numbers, strict=True):
            side_mask = lab_k == number
            side_area = float(side_mask.sum() * pixel_cm2)
            side_mean = float(hu[k][side_mask].mean()) if side_mask.any() else None
            entry[f"area_{side}_cm2"] = round(side_area, 2)
            entry[f"mean_hu_{side}"] = None if side_mean is None else round(side_mean, 2)
            if side_mean is None or source is None:
                continue
            measurements += [
                Measurement(f"{key}_{side}_cm2", SCT_AREA, side_area, UCUM_CM2, number, None,
                            f"{short} {level} {side}", frame_index=int(source)),
                Measurement(f"{key}_{side}_mean_hu", DCM_ATTENUATION, side_mean, UCUM_HU,
                            number, SCT_MEAN, f"{short} {level} {side} HU",
                            frame_index=int(source)),
            ]
        slice_measures[key] = entry
    summary.update(slice_measures)
    if levels is not None:
        summary["levels"] = {"t4_slice": levels.t4, "t12_slice": levels.t12,
                             "method": levels.method, "anchor": levels.anchor,
                             "confidence": round(levels.confidence, 2),
                             "rib_bearing_vertebrae": [
                                 {"label": name or None, "rib_slice": k}
                                 for name, k in levels.rib_levels],
                             "evidence": list(levels.evidence)}
        if levels.confidence < 0.9 and (levels.t4 is not None or levels.t12 is not None):
            warnings.append(f"vertebral levels not verified ({levels.method}, confidence "
                            f"{levels.confidence:.1f}); check T4/T12 on the key image")
    if not single and (counts[LABEL_DIAPHRAGM_RIGHT] or counts[LABEL_DIAPHRAGM_LEFT]):
        warnings.append("diaphragm: lower-confidence estimate (a sheet under the lung bases; "
                        "no HU contrast against liver, spleen and heart)")
    if anatomy is not None and anatomy.body_touches_edge:
        warnings.append("the body touches the edges of the image: the field of view cuts the "
                        "body, so areas and volumes of muscles at the edges are lower bounds")

    # Coverage of the thorax.
    coverage: dict[str, Any] = {}
    if anatomy is not None:
        k0, k1 = anatomy.slab
        n = hu.shape[0]
        coverage = {
            "lung_slab": _slab(volume, anatomy.lungs),
            "lung_apices_included": bool(k1 < n - 1) or single,
            "lung_apex_slice": int(k1),
            "lung_bases_included": bool(k0 > 0) or single,
            "rotation_deg": round(anatomy.rotation_deg, 1),
            "evidence": list(anatomy.evidence),
        }
        if not single and k1 >= n - 1:
            warnings.append("the lung apices reach the top of the series: upper-chest muscle "
                            "volumes are incomplete")
        if not single and k0 <= 0:
            warnings.append("the lung bases reach the bottom of the series: the diaphragm and "
                            "lower-chest muscle volumes are incomplete")
    summary["coverage"] = coverage
    if single:
        warnings.append(
            "single slice: volumes, the T4/T12 levels, the intercostal muscles (which need the "
            "neighbouring slices to find the ribs above and below) and the diaphragm could not "
            "be measured; intercostal muscle on this slice is counted with the superficial "
            "muscle. Areas are of this slice only, level unknown"
        )
    if summary["contrast"]:
        warnings.append("contrast agent recorded: muscle HU is higher than on an unenhanced scan")
    return PipelineResult(
        protocol=PROTOCOL_NAME,
        algorithm=algorithm,
        source_datasets=list(volume.datasets),
        segments=list(SEGMENTS),
        label_map=volume.to_source_frames(label_map),
        measurements=measurements,
        summary=summary,
        warnings=warnings,
        key_image=_key_image(volume, label_map, levels, summary, algorithm),
    )


# ------------------------------------------------------------------------------------------
# Key image.
# ------------------------------------------------------------------------------------------


def _resample_nn(image: np.ndarray, spacing: tuple[float, float], target_mm: float
                 ) -> np.ndarray:
    rows = max(1, round(image.shape[0] * spacing[0] / target_mm))
    cols = max(1, round(image.shape[1] * spacing[1] / target_mm))
    ri = np.minimum((np.arange(rows) * image.shape[0] / rows).astype(int), image.shape[0] - 1)
    ci = np.minimum((np.arange(cols) * image.shape[1] / cols).astype(int), image.shape[1] - 1)
    return image[np.ix_(ri, ci)]


#: The sagittal key-image panel runs this far to the patient's right of the column centre, mm:
#: through the vertebral bodies (25-45 mm wide) beside the spinous processes, so it shows the
#: bodies to count, the deep erector spinae and the anterior chest wall beside the sternum.
KEY_SAGITTAL_OFFSET_MM = 8.0


@dataclass
class KeyMark:
    """Text drawn on the key image (composite pixel coordinates before display scaling).

    Attributes
    ----------
    row, col: float
        Anchor of the text (left end of a line mark).
    text: str
        The text.
    line_to_col: float | None
        Where given, a horizontal line from ``col`` to this column is drawn at ``row``.
    """

    row: float
    col: float
    text: str
    line_to_col: float | None = None


def _body_box(inside: np.ndarray, margin: int) -> tuple[slice, slice]:
    rows, cols = np.flatnonzero(inside.any(axis=1)), np.flatnonzero(inside.any(axis=0))
    if len(rows) == 0:
        return slice(None), slice(None)
    return (slice(max(0, rows[0] - margin), rows[-1] + margin + 1),
            slice(max(0, cols[0] - margin), cols[-1] + margin + 1))


def compose_key_panels(
    volume: CTVolume, label_map: np.ndarray, slices: Sequence[tuple[str, int | None]],
    levels: LevelSlices | None = None,
) -> tuple[np.ndarray, np.ndarray, float, list[KeyMark]]:
    """Sagittal slice through the costovertebral joints plus axial slices, side by side, at one
    pixel spacing.

    The sagittal panel (head up, anterior on the left) follows the vertebral column
    (:attr:`LevelSlices.column_rc`) :data:`KEY_SAGITTAL_OFFSET_MM` to the patient's right, with
    the labels of that plane and a mark at the middle of every named thoracic vertebra; the
    levels of the axial panels are drawn as lines across it. Axial panels are canonical slices
    (anterior up, patient's right on the image left), cropped to the body.

    Parameters
    ----------
    volume:
        Canonical CT volume.
    label_map:
        ``(slices, rows, columns)`` labels.
    slices:
        (title, canonical slice) of the axial panels; ``None`` slices are skipped.
    levels:
        Thoracic levels and column track (``None``: sagittal through the image's middle column,
        no marks).

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray, float, list[KeyMark]]
        HU image, label image (same 2-D shape), their square pixel spacing in mm, and the
        marks to draw.
    """
    dz, dr, dc = volume.spacing_mm
    target = float(min(dr, dc))
    hu = volume.hu
    n = hu.shape[0]
    panels: list[tuple[np.ndarray, np.ndarray, list[KeyMark]]] = []
    axial_levels = [(title, k) for title, k in slices if k is not None]
    if n > 1:
        track = levels.column_rc if levels is not None and levels.column_rc is not None else None
        ks = np.arange(n)
        if track is not None and (~np.isnan(track[:, 1])).any():
            known = ~np.isnan(track[:, 1])
            col_k = np.interp(ks, ks[known], track[known, 1])
            row_k = np.interp(ks, ks[known], track[known, 0])
        else:
            col_k = np.full(n, hu.shape[2] / 2.0)
            row_k = np.full(n, np.nan)
        cols = np.clip(np.round(col_k - KEY_SAGITTAL_OFFSET_MM / dc).astype(int), 0,
                       hu.shape[2] - 1)
        sag_hu = hu[ks, :, cols][::-1]  # (slices head first, rows)
        sag_lab = label_map[ks, :, cols][::-1]
        # Rows of the body (not the table) on the slices of the axial panels and the middle.
        sample = [k for _, k in axial_levels] + [n // 2]
        outline = np.zeros(hu.shape[1:], dtype=bool)
        for k in sample:
            outline |= body_mask_slice(hu[k], (dr, dc))
        box_r, _ = _body_box(outline, round(5.0 / dr))
        sag_hu, sag_lab = sag_hu[:, box_r], sag_lab[:, box_r]
        r_start = box_r.start or 0
        image = _resample_nn(sag_hu, (dz, dr), target)
        labels = _resample_nn(sag_lab.astype(np.uint8), (dz, dr), target)
        to_row = image.shape[0] / n
        to_col = image.shape[1] / sag_hu.shape[1]
        marks: list[KeyMark] = []
        if levels is not None:
            for name, k in sorted(levels.mid_slices.items(), key=lambda item: -item[1]):
                if np.isnan(row_k[k]):
                    continue
                y = (n - 1 - k + 0.5) * to_row
                # The track runs along the back of the vertebral bodies: the mark sits in front
                # of them (about a body's depth, 35 mm, ahead).
                x = (row_k[k] - r_start - 36.0 / dr) * to_col
                marks.append(KeyMark(y, max(0.0, x - 40.0), name, line_to_col=x + 6.0))
            for title, k in axial_levels:
                y = (n - 1 - k + 0.5) * to_row
                marks.append(KeyMark(y, 0.0, "", line_to_col=float(image.shape[1] - 1)))
        panels.append((image, labels, marks))
    for title, k in axial_levels:
        box = _body_box(body_mask_slice(hu[k], (dr, dc)), round(5.0 / dr))
        image = _resample_nn(hu[k][box], (dr, dc), target)
        labels = _resample_nn(label_map[k][box], (dr, dc), target)
        panels.append((image, labels, [KeyMark(4.0, 4.0, title)]))
    height = max(p[0].shape[0] for p in panels)
    gap = 4
    width = sum(p[0].shape[1] for p in panels) + gap * (len(panels) - 1)
    out_hu = np.full((height, width), -1024.0, dtype=np.float32)
    out_lab = np.zeros((height, width), dtype=np.uint8)
    out_marks: list[KeyMark] = []
    x = 0
    for image, labels, marks in panels:
        top = (height - image.shape[0]) // 2
        out_hu[top : top + image.shape[0], x : x + image.shape[1]] = image
        out_lab[top : top + image.shape[0], x : x + image.shape[1]] = labels
        out_marks += [KeyMark(m.row + top, m.col + x, m.text,
                              None if m.line_to_col is None else m.line_to_col + x)
                      for m in marks]
        x += image.shape[1] + gap
    return out_hu, out_lab, target, out_marks


def _key_image(
    volume: CTVolume, label_map: np.ndarray, levels: LevelSlices | None,
    summary: dict[str, Any], algorithm: AlgorithmInfo,
) -> KeyImageSpec | None:
    """Describe the key image: sagittal and axial panels side by side (one composite panel),
    level marks, the measurements and the algorithm; drawn by :mod:`pipelines.outputs`."""
    t4 = levels.t4 if levels else None
    t12 = levels.t12 if levels else None
    single = volume.hu.shape[0] == 1
    axial = [("mid-T4", t4), ("mid-T12", t12)] if not single else [("axial", 0)]
    image_hu, image_lab, spacing, marks = compose_key_panels(volume, label_map, axial, levels)
    classes = summary["classes"]
    # Names, units and precision from the measurement table.
    rows = table_rows(MEASUREMENTS)
    size = "area_cm2" if volume.is_single_slice else "volume_cm3"

    def pair(key: str, field: str) -> str:
        """Right/left values of a class pair, e.g. ``"243.1/220.4 cm3"``."""
        values = [number_text(rows[f"{key}_{side}_{field}"],
                              classes.get(f"{key}_{side}", {}).get(field), missing="-")
                  for side in ("right", "left")]
        return f"{values[0]}/{values[1]} {ascii_unit(rows[f'{key}_right_{field}'].unit)}"

    if single:
        lines = ["Single axial slice, level unknown"]
    else:
        shown = [title for title, k in axial if k is not None]
        missing = [title for title, k in axial if k is None]
        lines = [
            f"Sagittal {KEY_SAGITTAL_OFFSET_MM:.0f} mm right of the spine (head up, anterior "
            "left), mid-vertebra marks T1-T12 as counted"
            + (f"; axial {', '.join(shown)} (blue dashed lines)" if shown else "")
            + (f"; {', '.join(missing)} not in view or not named" if missing else "")
        ]
        if levels is not None:
            lines.append(f"Levels: {levels.method}, confidence {levels.confidence:.1f}")
    for key, text in (("pectoralis", "Pectoralis"), ("erector_spinae", "Erector spinae"),
                      ("intercostal", "Intercostal"), ("diaphragm", "Diaphragm*")):
        lines.append(f"{text} R/L {pair(key, size)}, {pair(key, 'mean_hu')}")
    if not volume.is_single_slice:
        lines.append(measurements_line(
            MEASUREMENTS, summary, ("total_respiratory_muscle_cm3", "total_thoracic_muscle_cm3",
                                    "respiratory_muscle_index_cm3_per_m2"), joiner="; "))
        for key in ("pma_t4", "esma_t12"):
            entry = summary.get(key)
            area = rows[f"{key}_cm2"]
            if not entry:
                lines.append(f"{short_name(area)}: not measured")
                continue
            right, left = rows[f"{key}_right_cm2"], rows[f"{key}_left_cm2"]
            lines.append(
                f"{measurement_text(area, entry['area_cm2'])} "
                f"({short_name(right)} {number_text(right, entry['area_right_cm2'])}, "
                f"{short_name(left)} {number_text(left, entry['area_left_cm2'])}), "
                f"{value_text(rows[f'{key}_mean_hu'], entry['mean_hu'], missing='-')}")
    lines.append("*diaphragm: lower confidence. "
                 f"{algorithm.name} {algorithm.version} ({algorithm.validation_status.value})")
    # Level marks: yellow text with a solid leader line; lines without text (the levels of
    # the axial panels across the sagittal one) dashed blue.
    annotations = tuple(
        KeyImageAnnotation(
            mark.row, mark.col, mark.text, mark.line_to_col,
            colour=(0, 200, 255) if mark.line_to_col is not None and not mark.text
            else (255, 255, 0),
            dashed=mark.line_to_col is not None and not mark.text,
        )
        for mark in marks
    )
    panel = KeyImagePanel(image=image_hu, pixel_spacing_mm=(spacing, spacing),
                          window_hu=SOFT_TISSUE_WINDOW_HU, labels=image_lab,
                          annotations=annotations)
    source = None
    for k in (t4, t12, 0):
        if k is not None:
            source = volume.source_frame_of_slice(k)
            if source is not None:
                break
    return KeyImageSpec(panels=(panel,), segments=tuple(SEGMENTS), text_lines=tuple(lines),
                        source_index=int(source or 0), patient_orientation=None)


# ------------------------------------------------------------------------------------------
# Entry points.
# ------------------------------------------------------------------------------------------


def run_chest_respiratory_muscle(
    volume: CTVolume,
    params: ChestParameters | None = None,
    model: LearnedModel | None = None,
    context: PatientContext | None = None,
) -> PipelineResult:
    """Run the protocol on a canonical CT volume.

    Parameters
    ----------
    volume:
        Canonical CT volume (:func:`pipelines.volume.load_ct_volume`), axial, ideally from the lung
        apices to below the diaphragm; a single axial slice is measured as areas with a statement
        of what could not be measured.
    params:
        Method parameters.
    model:
        A trained network (``model.predict(hu, spacing_mm) -> label_map``, numbering
        :data:`LABELS`); ``None`` runs the reference method.
    context:
        Patient and acquisition facts from the core (:class:`pipelines.protocol.PatientContext`);
        ``None`` reads them from ``volume.datasets``.

    Returns
    -------
    PipelineResult

    Raises
    ------
    UnsupportedInputError
        Not CT, not axial, no lungs, or a lung slab too short.
    PipelineError
        No spine to tell left from right, or no muscle found.
    """
    p = params or ChestParameters()
    modalities = {str(ds.get("Modality", "")) for ds in volume.datasets}
    if modalities != {"CT"}:
        raise UnsupportedInputError(
            f"chest respiratory muscles need CT images, got Modality {sorted(modalities)}"
        )
    if not volume.is_single_slice and not volume.slice_axis_is_axial:
        raise UnsupportedInputError(
            "the series is not axial (sagittal or coronal reconstruction); send the axial series"
        )
    if volume.hu.shape[0] == 1 and not volume.is_single_slice:
        raise UnsupportedInputError("the series has one axial slice position; send the volume")
    if volume.is_single_slice and volume.hu.shape[0] != 1:
        raise UnsupportedInputError("the single image is not an axial slice")
    warnings = list(volume.warnings)
    labels, anatomy = segment_reference(volume.hu, volume.spacing_mm, p)
    algorithm = ALGORITHM
    if model is not None:
        predicted = np.asarray(model.predict(volume.hu, volume.spacing_mm))
        if predicted.shape != volume.hu.shape:
            raise PipelineError(
                f"model {model.algorithm.name} returned shape {predicted.shape}, expected "
                f"{volume.hu.shape}"
            )
        labels = predicted.astype(np.uint8)
        algorithm = model.algorithm
    levels = None if volume.is_single_slice else levels_from_thorax(anatomy.thoracic,
                                                                     anatomy.column_offset_rc)
    result = measure(volume, labels, p, algorithm=algorithm, levels=levels, anatomy=anatomy,
                     warnings=warnings, context=context)
    for message in result.warnings:
        logger.info("chest respiratory muscle: %s", message)
    return result


def run_from_datasets(
    datasets: Sequence[Dataset], params: Mapping[str, Any], model: LearnedModel | None = None
) -> PipelineResult:
    """Registry entry point: datasets of one series (with pixel data) → result.

    Parameters
    ----------
    datasets:
        The series' datasets, any order.
    params:
        Plain mapping of :class:`ChestParameters` fields (unknown keys → :class:`ConfigError`).
    model:
        Optional trained network (see module docstring).

    Returns
    -------
    PipelineResult

    Raises
    ------
    ConfigError, UnsupportedInputError, InvalidInputError, PipelineError
    """
    parameters = ChestParameters.from_mapping(params)
    volume = load_ct_volume(datasets)
    return run_chest_respiratory_muscle(volume, parameters, model=model)
