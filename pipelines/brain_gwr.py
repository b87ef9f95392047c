"""Post-cardiac-arrest head CT: gray-to-white-matter ratio (GWR) of the basal-ganglia landmarks.

Reference method (no trained weights), see ``docs/pipelines/brain-gwr.md``:

1. **Brain mask** (skull stripping, :func:`brain_mask_report`): head = largest non-air
   component; per axial slice the convex hull of the skull (closes a ring cut by the field of
   view); soft tissue (``brain_mask_hu``) inside it, away from bone; 3D opening by
   reconstruction (4 mm ball). Checks: outline enclosed by bone, head-feet extent.
2. **Registration** of the scan to the shipped Colin27 template (``pipelines.brain_atlas``)
   with SimpleITK: the template as a pseudo-CT (tissue classes at typical HU), normalised
   correlation restricted to the scan's visible brain, resampled to ``registration_spacing_mm``;
   centre-of-mass initialisation, rigid stage from several pitches, then rotation + anisotropic
   scaling (no shear). Then the **ventricle stage** (:func:`register_ventricles`): the scan's
   deep CSF (lateral and third ventricles) against the template's, within the ventricle region,
   a bounded similarity correction on top (moves the deep structures onto the scan's own
   ventricles). Orientation check: air enclosed by the head (sinuses, mastoids) must not lie
   above the brain (headers flipped head-feet are refused).
3. **Labels carried back** to the scan grid with nearest-neighbour interpolation; quality
   check (Dice of the registered template brain mask against the scan's brain mask) and
   coverage check (each landmark's carried-back volume against its expected volume).
4. **Intensity refinement** (:func:`refine_landmarks`): only voxels within ``parenchyma_hu``
   (default 10..60 HU: excludes CSF, calcification, bone, blood products above 60 HU) are kept,
   and the in-band mask is eroded in-plane by ``erosion_mm`` against partial volume.
5. **Measurement** (:func:`measure`): per landmark and side mean, median and SD of HU, voxel
   count, volume; GWRs:

   * GWR_BG = (CN + PU) / (CC + PIC) — ROI set of Metter et al., Resuscitation 2011
     (doi 10.1016/j.resuscitation.2011.04.001), ratio introduced by Torbey et al., Stroke 2000;
     each term is the mean HU of the landmark's *core* (segment eroded in-plane by
     ``core_erosion_mm``, like the small central ROIs of the manual method); CN, PU, PIC are
     the means of the right and left core means, CC the corpus callosum core mean; also per
     side (the same formula with one side's CN, PU, PIC).
   * PU / PIC — simplified ratio, Gentsch et al., Clin Neuroradiol 2015.
   * GWR_cerebrum = (MC1 + MC2) / (MWM1 + MWM2) and GWR_average are *not* computed: the
     medial-cortex / medial-white-matter ROIs are not in the shipped atlas.

   A low-GWR flag is raised when GWR_BG < ``gwr_cutoff`` (default 1.18: 100 % predictive of
   death in Torbey et al., Stroke 2000, n = 25). Cut-offs belong to small cohorts, CT timing,
   temperature management and scanners (clinical.md §4.2, §6); never a stand-alone prognosis.

Label numbering (:data:`LANDMARK_LABELS`): 1 caudate right, 2 caudate left, 3 putamen right,
4 putamen left, 5 PLIC right, 6 PLIC left, 7 corpus callosum; 8 brain parenchyma (single-slice
results only).

A trained network replaces steps 1-3: ``model.predict(hu, spacing_mm) -> label_map`` with ``hu``
the ``(slices, rows, columns)`` float32 HU volume in canonical HPL orientation
(:class:`pipelines.volume.CTVolume`), ``spacing_mm`` its (slice, row, column) spacing, returning a
``uint8`` array of the same shape in the numbering above (labels 1..7). Its label map goes
through the same refinement, measurement and outputs.

A single image cannot be registered in 3D: it is reported with its brain parenchyma (area,
mean and median HU within ``parenchyma_hu``) and GWR "not measurable" with the reason.

Research use only, not for diagnosis. Checked on digital phantoms built from the same atlas,
one real slice and one real head CT in two reconstructions (docs/pipelines/brain-gwr.md).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import SimpleITK as sitk
from pydicom.dataset import Dataset
from scipy import ndimage

from pipelines.brain_atlas import (
    LABEL_CAUDATE_LEFT,
    LABEL_CAUDATE_RIGHT,
    LABEL_CORPUS_CALLOSUM,
    LABEL_PLIC_LEFT,
    LABEL_PLIC_RIGHT,
    LABEL_PUTAMEN_LEFT,
    LABEL_PUTAMEN_RIGHT,
    LANDMARK_LABELS,
    TISSUE_CSF,
    TISSUE_GRAY_MATTER,
    TISSUE_WHITE_MATTER,
    BrainAtlas,
    load_atlas,
)
from pipelines.errors import (
    ConfigError,
    InvalidInputError,
    PipelineError,
    UnsupportedInputError,
)
from pipelines.headers import header_copy
from pipelines.measurement_tables.brain_gwr import MEASUREMENTS
from pipelines.measurement_text import (
    measurement_text,
    measurements_line,
    number_text,
    table_rows,
    value_text,
)
from pipelines.morphology import FACE, largest_component
from pipelines.parameters.brain_gwr import BrainGWRParameters  # the parameter model lives with the spec
from pipelines.protocol import PatientContext
from pipelines.types import (
    DCM_ATTENUATION,
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    SCT_ANATOMICAL_STRUCTURE,
    SCT_AREA,
    SCT_MEAN,
    SCT_MEDIAN,
    SCT_NO,
    SCT_STANDARD_DEVIATION,
    SCT_VOLUME,
    SCT_YES,
    UCUM_CM2,
    UCUM_HU,
    UCUM_MM3,
    UCUM_NO_UNITS,
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
from pipelines.volume import CTVolume, load_ct_volume

logger = logging.getLogger(__name__)

PROTOCOL_NAME = "brain-gwr"

ALGORITHM = AlgorithmInfo(
    name="ainode-brain-gwr-reference",
    version="0.1.0",
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source=(
        "Atlas registration (Colin27, AAL, JHU labels; SimpleITK rigid+scaling, pseudo-CT "
        "correlation, ventricle refinement) with HU refinement; GWR of Torbey 2000 / Metter 2011"
    ),
)

#: Label of the brain parenchyma segment of single-slice results.
LABEL_BRAIN_PARENCHYMA = 8

#: Published default cut-off: GWR_BG < 1.18, Torbey et al., Stroke 2000 (clinical.md §4.2).
from pipelines.parameters.brain_gwr import DEFAULT_GWR_CUTOFF  # noqa: E402  (one source)
DEFAULT_GWR_CUTOFF_SOURCE = "Torbey et al., Stroke 2000 (GWR_BG < 1.18, 100 % predictive of death, n=25)"

# Codes: PS3.16 / SNOMED CT as in pydicom 3.0.2's tables (clinical.md §5).
SCT_CAUDATE = CodedTerm("11000004", "SCT", "Caudate Nucleus")
SCT_PUTAMEN = CodedTerm("89278009", "SCT", "Putamen")
SCT_INTERNAL_CAPSULE = CodedTerm("85637007", "SCT", "internal capsule")
SCT_CORPUS_CALLOSUM = CodedTerm("88442005", "SCT", "Corpus callosum")
SCT_BRAIN = CodedTerm("12738006", "SCT", "Brain")
SCT_RIGHT = CodedTerm("24028007", "SCT", "Right")
SCT_LEFT = CodedTerm("7771000", "SCT", "Left")

#: Laterality of each landmark (PS3.16 CID 244), written as SEG Segmented Property Type Modifier
#: and SR finding-site laterality. ``None`` = unpaired (midline).
SEGMENT_LATERALITY: dict[int, CodedTerm | None] = {
    LABEL_CAUDATE_RIGHT: SCT_RIGHT, LABEL_CAUDATE_LEFT: SCT_LEFT,
    LABEL_PUTAMEN_RIGHT: SCT_RIGHT, LABEL_PUTAMEN_LEFT: SCT_LEFT,
    LABEL_PLIC_RIGHT: SCT_RIGHT, LABEL_PLIC_LEFT: SCT_LEFT,
    LABEL_CORPUS_CALLOSUM: None, LABEL_BRAIN_PARENCHYMA: None,
}

# Private concepts (no standard concept exists for a GWR, clinical.md §5).
GWR_BG_CONCEPT = CodedTerm("GWR-BG", PRIVATE_SCHEME, "GWR (CN+PU)/(CC+PIC), Torbey 2000, Metter 2011")
GWR_BG_RIGHT_CONCEPT = CodedTerm("GWR-BG-R", PRIVATE_SCHEME, "GWR right (CN+PU)/(CC+PIC), Metter 2011")
GWR_BG_LEFT_CONCEPT = CodedTerm("GWR-BG-L", PRIVATE_SCHEME, "GWR left (CN+PU)/(CC+PIC), Metter 2011")
GWR_PU_PIC_CONCEPT = CodedTerm("GWR-PU-PIC", PRIVATE_SCHEME, "GWR PU/PIC, Gentsch 2015")
LOW_GWR_CONCEPT = CodedTerm("LOW-GWR", PRIVATE_SCHEME, "GWR below configured cut-off")
GWR_MEASURABLE_CONCEPT = CodedTerm("GWR-MEASURABLE", PRIVATE_SCHEME, "GWR measurable")
VOXEL_COUNT_CONCEPT = CodedTerm("VOXELS", PRIVATE_SCHEME, "Number of voxels")
CORE_MEAN_CONCEPT = CodedTerm("CORE-HU", PRIVATE_SCHEME, "Attenuation of segment core (GWR ROI)")
CORE_VOXEL_COUNT_CONCEPT = CodedTerm("CORE-VOXELS", PRIVATE_SCHEME, "Number of voxels in segment core")
REGISTRATION_DICE_CONCEPT = CodedTerm("REG-DICE", PRIVATE_SCHEME, "Atlas registration brain Dice")

_DISPLAY = {
    LABEL_CAUDATE_RIGHT: (230, 80, 80), LABEL_CAUDATE_LEFT: (255, 150, 120),
    LABEL_PUTAMEN_RIGHT: (80, 200, 80), LABEL_PUTAMEN_LEFT: (160, 240, 120),
    LABEL_PLIC_RIGHT: (80, 120, 255), LABEL_PLIC_LEFT: (130, 190, 255),
    LABEL_CORPUS_CALLOSUM: (240, 220, 60), LABEL_BRAIN_PARENCHYMA: (200, 120, 220),
}
_SHORT = {
    LABEL_CAUDATE_RIGHT: ("CN R", "caudate_right"), LABEL_CAUDATE_LEFT: ("CN L", "caudate_left"),
    LABEL_PUTAMEN_RIGHT: ("PU R", "putamen_right"), LABEL_PUTAMEN_LEFT: ("PU L", "putamen_left"),
    LABEL_PLIC_RIGHT: ("PIC R", "plic_right"), LABEL_PLIC_LEFT: ("PIC L", "plic_left"),
    LABEL_CORPUS_CALLOSUM: ("CC", "corpus_callosum"),
    LABEL_BRAIN_PARENCHYMA: ("Brain", "brain_parenchyma"),
}
_TYPE = {
    LABEL_CAUDATE_RIGHT: SCT_CAUDATE, LABEL_CAUDATE_LEFT: SCT_CAUDATE,
    LABEL_PUTAMEN_RIGHT: SCT_PUTAMEN, LABEL_PUTAMEN_LEFT: SCT_PUTAMEN,
    LABEL_PLIC_RIGHT: SCT_INTERNAL_CAPSULE, LABEL_PLIC_LEFT: SCT_INTERNAL_CAPSULE,
    LABEL_CORPUS_CALLOSUM: SCT_CORPUS_CALLOSUM, LABEL_BRAIN_PARENCHYMA: SCT_BRAIN,
}
_NAMES = {**LANDMARK_LABELS, LABEL_BRAIN_PARENCHYMA: "brain parenchyma (single slice)"}


def _segment(number: int) -> SegmentDefinition:
    label, _key = _SHORT[number]
    return SegmentDefinition(
        number=number,
        label=label,
        description=_NAMES[number][:64],
        category=SCT_ANATOMICAL_STRUCTURE,
        property_type=_TYPE[number],
        anatomic_region=None,
        tracking_id=_NAMES[number][:64],
        display_rgb=_DISPLAY[number],
        laterality=SEGMENT_LATERALITY[number],
    )


#: All segments of the protocol (one per landmark and side; parenchyma for single slices).
SEGMENTS: list[SegmentDefinition] = [_segment(n) for n in (*LANDMARK_LABELS, LABEL_BRAIN_PARENCHYMA)]


# ------------------------------------------------------------------------------------------
# Geometry helpers
# ------------------------------------------------------------------------------------------


def _sitk_image(volume: CTVolume, array: np.ndarray,
                offset: tuple[int, int, int] = (0, 0, 0)) -> sitk.Image:
    """SimpleITK image of a canonical ``(slices, rows, columns)`` array with the scan geometry.

    ``offset`` is the (slice, row, column) index of ``array[0, 0, 0]`` in :attr:`CTVolume.hu`
    (for crops).
    """
    affine = np.asarray(volume.volume.affine, dtype=float)
    affine = affine.copy()
    affine[:3, 3] = affine[:3, :3] @ np.asarray(offset, dtype=float) + affine[:3, 3]
    spacing = np.linalg.norm(affine[:3, :3], axis=0)  # per (slice, row, column)
    direction = affine[:3, :3] / spacing  # columns = unit vectors of (slice, row, column)
    img = sitk.GetImageFromArray(np.ascontiguousarray(array))
    img.SetOrigin(tuple(float(v) for v in affine[:3, 3]))
    img.SetSpacing(tuple(float(v) for v in spacing[::-1]))
    img.SetDirection(tuple(float(v) for v in direction[:, ::-1].ravel()))
    return img


def _disk(radius_px: int) -> np.ndarray:
    yy, xx = np.ogrid[-radius_px : radius_px + 1, -radius_px : radius_px + 1]
    return np.asarray(xx * xx + yy * yy <= radius_px * radius_px)


def _brain_window(mask: np.ndarray, spacing_mm: tuple[float, float, float],
                  margin_mm: float) -> tuple[tuple[slice, slice, slice], tuple[int, int, int]]:
    """Bounding box of ``mask`` plus a margin: (slices for indexing, index of its first voxel)."""
    margin = [int(np.ceil(margin_mm / s)) for s in spacing_mm]
    index = np.argwhere(mask)
    lo = np.maximum(index.min(axis=0) - margin, 0)
    hi = np.minimum(index.max(axis=0) + np.asarray(margin) + 1, mask.shape)
    window = (slice(int(lo[0]), int(hi[0])), slice(int(lo[1]), int(hi[1])),
              slice(int(lo[2]), int(hi[2])))
    return window, (int(lo[0]), int(lo[1]), int(lo[2]))


# ------------------------------------------------------------------------------------------
# Reference segmentation
# ------------------------------------------------------------------------------------------


def _ellipsoid(radius_mm: float, spacing_mm: tuple[float, float, float]) -> np.ndarray:
    """Boolean ball of ``radius_mm`` on an anisotropic ``(slice, row, column)`` grid."""
    half = [int(radius_mm // s) for s in spacing_mm]
    zz, yy, xx = np.ogrid[-half[0]: half[0] + 1, -half[1]: half[1] + 1, -half[2]: half[2] + 1]
    distance = sum(((g * s) / radius_mm) ** 2
                   for g, s in zip((zz, yy, xx), spacing_mm, strict=True))
    return np.asarray(distance <= 1.0)


@dataclass
class BrainMaskReport:
    """What :func:`brain_mask_report` found.

    Attributes
    ----------
    mask:
        ``(slices, rows, columns)`` bool brain mask on the grid of the input.
    skull_enclosure:
        Fraction of the brain's in-plane boundary pixels that lie within 6 mm of bone (a brain
        inside a skull: most of it; an abdominal organ or a phantom without skull: little).
    volume_cm3:
        Brain mask volume, cm³.
    extent_mm:
        Head-feet extent of the mask, mm.
    air_below_cm3, air_above_cm3:
        Air enclosed by the head in axial slices (paranasal sinuses, nasal cavity, mastoid
        cells), cm³, below and above the brain's centre along the series' feet-to-head axis.
        In a head it lies below the brain's centre (:data:`ORIENTATION_AIR_MIN_CM3`).
    """

    mask: np.ndarray
    skull_enclosure: float
    volume_cm3: float
    extent_mm: float
    air_below_cm3: float = 0.0
    air_above_cm3: float = 0.0


def brain_mask_report(hu: np.ndarray, spacing_mm: tuple[float, float, float],
                      params: BrainGWRParameters | None = None) -> BrainMaskReport:
    """Skull-stripped brain mask of a head CT, with the facts the quality checks need.

    1. Head = largest 3D component of non-air voxels (> -300 HU), so table, head holder and
       blankets do not count; skull = head voxels at or above ``bone_hu``.
    2. Per axial slice, the convex hull of the skull: it closes the ring where the field of
       view cuts the head (frontal pole or occiput outside the image), across sutures, thin
       temporal squama and foramina, wherever the head lies in the image and however it is
       rotated.
    3. Candidate = tissue within ``brain_mask_hu`` inside the hull, more than 2 mm from bone.
    4. Opening by reconstruction: the candidate eroded in 3D by a 4 mm ball (cuts the optic
       canals, orbital fissures, foramen magnum and partial-volume bridges through thin bone
       to the orbits, temporalis and neck muscles), the largest component kept and dilated
       back by the same ball within the candidate.
    5. Holes filled per slice (ventricles), bone removed.

    Images finer than 1 mm are processed at about 1 mm in-plane (subsampled) and the mask
    brought back to the full grid.

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` float32 HU, canonical HPL orientation (axial slices).
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        ``bone_hu`` and ``brain_mask_hu`` are used.

    Returns
    -------
    BrainMaskReport
    """
    from skimage.morphology import convex_hull_image

    p = params or BrainGWRParameters()
    step = max(1, int(1.0 // min(spacing_mm[1], spacing_mm[2])))
    small = hu[:, ::step, ::step]
    grid = (float(spacing_mm[0]), float(spacing_mm[1]) * step, float(spacing_mm[2]) * step)
    head = largest_component(small > -300.0, FACE)
    bone = (small >= p.bone_hu) & head
    radius = max(1, round(2.0 / min(grid[1], grid[2])))
    in_plane = _disk(radius)[None]
    hull = np.zeros_like(bone)
    for k in range(small.shape[0]):
        if np.count_nonzero(bone[k]) >= 3:
            hull[k] = convex_hull_image(bone[k])
    soft = (small >= p.brain_mask_hu[0]) & (small <= p.brain_mask_hu[1])
    candidate = hull & soft & ~ndimage.binary_dilation(bone, structure=in_plane)
    # A single image is opened in-plane only.
    ball = _ellipsoid(4.0, grid if small.shape[0] > 1 else (1e6, grid[1], grid[2]))
    core = largest_component(ndimage.binary_erosion(candidate, structure=ball), FACE)
    brain = ndimage.binary_dilation(core, structure=ball) & candidate
    for k in np.flatnonzero(brain.any(axis=(1, 2))):
        brain[k] = ndimage.binary_fill_holes(brain[k]) & hull[k] & ~bone[k]
    enclosure = 0.0
    if brain.any():
        border = brain & ~ndimage.binary_erosion(brain, structure=np.ones((1, 3, 3), dtype=bool))
        near_bone = ndimage.binary_dilation(
            bone, structure=_disk(max(1, round(6.0 / min(grid[1], grid[2]))))[None])
        enclosure = float(np.count_nonzero(border & near_bone) / max(1, np.count_nonzero(border)))
    # Air enclosed by the head (sinuses, nasal cavity, mastoid cells) below / above the brain's
    # centre: the anatomy's own head-feet direction, against the headers'.
    air_below = air_above = 0.0
    if brain.any() and small.shape[0] > 1:
        enclosed = np.zeros_like(head)
        for k in range(small.shape[0]):
            if head[k].any():
                enclosed[k] = ndimage.binary_fill_holes(head[k]) & ~head[k]
        centre = float(np.argwhere(brain)[:, 0].mean())
        per_slice = enclosed.sum(axis=(1, 2)) * float(np.prod(grid)) / 1000.0
        z = np.arange(small.shape[0])
        air_below = float(per_slice[z < centre].sum())
        air_above = float(per_slice[z > centre].sum())
    if step > 1:
        brain = np.repeat(np.repeat(brain, step, axis=1), step, axis=2)[
            :, : hu.shape[1], : hu.shape[2]] & (hu < p.bone_hu)
    slices = np.flatnonzero(brain.any(axis=(1, 2)))
    extent = float((slices[-1] - slices[0] + 1) * spacing_mm[0]) if slices.size else 0.0
    volume = float(np.count_nonzero(brain) * np.prod(spacing_mm) / 1000.0)
    return BrainMaskReport(np.asarray(brain), enclosure, volume, extent, air_below, air_above)


def brain_mask(hu: np.ndarray, spacing_mm: tuple[float, float, float],
               params: BrainGWRParameters | None = None) -> np.ndarray:
    """Skull-stripped brain mask of a head CT (:func:`brain_mask_report`'s mask).

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` float32 HU, canonical HPL orientation (axial slices).
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        ``bone_hu`` and ``brain_mask_hu`` are used.

    Returns
    -------
    numpy.ndarray
        ``(slices, rows, columns)`` bool.
    """
    return brain_mask_report(hu, spacing_mm, params).mask


@dataclass
class RegistrationReport:
    """How the template was registered to the scan.

    Attributes
    ----------
    transform:
        SimpleITK transform mapping scan (fixed) points to template (moving) points.
    brain_dice:
        Dice of the registered template brain mask against the scan's brain mask.
    landmark_coverage:
        Per label, carried-back volume / expected volume.
    metric_value:
        Final metric value (negative normalised correlation; -1 = perfect).
    seconds:
        Registration time.
    missing_labels:
        Landmarks whose coverage is below ``min_landmark_coverage`` (outside the field of
        view); they are dropped from the label map and reported as missing.
    brain_volume_cm3, brain_extent_mm, skull_enclosure:
        From :class:`BrainMaskReport`.
    template_scale:
        Singular values of the template-to-scan linear map (template size relative to the
        scan's brain), sorted.
    ventricle_stage:
        What the ventricle refinement (:func:`register_ventricles`) did.
    """

    transform: sitk.Transform
    brain_dice: float
    landmark_coverage: dict[int, float]
    metric_value: float
    seconds: float
    missing_labels: list[int] = field(default_factory=list)
    brain_volume_cm3: float | None = None
    brain_extent_mm: float | None = None
    skull_enclosure: float | None = None
    template_scale: tuple[float, ...] | None = None
    ventricle_stage: VentricleStage | None = None


def _register(fixed: sitk.Image, moving: sitk.Image, initial: sitk.Transform, fixed_mask: sitk.Image,
              iterations: int, shrink: list[int], smooth_mm: list[float]) -> tuple[sitk.Transform, float]:
    """One registration stage: normalised correlation, gradient descent, multi-resolution.

    The fixed mask restricts the metric to the scan's visible brain: template tissue that
    falls outside the field of view (a cut-off frontal pole or vertex) is never compared.
    """
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.RANDOM)
    method.SetMetricSamplingPercentage(0.3, seed=20240601)
    method.SetMetricFixedMask(fixed_mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=4.0, minStep=0.01, numberOfIterations=iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8,
    )
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel(shrink)
    method.SetSmoothingSigmasPerLevel(smooth_mm)
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetInitialTransform(initial, inPlace=False)
    result = method.Execute(fixed, moving)
    logger.debug("brain-gwr registration stage: %s, %d iterations, metric %.4f",
                 method.GetOptimizerStopConditionDescription(), method.GetOptimizerIteration(),
                 method.GetMetricValue())
    if isinstance(result, sitk.CompositeTransform):
        result = result.GetBackTransform()
    return result, float(method.GetMetricValue())


#: Attenuation given to the template's tissue classes to make a pseudo-CT of the template, HU
#: (non-contrast CT: gray matter 37-45 HU, white matter 20-30 HU, CSF 0-10 HU; clinical.md
#: §4.3, Buzug 2008). Only the contrast pattern matters: the metric is a normalised correlation.
PSEUDO_CT_HU = {TISSUE_CSF: 5.0, TISSUE_GRAY_MATTER: 38.0, TISSUE_WHITE_MATTER: 28.0}

#: Initial pitch (rotation about the left-right axis) tried by the rigid stage, degrees: head
#: CT is planned on the orbito-meatal or supra-orbito-meatal line, 10-25 degrees from the
#: template's AC-PC plane, and heads are flexed or extended in the holder.
INITIAL_PITCH_DEG = (-20.0, 0.0, 20.0)


def pseudo_ct(atlas: BrainAtlas) -> np.ndarray:
    """The template as a non-contrast CT would show it: ``(z, y, x)`` float32 HU, 0 outside.

    Brain voxels without a tissue class get the mean of gray and white matter.
    """
    out = np.zeros(atlas.tissue.shape, dtype=np.float32)
    out[atlas.brain_mask] = 0.5 * (PSEUDO_CT_HU[TISSUE_GRAY_MATTER]
                                   + PSEUDO_CT_HU[TISSUE_WHITE_MATTER])
    for tissue, value in PSEUDO_CT_HU.items():
        out[atlas.brain_mask & (atlas.tissue == tissue)] = value
    return out


def register_atlas(volume: CTVolume, brain: np.ndarray, atlas: BrainAtlas,
                   params: BrainGWRParameters) -> tuple[sitk.Transform, float]:
    """Register the atlas template to the scan.

    Same-modality registration: the template is turned into a pseudo-CT
    (:func:`pseudo_ct`: CSF, gray and white matter at typical non-contrast HU) and compared
    with the scan by normalised correlation, which ignores scanner calibration offsets and
    scale. The scan is cropped to its brain (plus a 15 mm margin), set to 0 outside the brain
    and clipped to 0..80 HU (calcification, blood and bone do not dominate), anti-aliased and
    resampled to ``registration_spacing_mm``; the metric samples 30 % of the voxels of the
    dilated *visible* brain only.

    Stages: centre of mass of the two brain masks; rigid (Euler), started from each pitch of
    :data:`INITIAL_PITCH_DEG`, the best kept; rotation + anisotropic scaling
    (ScaleVersor3D, 9 parameters, no shear: a field of view that cuts the brain cannot be
    absorbed by shearing the template).

    Parameters
    ----------
    volume:
        The scan.
    brain:
        ``(slices, rows, columns)`` bool brain mask of the scan (:func:`brain_mask`).
    atlas:
        The template.
    params:
        ``registration_spacing_mm`` and ``registration_iterations`` are used.

    Returns
    -------
    tuple[SimpleITK.Transform, float]
        Transform mapping scan points (LPS, mm) to template points, and the final metric value
        (negative normalised correlation: -1 is a perfect match).
    """
    from scipy.spatial.transform import Rotation

    spacing = float(params.registration_spacing_mm)
    window, lo = _brain_window(brain, volume.spacing_mm, margin_mm=15.0)
    scan = np.where(brain[window], np.clip(volume.hu[window], 0.0, 80.0), 0.0).astype(np.float32)
    sigma_vox = [max(0.0, spacing**2 - s**2) ** 0.5 / 2.355 / s for s in volume.spacing_mm]
    if max(sigma_vox) > 0:
        scan = ndimage.gaussian_filter(scan, sigma_vox).astype(np.float32)
    fixed_full = _sitk_image(volume, scan, offset=lo)
    mask_full = _sitk_image(volume, brain[window].astype(np.float32), offset=lo)
    in_spacing = np.asarray(fixed_full.GetSpacing())
    size = [max(4, round(n * s / spacing))
            for n, s in zip(fixed_full.GetSize(), in_spacing, strict=True)]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing([spacing] * 3)
    reference.SetOrigin(fixed_full.GetOrigin())
    reference.SetDirection(fixed_full.GetDirection())
    fixed = sitk.Resample(fixed_full, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    fixed_mask = sitk.Resample(mask_full, reference, sitk.Transform(), sitk.sitkLinear, 0.0)
    metric_mask = sitk.BinaryDilate(sitk.Cast(fixed_mask >= 0.5, sitk.sitkUInt8), [2, 2, 2])
    moving = atlas.image(pseudo_ct(atlas))
    moving_mask = atlas.image(atlas.brain_mask.astype(np.float32))

    initial = sitk.CenteredTransformInitializer(
        fixed_mask, moving_mask, sitk.Euler3DTransform(),
        sitk.CenteredTransformInitializerFilter.MOMENTS,
    )
    best: tuple[sitk.Transform, float] | None = None
    for pitch in INITIAL_PITCH_DEG:
        start = sitk.Euler3DTransform(initial)
        start.SetRotation(float(np.deg2rad(pitch)), 0.0, 0.0)
        candidate = _register(fixed, moving, start, metric_mask, params.registration_iterations,
                              shrink=[4, 2], smooth_mm=[8.0, 4.0])
        if best is None or candidate[1] < best[1]:
            best = candidate
    assert best is not None
    rigid = sitk.Euler3DTransform(best[0])
    scaled = sitk.ScaleVersor3DTransform()
    scaled.SetCenter(rigid.GetCenter())
    scaled.SetRotation(tuple(float(v) for v in Rotation.from_matrix(
        np.asarray(rigid.GetMatrix()).reshape(3, 3)).as_quat()))
    scaled.SetTranslation(rigid.GetTranslation())
    final, metric = _register(fixed, moving, scaled, metric_mask, params.registration_iterations,
                              shrink=[2, 1], smooth_mm=[4.0, 0.0])
    logger.debug("brain-gwr registration metric %.4f", metric)
    return final, metric


#: Orientation check: air enclosed by the head (paranasal sinuses, nasal cavity, mastoid
#: cells: all below the brain's centre in any head) of at least this volume above the brain's
#: centre, cm³, and more than ORIENTATION_AIR_RATIO times the volume below it, means the
#: headers' head-feet direction is flipped. A series that does not reach the skull base holds
#: little such air anywhere and is not judged.
ORIENTATION_AIR_MIN_CM3 = 5.0
ORIENTATION_AIR_RATIO = 3.0

#: Cerebrospinal fluid on non-contrast CT for the ventricle stage: at most this HU after a
#: 1 x 3 x 3 median filter: the upper bound of CSF (0-10 HU; parenchyma 20-45 HU, clinical.md
#: §4.3, Buzug 2008), so that hypodense (oedematous, infarcted) parenchyma of 12-20 HU is not
#: taken for ventricle.
VENTRICLE_CSF_HU = 10.0
#: CSF deeper than this below the brain surface counts as ventricular (cortical sulci, the
#: Sylvian fissures and the convexity subarachnoid space lie closer to the surface), mm.
VENTRICLE_DEPTH_MM = 10.0
#: Largest correction the ventricle stage may apply to the whole-brain registration: shift (mm)
#: and isotropic scale range; beyond it the stage is not trusted and the global result is kept.
VENTRICLE_MAX_SHIFT_MM = 15.0
VENTRICLE_SCALE_RANGE = (0.8, 1.25)


def _deep_csf(csf: np.ndarray, brain: np.ndarray, spacing_mm: Sequence[float]) -> np.ndarray:
    """CSF voxels deeper than :data:`VENTRICLE_DEPTH_MM` below the brain surface.

    Where the brain mask touches the array border (field of view cutting the brain) the mask is
    continued beyond the border, so the cut is not taken for a brain surface.
    """
    padded = np.pad(brain, 1, mode="edge")
    depth = ndimage.distance_transform_edt(padded, sampling=tuple(float(s) for s in spacing_mm))
    return np.asarray(csf & brain & (depth[1:-1, 1:-1, 1:-1] > VENTRICLE_DEPTH_MM))


def atlas_deep_csf(atlas: BrainAtlas) -> np.ndarray:
    """The template's CSF deeper than :data:`VENTRICLE_DEPTH_MM` (``(z, y, x)`` bool), defined
    exactly as on the scan (:func:`_deep_csf`)."""
    spacing_zyx = tuple(float(s) for s in atlas.spacing_mm[::-1])
    return _deep_csf(atlas.tissue == TISSUE_CSF, atlas.brain_mask, spacing_zyx)


def atlas_ventricle_region(atlas: BrainAtlas,
                           margin_mm: float = 10.0) -> tuple[np.ndarray, np.ndarray]:
    """The template's lateral and third ventricles and the region around them.

    Ventricles = the template's deep CSF (:func:`_deep_csf`) within the box spanned by the
    caudate nuclei and the corpus callosum (the frontal horns and bodies of the lateral
    ventricles lie between the caudate heads under the corpus callosum; the third ventricle
    between the thalami below its body) and ± 30 mm of the midline.

    Returns
    -------
    tuple[numpy.ndarray, numpy.ndarray]
        ``(z, y, x)`` bool ventricles and the box around them enlarged by ``margin_mm``, on the
        atlas grid.
    """
    spacing_zyx = tuple(float(s) for s in atlas.spacing_mm[::-1])
    structures = np.isin(atlas.landmarks, (LABEL_CAUDATE_RIGHT, LABEL_CAUDATE_LEFT,
                                           LABEL_CORPUS_CALLOSUM))
    index = np.argwhere(structures)
    lo, hi = index.min(axis=0), index.max(axis=0) + 1
    mid_x = int(round(np.argwhere(atlas.landmarks == LABEL_CORPUS_CALLOSUM)[:, 2].mean()))
    half_x = int(round(30.0 / spacing_zyx[2]))
    box = np.zeros(atlas.landmarks.shape, dtype=bool)
    box[lo[0]:hi[0], lo[1]:hi[1], max(0, mid_x - half_x):mid_x + half_x + 1] = True
    ventricles = atlas_deep_csf(atlas) & box & ~structures
    grow = [int(round(margin_mm / s)) for s in spacing_zyx]
    region = ndimage.binary_dilation(box, structure=np.ones([2 * g + 1 for g in grow], dtype=bool))
    return ventricles, region


def _homogeneous(transform: sitk.Transform) -> np.ndarray:
    """4 x 4 matrix of an affine-like SimpleITK transform (or a composite of such)."""
    if isinstance(transform, sitk.CompositeTransform):
        out = np.eye(4)
        for i in range(transform.GetNumberOfTransforms()):
            # ITK applies the last added transform first.
            out = out @ _homogeneous(transform.GetNthTransform(i))
        return out
    if isinstance(transform, sitk.TranslationTransform):
        out = np.eye(4)
        out[:3, 3] = transform.GetOffset()
        return out
    matrix = np.asarray(transform.GetMatrix(),  # type: ignore[attr-defined]
                        dtype=float).reshape(3, 3)
    center = np.asarray(transform.GetCenter(), dtype=float)  # type: ignore[attr-defined]
    translation = np.asarray(transform.GetTranslation(), dtype=float)  # type: ignore[attr-defined]
    out = np.eye(4)
    out[:3, :3] = matrix
    out[:3, 3] = translation + center - matrix @ center
    return out


@dataclass
class VentricleStage:
    """What the ventricle stage (:func:`register_ventricles`) did.

    ``applied``: whether its correction was kept; ``shift_mm``: displacement of the template
    ventricles' centre on the scan, mm (LPS); ``scale``: isotropic scale of the correction;
    ``scan_ventricles_cm3``: deep CSF of the scan in the region, cm³; ``reason``: why it was
    not applied (or ``None``); ``rotation_deg``: rotation angle of the correction, degrees.
    """

    applied: bool
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0)
    scale: float = 1.0
    scan_ventricles_cm3: float = 0.0
    reason: str | None = None
    rotation_deg: float = 0.0


def register_ventricles(volume: CTVolume, brain: np.ndarray, atlas: BrainAtlas,
                        transform: sitk.Transform,
                        params: BrainGWRParameters) -> tuple[sitk.Transform, VentricleStage]:
    """Refine the whole-brain registration on the lateral and third ventricles.

    The ventricles are the scan's strongest, scanner-independent landmark next to the basal
    ganglia: CSF (0-10 HU) against parenchyma (20-45 HU), a contrast ten times the gray/white
    contrast the whole-brain stage relies on. The whole-brain stage is dominated by the brain
    outline and the cortical sulci, and a field of view that cuts the frontal pole or a scaled
    template can leave the deep structures several millimetres off. This stage registers the
    template's ventricles (:func:`atlas_ventricle_region`) to the scan's deep CSF
    (median-filtered HU ≤ :data:`VENTRICLE_CSF_HU`, more than :data:`VENTRICLE_DEPTH_MM` below
    the brain surface) within the ventricle region carried to the scan by the whole-brain
    transform: both as binary masks smoothed by 2 mm, normalised correlation, a similarity
    transform (rotation, shift, isotropic scale) applied on top of the whole-brain transform.
    The correction is kept only when the correlation improves, the shift, scale and rotation
    stay within :data:`VENTRICLE_MAX_SHIFT_MM`, :data:`VENTRICLE_SCALE_RANGE` and 15°, and it
    moves the ventricle region by at least the 2 mm grid of the stage (95th percentile).

    Returns
    -------
    tuple[SimpleITK.Transform, VentricleStage]
        The (possibly) refined transform scan -> template and what the stage did.
    """
    spacing = 2.0
    window, lo = _brain_window(brain, volume.spacing_mm, margin_mm=15.0)
    hu = ndimage.median_filter(volume.hu[window], size=(1, 3, 3))
    csf = (hu <= VENTRICLE_CSF_HU) & (hu >= -15.0)
    scan_deep = _deep_csf(csf, brain[window], volume.spacing_mm).astype(np.float32)
    full = _sitk_image(volume, scan_deep, offset=lo)
    size = [max(4, round(n * s / spacing)) for n, s in zip(full.GetSize(), full.GetSpacing(),
                                                           strict=True)]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing([spacing] * 3)
    reference.SetOrigin(full.GetOrigin())
    reference.SetDirection(full.GetDirection())
    fixed = sitk.SmoothingRecursiveGaussian(
        sitk.Resample(full, reference, sitk.Transform(), sitk.sitkLinear, 0.0), 2.0)
    ventricles, region = atlas_ventricle_region(atlas)
    # Both sides carry the same feature (deep CSF); the fixed mask restricts the comparison to
    # the ventricle region.
    moving = sitk.SmoothingRecursiveGaussian(
        atlas.image(atlas_deep_csf(atlas).astype(np.float32)), 2.0)
    mask = sitk.Resample(atlas.image(region.astype(np.uint8), sitk.sitkUInt8), reference,
                         transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    mask_array = sitk.GetArrayFromImage(mask).astype(bool)
    fixed_array = sitk.GetArrayFromImage(fixed)
    scan_cm3 = float((fixed_array[mask_array] >= 0.5).sum() * spacing**3 / 1000.0)
    if scan_cm3 < 2.0:
        return transform, VentricleStage(False, scan_ventricles_cm3=scan_cm3, reason=(
            f"ventricle stage skipped: only {scan_cm3:.1f} cm³ of deep CSF near the expected "
            "ventricles"))
    # Centre of the correction: the template ventricles' centroid carried to the scan.
    mapped = sitk.GetArrayFromImage(sitk.Resample(
        atlas.image(ventricles.astype(np.uint8), sitk.sitkUInt8), reference, transform,
        sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)).astype(bool)
    if not mapped.any():
        return transform, VentricleStage(False, scan_ventricles_cm3=scan_cm3, reason=(
            "ventricle stage skipped: the template ventricles fall outside the scan"))
    centre_index = np.argwhere(mapped).mean(axis=0)[::-1]
    centre = reference.TransformContinuousIndexToPhysicalPoint(
        tuple(float(v) for v in centre_index))
    correction = sitk.Similarity3DTransform()
    correction.SetCenter(centre)
    method = sitk.ImageRegistrationMethod()
    method.SetMetricAsCorrelation()
    method.SetMetricSamplingStrategy(method.NONE)
    method.SetMetricFixedMask(mask)
    method.SetInterpolator(sitk.sitkLinear)
    method.SetOptimizerAsRegularStepGradientDescent(
        learningRate=2.0, minStep=0.01, numberOfIterations=params.registration_iterations,
        relaxationFactor=0.5, gradientMagnitudeTolerance=1e-8)
    method.SetOptimizerScalesFromPhysicalShift()
    method.SetShrinkFactorsPerLevel([2, 1])
    method.SetSmoothingSigmasPerLevel([2.0, 0.0])
    method.SmoothingSigmasAreSpecifiedInPhysicalUnitsOn()
    method.SetMovingInitialTransform(transform)
    method.SetInitialTransform(correction, inPlace=True)
    before = float(method.MetricEvaluate(fixed, moving))
    method.Execute(fixed, moving)
    after = float(method.MetricEvaluate(fixed, moving))
    matrix = np.asarray(correction.GetMatrix()).reshape(3, 3)
    scale = float(correction.GetScale())
    shift = tuple(float(v) for v in (
        np.asarray(correction.TransformPoint(centre)) - np.asarray(centre)))
    logger.debug("brain-gwr ventricle stage: metric %.3f -> %.3f, shift %s, scale %.3f",
                 before, after, shift, scale)
    low, high = VENTRICLE_SCALE_RANGE
    angle = float(np.degrees(np.arccos(np.clip((np.trace(matrix / scale) - 1) / 2, -1, 1))))
    stage = VentricleStage(False, shift, scale, scan_cm3, rotation_deg=angle)
    # Displacement the correction causes within the ventricle region (95th percentile).
    points = np.argwhere(mask_array)[::7][:, ::-1].astype(float)
    direction = np.asarray(reference.GetDirection()).reshape(3, 3)
    physical = (direction @ (points * spacing).T).T + np.asarray(reference.GetOrigin())
    moved = (matrix @ (physical - np.asarray(centre)).T).T + np.asarray(centre) \
        + np.asarray(correction.GetTranslation())
    displacement = float(np.percentile(np.linalg.norm(moved - physical, axis=1), 95))
    if not after < before:
        stage.reason = "ventricle stage did not improve the ventricle overlap; not applied"
    elif np.linalg.norm(shift) > VENTRICLE_MAX_SHIFT_MM or not low <= scale <= high \
            or angle > 15.0:
        stage.reason = (f"ventricle stage correction implausible (shift "
                        f"{np.linalg.norm(shift):.1f} mm, scale {scale:.2f}, rotation "
                        f"{angle:.0f}°); not applied")
    elif displacement < spacing:
        stage.reason = (f"ventricle stage correction below the {spacing:g} mm grid "
                        f"({displacement:.1f} mm); not needed")
    else:
        stage.applied = True
        combined = _homogeneous(transform) @ _homogeneous(correction)
        out = sitk.AffineTransform(3)
        out.SetMatrix(tuple(combined[:3, :3].ravel()))
        out.SetTranslation(tuple(combined[:3, 3]))
        return out, stage
    return transform, stage


def _as_affine(transform: sitk.Transform) -> sitk.AffineTransform:
    if isinstance(transform, sitk.CompositeTransform):
        transform = transform.GetBackTransform()
    matrix = np.asarray(transform.GetMatrix(), dtype=float)  # type: ignore[attr-defined]
    affine = sitk.AffineTransform(3)
    affine.SetCenter(transform.GetCenter())  # type: ignore[attr-defined]
    affine.SetMatrix(tuple(matrix))
    affine.SetTranslation(transform.GetTranslation())  # type: ignore[attr-defined]
    return affine


def segment_reference(
    volume: CTVolume, params: BrainGWRParameters | None = None, atlas: BrainAtlas | None = None,
) -> tuple[np.ndarray, RegistrationReport, np.ndarray]:
    """Landmarks by atlas registration (reference method, before intensity refinement).

    Parameters
    ----------
    volume:
        A head CT volume (several slices), canonical orientation.
    params:
        Protocol parameters.
    atlas:
        Atlas (default: the shipped one or ``params.atlas_path``).

    Returns
    -------
    tuple
        ``(label_map, report, brain)``: ``(slices, rows, columns)`` uint8 labels in the numbering
        of :data:`LANDMARK_LABELS` on the grid of ``volume.hu``; the registration report; the
        scan's brain mask.

    Raises
    ------
    UnsupportedInputError
        If the brain is not found or does not span ``min_brain_extent_mm``, or the scan does not
        cover every landmark (``min_landmark_coverage``).
    PipelineError
        If the registration fails its quality check (``min_registration_dice``).
    """
    p = params or BrainGWRParameters()
    atlas = atlas or load_atlas(p.atlas_path)
    start = time.perf_counter()
    found = brain_mask_report(volume.hu, volume.spacing_mm, p)
    brain = found.mask
    if not brain.any():
        raise UnsupportedInputError(
            "no brain found inside a skull (skull threshold "
            f"{p.bone_hu:g} HU); the series does not look like a head CT"
        )
    if found.skull_enclosure < p.min_skull_enclosure:
        raise UnsupportedInputError(
            f"the soft tissue found is not enclosed by a skull (only "
            f"{found.skull_enclosure:.0%} of its outline lies within 6 mm of bone, at least "
            f"{p.min_skull_enclosure:.0%} expected for a brain): the series does not look like "
            "a head CT; send the non-contrast head CT series"
        )
    if (found.air_above_cm3 >= ORIENTATION_AIR_MIN_CM3
            and found.air_above_cm3 > ORIENTATION_AIR_RATIO * found.air_below_cm3):
        raise UnsupportedInputError(
            f"the anatomy is upside down relative to the headers: {found.air_above_cm3:.0f} cm³ "
            "of air enclosed by the head (paranasal sinuses, nasal cavity, mastoid cells) lie "
            f"above the brain and {found.air_below_cm3:.0f} cm³ below it; Image Position "
            "(Patient) / Patient Position do not describe this head CT (head-feet flipped). "
            "No GWR is reported; correct the headers and resend"
        )
    extent_mm = found.extent_mm
    if extent_mm < p.min_brain_extent_mm:
        raise UnsupportedInputError(
            f"the brain spans only {extent_mm:.0f} mm head-feet in this series (at least "
            f"{p.min_brain_extent_mm:g} mm are needed): the volume does not cover the basal "
            "ganglia and corpus callosum; send the whole-head series"
        )
    transform, metric = register_atlas(volume, brain, atlas, p)
    # The brain-outline quality check judges the whole-brain stage; the ventricle stage then
    # refines the deep structures only (its correction is bounded, VENTRICLE_MAX_SHIFT_MM).
    whole_brain_transform = transform
    transform, ventricle_stage = register_ventricles(volume, brain, atlas, transform, p)
    # Carry the labels back within the brain's bounding box (+ 15 mm): the landmarks lie deep
    # inside the brain, and resampling only there keeps time and memory down.
    window, offset = _brain_window(brain, volume.spacing_mm, margin_mm=15.0)
    reference = _sitk_image(volume, np.zeros(brain[window].shape, dtype=np.uint8), offset=offset)
    carried = np.zeros(brain.shape, dtype=np.uint8)
    carried[window] = sitk.GetArrayFromImage(
        sitk.Resample(atlas.image(atlas.landmarks, sitk.sitkUInt8), reference, transform,
                      sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    )
    template_brain = sitk.GetArrayFromImage(
        sitk.Resample(atlas.image(atlas.brain_mask.astype(np.uint8), sitk.sitkUInt8), reference,
                      whole_brain_transform, sitk.sitkNearestNeighbor, 0, sitk.sitkUInt8)
    ).astype(bool)
    overlap = brain[window]
    overlap_t = template_brain
    dice = float(2.0 * (overlap & overlap_t).sum() / max(1, overlap.sum() + overlap_t.sum()))
    determinant = abs(float(np.linalg.det(np.asarray(_as_affine(transform).GetMatrix()).reshape(3, 3))))
    voxel_mm3 = float(np.prod(volume.spacing_mm))
    coverage = {}
    for label in LANDMARK_LABELS:
        expected = (atlas.landmarks == label).sum() * atlas.voxel_volume_mm3 / max(determinant, 1e-6)
        coverage[label] = float((carried == label).sum() * voxel_mm3 / expected)
    scales = np.linalg.svd(np.asarray(_as_affine(transform).GetMatrix()).reshape(3, 3),
                           compute_uv=False)
    seconds = time.perf_counter() - start
    missing = sorted(k for k, v in coverage.items() if v < p.min_landmark_coverage)
    report = RegistrationReport(transform, dice, coverage, metric, seconds,
                                missing_labels=missing, brain_volume_cm3=found.volume_cm3,
                                brain_extent_mm=extent_mm, skull_enclosure=found.skull_enclosure,
                                template_scale=tuple(float(1.0 / v) for v in scales),
                                ventricle_stage=ventricle_stage)
    logger.info("brain-gwr: registration %.1f s, brain Dice %.3f, coverage %s", seconds, dice,
                {k: round(v, 2) for k, v in coverage.items()})
    if dice < p.min_registration_dice:
        raise PipelineError(
            f"the atlas registration failed its quality check: brain Dice {dice:.2f} < "
            f"{p.min_registration_dice:g} (Dice of the template brain against the scan's brain, "
            "within the field of view); the head may be heavily abnormal or not a head CT. No "
            "GWR is reported"
        )
    low, high = p.template_scale_range
    if not all(low <= 1.0 / v <= high for v in scales):
        raise PipelineError(
            "the atlas registration failed its quality check: the template was scaled by "
            f"{', '.join(f'{1.0 / v:.2f}' for v in scales)} (expected {low:g}..{high:g} for an "
            "adult or child head); the series may not be a head CT or the registration "
            "diverged. No GWR is reported"
        )
    if len(missing) == len(LANDMARK_LABELS):
        raise UnsupportedInputError(
            "the series covers none of the landmarks (caudate, putamen, internal capsule, "
            "corpus callosum); send a series covering the basal ganglia and the corpus callosum"
        )
    # Landmarks the field of view does not cover are dropped (reported as missing), the others
    # are measured.
    carried[np.isin(carried, missing)] = 0
    return carried.astype(np.uint8), report, brain


def refine_landmarks(hu: np.ndarray, label_map: np.ndarray, spacing_mm: tuple[float, float, float],
                     params: BrainGWRParameters | None = None) -> np.ndarray:
    """Keep only landmark voxels of parenchymal attenuation, away from partial volume.

    A voxel stays labelled when the (1 × 3 × 3 median-filtered) HU lies within
    ``parenchyma_hu`` at the voxel and within an in-plane disk of radius ``erosion_mm`` around
    it (i.e. the in-band mask eroded in-plane). The median filter only decides which voxels are
    parenchyma; measurements use the unfiltered HU.

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` float32 HU.
    label_map:
        ``(slices, rows, columns)`` uint8 landmark labels.
    spacing_mm:
        (slice, row, column) spacing, mm.
    params:
        ``parenchyma_hu`` and ``erosion_mm`` are used.

    Returns
    -------
    numpy.ndarray
        Refined ``uint8`` label map, same shape.
    """
    p = params or BrainGWRParameters()
    refined = np.zeros(label_map.shape, dtype=np.uint8)
    if not label_map.any():
        return refined
    # Work inside the labels' bounding box plus a margin larger than the filters.
    radius = max(1, round(p.erosion_mm / min(spacing_mm[1], spacing_mm[2]))) \
        if p.erosion_mm > 0 else 0
    margin_mm = (radius + 2) * max(spacing_mm[1], spacing_mm[2])
    window, _ = _brain_window(label_map > 0, (1.0, spacing_mm[1], spacing_mm[2]),
                              margin_mm=margin_mm)
    window = (slice(window[0].start, window[0].stop), window[1], window[2])
    filtered = ndimage.median_filter(hu[window], size=(1, 3, 3))
    in_band = (filtered >= p.parenchyma_hu[0]) & (filtered <= p.parenchyma_hu[1])
    if radius:
        in_band = ndimage.binary_erosion(in_band, structure=_disk(radius)[None])
    refined[window] = np.where(in_band, label_map[window], 0)
    return refined


# ------------------------------------------------------------------------------------------
# Measurement
# ------------------------------------------------------------------------------------------


@dataclass
class RegionStatistics:
    """HU statistics of one landmark.

    ``mean_hu``, ``median_hu``, ``sd_hu`` in HU; ``voxels`` count; ``volume_mm3`` mm³.
    """

    mean_hu: float
    median_hu: float
    sd_hu: float
    voxels: int
    volume_mm3: float


def region_statistics(hu: np.ndarray, label_map: np.ndarray,
                      spacing_mm: tuple[float, float, float]) -> dict[int, RegionStatistics]:
    """Statistics of every non-empty label.

    Parameters
    ----------
    hu:
        ``(slices, rows, columns)`` HU.
    label_map:
        Same shape, uint8 labels.
    spacing_mm:
        Voxel spacing, mm.

    Returns
    -------
    dict[int, RegionStatistics]
        Label -> statistics, for labels with at least one voxel.
    """
    voxel_mm3 = float(np.prod(spacing_mm))
    out: dict[int, RegionStatistics] = {}
    for label in (int(v) for v in np.unique(label_map) if v):
        values = hu[label_map == label].astype(np.float64)
        out[label] = RegionStatistics(
            mean_hu=float(values.mean()), median_hu=float(np.median(values)),
            sd_hu=float(values.std(ddof=1)) if values.size > 1 else 0.0,
            voxels=int(values.size), volume_mm3=float(values.size * voxel_mm3),
        )
    return out


def core_regions(label_map: np.ndarray, spacing_mm: tuple[float, float, float],
                 core_erosion_mm: float) -> tuple[np.ndarray, list[int]]:
    """Each label eroded in-plane by ``core_erosion_mm`` (at least one pixel when > 0).

    Parameters
    ----------
    label_map:
        ``(slices, rows, columns)`` uint8 labels.
    spacing_mm:
        (slice, row, column) spacing, mm.
    core_erosion_mm:
        Erosion radius, mm; 0 returns the labels unchanged.

    Returns
    -------
    tuple[numpy.ndarray, list[int]]
        The core label map, and the labels whose core was empty and that were kept whole.
    """
    if core_erosion_mm <= 0:
        return label_map.copy(), []
    radius = max(1, round(core_erosion_mm / min(spacing_mm[1], spacing_mm[2])))
    structure = _disk(radius)[None]
    core = np.zeros_like(label_map)
    kept_whole = []
    for label in (int(v) for v in np.unique(label_map) if v):
        region = label_map == label
        eroded = ndimage.binary_erosion(region, structure=structure)
        if not eroded.any():
            eroded = region
            kept_whole.append(label)
        core[eroded] = label
    return core, kept_whole


def gwr_values(stats: Mapping[int, RegionStatistics]) -> dict[str, float | None]:
    """The GWRs of the basal-ganglia family from landmark mean HU.

    GWR_BG = (CN + PU) / (CC + PIC), CN, PU, PIC = mean of the right and left ROI means
    (Torbey et al., Stroke 2000; ROI set of Metter et al., Resuscitation 2011); per side with
    one side's CN, PU, PIC; PU / PIC bilateral (Gentsch et al., Clin Neuroradiol 2015).

    Returns
    -------
    dict[str, float | None]
        ``gwr_bg``, ``gwr_bg_right``, ``gwr_bg_left``, ``gwr_pu_pic``; ``None`` where a region
        is missing.
    """
    def mean_of(*labels: int) -> float | None:
        values = [stats[k].mean_hu for k in labels if k in stats]
        return float(np.mean(values)) if len(values) == len(labels) else None

    cn = mean_of(LABEL_CAUDATE_RIGHT, LABEL_CAUDATE_LEFT)
    pu = mean_of(LABEL_PUTAMEN_RIGHT, LABEL_PUTAMEN_LEFT)
    pic = mean_of(LABEL_PLIC_RIGHT, LABEL_PLIC_LEFT)
    cc = mean_of(LABEL_CORPUS_CALLOSUM)

    def ratio(num: list[float | None], den: list[float | None]) -> float | None:
        if any(v is None for v in num + den):
            return None
        d = sum(v for v in den if v is not None)
        return None if d <= 0 else sum(v for v in num if v is not None) / d

    side = {}
    for name, (c, p_, i) in {
        "right": (LABEL_CAUDATE_RIGHT, LABEL_PUTAMEN_RIGHT, LABEL_PLIC_RIGHT),
        "left": (LABEL_CAUDATE_LEFT, LABEL_PUTAMEN_LEFT, LABEL_PLIC_LEFT),
    }.items():
        side[name] = ratio([mean_of(c), mean_of(p_)], [cc, mean_of(i)])
    return {
        "gwr_bg": ratio([cn, pu], [cc, pic]),
        "gwr_bg_right": side["right"],
        "gwr_bg_left": side["left"],
        "gwr_pu_pic": ratio([pu], [pic]),
    }


@dataclass
class _Context:
    """Facts about the input that go into the summary."""

    kvp: float | None = None
    slice_thickness_mm: float | None = None
    gantry_tilt_deg: float | None = None
    convolution_kernel: str | None = None
    contrast: bool | None = None
    extra: dict[str, Any] = field(default_factory=dict)


def _gantry_tilt_deg(ds: Dataset) -> float | None:
    """Gantry/Detector Tilt (0018,1120) in degrees, signed (0 is a valid tilt); ``None`` when
    missing or unparsable. Geometry, not a patient or acquisition fact of the context."""
    try:
        value = ds.get("GantryDetectorTilt")
        return None if value in (None, "") else float(value)
    except (TypeError, ValueError):
        return None


def _context(volume: CTVolume, context: PatientContext | None) -> _Context:
    """The summary's acquisition facts: kVp, slice thickness, kernel and contrast from the
    core's :class:`~pipelines.protocol.PatientContext` (read from ``volume.datasets`` with the
    same rule when ``None``), the gantry tilt from the first header."""
    if context is None:
        context = PatientContext.from_headers(volume.datasets)
    return _Context(context.kvp, context.slice_thickness_mm,
                    _gantry_tilt_deg(volume.datasets[0]), context.kernel, context.contrast)


def measure(
    volume: CTVolume,
    label_map: np.ndarray,
    params: BrainGWRParameters | None = None,
    *,
    algorithm: AlgorithmInfo = ALGORITHM,
    registration: RegistrationReport | None = None,
    warnings: Sequence[str] = (),
    context: PatientContext | None = None,
) -> PipelineResult:
    """Measure the landmarks and GWRs and build the :class:`PipelineResult`.

    Parameters
    ----------
    volume:
        The scan (canonical orientation).
    label_map:
        ``(slices, rows, columns)`` uint8 refined landmark labels (:data:`LANDMARK_LABELS`) on
        the grid of ``volume.hu``.
    params:
        Protocol parameters (cut-off).
    algorithm:
        The algorithm that produced ``label_map``.
    registration:
        The registration report of the reference method, if any.
    warnings:
        Warnings gathered so far.
    context:
        The acquisition's kVp, kernel, slice thickness and contrast
        (:class:`pipelines.protocol.PatientContext`, read by the core from the series'
        headers); ``None`` reads it from ``volume.datasets`` with the same rule.

    Returns
    -------
    PipelineResult

    Raises
    ------
    PipelineError
        If a landmark is empty after refinement (nothing of parenchymal attenuation left).
    """
    p = params or BrainGWRParameters()
    warnings = list(warnings)
    stats = region_statistics(volume.hu, label_map, volume.spacing_mm)
    out_of_view = set(registration.missing_labels) if registration is not None else set()
    empty = [k for k in LANDMARK_LABELS if k not in stats and k not in out_of_view]
    if not stats:
        raise PipelineError(
            f"no voxel of parenchymal attenuation ({p.parenchyma_hu[0]:g}..{p.parenchyma_hu[1]:g} "
            "HU) left in any landmark; the landmarks may be misplaced or the scan abnormal "
            "there. No GWR is reported"
        )
    missing_text: list[str] = []
    if out_of_view:
        missing_text.append(
            f"{', '.join(LANDMARK_LABELS[k] for k in sorted(out_of_view))}: outside the field "
            "of view (less than "
            f"{p.min_landmark_coverage:.0%} of the structure covered); not measured")
    if empty:
        missing_text.append(
            f"{', '.join(LANDMARK_LABELS[k] for k in empty)}: no voxel of parenchymal "
            f"attenuation ({p.parenchyma_hu[0]:g}..{p.parenchyma_hu[1]:g} HU) left; not "
            "measured")
    warnings.extend(missing_text)
    core_map, kept_whole = core_regions(label_map, volume.spacing_mm, p.core_erosion_mm)
    core_stats = region_statistics(volume.hu, core_map, volume.spacing_mm)
    if kept_whole:
        warnings.append(
            f"{', '.join(LANDMARK_LABELS[k] for k in kept_whole)}: too thin for a "
            f"{p.core_erosion_mm:g} mm core; its whole segment was used for the GWR"
        )
    gwr = gwr_values(core_stats)
    measurements: list[Measurement] = []
    for label, s in sorted(stats.items()):
        short, key = _SHORT[label]
        measurements += [
            Measurement(f"{key}_mean_hu", DCM_ATTENUATION, s.mean_hu, UCUM_HU, label, SCT_MEAN,
                        f"{short} mean HU"),
            Measurement(f"{key}_median_hu", DCM_ATTENUATION, s.median_hu, UCUM_HU, label,
                        SCT_MEDIAN, f"{short} median HU"),
            Measurement(f"{key}_sd_hu", DCM_ATTENUATION, s.sd_hu, UCUM_HU, label,
                        SCT_STANDARD_DEVIATION, f"{short} SD HU"),
            Measurement(f"{key}_voxels", VOXEL_COUNT_CONCEPT, float(s.voxels), UCUM_NO_UNITS,
                        label, None, f"{short} voxels"),
            Measurement(f"{key}_volume_mm3", SCT_VOLUME, s.volume_mm3, UCUM_MM3, label, None,
                        f"{short} volume"),
            Measurement(f"{key}_core_mean_hu", CORE_MEAN_CONCEPT, core_stats[label].mean_hu,
                        UCUM_HU, label, SCT_MEAN, f"{short} core mean HU"),
            Measurement(f"{key}_core_voxels", CORE_VOXEL_COUNT_CONCEPT,
                        float(core_stats[label].voxels), UCUM_NO_UNITS, label, None,
                        f"{short} core voxels"),
        ]
    concepts = {"gwr_bg": GWR_BG_CONCEPT, "gwr_bg_right": GWR_BG_RIGHT_CONCEPT,
                "gwr_bg_left": GWR_BG_LEFT_CONCEPT, "gwr_pu_pic": GWR_PU_PIC_CONCEPT}
    for key, concept in concepts.items():
        value = gwr[key]
        if value is not None:
            measurements.append(Measurement(key, concept, value, UCUM_RATIO, None, None,
                                            key.upper().replace("_", " ")))
    gwr_bg = gwr["gwr_bg"]
    low = bool(gwr_bg is not None and gwr_bg < p.gwr_cutoff)
    findings = [
        QualitativeFinding(GWR_MEASURABLE_CONCEPT, SCT_YES),
        QualitativeFinding(LOW_GWR_CONCEPT, SCT_YES if low else SCT_NO),
    ]
    if low:
        warnings.append(
            f"GWR_BG {gwr_bg:.3f} is below the configured cut-off {p.gwr_cutoff:g} "
            f"({DEFAULT_GWR_CUTOFF_SOURCE if p.gwr_cutoff == DEFAULT_GWR_CUTOFF else 'site setting'}); "
            "GWR cut-offs come from small cohorts and depend on CT timing, temperature "
            "management and scanner: never a stand-alone prognosis"
        )
    ctx = _context(volume, context)
    if registration is not None:
        measurements.append(Measurement("registration_brain_dice", REGISTRATION_DICE_CONCEPT,
                                        registration.brain_dice, UCUM_NO_UNITS, None, None,
                                        "Registration Dice"))

    # Key image: the axial slice of the basal-ganglia level where caudate, putamen and PLIC
    # are all seen (the largest least-represented of the three), else the slice with most
    # landmark voxels.
    per_slice = [np.isin(label_map, group).sum(axis=(1, 2)) for group in (
        (LABEL_CAUDATE_RIGHT, LABEL_CAUDATE_LEFT), (LABEL_PUTAMEN_RIGHT, LABEL_PUTAMEN_LEFT),
        (LABEL_PLIC_RIGHT, LABEL_PLIC_LEFT))]
    least = np.min(per_slice, axis=0)
    if least.max() > 0:
        k = int(np.argmax(least))
    else:
        k = int(np.argmax((label_map > 0).sum(axis=(1, 2))))
    all_terms = all(k_ in core_stats for k_ in LANDMARK_LABELS)
    if all_terms and (gwr_bg is None or gwr["gwr_pu_pic"] is None):
        raise PipelineError(
            "the GWR could not be computed (white-matter landmarks at or below 0 HU); the scan "
            "is not a plausible non-contrast head CT there"
        )
    gwr_reason = None
    if gwr_bg is None:
        gwr_reason = ("GWR_BG not measurable: " + "; ".join(missing_text)
                      + " (GWR_BG needs CN, PU, PIC on both sides and CC)")
        findings[0] = QualitativeFinding(GWR_MEASURABLE_CONCEPT, SCT_NO)
        findings = findings[:1]

    # Names, units and precision from the measurement table.
    rows = table_rows(MEASUREMENTS)

    def side_mean(right: int, left: int) -> str:
        values = [core_stats[x].mean_hu for x in (right, left) if x in core_stats]
        row = rows[f"{_SHORT[right][1]}_core_mean_hu"]
        return number_text(row, float(np.mean(values)) if values else None)

    sides = measurements_line(MEASUREMENTS, gwr, ("gwr_bg_right", "gwr_bg_left"), joiner="  ")
    side_text = f"  {sides}" if sides else ""
    missing_short = [_SHORT[x][0] for x in LANDMARK_LABELS if x not in core_stats]
    text = [
        (measurement_text(rows["gwr_bg"], gwr_bg, sep=" = ") + side_text if gwr_bg is not None
         else f"GWR_BG not measurable: {', '.join(missing_short)} missing{side_text}"),
        f"{measurement_text(rows['gwr_pu_pic'], gwr['gwr_pu_pic'], sep=' = ')}; "
        f"{measurement_text(rows['gwr_cutoff'], p.gwr_cutoff)}: "
        + ("BELOW" if low else ("not below" if gwr_bg is not None else "n/a")),
        (f"CN {side_mean(LABEL_CAUDATE_RIGHT, LABEL_CAUDATE_LEFT)}  "
         f"PU {side_mean(LABEL_PUTAMEN_RIGHT, LABEL_PUTAMEN_LEFT)}  "
         f"PIC {side_mean(LABEL_PLIC_RIGHT, LABEL_PLIC_LEFT)}  "
         f"CC {side_mean(LABEL_CORPUS_CALLOSUM, LABEL_CORPUS_CALLOSUM)} HU (core means)"),
        f"{algorithm.name} {algorithm.version} ({algorithm.validation_status.value})",
    ]
    key_image = _key_image(volume, label_map, k, text)
    summary: dict[str, Any] = {
        "protocol": PROTOCOL_NAME,
        "algorithm": algorithm.name,
        "algorithm_version": algorithm.version,
        "validation_status": algorithm.validation_status.value,
        "disclaimer": RESEARCH_USE_DISCLAIMER,
        "gwr_measurable": gwr_bg is not None,
        "gwr_reason": gwr_reason,
        "landmarks_missing": [_SHORT[x][1] for x in LANDMARK_LABELS if x not in stats],
        **{key: (None if v is None else round(v, 4)) for key, v in gwr.items()},
        "gwr_cerebrum": None,
        "gwr_average": None,
        "gwr_cerebrum_reason": "medial cortex / medial white matter ROIs (Metter 2011) are not "
                               "in the shipped atlas",
        "gwr_formulas": {
            "gwr_bg": "(CN+PU)/(CC+PIC); each term the mean HU of the landmark's core (segment "
                      "eroded by core_erosion_mm); CN, PU, PIC averaged over right and left "
                      "(Torbey 2000; Metter 2011)",
            "gwr_bg_right": "(CN_R+PU_R)/(CC+PIC_R)", "gwr_bg_left": "(CN_L+PU_L)/(CC+PIC_L)",
            "gwr_pu_pic": "PU/PIC (Gentsch 2015)",
        },
        "gwr_cutoff": p.gwr_cutoff,
        "gwr_cutoff_source": DEFAULT_GWR_CUTOFF_SOURCE if p.gwr_cutoff == DEFAULT_GWR_CUTOFF
        else "site setting",
        "low_gwr": low,
        "landmarks": {
            _SHORT[k_][1]: {"mean_hu": round(s.mean_hu, 2), "median_hu": round(s.median_hu, 2),
                            "sd_hu": round(s.sd_hu, 2), "voxels": s.voxels,
                            "volume_mm3": round(s.volume_mm3, 1),
                            "core_mean_hu": round(core_stats[k_].mean_hu, 2),
                            "core_voxels": core_stats[k_].voxels}
            for k_, s in sorted(stats.items())
        },
        "parenchyma_hu": list(p.parenchyma_hu),
        "erosion_mm": p.erosion_mm,
        "core_erosion_mm": p.core_erosion_mm,
        "key_slice_index": k,
        "kvp": ctx.kvp,
        "slice_thickness_mm": ctx.slice_thickness_mm,
        "gantry_tilt_deg": ctx.gantry_tilt_deg,
        "convolution_kernel": ctx.convolution_kernel,
        "contrast": ctx.contrast,
    }
    if registration is not None:
        summary["registration_brain_dice"] = round(registration.brain_dice, 3)
        summary["landmark_coverage"] = {_SHORT[k_][1]: round(v, 3)
                                        for k_, v in registration.landmark_coverage.items()}
        summary["registration_seconds"] = round(registration.seconds, 2)
        summary["registration_metric"] = round(registration.metric_value, 4)
        summary["registration_metric_name"] = "negative normalised correlation (pseudo-CT)"
        summary["brain_volume_in_view_cm3"] = (
            None if registration.brain_volume_cm3 is None
            else round(registration.brain_volume_cm3, 1))
        summary["brain_extent_mm"] = (None if registration.brain_extent_mm is None
                                      else round(registration.brain_extent_mm, 1))
        summary["skull_enclosure"] = (None if registration.skull_enclosure is None
                                      else round(registration.skull_enclosure, 3))
        summary["template_scale"] = (None if registration.template_scale is None
                                     else [round(v, 3) for v in registration.template_scale])
        stage = registration.ventricle_stage
        if stage is not None:
            summary["ventricle_stage"] = {
                "applied": stage.applied,
                "shift_mm": [round(v, 1) for v in stage.shift_mm],
                "scale": round(stage.scale, 3),
                "rotation_deg": round(stage.rotation_deg, 1),
                "scan_deep_csf_cm3": round(stage.scan_ventricles_cm3, 1),
                "reason": stage.reason,
            }
    for message in warnings:
        logger.info("brain-gwr: %s", message)
    return PipelineResult(
        protocol=PROTOCOL_NAME,
        algorithm=algorithm,
        source_datasets=list(volume.datasets),
        segments=[s for s in SEGMENTS if s.number in stats],
        label_map=volume.to_source_frames(label_map.astype(np.uint8)),
        measurements=measurements,
        findings=findings,
        key_image=key_image,
        summary=summary,
        warnings=warnings,
    )


def _key_image(
    volume: CTVolume, label_map: np.ndarray, k: int, text: list[str]
) -> KeyImageSpec | None:
    """Describe the key image: axial slice ``k`` in a brain window (0..80 HU), its labels."""
    source_index = 0 if volume.is_single_slice else volume.source_frame_of_slice(k)
    if source_index is None:
        # Coronal or sagittal source images: the key image is the axial reformat of slice k;
        # it references the source image that holds most of the landmarks shown on it.
        marker = np.zeros(volume.hu.shape, dtype=np.uint8)
        marker[k] = label_map[k] > 0 if label_map[k].any() else 1
        frames = volume.to_source_frames(marker)
        source_index = int(np.argmax(frames.reshape(frames.shape[0], -1).sum(axis=1)))
    spacing_rc = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    return KeyImageSpec(
        panels=(KeyImagePanel(image=volume.hu[k], pixel_spacing_mm=spacing_rc,
                              window_hu=(0.0, 80.0), labels=label_map[k]),),
        segments=tuple(SEGMENTS), text_lines=tuple(text), source_index=int(source_index),
        patient_orientation=("L", "P"),
    )


# ------------------------------------------------------------------------------------------
# Single slice
# ------------------------------------------------------------------------------------------


def measure_single_slice(volume: CTVolume, params: BrainGWRParameters | None = None,
                         context: PatientContext | None = None) -> PipelineResult:
    """Report what one axial image allows: brain parenchyma area and attenuation, no GWR.

    The landmarks cannot be found by 3D registration on one image, and a GWR from whatever
    gray/white structures happen to lie in the slice would not be the published measure, so
    ``gwr_bg`` is reported as not measurable with the reason. ``context`` as in
    :func:`measure`.

    Raises
    ------
    UnsupportedInputError
        If the image is not axial or holds no brain inside a skull.
    """
    p = params or BrainGWRParameters()
    if volume.hu.shape[0] != 1:
        raise UnsupportedInputError("the single image is not axial; send the axial head CT series")
    brain = brain_mask(volume.hu, volume.spacing_mm, p)
    if not brain.any():
        raise UnsupportedInputError(
            f"no brain found inside a skull (skull threshold {p.bone_hu:g} HU) on the single "
            "image; it does not look like a head CT slice"
        )
    labels = np.where(brain, LABEL_BRAIN_PARENCHYMA, 0).astype(np.uint8)
    labels = refine_landmarks(volume.hu, labels, volume.spacing_mm, p)
    stats = region_statistics(volume.hu, labels, volume.spacing_mm)
    if LABEL_BRAIN_PARENCHYMA not in stats:
        raise UnsupportedInputError(
            "no voxel of parenchymal attenuation in the brain of the single image"
        )
    s = stats[LABEL_BRAIN_PARENCHYMA]
    area_cm2 = s.voxels * volume.spacing_mm[1] * volume.spacing_mm[2] / 100.0
    reason = (
        "single image: the caudate, putamen, internal capsule and corpus callosum cannot be "
        "located by 3D atlas registration on one slice, so no GWR is measured; send the whole "
        "head series (slices through the basal ganglia and the corpus callosum)"
    )
    measurements = [
        Measurement("brain_parenchyma_area_cm2", SCT_AREA, area_cm2, UCUM_CM2,
                    LABEL_BRAIN_PARENCHYMA, None, "Brain area"),
        Measurement("brain_parenchyma_mean_hu", DCM_ATTENUATION, s.mean_hu, UCUM_HU,
                    LABEL_BRAIN_PARENCHYMA, SCT_MEAN, "Brain mean HU"),
        Measurement("brain_parenchyma_median_hu", DCM_ATTENUATION, s.median_hu, UCUM_HU,
                    LABEL_BRAIN_PARENCHYMA, SCT_MEDIAN, "Brain median HU"),
        Measurement("brain_parenchyma_sd_hu", DCM_ATTENUATION, s.sd_hu, UCUM_HU,
                    LABEL_BRAIN_PARENCHYMA, SCT_STANDARD_DEVIATION, "Brain SD HU"),
    ]
    header = volume.datasets[0]
    ctx = _context(volume, context)
    # A DICOM-SEG needs the source's Frame of Reference UID; without one the parenchyma is
    # reported in the SR's summary group and drawn on the key image only.
    has_frame_of_reference = "FrameOfReferenceUID" in header
    if not has_frame_of_reference:
        measurements = [
            Measurement(m.key, m.name, m.value, m.unit, None, m.derivation, m.label)
            for m in measurements
        ]
    rows = table_rows(MEASUREMENTS)
    text = [
        "GWR not measurable: single image (3D registration needs a volume)",
        (f"Brain parenchyma {p.parenchyma_hu[0]:g}..{p.parenchyma_hu[1]:g} HU: "
         + ", ".join([value_text(rows["brain_parenchyma_area_cm2"], area_cm2),
                      measurement_text(rows["brain_parenchyma_mean_hu"], s.mean_hu),
                      measurement_text(rows["brain_parenchyma_median_hu"], s.median_hu)])),
        f"{ALGORITHM.name} {ALGORITHM.version} ({ALGORITHM.validation_status.value})",
    ]
    summary: dict[str, Any] = {
        "protocol": PROTOCOL_NAME, "algorithm": ALGORITHM.name,
        "algorithm_version": ALGORITHM.version,
        "validation_status": ALGORITHM.validation_status.value,
        "disclaimer": RESEARCH_USE_DISCLAIMER,
        "gwr_measurable": False, "gwr_bg": None, "gwr_bg_right": None, "gwr_bg_left": None,
        "gwr_pu_pic": None, "gwr_cerebrum": None, "gwr_average": None, "gwr_reason": reason,
        "low_gwr": None, "gwr_cutoff": p.gwr_cutoff,
        "brain_parenchyma_area_cm2": round(area_cm2, 2),
        "brain_parenchyma_mean_hu": round(s.mean_hu, 2),
        "brain_parenchyma_median_hu": round(s.median_hu, 2),
        "brain_parenchyma_sd_hu": round(s.sd_hu, 2),
        "parenchyma_hu": list(p.parenchyma_hu), "erosion_mm": p.erosion_mm,
        "kvp": ctx.kvp, "slice_thickness_mm": ctx.slice_thickness_mm,
        "gantry_tilt_deg": ctx.gantry_tilt_deg, "convolution_kernel": ctx.convolution_kernel,
        "contrast": ctx.contrast,
    }
    return PipelineResult(
        protocol=PROTOCOL_NAME,
        algorithm=ALGORITHM,
        source_datasets=list(volume.datasets),
        segments=[s_ for s_ in SEGMENTS if s_.number == LABEL_BRAIN_PARENCHYMA]
        if has_frame_of_reference else [],
        label_map=volume.to_source_frames(
            labels if has_frame_of_reference else np.zeros_like(labels)),
        measurements=measurements,
        findings=[QualitativeFinding(GWR_MEASURABLE_CONCEPT, SCT_NO)],
        key_image=_key_image(volume, labels, 0, text),
        summary=summary,
        warnings=list(volume.warnings) + [reason] + (
            [] if has_frame_of_reference else
            [("the image has no Frame of Reference UID: no DICOM-SEG can reference it; the "
              "brain parenchyma is reported in the SR and drawn on the key image only")]),
    )


# ------------------------------------------------------------------------------------------
# Entry points
# ------------------------------------------------------------------------------------------


def run_brain_gwr(volume: CTVolume, params: BrainGWRParameters | None = None,
                  model: LearnedModel | None = None,
                  context: PatientContext | None = None) -> PipelineResult:
    """Run the protocol on a loaded CT volume.

    Parameters
    ----------
    volume:
        Head CT (:func:`pipelines.volume.load_ct_volume`).
    params:
        Parameters (default :class:`BrainGWRParameters`).
    model:
        Trained network (``model.predict(hu, spacing_mm) -> label_map``, see the module
        docstring), or ``None`` for the reference method.
    context:
        The acquisition's kVp, kernel, slice thickness and contrast
        (:class:`pipelines.protocol.PatientContext`, read by the core from the series'
        headers); ``None`` reads it from ``volume.datasets`` with the same rule.

    Returns
    -------
    PipelineResult

    Raises
    ------
    UnsupportedInputError
        Contrast-enhanced series (when ``reject_contrast``), not a head CT, landmarks not
        covered.
    PipelineError
        Registration failed its quality check, or a landmark is empty after refinement.
    """
    p = params or BrainGWRParameters()
    if context is None:
        context = PatientContext.from_headers(volume.datasets)
    if p.reject_contrast and context.contrast:
        raise UnsupportedInputError(
            "the headers record a contrast agent (Contrast/Bolus Agent (0018,0010) or its "
            "sequence): contrast raises gray-matter attenuation and the GWR is defined on "
            "non-contrast CT; send the non-contrast head CT (or set reject_contrast false at "
            "your own risk)"
        )
    if volume.is_single_slice:
        return measure_single_slice(volume, p, context)
    warnings = list(volume.warnings)
    registration = None
    if model is not None:
        raw = np.asarray(model.predict(volume.hu, volume.spacing_mm))
        if raw.shape != volume.hu.shape:
            raise PipelineError(
                f"model {model.algorithm.name} returned a label map of shape {raw.shape}, "
                f"expected {volume.hu.shape}"
            )
        raw = np.where(np.isin(raw, list(LANDMARK_LABELS)), raw, 0).astype(np.uint8)
        algorithm = model.algorithm
    else:
        raw, registration, _ = segment_reference(volume, p)
        algorithm = ALGORITHM
    refined = refine_landmarks(volume.hu, raw, volume.spacing_mm, p)
    return measure(volume, refined, p, algorithm=algorithm, registration=registration,
                   warnings=warnings, context=context)


def run_from_datasets(datasets: Sequence[Dataset], params: Mapping[str, Any] | None = None,
                      model: LearnedModel | None = None) -> PipelineResult:
    """Registry entry point: datasets of one series -> :class:`PipelineResult`.

    Parameters
    ----------
    datasets:
        CT images of one series with pixel data, any order.
    params:
        Plain mapping from the node's settings; keys are fields of
        :class:`BrainGWRParameters`.
    model:
        Trained network or ``None``.

    Raises
    ------
    ConfigError
        Unknown or invalid parameters.
    UnsupportedInputError
        Localizer-only series, contrast-enhanced series, insufficient coverage, not a head.
    InvalidInputError
        Unreadable input.
    PipelineError
        The pipeline failed on accepted input.
    """
    p = BrainGWRParameters.from_mapping(params)
    if not datasets:
        raise InvalidInputError("brain-gwr: the series is empty")
    context = PatientContext.from_headers(datasets)
    if p.reject_contrast and context.contrast:
        # Refused before the pixels are decoded.
        raise UnsupportedInputError(
            "the series records a contrast agent (Contrast/Bolus Agent (0018,0010) or its "
            "sequence); the GWR is defined on non-contrast head CT: send the non-contrast series"
        )
    if len(datasets) == 1 and "FrameOfReferenceUID" not in datasets[0]:
        volume = _single_image_without_frame_of_reference(datasets[0])
    else:
        volume = load_ct_volume(datasets)
    return run_brain_gwr(volume, p, model, context)


def _single_image_without_frame_of_reference(ds: Dataset) -> CTVolume:
    """A single axial image lacking Frame of Reference UID (older exports): build the volume
    from the pixel data with a synthetic geometry only for measurement; outputs still reference
    the original image."""
    import highdicom as hd
    from pydicom.pixels import apply_modality_lut

    from pipelines.volume import select_volume_frames

    images, warnings = select_volume_frames([ds])
    image = images[0]
    iop = np.asarray(image.ImageOrientationPatient, dtype=float)
    if not (np.allclose(iop, [1, 0, 0, 0, 1, 0], atol=1e-3)):
        raise UnsupportedInputError(
            "single image without Frame of Reference UID and not in standard axial orientation "
            f"(Image Orientation (Patient) {iop.tolist()}); send the series with full geometry"
        )
    try:
        hu = apply_modality_lut(image.pixel_array, image).astype(np.float32)[None]
    except Exception as exc:
        raise InvalidInputError(
            f"SOP Instance UID {image.SOPInstanceUID}: pixel data cannot be decoded ({exc})"
        ) from exc
    row_mm, col_mm = (float(v) for v in image.PixelSpacing)
    thickness = float(image.get("SliceThickness") or 1.0)
    affine = np.eye(4)
    affine[:3, :3] = np.diag([thickness, row_mm, col_mm])[:, [0, 1, 2]]
    # Canonical (slice, row, column) -> LPS: slice along z, rows along y, columns along x.
    affine[:3, :3] = np.array([[0, 0, col_mm], [0, row_mm, 0], [thickness, 0, 0]])
    affine[:3, 3] = np.asarray(image.ImagePositionPatient, dtype=float)
    volume = hd.Volume(hu, affine, coordinate_system="PATIENT")
    header = header_copy(image)
    warnings.append("the image has no Frame of Reference UID: measured on its own pixel grid")
    return CTVolume(hu=hu, spacing_mm=(thickness, row_mm, col_mm), volume=volume,
                    datasets=[header], source_volume=volume, frame_of_source_slice=[0],
                    warnings=warnings)
