"""L1 trabecular attenuation on any CT that shows L1 (reference method, no trained weights).

Opportunistic osteoporosis screening after Pickhardt PJ et al., Ann Intern Med
2013;158(8):588-595: the mean attenuation (HU) of an elliptical region of interest (ROI) in the
cancellous bone of the first lumbar vertebral body on its mid-vertebral axial slice.

Method
------
1. L1 is found with the shared spine labelling (:func:`pipelines.spine.label_vertebrae`): the
   last rib-bearing vertebra (T12) and the sacrum are independent anchors; when they disagree
   nothing is labelled and the series is refused; when only one is in view the level is reported
   as not verified.
2. The measured slice is L1's mid-vertebral slice (middle of its bone slices between the
   neighbouring discs), at least ``endplate_margin_mm`` from either end-plate.
3. On that slice, the vertebral body is the part of the vertebra anterior to the spinal canal
   (:func:`pipelines.spine.find_vertebra_in_slice`, :func:`pipelines.spine.vertebra_block`:
   marrow included even when osteopenic). Allowed ROI pixels lie at least ``cortex_margin_mm``
   inside its outer surface (inside the cortical shell) and in its anterior
   ``posterior_limit_fraction`` (away from the basivertebral vein and the posterior venous
   plexus).
4. The ROI is the largest axis-aligned ellipse inside the allowed pixels: for each axis ratio
   ``q`` (antero-posterior / lateral) the distance transform of the allowed region, with rows
   scaled by ``1/q``, gives the largest inscribed ellipse of that shape at every centre
   (radius = lateral semi-axis); the ratio with the largest area wins.
5. Mean, standard deviation and area of the ROI; flag "low attenuation (possible osteoporosis)"
   at or below ``threshold_hu``.

The method is a pure function of a :class:`pipelines.volume.CTVolume`, the typed parameters and
the :class:`pipelines.protocol.PatientContext`; it reads no DICOM header and describes its key image
as a :class:`pipelines.types.KeyImageSpec` (the core draws it).

Research use only, not for diagnosis. Checked on digital phantoms only.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

import numpy as np
from scipy import ndimage

from ainode_l1.keyimage import l1_key_image
from ainode_l1.parameters import THRESHOLD_SOURCE, L1Parameters
from pipelines.errors import PipelineError, UnsupportedInputError
from pipelines.morphology import FACE, largest_component
from pipelines.protocol import MeasurementRow, PatientContext
from pipelines.spine import (
    SpineLabelling,
    SpineParameters,
    Vertebra,
    find_body_mask,
    find_vertebra_in_slice,
    label_vertebrae,
    vertebra_block,
)
from pipelines.types import (
    DCM_ATTENUATION,
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    SCT_AREA,
    SCT_MEAN,
    SCT_NO,
    SCT_STANDARD_DEVIATION,
    SCT_TISSUE,
    SCT_YES,
    UCUM_HU,
    AlgorithmInfo,
    CodedTerm,
    LearnedModel,
    Measurement,
    PipelineResult,
    QualitativeFinding,
    SegmentDefinition,
    ValidationStatus,
)
from pipelines.volume import CTVolume

logger = logging.getLogger(__name__)

PROTOCOL_NAME = "l1-trabecular-attenuation"
VERSION = "0.1.0"

ALGORITHM = AlgorithmInfo(
    name="ainode-l1-trabecular-reference",
    version=VERSION,
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source=(
        "Rule-based: mean HU of the largest elliptical ROI in the anterior cancellous bone of the "
        "mid-L1 vertebral body (Pickhardt PJ et al., Ann Intern Med 2013;158(8):588-595); L1 "
        "found by counting vertebrae from the last rib and the sacrum"
    ),
)

LABEL_ROI = 1

#: Codes (verified in pydicom 3.0.2's PS3.16 tables): Tissue (CID 7150), Bone 3138006
#: (CID 7151/7166), L1 vertebra 66794005 (CID 7151). No "cancellous bone" concept is in those
#: tables, so "cancellous" is said in the label and description.
L1_VERTEBRA = CodedTerm("66794005", "SCT", "L1 vertebra")
SCT_BONE = CodedTerm("3138006", "SCT", "Bone")
UCUM_MM2 = CodedTerm("mm2", "UCUM", "square millimeter")

ROI_SEGMENT = SegmentDefinition(
    number=LABEL_ROI,
    label="L1 ROI",
    description="Cancellous (trabecular) bone ROI, L1 vertebral body, mid-vertebral slice",
    category=SCT_TISSUE,
    property_type=SCT_BONE,
    anatomic_region=L1_VERTEBRA,
    tracking_id="L1 trabecular bone ROI",
    display_rgb=(255, 80, 40),
)

# Private concepts (no standard concept exists), as the shipped protocols do.
MEASURED_LEVEL_CONCEPT = CodedTerm("measured-level", PRIVATE_SCHEME, "Measured vertebral level")
LEVEL_VERIFIED_CONCEPT = CodedTerm("level-verified", PRIVATE_SCHEME, "Vertebral level verified")
LOW_L1_HU_CONCEPT = CodedTerm(
    "low-l1-trabecular-hu", PRIVATE_SCHEME, "Low L1 trabecular attenuation"
)

#: The measurement table: summary keys, human names, units and precision. The key-image text
#: and the summary are generated from it; the core generates the SR text from the same rows.
MEASUREMENT_TABLE: tuple[MeasurementRow, ...] = (
    MeasurementRow("l1_trabecular_mean_hu", "L1 trabecular attenuation (mean)", "HU", 1),
    MeasurementRow("l1_trabecular_sd_hu", "L1 trabecular attenuation (SD)", "HU", 1),
    MeasurementRow("l1_roi_area_mm2", "ROI area", "mm²", 0),
)

#: Display window for bone (lower, upper) HU, used for the key image only.
BONE_WINDOW_HU = (-250.0, 1250.0)

#: Levels caudal to cranial (to say on which side of the scan L1 lies).
_LEVEL_ORDER = ("S", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6",
                "T5", "T4", "T3", "T2", "T1")


@dataclass(frozen=True)
class TrabecularROI:
    """The ROI on one axial slice.

    Attributes
    ----------
    mask: numpy.ndarray
        ``(rows, columns)`` bool on the canonical slice (rows anterior→posterior, columns
        right→left).
    allowed: numpy.ndarray
        ``(rows, columns)`` bool: where the ROI may lie (cancellous bone inside the margin, in
        the anterior part of the body).
    body: numpy.ndarray
        ``(rows, columns)`` bool: the vertebral body (anterior to the canal, marrow included).
    centre_rc: tuple[float, float]
        (row, column) of the ellipse centre, pixels.
    semi_axes_mm: tuple[float, float]
        (antero-posterior, lateral) semi-axes, mm.
    """

    mask: np.ndarray
    allowed: np.ndarray
    body: np.ndarray
    centre_rc: tuple[float, float]
    semi_axes_mm: tuple[float, float]


def locate_l1(volume: CTVolume, params: L1Parameters) -> tuple[SpineLabelling, Vertebra, int]:
    """Find L1 and its mid-vertebral slice.

    Parameters
    ----------
    volume:
        Canonical ``"HPL"`` CT volume (slices feet→head).
    params:
        Protocol parameters (bone threshold, end-plate margin).

    Returns
    -------
    tuple[SpineLabelling, Vertebra, int]
        The labelling, L1, and the canonical index of the measured slice.

    Raises
    ------
    UnsupportedInputError
        If L1 is not in view, cannot be labelled (anchors disagree, thoracic only, no anchor) or
        touches the edge of the scanned range; the message names the levels in view.
    """
    spine_params = SpineParameters(bone_threshold_hu=params.bone_threshold_hu)
    labelling = label_vertebrae(volume, spine_params)
    found = ", ".join(
        f"{v.label or ('rib-bearing' if v.bears_ribs else '?')} "
        f"(slices {v.first_slice}-{v.last_slice})" for v in labelling.vertebrae
    ) or "none"
    l1 = labelling.find("L1")
    if l1 is None:
        raise UnsupportedInputError(_l1_missing_reason(labelling, found))
    if l1.truncated:
        raise UnsupportedInputError(
            f"L1 touches the edge of the scanned range (slices {l1.first_slice}-{l1.last_slice}; "
            f"vertebrae found caudal→cranial: {found}); its mid-vertebral slice cannot be "
            "determined. Send a CT covering all of L1"
        )
    return labelling, l1, int(l1.centre_slice)


def _l1_missing_reason(labelling: SpineLabelling, found: str) -> str:
    """Why L1 was not found, naming the levels in view."""
    evidence = " ".join(labelling.evidence)
    labels = [v.label for v in labelling.vertebrae if v.label in _LEVEL_ORDER]
    if labels:
        positions = [_LEVEL_ORDER.index(lab) for lab in labels]
        side = "caudal to" if min(positions) > _LEVEL_ORDER.index("L1") else "cranial to"
        return (
            f"L1 is not in the scanned range: the levels in view are {labels[0]} to {labels[-1]} "
            f"(counted by {labelling.method}; L1 lies {side} the scan). Vertebrae found "
            f"caudal→cranial: {found}. {evidence}. Send a CT that covers L1"
        )
    if labelling.method == "thoracic only":
        return (
            "L1 is not in the scanned range: every vertebra seen whole bears ribs or lies above "
            "one that does (thoracic spine only), so L1 lies below the scan. Vertebrae found "
            f"caudal→cranial: {found}. {evidence}. Send a CT that covers the thoracolumbar "
            "junction (T12 and L1)"
        )
    if labelling.method == "anchors disagree":
        return (
            "L1 was not determined: the count from the last rib-bearing vertebra and the count "
            "from the sacrum disagree (transitional anatomy such as 11 or 13 rib pairs, a "
            "lumbarised S1 or sacralised L5, or a missed disc); the level is not guessed. "
            f"Vertebrae found caudal→cranial: {found}. {evidence}. Check the level by hand"
        )
    return (
        f"L1 could not be identified (counting method: {labelling.method}; vertebrae found "
        f"caudal→cranial: {found}). {evidence}. Send a CT that covers the thoracolumbar spine "
        "with the last ribs (or the whole lumbar spine with the sacrum)"
    )


def place_roi(
    hu_slice: np.ndarray,
    pixel_spacing_mm: tuple[float, float],
    params: L1Parameters,
    bone_threshold_hu: float,
) -> TrabecularROI:
    """Place the largest elliptical ROI in the anterior cancellous bone of the vertebral body.

    Parameters
    ----------
    hu_slice:
        ``(rows, columns)`` Hounsfield units, canonical axial slice (rows anterior→posterior,
        columns right→left).
    pixel_spacing_mm:
        (row, column) spacing, mm.
    params:
        ``cortex_margin_mm``, ``posterior_limit_fraction``, ``min_aspect``/``max_aspect``,
        ``min_roi_area_mm2``.
    bone_threshold_hu:
        Bone threshold used to find the vertebra, HU.

    Returns
    -------
    TrabecularROI

    Raises
    ------
    PipelineError
        If no vertebra is found on the slice or the largest ROI is smaller than
        ``min_roi_area_mm2``.
    """
    dr, dc = (float(v) for v in pixel_spacing_mm)
    body_outline = find_body_mask(hu_slice, (dr, dc))
    vertebra = find_vertebra_in_slice(hu_slice, (dr, dc), body_outline, bone_threshold_hu)
    if vertebra is None:
        raise PipelineError(
            "no vertebra found on the mid-L1 slice (bone threshold "
            f"{bone_threshold_hu:.0f} HU); check the key image of the spine labelling"
        )
    block = vertebra_block(hu_slice, (dr, dc), vertebra, body_outline, bone_threshold_hu)
    front, back = vertebra.anterior_row, vertebra.posterior_row
    rows = np.arange(hu_slice.shape[0])[:, None]
    body = (block | vertebra.enclosed) & (rows >= front) & (rows <= back)
    body = largest_component(body, FACE)
    body = np.asarray(ndimage.binary_fill_holes(body))
    if not body.any():
        raise PipelineError("the vertebral body could not be outlined on the mid-L1 slice")

    inside = ndimage.distance_transform_edt(body, sampling=(dr, dc)) >= params.cortex_margin_mm
    body_rows = np.flatnonzero(body.any(axis=1))
    depth_px = body_rows[-1] - body_rows[0] + 1
    limit = body_rows[0] + params.posterior_limit_fraction * depth_px
    allowed = inside & (rows < limit)
    allowed = largest_component(allowed, FACE)
    if not allowed.any():
        raise PipelineError(
            f"no cancellous bone is left {params.cortex_margin_mm:g} mm inside the vertebral body "
            f"in its anterior {params.posterior_limit_fraction:.0%}; lower cortex_margin_mm or "
            "check the key image"
        )

    best: tuple[float, float, float, tuple[int, int]] | None = None  # area, a_mm, b_mm, centre
    lo, hi = sorted((params.min_aspect, params.max_aspect))
    for q in np.linspace(lo, hi, 15):
        # Rows scaled by 1/q: the ellipse (y/a)^2 + (x/b)^2 <= 1 with a = q b is a circle of
        # radius b; the EDT gives the distance to the nearest pixel centre outside.
        distance = ndimage.distance_transform_edt(allowed, sampling=(dr / q, dc))
        centre = np.unravel_index(int(np.argmax(distance)), distance.shape)
        b_mm = float(distance[centre])
        area = float(np.pi * q * b_mm * b_mm)
        if best is None or area > best[0]:
            best = (area, q * b_mm, b_mm, (int(centre[0]), int(centre[1])))
    assert best is not None
    _, a_mm, b_mm, (cr, cc) = best
    yy = (np.arange(hu_slice.shape[0])[:, None] - cr) * dr
    xx = (np.arange(hu_slice.shape[1])[None, :] - cc) * dc
    mask = (yy / a_mm) ** 2 + (xx / b_mm) ** 2 < 1.0 if a_mm > 0 and b_mm > 0 else \
        np.zeros(hu_slice.shape, dtype=bool)
    mask &= allowed  # exact by construction; kept as a guard against rounding
    area_mm2 = float(mask.sum() * dr * dc)
    if area_mm2 < params.min_roi_area_mm2:
        raise PipelineError(
            f"the largest ROI that fits the cancellous bone of L1 is {area_mm2:.0f} mm², below "
            f"min_roi_area_mm2 = {params.min_roi_area_mm2:g} mm² (vertebral body not outlined "
            "cleanly: fracture, hardware or a very thin slice); check the key image"
        )
    return TrabecularROI(mask=mask, allowed=allowed, body=body, centre_rc=(float(cr), float(cc)),
                         semi_axes_mm=(a_mm, b_mm))


def format_rows(summary: dict[str, object], *, ascii_units: bool = False) -> list[str]:
    """Human text of the measurement table's rows present in ``summary`` ("label: value unit").

    ``ascii_units`` writes superscripts as digits ("mm2"), for the key image's bitmap font.
    """
    lines = []
    for row in MEASUREMENT_TABLE:
        value = summary.get(row.key)
        if isinstance(value, int | float) and not isinstance(value, bool):
            unit = row.unit.replace("²", "2").replace("³", "3") if ascii_units else row.unit
            lines.append(f"{row.label}: {value:.{row.decimals}f} {unit}".rstrip())
    return lines


def run_l1_trabecular(
    volume: CTVolume,
    params: L1Parameters,
    context: PatientContext,
    model: LearnedModel | None = None,
) -> PipelineResult:
    """Measure the L1 trabecular attenuation of one CT series.

    Parameters
    ----------
    volume:
        Canonical CT volume (``(slices, rows, columns)`` HU, slices feet→head), axial, covering
        L1 and a spinal anchor (the last ribs, or the sacrum).
    params:
        Validated :class:`~ainode_l1.parameters.L1Parameters`.
    context:
        Patient and acquisition facts (contrast, kVp, kernel) read by the core.
    model:
        Must be ``None``: this protocol has only its reference method.

    Returns
    -------
    PipelineResult
        One segment (the ROI) on the measured source frame, three measurements (mean HU, SD HU,
        area mm²), findings (level, verified, low attenuation), the key image (axial with the
        ROI, small sagittal with L1 marked), summary and warnings.

    Raises
    ------
    UnsupportedInputError
        Not axial, a single slice, L1 not in view or not labelled, or a trained model given.
    PipelineError
        No vertebra or too small a ROI on the mid-L1 slice.
    """
    if model is not None:
        raise UnsupportedInputError(
            f"{PROTOCOL_NAME} has no trained model; remove the model from its configuration"
        )
    if volume.is_single_slice:
        raise UnsupportedInputError(
            "a single CT image cannot show which vertebra it is; send the axial series that "
            "covers the thoracolumbar junction (T12 ribs and L1)"
        )
    if not volume.slice_axis_is_axial:
        raise UnsupportedInputError(
            "the series is not axial (sagittal or coronal reconstruction); send the axial series"
        )
    labelling, l1, k = locate_l1(volume, params)
    dz, dr, dc = (float(v) for v in volume.spacing_mm)
    warnings: list[str] = []
    margin_low = (k - l1.first_slice + 0.5) * dz
    margin_high = (l1.last_slice - k + 0.5) * dz
    if min(margin_low, margin_high) < params.endplate_margin_mm:
        warnings.append(
            f"L1 spans only {l1.height_mm:.0f} mm in this scan; the measured slice lies "
            f"{min(margin_low, margin_high):.1f} mm from an end-plate (wanted "
            f">= {params.endplate_margin_mm:g} mm): sclerotic end-plate bone may raise the value"
        )
    verified = labelling.method == "ribs+sacrum"
    if not verified:
        warnings.append(
            f"the vertebral level was not verified: L1 counted by {labelling.method} only "
            f"(confidence {labelling.confidence:.1f}); check the level on the sagittal key image"
        )
    bone_threshold = min(params.bone_threshold_hu,
                         labelling.bone_threshold_hu or params.bone_threshold_hu)
    hu_slice = volume.hu[k]
    roi = place_roi(hu_slice, (dr, dc), params, bone_threshold)
    values = hu_slice[roi.mask].astype(np.float64)
    mean_hu = float(values.mean())
    sd_hu = float(values.std(ddof=1)) if values.size > 1 else 0.0
    area_mm2 = float(values.size * dr * dc)
    low = mean_hu <= params.threshold_hu

    if context.contrast:
        warnings.append(
            "contrast agent recorded (Contrast/Bolus Agent): intravenous contrast raises "
            "trabecular attenuation, so a contrast-enhanced value overstates bone density and "
            "the threshold under-calls low attenuation"
        )
    if context.kvp is not None and abs(context.kvp - 120.0) > 5.0:
        warnings.append(
            f"tube voltage {context.kvp:g} kV: bone HU depend on kV and the threshold was "
            "derived at 120 kV"
        )

    findings = [
        QualitativeFinding(MEASURED_LEVEL_CONCEPT, L1_VERTEBRA),
        QualitativeFinding(LEVEL_VERIFIED_CONCEPT, SCT_YES if verified else SCT_NO),
        QualitativeFinding(LOW_L1_HU_CONCEPT, SCT_YES if low else SCT_NO),
    ]
    source_index = volume.source_frame_of_slice(k)
    summary: dict[str, object] = {
        "protocol": PROTOCOL_NAME,
        "algorithm": ALGORITHM.name,
        "algorithm_version": ALGORITHM.version,
        "validation_status": ALGORITHM.validation_status.value,
        "disclaimer": RESEARCH_USE_DISCLAIMER,
        "level": "L1",
        "level_confidence": round(labelling.confidence, 2),
        "level_verified": verified,
        "level_method": labelling.method,
        "level_evidence": list(labelling.evidence),
        "levels_in_view": [v.label for v in labelling.vertebrae if v.label],
        "slice_index": k,
        "l1_slices": [int(l1.first_slice), int(l1.last_slice)],
        "l1_trabecular_mean_hu": round(mean_hu, 1),
        "l1_trabecular_sd_hu": round(sd_hu, 1),
        "l1_roi_area_mm2": round(area_mm2, 0),
        "roi_pixels": int(values.size),
        "roi_semi_axes_mm": [round(float(v), 1) for v in roi.semi_axes_mm],
        "threshold_hu": params.threshold_hu,
        "threshold_source": THRESHOLD_SOURCE,
        "low_attenuation": low,
        "low_attenuation_text": (
            f"low attenuation (possible osteoporosis): {mean_hu:.0f} HU "
            f"<= {params.threshold_hu:g} HU" if low else f"{mean_hu:.0f} HU above the {params.threshold_hu:g} HU threshold"
        ),
        "contrast": context.contrast,
        "kvp": context.kvp,
        "convolution_kernel": context.kernel,
    }
    measurements = [
        Measurement("l1_trabecular_mean_hu", DCM_ATTENUATION, mean_hu, UCUM_HU, LABEL_ROI,
                    SCT_MEAN, "L1 mean HU"),
        Measurement("l1_trabecular_sd_hu", DCM_ATTENUATION, sd_hu, UCUM_HU, LABEL_ROI,
                    SCT_STANDARD_DEVIATION, "L1 SD HU"),
        Measurement("l1_roi_area_mm2", SCT_AREA, area_mm2, UCUM_MM2, LABEL_ROI, None,
                    "ROI area"),
    ]
    canonical = np.zeros(volume.hu.shape, dtype=np.uint8)
    canonical[k][roi.mask] = LABEL_ROI
    label_map = volume.to_source_frames(canonical)

    text_lines = [
        f"L1 mid-vertebral slice {k} ({'verified' if verified else 'level not verified'}, "
        f"{labelling.method})",
        *format_rows(summary, ascii_units=True),
        str(summary["low_attenuation_text"]) + f" [{THRESHOLD_SOURCE.split(':')[0]}]",
        f"{ALGORITHM.name} {ALGORITHM.version} ({ALGORITHM.validation_status.value})",
    ]
    key_image = None
    if source_index is not None:
        key_image = l1_key_image(volume, k, l1, roi, ROI_SEGMENT, text_lines, source_index,
                                 BONE_WINDOW_HU)
    for message in warnings:
        logger.info("L1 trabecular attenuation: %s", message)
    return PipelineResult(
        protocol=PROTOCOL_NAME,
        algorithm=ALGORITHM,
        source_datasets=list(volume.datasets),
        segments=[ROI_SEGMENT],
        label_map=label_map,
        measurements=measurements,
        findings=findings,
        key_image=key_image,
        summary=summary,
        warnings=warnings,
    )
