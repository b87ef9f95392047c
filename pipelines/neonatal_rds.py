"""Neonatal respiratory distress syndrome (RDS) on a frontal chest radiograph: lung fields.

Protocol ``neonatal-rds``. Segments the right and left lung fields on one frontal CR/DX chest
radiograph, measures them, and, only when a trained classifier is installed, reports the model's
RDS probability. Without a model the SR says that **the RDS classification was not performed**
and reports the lung-field measurements and a transparent lung-opacity index instead. No
RDS / non-RDS label is ever written without a model whose validation status is ``validated``.

Source study (seed; publication not found, numbers unverified, ``shared/reference/clinical.md``
§3): U-Net with an ImageNet-pretrained EfficientNet-B5 encoder for the lung fields, so that tubes,
wires and other devices outside the lungs cannot drive the decision; post-processing with a
median filter on the predicted mask and, when the predicted lung area is implausibly small
(< 30,000 pixels), averaging the predictions over the image rotated by +90° and -90° (mIoU 0.834
-> 0.913); then EfficientNet-B0/B3/B5 on the lung region for RDS vs non-RDS (accuracy about 0.85
on 632 images). Signs of RDS: diffuse fine reticulogranular ("ground-glass") opacity and air
bronchograms (GPnotebook).

Image convention
----------------
:mod:`pipelines.radiograph`: Modality LUT, VOI LUT/window, rescale to 0..1, MONOCHROME1 inverted
after the LUTs, so **0 = black (aerated lung dark), 1 = white**. Pixels stay as stored; Patient
Orientation (0020,0020) decides which lung is the patient's right (``L`` as first value, the
usual display, puts the patient's right on the image left; ``R`` the opposite; missing: the
usual display is assumed and a warning given).

Label map
---------
:data:`LABEL_BACKGROUND` 0, :data:`LABEL_RIGHT_LUNG` 1 (patient's right), :data:`LABEL_LEFT_LUNG`
2, on the source pixel grid ``(rows, columns)``.

Model interface (:class:`pipelines.types.LearnedModel`, built by :mod:`models`)
------------------------------------------------------------------------------
``model.predict(image, pixel_spacing_mm) -> label_map``
    ``image``: ``(rows, columns)`` float32 in 0..1 as above (source grid, any size);
    ``pixel_spacing_mm``: ``(row_mm, column_mm)`` or ``None`` when unknown. Returns a ``(rows,
    columns)`` uint8 label map in the numbering above (the network's own resizing, e.g. to its
    input size, happens inside ``predict``). Intended network: MONAI ``FlexibleUNet`` with an
    ``efficientnet-b5`` backbone.
``model.classify(image, lung_mask) -> float``
    ``image`` as above; ``lung_mask``: ``(rows, columns)`` bool, both lungs. Returns the
    probability of RDS in 0..1. Intended network: MONAI ``EfficientNetBN`` on the lung region.

Reference method (no trained weights; :func:`segment_reference`)
----------------------------------------------------------------
The aerated lung field is the dark valley that has brighter tissue on both sides along each
row: the chest wall laterally, the mediastinum (spine, heart, great vessels) medially. That
holds at any age, size, exposure and processing, with or without pixel spacing, and needs no
absolute grey level. On a working copy whose longest side is ``working_size_px`` (default 512),
with W the thorax width (median body width over rows 30-60 %):

1. *Normalisation*: grey levels rescaled between the 1st and 99th percentiles (brightness and
   contrast drop out); body = not the dark regions touching the image border (Otsu).
2. *Device and rib suppression*: grey-level opening with a disk of radius 0.02 W (removes
   bright structures narrower than about 4 % of the thorax: tubes, catheters, ECG wires,
   ribs, markers and text), then a Gaussian of sigma 0.01 W.
3. *Valley depth*: row-wise black top-hat, a grey closing with a horizontal line of 0.6 W
   (longer than one lung is wide) minus the image, on the image padded with black at both
   sides, so that regions open to the image edge (air beside the neck, arms) are not filled
   (:func:`_valley_depth`).
4. *Lung candidates*: hysteresis threshold of the depth (Otsu's threshold; half of it for
   connected pixels), inside the body, cut at the mediastinum (the brightest column band in
   the middle 40 % of the body), opened by 0.02 W to cut thin bridges.
5. *Anatomical constraints*: components under 1 % of the image are dropped, and so are those
   that reach the top edge lying mostly in the top quarter (neck, shoulders) or the bottom edge
   lying mostly in the bottom quarter (abdomen). On each side of the mediastinum the largest
   component is the lung; other components within 0.08 W of it and at least 5 % of its size
   are fragments of the same field (an opacity split it; the *lung field fragmented* flag is
   set whenever a side has more than one component).
6. *Edge placement*: within 0.04 W of the edge, a pixel belongs to the lung when it is darker
   than halfway between the lung's median and the median of the tissue ring around it (the
   full-width-at-half-maximum rule; the depth threshold alone puts the edge where the lung
   has already brightened towards the chest wall); then a closing by 0.03 W and hole filling
   (electrodes, nodules, catheters). Each mask is kept on its side of the mediastinum.
7. The seed's *median filter* (``median_filter_px``, default 5 pixels at working size; the seed's
   kernel size is not known).
8. The seed's *small-area fallback*: when both lungs together cover less than
   ``small_area_fraction`` of the working image (default 0.114 = 30,000 px / 512², the seed's
   30,000 pixels read as pixels of a 512 x 512 network input — an assumption), the same method is
   run on the image rotated +90° and -90°, the three lung indicator maps (rotated back) are
   averaged and thresholded at 0.5; the result replaces the first one only if it is larger.
   Sides are then re-assigned by the mediastinum.

The working-size label map is brought back to the source grid by linear interpolation of each
lung's indicator (threshold 0.5). The same post-processing (8, 9) is applied to a network's label
map, on the source grid.

Measurements
------------
Per lung: area (cm², when a pixel spacing is known — see :mod:`pipelines.radiograph` for which
attribute is used; the SR states it), area as a percentage of the image, mean normalised
intensity (0..1). Whole report: total area, left/right area ratio, the lung-opacity index and,
with a model, the RDS probability.

**Lung-opacity index** (LOI, this project's definition, not a published score)::

    LOI = median(I inside both lungs) / median(I in the soft-tissue ring around the lungs)

on the 0..1 display image ``I`` (VOI applied), the ring being the body pixels between 2 % and
4 % of the thorax width outside the lung masks. Aerated lungs give values well below 1 (about
0.35 on the phantom); a ground-glass lung moves towards 1 (about 0.6), a white-out lung to about
1. It depends on exposure, processing (the VOI LUT) and the patient; it is not comparable between
sites and is not a diagnostic threshold.

Quality flags: lungs cut off by the field of view (a lung touches the image edge), suspected
patient rotation (mediastinum off the thorax midline by more than 10 % of the thorax width),
rotation fallback applied (image rotated by 90°), lung field fragmented (step 5), lung fields
asymmetric (left/right area ratio outside ``left_right_area_ratio_range``, default 0.6-1.4, or
one field missing), total lung area implausible for a neonate
(outside ``neonate_total_area_cm2``) and for an adult (outside ``adult_total_area_cm2``). The
plausible ranges are this project's estimates (no published reference found, clinical.md §3).

Limits: the reference method was checked on the synthetic phantom of
:mod:`training.phantoms.chest_radiograph`, and by eye on eight real paediatric radiographs
(children aged 1-5, Kermany et al., Cell 2018) and two real *adult* PA radiographs (SIIM/NIH,
pydicom-data RG1); its constants are fractions of the thorax width chosen for anatomy, not
fitted to those images. Neonatal anatomy (large thymus, small lungs, supine AP films, skin folds,
incubator artefacts) and white-out lungs (RDS stage IV) are outside what it was checked on.
Research use only, not for diagnosis.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from pydicom.dataset import Dataset
from scipy import ndimage
from skimage.filters import apply_hysteresis_threshold, threshold_otsu
from skimage.morphology import disk
from skimage.transform import resize

from pipelines.body_region import guess_radiograph_region
from pipelines.errors import (
    ConfigError,
    InvalidSeriesError,
    PipelineError,
    UnsupportedInputError,
)
from pipelines.measurement_tables.neonatal_rds import MEASUREMENTS
from pipelines.measurement_text import measurement_text, measurements_line, table_rows
from pipelines.parameters.neonatal_rds import NeonatalRDSParameters  # the parameter model lives with the spec
from pipelines.protocol import PatientContext
from pipelines.radiograph import Radiograph, load_projection_radiograph
from pipelines.types import (
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    SCT_ANATOMICAL_STRUCTURE,
    SCT_AREA,
    SCT_MEAN,
    SCT_NO,
    SCT_RATIO,
    SCT_YES,
    UCUM_CM2,
    UCUM_NO_UNITS,
    UCUM_PERCENT,
    UCUM_RATIO,
    AlgorithmInfo,
    CodedTerm,
    KeyImagePanel,
    KeyImageSpec,
    LearnedModel,
    Measurement,
    PipelineResult,
    QualitativeFinding,
    SegmentDefinition,
    ValidationStatus,
)

logger = logging.getLogger(__name__)

PROTOCOL_NAME = "neonatal-rds"

ALGORITHM = AlgorithmInfo(
    name="ainode-rds-lung-reference",
    version="0.2.0",
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source=(
        "Rule-based lung fields (row-wise valleys between chest wall and mediastinum, "
        "anatomical constraints, half-contrast edges, median filter and +-90 degree rotation "
        "fallback after the neonatal RDS seed study)"
    ),
)

# Reference-method constants: fractions of the thorax width chosen for anatomy (see the module
# docstring), checked on the phantom and real paediatric and adult films, not fitted to them.
#: Step 2: radius of the grey-level opening that removes ribs, tubes and wires, and sigma of the
#: Gaussian smoothing after it (fractions of the thorax width).
OPENING_FRACTION = 0.02
SMOOTHING_FRACTION = 0.01
#: Step 3: length of the row-wise closing (fraction of the thorax width); it must exceed the
#: width of one lung field (about 0.35-0.45 of the thorax on a frontal film).
VALLEY_LENGTH_FRACTION = 0.6
#: Step 4: hysteresis thresholds on the valley depth: Otsu's threshold, and this fraction of it
#: for the pixels connected to those above it.
HYSTERESIS_LOW_FRACTION = 0.5
#: Step 5: smallest lung component (fraction of the image), and the largest gap between the main
#: part of a lung field and a fragment that joins it (fraction of the thorax width).
MIN_COMPONENT_FRACTION = 0.01
FRAGMENT_GAP_FRACTION = 0.08
#: A fragment may not reach higher than the other lung's apex by more than this fraction of
#: the thorax width (both apices lie at about the same height, a 10-degree tilt included).
FRAGMENT_APEX_FRACTION = 0.08
#: Step 6: edge placement: within this distance of a lung field's edge (fraction of the thorax
#: width, inside and outside), pixels darker than the level this fraction of the way from the
#: lung's median to the surrounding tissue's median are lung (0.5: half contrast).
EDGE_BAND_FRACTION = 0.06
EDGE_LEVEL_FRACTION = 0.5
#: Step 6: closing radius (fraction of the thorax width).
CLOSING_FRACTION = 0.03

#: Label values of the lung label map.
LABEL_BACKGROUND = 0
LABEL_RIGHT_LUNG = 1
LABEL_LEFT_LUNG = 2

_LUNG = CodedTerm("39607008", "SCT", "Lung")
_RIGHT = CodedTerm("24028007", "SCT", "Right")
_LEFT = CodedTerm("7771000", "SCT", "Left")

#: SEG segments: Anatomical Structure / Lung (CID 7150 / 7155) with the laterality (Right
#: 24028007 / Left 7771000, CID 244) as Segmented Property Type Modifier in the SEG and as the
#: finding site's laterality in the SR; DICOM has no pre-coordinated right/left lung concept
#: (clinical.md §5).
SEGMENTS: list[SegmentDefinition] = [
    SegmentDefinition(
        number=LABEL_RIGHT_LUNG,
        label="Right lung",
        description="Right lung field (projection)",
        category=SCT_ANATOMICAL_STRUCTURE,
        property_type=_LUNG,
        anatomic_region=None,
        laterality=_RIGHT,
        tracking_id="right lung field",
        display_rgb=(240, 80, 60),
    ),
    SegmentDefinition(
        number=LABEL_LEFT_LUNG,
        label="Left lung",
        description="Left lung field (projection)",
        category=SCT_ANATOMICAL_STRUCTURE,
        property_type=_LUNG,
        anatomic_region=None,
        laterality=_LEFT,
        tracking_id="left lung field",
        display_rgb=(60, 150, 255),
    ),
]

#: Private concepts (no standard concept exists for these, clinical.md §5).
LUNG_OPACITY_INDEX = CodedTerm("LOI", PRIVATE_SCHEME, "Lung opacity index")
NORMALISED_INTENSITY = CodedTerm("NORMINT", PRIVATE_SCHEME, "Normalised image intensity")
AREA_FRACTION = CodedTerm("AREAFRAC", PRIVATE_SCHEME, "Area fraction of image")
RDS_PROBABILITY = CodedTerm("RDSPROB", PRIVATE_SCHEME, "Probability of RDS")
RDS_CLASSIFICATION = CodedTerm("RDSCLASS", PRIVATE_SCHEME, "RDS classification")
RDS_CLASSIFICATION_PERFORMED = CodedTerm("RDSDONE", PRIVATE_SCHEME, "RDS classification performed")
RDS_PRESENT = CodedTerm("RDS", PRIVATE_SCHEME, "RDS")
RDS_ABSENT = CodedTerm("NORDS", PRIVATE_SCHEME, "No RDS")
FLAG_CUT_OFF = CodedTerm("LUNGCUT", PRIVATE_SCHEME, "Lungs cut off by field of view")
FLAG_ROTATION = CodedTerm("PTROT", PRIVATE_SCHEME, "Patient rotation suspected")
FLAG_ROTATED_IMAGE = CodedTerm("ROT90", PRIVATE_SCHEME, "Rotation fallback applied")
FLAG_FRAGMENTED = CodedTerm("LUNGFRAG", PRIVATE_SCHEME, "Lung field fragmented")
FLAG_ASYMMETRIC = CodedTerm("LUNGASYM", PRIVATE_SCHEME, "Lung fields asymmetric")
FLAG_NEONATE_IMPLAUSIBLE = CodedTerm(
    "AREANEO", PRIVATE_SCHEME, "Lung area implausible for a neonate"
)
FLAG_ADULT_IMPLAUSIBLE = CodedTerm(
    "AREAADULT", PRIVATE_SCHEME, "Lung area implausible for an adult"
)
#: Procedure reported (TID 1500): the registry's code, Plain radiography (PS3.16 CID 10005).
PROCEDURE = CodedTerm("168537006", "SCT", "Plain radiography")

#: Body Part Examined (0018,0015) values accepted as a chest (PS3.16 Annex L defined terms and
#: the spellings the default routing rules accept, plus films that include the chest).
CHEST_BODY_PARTS = frozenset(
    {
        "CHEST",
        "THORAX",
        "THX",
        "LUNG",
        "LUNGS",
        "CHESTABDOMEN",
        "CHEST_ABDOMEN",
        "CHEST ABDOMEN",
        "BABYGRAM",
    }
)

#: Body Part Examined values that name another region: rejected without looking at the pixels.
#: Any other value (missing, UNKNOWN, OTHER, WHOLEBODY, TRUNK, a site's own term) is checked
#: with the pixel heuristic instead (tolerant when reading).
NON_CHEST_BODY_PARTS = frozenset(
    {
        "HEAD",
        "SKULL",
        "BRAIN",
        "NECK",
        "CSPINE",
        "LSPINE",
        "SSPINE",
        "SPINE",
        "ABDOMEN",
        "PELVIS",
        "HIP",
        "EXTREMITY",
        "ARM",
        "SHOULDER",
        "ELBOW",
        "HAND",
        "WRIST",
        "LEG",
        "KNEE",
        "ANKLE",
        "FOOT",
        "BREAST",
    }
)


@dataclass
class LungFields:
    """Lung-field segmentation on the source grid and what the method saw.

    Attributes
    ----------
    label_map: numpy.ndarray
        ``(rows, columns)`` uint8, numbering of :data:`LABEL_RIGHT_LUNG` / :data:`LABEL_LEFT_LUNG`.
    rotation_fallback_applied: bool
        Whether the ±90° rotation averaging replaced the first segmentation.
    fragmented: bool | None
        Whether the aerated field of a lung fell into several separate parts (opacities or
        overlying structures split it; its area is then less certain); ``None`` for a model.
    mediastinum_offset_fraction: float | None
        Signed offset of the mediastinum from the thorax midline / thorax width.
    thorax_width_fraction: float
        Thorax width as a fraction of the image width (working copy).
    notes: list[str]
        What the method noticed (for warnings).
    """

    label_map: np.ndarray
    rotation_fallback_applied: bool = False
    fragmented: bool | None = None
    mediastinum_offset_fraction: float | None = None
    thorax_width_fraction: float = 1.0
    notes: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------------------
# Reference segmentation
# --------------------------------------------------------------------------------------------


def _touches_border(region: tuple[slice, slice], shape: tuple[int, ...]) -> bool:
    return (
        region[0].start == 0
        or region[1].start == 0
        or region[0].stop == shape[0]
        or region[1].stop == shape[1]
    )


def _working_copy(image: np.ndarray, size: int) -> np.ndarray:
    scale = size / max(image.shape)
    if scale >= 1.0:
        return image.astype(np.float32)
    shape = (max(16, round(image.shape[0] * scale)), max(16, round(image.shape[1] * scale)))
    return resize(
        image.astype(np.float32), shape, order=1, anti_aliasing=True, preserve_range=True
    ).astype(np.float32)


@dataclass
class _Core:
    """Working-grid result of one pass of the reference method (image-left/right lungs)."""

    image_left: np.ndarray
    image_right: np.ndarray
    body: np.ndarray
    mediastinum_column: int
    thorax_width_px: float
    opened: np.ndarray
    fragmented: bool = False


def _dilate(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary dilation by a disk of ``radius`` pixels (Euclidean distance transform: fast for
    large disks)."""
    if not mask.any():
        return np.zeros_like(mask, dtype=bool)
    return np.asarray(ndimage.distance_transform_edt(~mask) <= radius, dtype=bool)


def _erode(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary erosion by a disk of ``radius`` pixels; outside the array counts as background."""
    padded = np.pad(mask, 1)
    return np.asarray(ndimage.distance_transform_edt(padded) > radius, dtype=bool)[1:-1, 1:-1]


def _close(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary closing by a disk; the array is padded so that the border does not erode."""
    pad = int(np.ceil(radius)) + 1
    padded = np.pad(mask, pad)
    closed = ~_dilate(~_dilate(padded, radius), radius)
    return closed[pad:-pad, pad:-pad]


def _open(mask: np.ndarray, radius: float) -> np.ndarray:
    """Binary opening by a disk."""
    return _dilate(_erode(mask, radius), radius)


def _body_mask(work: np.ndarray) -> np.ndarray:
    dark = work < threshold_otsu(work)
    labels, _ = ndimage.label(dark)
    outside = np.zeros_like(dark)
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is not None and _touches_border(region, work.shape):
            outside[region] |= labels[region] == index
    return np.asarray(ndimage.binary_fill_holes(~outside), dtype=bool)


def _valley_depth(smoothed: np.ndarray, length: int) -> np.ndarray:
    """Row-wise black top-hat: how much darker each pixel is than the bright rims around it.

    A grey-level closing along the rows with a line of ``length`` pixels fills every dark
    valley narrower than ``length`` that has brighter tissue on *both* sides (lung between chest
    wall and mediastinum) up to the lower of the two rims. The image is padded with black on
    both sides so that regions open to the image edge (air beside the neck, the arms) are not
    filled.

    Parameters
    ----------
    smoothed:
        ``(rows, columns)`` float image, 0 = black.
    length:
        Line length in pixels (longer than the widest lung).

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` float32, >= 0.
    """
    padded = np.pad(smoothed, ((0, 0), (length, length)), constant_values=0.0)
    closed = ndimage.grey_closing(padded, size=(1, length), mode="nearest")
    depth = (closed - padded)[:, length:-length]
    return np.clip(depth, 0.0, None).astype(np.float32)


def _mediastinum_column(smoothed: np.ndarray, body: np.ndarray, smooth_px: int) -> int:
    """Column of the mediastinum: the brightest column band in the middle 40 % of the body,
    rows 20-70 % of the image (spine, heart and great vessels)."""
    height, width = smoothed.shape
    columns = np.nonzero(body.any(axis=0))[0]
    c0, c1 = (int(columns.min()), int(columns.max())) if columns.size else (0, width - 1)
    band = slice(int(c0 + 0.3 * (c1 - c0)), int(c0 + 0.7 * (c1 - c0)) + 1)
    profile = ndimage.uniform_filter1d(
        smoothed[int(0.2 * height) : int(0.7 * height) + 1].mean(axis=0), max(3, smooth_px)
    )
    return band.start + int(np.argmax(profile[band]))


def _edge_at_half_contrast(
    mask: np.ndarray, picture: np.ndarray, body: np.ndarray, thorax_width: float
) -> np.ndarray:
    """Move a lung field's edge to the half-contrast level between its core and the tissue around.

    Within :data:`EDGE_BAND_FRACTION` of the thorax width of the current edge (inside and
    outside), a pixel belongs to the lung when it is darker than
    ``(median(core) + median(ring)) / 2`` (the full-width-at-half-maximum rule for an edge);
    the core (the mask eroded by the band) always does, and only pixels connected to it are
    kept. The ring is the body band between one and two band widths outside the mask. The
    valley-depth threshold places the edge where the lung has already brightened towards the
    chest wall, or (on sharp edges) a little outside; this puts it where the contrast is halved.
    """
    reach = max(1.0, EDGE_BAND_FRACTION * thorax_width)
    outside = ndimage.distance_transform_edt(~mask)
    inside = ndimage.distance_transform_edt(np.pad(mask, 1))[1:-1, 1:-1]
    ring = (outside > reach) & (outside <= 2 * reach) & body
    if ring.sum() < 10 or mask.sum() < 10:
        return mask
    lung_level = float(np.median(picture[mask]))
    level = lung_level + EDGE_LEVEL_FRACTION * (float(np.median(picture[ring])) - lung_level)
    dark = picture < level
    band = (mask & (inside <= reach)) | ((outside > 0) & (outside <= reach) & body)
    placed = (mask & (inside > reach)) | (band & dark)
    labels, _ = ndimage.label(placed)
    keep = np.unique(labels[mask & placed])
    return np.isin(labels, keep[keep > 0])


def _reference_core(work: np.ndarray) -> _Core:
    """One pass of steps 1-6 on the working image (0..1, 0 black)."""
    height, width = work.shape
    low, high = np.percentile(work, (1.0, 99.0))
    if high - low <= 1e-6:
        empty = np.zeros(work.shape, dtype=bool)
        return _Core(empty, empty.copy(), empty.copy(), width // 2, float(width), work)
    normed = np.clip((work - low) / (high - low), 0.0, 1.0).astype(np.float32)
    body = _body_mask(normed)
    widths = body[int(0.3 * height) : int(0.6 * height) + 1].sum(axis=1)
    thorax_width = float(np.median(widths)) if widths.size and widths.max() > 0 else float(width)
    thorax_width = max(thorax_width, 0.25 * width)
    r_open = max(1, round(OPENING_FRACTION * thorax_width))
    opened = ndimage.grey_opening(normed, footprint=disk(r_open))
    smoothed = ndimage.gaussian_filter(opened, max(0.5, SMOOTHING_FRACTION * thorax_width))
    depth = _valley_depth(smoothed, max(3, round(VALLEY_LENGTH_FRACTION * thorax_width)))
    empty = np.zeros_like(body)
    mediastinum = _mediastinum_column(smoothed, body, r_open)
    if not (depth > 0).any():
        return _Core(empty, empty.copy(), body, mediastinum, thorax_width, smoothed)
    threshold = float(threshold_otsu(depth))
    candidates = apply_hysteresis_threshold(
        depth, HYSTERESIS_LOW_FRACTION * threshold, threshold
    )
    # Lungs lie inside the body, and the two lungs never cross the mediastinum; an opening
    # cuts thin bridges (to the neck, the axillae, bowel gas).
    candidates &= body
    candidates[:, max(0, mediastinum - 1) : mediastinum + 2] = False
    candidates = _open(candidates, r_open)
    labels, _ = ndimage.label(candidates)
    regions = ndimage.find_objects(labels)
    sides: dict[str, list[tuple[int, int]]] = {"left": [], "right": []}
    for index, region in enumerate(regions, start=1):
        if region is None:
            continue
        component = labels[region] == index
        area = int(np.count_nonzero(component))
        if area < MIN_COMPONENT_FRACTION * height * width:
            continue
        # Lungs lie inside the thorax: a component that reaches the top edge with most of it
        # in the top quarter (neck, shoulders), or the bottom edge with most of it in the
        # bottom quarter (abdomen), is not a lung field.
        centre_row = (float(np.nonzero(component)[0].mean()) + region[0].start) / height
        if (region[0].start == 0 and centre_row < 0.25) or (
            region[0].stop == height and centre_row > 0.75
        ):
            continue
        side = "left" if region[1].stop <= mediastinum + 1 else "right"
        sides[side].append((area, index))

    r_close = max(1, round(CLOSING_FRACTION * thorax_width))
    tops = {}
    for side, found in sides.items():
        found.sort(reverse=True)
        if found:
            tops[side] = int(np.nonzero((labels == found[0][1]).any(axis=1))[0].min())
    masks = {}
    for side, found in sides.items():
        if not found:
            masks[side] = empty.copy()
            continue
        main_area, main_index = found[0]
        mask = labels == main_index
        distance = ndimage.distance_transform_edt(~mask)
        other = tops.get("right" if side == "left" else "left")
        for area, index in found[1:]:
            # Fragments of the same lung (an opacity or a rib splits the aerated field): close
            # to the main part, not tiny next to it, and not above the other lung's apex
            # (supraclavicular soft tissue, shoulder).
            part = labels == index
            near = float(distance[part].min()) <= FRAGMENT_GAP_FRACTION * thorax_width
            top = int(np.nonzero(part.any(axis=1))[0].min())
            below_apex = other is None or top >= other - FRAGMENT_APEX_FRACTION * thorax_width
            if near and below_apex and area >= 0.05 * main_area:
                mask |= part
        mask = _edge_at_half_contrast(mask, opened, body, thorax_width)
        mask = _close(mask, r_close)
        mask = np.asarray(ndimage.binary_fill_holes(mask), dtype=bool)
        if side == "left":
            mask[:, mediastinum:] = False
        else:
            mask[:, : mediastinum + 1] = False
        masks[side] = mask
    fragmented = any(len(found) > 1 for found in sides.values())
    return _Core(
        masks["left"], masks["right"], body, mediastinum, thorax_width, smoothed, fragmented
    )


def _side_labels(
    image_left: np.ndarray, image_right: np.ndarray, column_to_left: bool
) -> np.ndarray:
    """Label map from image-left/right masks; ``column_to_left``: columns run to patient left."""
    labels = np.zeros(image_left.shape, dtype=np.uint8)
    right_of_patient, left_of_patient = (
        (image_left, image_right) if column_to_left else (image_right, image_left)
    )
    labels[right_of_patient] = LABEL_RIGHT_LUNG
    labels[left_of_patient & (labels == 0)] = LABEL_LEFT_LUNG
    return labels


def _split_by_mediastinum(
    lungs: np.ndarray, mediastinum_column: int
) -> tuple[np.ndarray, np.ndarray]:
    """Split a two-lung mask into image-left and image-right parts at the mediastinum."""
    labels, count = ndimage.label(lungs)
    image_left = np.zeros_like(lungs)
    image_right = np.zeros_like(lungs)
    for index in range(1, count + 1):
        component = labels == index
        centroid = float(np.nonzero(component)[1].mean())
        (image_left if centroid < mediastinum_column else image_right)[component] = True
    return image_left, image_right


def _median(labels: np.ndarray, size: int) -> np.ndarray:
    if size <= 1:
        return labels
    return np.asarray(ndimage.median_filter(labels, size=size), dtype=np.uint8)


def _rotation_average(
    segment_lungs: Callable[[np.ndarray], np.ndarray], image: np.ndarray
) -> np.ndarray:
    """Mean of the lung indicator over the image and its ±90° rotations, >= 0.5."""
    total = segment_lungs(image).astype(np.float32)
    for k in (1, -1):
        rotated = segment_lungs(np.ascontiguousarray(np.rot90(image, k)))
        total += np.rot90(rotated, -k).astype(np.float32)
    return total / 3.0 >= 0.5


def segment_reference(
    image: np.ndarray,
    parameters: NeonatalRDSParameters | None = None,
    *,
    column_to_patient_left: bool = True,
) -> LungFields:
    """Segment the right and left lung fields with the reference method (no weights).

    Parameters
    ----------
    image:
        ``(rows, columns)`` float32 in 0..1, 0 = black (lung dark), as from
        :func:`pipelines.radiograph.load_projection_radiograph`.
    parameters:
        Protocol parameters (working size, median filter, small-area fallback).
    column_to_patient_left:
        Whether increasing column index runs towards the patient's left (Patient Orientation
        first value ``L``, the usual display); decides which lung is labelled right.

    Returns
    -------
    LungFields
        Label map on the source grid (0 background, 1 right lung, 2 left lung) and notes.

    Raises
    ------
    PipelineError
        If ``image`` is not a 2-D array.
    """
    parameters = parameters or NeonatalRDSParameters()
    if image.ndim != 2:
        raise PipelineError(f"expected a 2-D radiograph, got shape {image.shape}")
    work = _working_copy(image, parameters.working_size_px)
    core = _reference_core(work)
    notes: list[str] = []
    image_left, image_right = core.image_left, core.image_right
    lungs = image_left | image_right
    fallback = False
    if lungs.mean() < parameters.small_area_fraction:

        def both_lungs(picture: np.ndarray) -> np.ndarray:
            result = _reference_core(picture)
            return result.image_left | result.image_right

        averaged = _rotation_average(both_lungs, work)
        if averaged.sum() > lungs.sum():
            fallback = True
            image_left, image_right = _split_by_mediastinum(averaged, core.mediastinum_column)
            notes.append(
                "lung area was implausibly small; the segmentation averaged over the image "
                "rotated by +90 and -90 degrees was used"
            )
    labels = _side_labels(image_left, image_right, column_to_patient_left)
    labels = _median(labels, parameters.median_filter_px)

    offset = None
    columns = np.nonzero(labels.any(axis=0))[0]
    lungs = labels > 0
    if (labels == LABEL_RIGHT_LUNG).any() and (labels == LABEL_LEFT_LUNG).any():
        outer_midline = 0.5 * (columns.min() + columns.max())
        offset = float((core.mediastinum_column - outer_midline) / max(core.thorax_width_px, 1.0))
    full = np.zeros(image.shape, dtype=np.uint8)
    if lungs.any():
        if work.shape == image.shape:
            full = labels
        else:
            for value in (LABEL_RIGHT_LUNG, LABEL_LEFT_LUNG):
                indicator = resize(
                    (labels == value).astype(np.float32), image.shape, order=1, anti_aliasing=False
                )
                full[(indicator >= 0.5) & (full == 0)] = value
    return LungFields(
        label_map=full,
        rotation_fallback_applied=fallback,
        fragmented=core.fragmented,
        mediastinum_offset_fraction=offset,
        thorax_width_fraction=core.thorax_width_px / work.shape[1],
        notes=notes,
    )


def postprocess_model_labels(
    labels: np.ndarray,
    image: np.ndarray,
    predict: Callable[[np.ndarray], np.ndarray],
    parameters: NeonatalRDSParameters,
) -> LungFields:
    """Seed post-processing of a network's label map: median filter and rotation fallback.

    Parameters
    ----------
    labels:
        ``(rows, columns)`` uint8 label map from ``model.predict``.
    image:
        The image it was predicted from (0..1).
    predict:
        ``predict(image) -> label map`` for the rotated images.
    parameters:
        Median filter size and small-area fraction.

    Returns
    -------
    LungFields
    """
    if labels.shape != image.shape:
        raise PipelineError(
            f"model label map shape {labels.shape} differs from the image {image.shape}; "
            "predict must return a label map on the source grid"
        )
    labels = np.asarray(labels, dtype=np.uint8)
    notes: list[str] = []
    fallback = False
    lungs = labels > 0
    if lungs.mean() < parameters.small_area_fraction:
        averaged = _rotation_average(lambda picture: predict(picture) > 0, image)
        if averaged.sum() > lungs.sum():
            fallback = True
            columns = np.nonzero(lungs.any(axis=0))[0]
            middle = int(columns.mean()) if columns.size else image.shape[1] // 2
            # Keep the model's sides where it had them, else split at the old midline.
            image_left, image_right = _split_by_mediastinum(averaged, middle)
            right_is_image_left = (
                not (labels == LABEL_RIGHT_LUNG).any()
                or np.nonzero(labels == LABEL_RIGHT_LUNG)[1].mean() < middle
            )
            labels = _side_labels(image_left, image_right, right_is_image_left)
            notes.append(
                "lung area was implausibly small; predictions averaged over the image rotated "
                "by +90 and -90 degrees were used"
            )
    labels = _median(labels, parameters.median_filter_px)
    return LungFields(label_map=labels, rotation_fallback_applied=fallback, notes=notes)


# --------------------------------------------------------------------------------------------
# Measurement and outputs
# --------------------------------------------------------------------------------------------


def lung_opacity_index(
    image: np.ndarray, label_map: np.ndarray, thorax_width_px: float | None = None
) -> float | None:
    """Lung-opacity index: median lung intensity / median intensity of the surrounding tissue.

    Parameters
    ----------
    image:
        ``(rows, columns)`` 0..1 display image (0 black).
    label_map:
        Lung label map on the same grid (non-zero = lung).
    thorax_width_px:
        Thorax width in pixels (ring widths are 2 % and 4 % of it); default: image width.

    Returns
    -------
    float | None
        ``median(I[lungs]) / median(I[ring])``, the ring being the pixels between 2 % and 4 %
        of the thorax width outside the lungs (inside the image); ``None`` without lungs or
        with a black ring. This project's definition, see the module docstring.
    """
    lungs = label_map > 0
    if not lungs.any():
        return None
    width = thorax_width_px or image.shape[1]
    # Work on a reduced grid for speed: rings are wide compared with a pixel.
    step = max(1, int(max(image.shape) // 512))
    small_lungs = lungs[::step, ::step]
    small_image = image[::step, ::step]
    inner = max(1, round(0.02 * width / step))
    outer = max(inner + 1, round(0.04 * width / step))
    ring = _dilate(small_lungs, outer) & ~_dilate(small_lungs, inner)
    if not ring.any():
        return None
    reference = float(np.median(small_image[ring]))
    if reference <= 0:
        return None
    return float(np.median(image[lungs])) / reference


def _flags(
    label_map: np.ndarray,
    fields_: LungFields,
    total_cm2: float | None,
    parameters: NeonatalRDSParameters,
) -> dict[str, bool | None]:
    lungs = label_map > 0
    edge = np.zeros_like(lungs)
    edge[[0, -1], :] = True
    edge[:, [0, -1]] = True
    cut_off = bool((lungs & edge).any())
    offset = fields_.mediastinum_offset_fraction
    rotation = None if offset is None else bool(abs(offset) > parameters.rotation_offset_fraction)
    right = int(np.count_nonzero(label_map == LABEL_RIGHT_LUNG))
    left = int(np.count_nonzero(label_map == LABEL_LEFT_LUNG))
    low, high = parameters.left_right_area_ratio_range
    # One lung field missing counts as asymmetric.
    asymmetric = bool(not right or not low <= left / right <= high)
    neonate = adult = None
    if total_cm2 is not None:
        low, high = parameters.neonate_total_area_cm2
        neonate = bool(not (low <= total_cm2 <= high))
        low, high = parameters.adult_total_area_cm2
        adult = bool(not (low <= total_cm2 <= high))
    return {
        "lungs_cut_off": cut_off,
        "patient_rotation_suspected": rotation,
        "rotation_fallback_applied": fields_.rotation_fallback_applied,
        "lung_field_fragmented": fields_.fragmented,
        "lung_fields_asymmetric": asymmetric,
        "area_implausible_for_neonate": neonate,
        "area_implausible_for_adult": adult,
    }


def measure(
    image: np.ndarray,
    label_map: np.ndarray,
    source: Dataset,
    radiograph: Radiograph,
    fields_: LungFields,
    parameters: NeonatalRDSParameters,
    *,
    algorithm: AlgorithmInfo = ALGORITHM,
    rds_probability: float | None = None,
    context: PatientContext | None = None,
) -> PipelineResult:
    """Measure the lung fields and build the protocol's result (SEG/SR/SC content).

    Parameters
    ----------
    image:
        ``(rows, columns)`` 0..1 display image (0 black).
    label_map:
        ``(rows, columns)`` uint8 lung label map (1 right, 2 left) on the same grid, from
        :func:`segment_reference` or a network.
    source:
        The source header (Pixel Data is not needed and not kept).
    radiograph:
        The decoded radiograph (pixel spacing and where it came from, orientation, warnings).
    fields_:
        Segmentation notes (rotation fallback, mediastinum offset).
    parameters:
        Protocol parameters.
    algorithm:
        The algorithm that produced ``label_map`` (reference method or the model's card).
    rds_probability:
        The model's RDS probability, or ``None`` when no classifier ran.
    context:
        Patient's age and the exposure's kVp (:class:`pipelines.protocol.PatientContext`, read
        by the core from the series' headers); ``None`` reads it from ``source`` with the same
        rule.

    Returns
    -------
    PipelineResult
        ``summary`` keys: ``right_lung_area_cm2``, ``left_lung_area_cm2``,
        ``total_lung_area_cm2`` (``None`` without spacing), ``*_area_percent``,
        ``left_right_area_ratio``, ``*_mean_intensity``, ``lung_opacity_index``,
        ``pixel_spacing_mm``, ``pixel_spacing_source``, ``rds_classification_performed``,
        ``rds_probability``, ``rds_label``, the quality flags, ``validation_status``,
        ``patient_age_days`` and ``kvp`` (``None`` when the context lacks them).

    Raises
    ------
    PipelineError
        If no lung field was found.
    """
    if context is None:
        context = PatientContext.from_headers([source])
    label_map = np.asarray(label_map, dtype=np.uint8)
    pixels = {k: int(np.count_nonzero(label_map == k)) for k in (LABEL_RIGHT_LUNG, LABEL_LEFT_LUNG)}
    if not any(pixels.values()):
        raise PipelineError(
            "no lung field was found on the radiograph (white-out lungs, a non-chest image, or "
            "an unusual exposure); check the image, or install a validated lung-field model"
        )
    spacing = radiograph.pixel_spacing_mm
    pixel_cm2 = spacing[0] * spacing[1] / 100.0 if spacing else None
    image_pixels = label_map.size
    measurements: list[Measurement] = []
    summary: dict[str, Any] = {}
    names = {LABEL_RIGHT_LUNG: "right_lung", LABEL_LEFT_LUNG: "left_lung"}
    short = {LABEL_RIGHT_LUNG: "R lung", LABEL_LEFT_LUNG: "L lung"}
    for value, name in names.items():
        count = pixels[value]
        area_cm2 = count * pixel_cm2 if pixel_cm2 is not None else None
        percent = 100.0 * count / image_pixels
        mean_intensity = float(image[label_map == value].mean()) if count else None
        summary[f"{name}_area_cm2"] = area_cm2
        summary[f"{name}_area_percent"] = percent
        summary[f"{name}_mean_intensity"] = mean_intensity
        if not count:
            continue
        if area_cm2 is not None:
            measurements.append(
                Measurement(
                    f"{name}_area_cm2", SCT_AREA, area_cm2, UCUM_CM2, value, None, short[value]
                )
            )
        measurements.append(
            Measurement(
                f"{name}_area_percent",
                AREA_FRACTION,
                percent,
                UCUM_PERCENT,
                value,
                None,
                short[value],
            )
        )
        measurements.append(
            Measurement(
                f"{name}_mean_intensity",
                NORMALISED_INTENSITY,
                float(mean_intensity or 0.0),
                UCUM_NO_UNITS,
                value,
                SCT_MEAN,
                short[value],
            )
        )
    total_cm2 = sum(pixels.values()) * pixel_cm2 if pixel_cm2 is not None else None
    summary["total_lung_area_cm2"] = total_cm2
    if total_cm2 is not None:
        measurements.append(
            Measurement("total_lung_area_cm2", SCT_AREA, total_cm2, UCUM_CM2, None, None, "Lungs")
        )
    ratio = pixels[LABEL_LEFT_LUNG] / pixels[LABEL_RIGHT_LUNG] if pixels[LABEL_RIGHT_LUNG] else None
    summary["left_right_area_ratio"] = ratio
    if ratio is not None:
        measurements.append(
            Measurement("left_right_area_ratio", SCT_RATIO, ratio, UCUM_RATIO, None, None, "L/R")
        )
    thorax_px = fields_.thorax_width_fraction * image.shape[1]
    loi = lung_opacity_index(image, label_map, thorax_px)
    summary["lung_opacity_index"] = loi
    if loi is not None:
        measurements.append(
            Measurement(
                "lung_opacity_index", LUNG_OPACITY_INDEX, loi, UCUM_NO_UNITS, None, None, "LOI"
            )
        )

    warnings = list(radiograph.warnings) + list(fields_.notes)
    findings: list[QualitativeFinding] = []
    classified = rds_probability is not None
    label: str | None = None
    findings.append(
        QualitativeFinding(RDS_CLASSIFICATION_PERFORMED, SCT_YES if classified else SCT_NO)
    )
    if classified:
        assert rds_probability is not None
        measurements.append(
            Measurement(
                "rds_probability",
                RDS_PROBABILITY,
                float(rds_probability),
                UCUM_NO_UNITS,
                None,
                None,
                "P(RDS)",
            )
        )
        if algorithm.validation_status == ValidationStatus.VALIDATED:
            label = "RDS" if rds_probability >= parameters.rds_probability_threshold else "no RDS"
            findings.append(
                QualitativeFinding(
                    RDS_CLASSIFICATION, RDS_PRESENT if label == "RDS" else RDS_ABSENT
                )
            )
        else:
            warnings.append(
                f"RDS probability from model {algorithm.name} {algorithm.version} "
                f"({algorithm.validation_status.value}); no RDS label is given because the model "
                "is not validated"
            )
    else:
        warnings.append(
            "RDS classification not performed: no trained classifier is installed. Lung-field "
            "measurements and the lung-opacity index (median lung / surrounding soft-tissue "
            "intensity) are reported instead; they are not an RDS diagnosis"
        )
    warnings.append(f"pixel spacing used for areas: {radiograph.spacing_source}")

    flags = _flags(label_map, fields_, total_cm2, parameters)
    flag_terms = {
        "lungs_cut_off": FLAG_CUT_OFF,
        "patient_rotation_suspected": FLAG_ROTATION,
        "rotation_fallback_applied": FLAG_ROTATED_IMAGE,
        "lung_field_fragmented": FLAG_FRAGMENTED,
        "lung_fields_asymmetric": FLAG_ASYMMETRIC,
        "area_implausible_for_neonate": FLAG_NEONATE_IMPLAUSIBLE,
        "area_implausible_for_adult": FLAG_ADULT_IMPLAUSIBLE,
    }
    for key, flag in flags.items():
        if flag is None:
            continue
        findings.append(QualitativeFinding(flag_terms[key], SCT_YES if flag else SCT_NO))
        if flag:
            warnings.append(f"quality flag: {flag_terms[key].meaning.lower()}")
    summary.update(flags)
    summary.update(
        {
            "pixel_spacing_mm": list(spacing) if spacing else None,
            "pixel_spacing_source": radiograph.spacing_source,
            "rds_classification_performed": classified,
            "rds_probability": rds_probability,
            "rds_label": label,
            "mediastinum_offset_fraction": fields_.mediastinum_offset_fraction,
            "patient_age_days": (
                None if context.age_years is None else round(context.age_years * 365.25, 1)
            ),
            "kvp": context.kvp,
            "algorithm": f"{algorithm.name} {algorithm.version}",
            "validation_status": algorithm.validation_status.value,
        }
    )

    header = Dataset()
    for element in source:
        if element.tag != 0x7FE00010:
            header.add(element)
    if hasattr(source, "file_meta"):
        header.file_meta = source.file_meta
    key_image = _key_image(image, label_map, radiograph, summary, algorithm, classified)
    for warning in warnings:
        logger.info("neonatal-rds SOP Instance UID %s: %s", source.get("SOPInstanceUID"), warning)
    return PipelineResult(
        protocol=PROTOCOL_NAME,
        algorithm=algorithm,
        source_datasets=[header],
        segments=SEGMENTS,
        label_map=label_map[None],
        measurements=measurements,
        findings=findings,
        key_image=key_image,
        summary=summary,
        warnings=warnings,
    )


#: Longest side (pixels) of the image part of the key image.
KEY_IMAGE_MAX_SIZE = 1024


def _key_image(
    image: np.ndarray,
    label_map: np.ndarray,
    radiograph: Radiograph,
    summary: dict[str, Any],
    algorithm: AlgorithmInfo,
    classified: bool,
) -> KeyImageSpec:
    """Describe the key image: the radiograph (at most 1024 pixels a side) with the lung
    fields, the measurements, flags and algorithm; drawn by :mod:`pipelines.outputs`."""
    step = max(1, int(np.ceil(max(image.shape) / KEY_IMAGE_MAX_SIZE)))
    small = image[::step, ::step]
    labels = label_map[::step, ::step]
    spacing = radiograph.pixel_spacing_mm
    # Unknown spacing: drawn with square pixels, and the SC states no Pixel Spacing.
    render_spacing = (spacing[0] * step, spacing[1] * step) if spacing else None

    # Names, units and precision from the measurement table.
    rows = table_rows(MEASUREMENTS)

    def area(name: str) -> str:
        key = f"{name}_area_cm2"
        if summary[key] is not None:
            return measurement_text(rows[key], summary[key])
        key = f"{name}_area_percent"
        return f"{measurement_text(rows[key], summary[key])} of image"

    loi = summary["lung_opacity_index"]
    ratio = measurements_line(MEASUREMENTS, summary, ("left_right_area_ratio",))
    lines = [
        "Lung fields: " + ", ".join(
            [area("right_lung"), area("left_lung")] + ([ratio] if ratio else [])),
        (f"{measurement_text(rows['lung_opacity_index'], loi)} (lung / surrounding tissue)"
         if loi is not None else ""),
    ]
    if classified:
        probability = summary["rds_probability"]
        lines.append(
            measurement_text(rows["rds_probability"], probability)
            + (
                f": {summary['rds_label']}"
                if summary["rds_label"]
                else " (model not validated, no label)"
            )
        )
    else:
        lines.append("RDS classification NOT performed (no trained model installed)")
    flags = [
        k.replace("_", " ")
        for k in (
            "lungs_cut_off",
            "patient_rotation_suspected",
            "rotation_fallback_applied",
            "lung_field_fragmented",
            "lung_fields_asymmetric",
            "area_implausible_for_neonate",
        )
        if summary.get(k)
    ]
    if flags:
        lines.append("Flags: " + "; ".join(flags))
    lines.append(f"Pixel spacing: {summary['pixel_spacing_source']}")
    lines.append(
        f"{algorithm.name} {algorithm.version} ({algorithm.validation_status.value}). "
        f"{RESEARCH_USE_DISCLAIMER}"
    )
    return KeyImageSpec(
        panels=(
            KeyImagePanel(
                image=small,
                pixel_spacing_mm=render_spacing,
                window_hu=None,
                labels=labels,
            ),
        ),
        segments=tuple(SEGMENTS),
        text_lines=tuple(line for line in lines if line),
        source_index=0,
        patient_orientation=radiograph.patient_orientation,
    )


# --------------------------------------------------------------------------------------------
# Entry points
# --------------------------------------------------------------------------------------------


def _check_chest(ds: Dataset, image: np.ndarray, parameters: NeonatalRDSParameters) -> list[str]:
    """Accept chest radiographs; reject other regions (header first, pixels when uninformative)."""
    body_part = str(ds.get("BodyPartExamined", "") or "").strip().upper()
    if body_part in CHEST_BODY_PARTS:
        return []
    if body_part in NON_CHEST_BODY_PARTS:
        raise UnsupportedInputError(
            f"Body Part Examined is {body_part!r}, not a chest; the neonatal-rds protocol "
            "measures frontal chest radiographs only (check the routing rules)"
        )
    said = f"Body Part Examined is {body_part!r}" if body_part else "Body Part Examined is missing"
    if not parameters.require_chest_pixels:
        return [f"{said}; the image was assumed to be a chest radiograph"]
    guess = guess_radiograph_region(image)
    if "chest" not in guess.regions:
        raise UnsupportedInputError(
            f"{said} and the pixels do not look like a frontal chest radiograph "
            f"({guess.reason}); set require_chest_pixels: false to skip this check"
        )
    return [f"{said}; chest recognised from the pixels ({guess.reason})"]


def run_neonatal_rds(
    ds: Dataset,
    parameters: NeonatalRDSParameters | None = None,
    model: LearnedModel | None = None,
    context: PatientContext | None = None,
) -> PipelineResult:
    """Run the protocol on one radiograph.

    Parameters
    ----------
    ds:
        A frontal chest CR/DX image with Pixel Data.
    parameters:
        Protocol parameters; defaults when ``None``.
    model:
        A trained lung-field network (``predict``) with optional RDS classifier (``classify``),
        signatures in the module docstring; ``None`` runs the reference method and no
        classification.
    context:
        Patient and exposure facts from the core (:class:`pipelines.protocol.PatientContext`);
        ``None`` reads them from ``ds``.

    Returns
    -------
    PipelineResult

    Raises
    ------
    UnsupportedInputError
        Not a single-frame grayscale frontal chest CR/DX image.
    InvalidInputError
        Undecodable pixel data.
    PipelineError
        No lung field found, or a model output of the wrong shape.
    """
    parameters = parameters or NeonatalRDSParameters()
    radiograph = load_projection_radiograph(ds, parameters.assumed_pixel_spacing_mm)
    image = radiograph.image
    radiograph.warnings.extend(_check_chest(ds, image, parameters))
    orientation = radiograph.patient_orientation
    column_to_left = True
    if orientation is None or orientation[0][:1] not in ("L", "R"):
        radiograph.warnings.append(
            "Patient Orientation (0020,0020) does not give the column direction; the usual "
            "display (patient's right on the image left) was assumed for right/left"
        )
    else:
        column_to_left = orientation[0].startswith("L")

    algorithm = ALGORITHM
    probability: float | None = None
    if model is None:
        fields_ = segment_reference(image, parameters, column_to_patient_left=column_to_left)
    else:
        algorithm = model.algorithm
        spacing = radiograph.pixel_spacing_mm

        def predict(picture: np.ndarray) -> np.ndarray:
            return np.asarray(model.predict(picture, spacing), dtype=np.uint8)

        fields_ = postprocess_model_labels(predict(image), image, predict, parameters)
        if model.classify is not None and (fields_.label_map > 0).any():
            probability = float(model.classify(image, fields_.label_map > 0))
            if not 0.0 <= probability <= 1.0:
                raise PipelineError(
                    f"model {algorithm.name} returned an RDS probability {probability} outside "
                    "0..1; check the model wrapper"
                )
    return measure(
        image,
        fields_.label_map,
        ds,
        radiograph,
        fields_,
        parameters,
        algorithm=algorithm,
        rds_probability=probability,
        context=context,
    )


def run_from_datasets(
    datasets: Sequence[Dataset],
    params: Mapping[str, Any],
    model: LearnedModel | None = None,
    context: PatientContext | None = None,
) -> PipelineResult:
    """Registry entry point: run ``neonatal-rds`` on the datasets of one series.

    The first frontal image (lowest Instance Number) is measured; lateral views in the same
    series are skipped with a warning.

    Parameters
    ----------
    datasets:
        The series' CR/DX images with Pixel Data.
    params:
        Keys of :class:`NeonatalRDSParameters`.
    model:
        Trained model or ``None`` (reference method).
    context:
        Patient and exposure facts of the series from the core
        (:class:`pipelines.protocol.PatientContext`); ``None`` reads them from ``datasets``.

    Returns
    -------
    PipelineResult

    Raises
    ------
    ConfigError
        Unknown parameter keys.
    InvalidSeriesError
        Empty series.
    UnsupportedInputError, InvalidInputError, PipelineError
        See :func:`run_neonatal_rds`.
    """
    parameters = NeonatalRDSParameters.from_mapping(params)
    if not datasets:
        raise InvalidSeriesError("the series holds no images; nothing to measure")
    if context is None:
        context = PatientContext.from_headers(datasets)
    ordered = sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    skipped: list[str] = []
    last_error: UnsupportedInputError | None = None
    for ds in ordered:
        try:
            result = run_neonatal_rds(ds, parameters, model, context)
        except UnsupportedInputError as exc:
            if len(ordered) == 1:
                raise
            last_error = exc
            skipped.append(f"image {ds.get('SOPInstanceUID')} skipped: {exc}")
            continue
        result.warnings[:0] = skipped
        if len(ordered) > 1:
            result.warnings.append(
                f"the series holds {len(ordered)} images; only SOP Instance UID "
                f"{ds.get('SOPInstanceUID')} was measured"
            )
        return result
    assert last_error is not None
    raise UnsupportedInputError(
        f"none of the {len(ordered)} images of the series can be measured; last reason: "
        f"{last_error}"
    )


__all__ = [
    "ALGORITHM",
    "LABEL_BACKGROUND",
    "LABEL_LEFT_LUNG",
    "LABEL_RIGHT_LUNG",
    "PROTOCOL_NAME",
    "SEGMENTS",
    "LungFields",
    "NeonatalRDSParameters",
    "lung_opacity_index",
    "measure",
    "postprocess_model_labels",
    "run_from_datasets",
    "run_neonatal_rds",
    "segment_reference",
]
