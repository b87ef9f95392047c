"""L3 body composition on abdominal CT: reference method (Hounsfield bands + morphology + anatomy).

Measures, on one axial slice at the middle of the third lumbar vertebra, the cross-sectional
areas of skeletal muscle (SMA), subcutaneous adipose tissue (SAT), visceral adipose tissue (VAT)
and intermuscular adipose tissue (IMAT), the muscle attenuation (mean HU), and the skeletal
muscle index SMI = SMA / height² with an optional, explicitly named cut-off set.

Sources (see ``shared/reference/clinical.md`` §1 and §5):

* HU bands: muscle -29..+150 HU, SAT and IMAT -190..-30 HU, VAT -150..-50 HU — the Alberta /
  Slice-O-Matic protocol (TomoVision "Sarcopenia Help"), usually credited to Mitsiopoulos et al.,
  J Appl Physiol 1998.
* Slice: midpoint of L3 (JoVE 2021, doi 10.3791/61674, following Mourtzakis et al. 2008).
* SMI = SMA / height² in cm²/m²; height from Patient's Size (0010,1020) in metres, weight from
  Patient's Weight (0010,1030) in kg.
* Cut-offs: Prado et al., Lancet Oncol 2008;9:629-635; Martin et al., J Clin Oncol 2013;
  van der Werf et al., Eur J Clin Nutr 2018;72:288-296.
* Codes: PS3.16 (Tissue 85756007; Muscle 91727004; Fat 55603005 with anatomic region
  Subcutaneous tissue 71966008, Abdominopelvic cavity 818987002, Skeletal muscle 127954009).

The segmentation and the level finding sit behind two small protocols
(:class:`BodyCompositionSegmenter`, :class:`L3Locator`) so that a trained network can replace
either later; the rule-based implementations here are the defaults.

Research use only, not for diagnosis. Checked on digital phantoms, one real abdominal slice and
one real upper-abdominal series (T11/T12, against TotalSegmentator's masks); see
``docs/pipelines/l3-body-composition.md``.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Protocol, runtime_checkable

import numpy as np
from scipy import ndimage

from pipelines.errors import PipelineError, UnsupportedInputError
from pipelines.measurement_tables.l3_body_composition import MEASUREMENTS
from pipelines.measurement_text import measurements_line
from pipelines.morphology import (
    FACE,
    full_connectivity,
    largest_component,
    remove_small_components,
)
from pipelines.parameters.l3_body_composition import L3Parameters  # the parameter model lives with the spec
from pipelines.protocol import PatientContext
from pipelines.spine import (
    SpineLabelling,
    SpineParameters,
    VertebraInSlice,
    find_body_mask,
    find_vertebra_in_slice,
    label_vertebrae,
    paraspinal_compartment,
    scan_bone_threshold,
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
    SOFT_TISSUE_WINDOW_HU,
    UCUM_CM2,
    UCUM_CM2_PER_M2,
    UCUM_HU,
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
from pipelines.volume import CTVolume

logger = logging.getLogger(__name__)

PROTOCOL_NAME = "l3-body-composition"

ALGORITHM = AlgorithmInfo(
    name="ainode-l3-reference",
    version="0.1.0",
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source=(
        "Rule-based: HU bands of the Alberta/Slice-O-Matic protocol (Mitsiopoulos et al., J Appl "
        "Physiol 1998) on the mid-L3 slice (Mourtzakis et al. 2008); body compartments by "
        "morphology; L3 found by counting vertebrae from the last rib and the sacrum"
    ),
)

#: Labels of the label slice returned by a :class:`BodyCompositionSegmenter`.
LABEL_SMA = 1
LABEL_SAT = 2
LABEL_VAT = 3
LABEL_IMAT = 4

_FAT = CodedTerm("55603005", "SCT", "Fat")

SEGMENTS: list[SegmentDefinition] = [
    SegmentDefinition(
        number=LABEL_SMA,
        label="SMA",
        description="Skeletal muscle, -29..150 HU (abdominal wall, psoas, paraspinal)",
        category=SCT_TISSUE,
        property_type=CodedTerm("91727004", "SCT", "Muscle"),
        anatomic_region=None,
        tracking_id="L3 skeletal muscle",
        display_rgb=(230, 60, 60),
    ),
    SegmentDefinition(
        number=LABEL_SAT,
        label="SAT",
        description="Subcutaneous adipose tissue, -190..-30 HU",
        category=SCT_TISSUE,
        property_type=_FAT,
        anatomic_region=CodedTerm("71966008", "SCT", "Subcutaneous tissue"),
        tracking_id="L3 subcutaneous adipose tissue",
        display_rgb=(250, 200, 60),
    ),
    SegmentDefinition(
        number=LABEL_VAT,
        label="VAT",
        description="Visceral adipose tissue, -150..-50 HU",
        category=SCT_TISSUE,
        property_type=_FAT,
        anatomic_region=CodedTerm("818987002", "SCT", "Abdominopelvic cavity"),
        tracking_id="L3 visceral adipose tissue",
        display_rgb=(60, 200, 120),
    ),
    SegmentDefinition(
        number=LABEL_IMAT,
        label="IMAT",
        description="Intermuscular adipose tissue, -190..-30 HU",
        category=SCT_TISSUE,
        property_type=_FAT,
        anatomic_region=CodedTerm("127954009", "SCT", "Skeletal muscle"),
        tracking_id="L3 intermuscular adipose tissue",
        display_rgb=(80, 140, 255),
    ),
]

# Private concepts (no standard concept exists, clinical.md §5).
SMI_CONCEPT = CodedTerm("SMI", PRIVATE_SCHEME, "Skeletal muscle index")
LEVEL_VERIFIED_CONCEPT = CodedTerm("level-verified", PRIVATE_SCHEME, "Vertebral level verified")
MEASURED_LEVEL_CONCEPT = CodedTerm("measured-level", PRIVATE_SCHEME, "Measured vertebral level")
LOW_SMI_CONCEPT = CodedTerm("low-smi", PRIVATE_SCHEME, "Low skeletal muscle index")
LOW_MUSCLE_HU_CONCEPT = CodedTerm("low-muscle-hu", PRIVATE_SCHEME, "Low muscle attenuation")
L3_VERTEBRA = CodedTerm("36470004", "SCT", "L3 vertebra")
LEVEL_UNKNOWN = CodedTerm("level-unknown", PRIVATE_SCHEME, "Vertebral level not determined")

CUTOFF_SETS = ("none", "prado-2008", "martin-2013", "van-der-werf-2018")


@dataclass(frozen=True)
class CutoffSet:
    """Low-SMI and low-attenuation cut-offs of one publication (clinical.md §1.4).

    ``smi_*`` are cm²/m², ``hu_*`` HU; a value is "low" when strictly below the cut-off. Entries
    keyed by BMI use ``(cut-off if BMI < 25, cut-off if BMI >= 25)``.
    """

    name: str
    source: str
    smi_men: float | tuple[float, float] | None
    smi_women: float | tuple[float, float] | None
    hu_men: float | tuple[float, float] | None
    hu_women: float | tuple[float, float] | None

    @property
    def needs_bmi(self) -> bool:
        """``True`` when a cut-off depends on BMI."""
        return any(
            isinstance(v, tuple) for v in (self.smi_men, self.smi_women, self.hu_men, self.hu_women)
        )


CUTOFFS: dict[str, CutoffSet] = {
    "prado-2008": CutoffSet(
        "prado-2008",
        "Prado et al., Lancet Oncol 2008;9:629-635 (obese patients with cancer)",
        smi_men=52.4, smi_women=38.5, hu_men=None, hu_women=None,
    ),
    "martin-2013": CutoffSet(
        "martin-2013",
        "Martin et al., J Clin Oncol 2013 (patients with cancer)",
        smi_men=(43.0, 53.0), smi_women=41.0, hu_men=(41.0, 33.0), hu_women=(41.0, 33.0),
    ),
    "van-der-werf-2018": CutoffSet(
        "van-der-werf-2018",
        "van der Werf et al., Eur J Clin Nutr 2018;72:288-296 (Dutch healthy kidney donors, "
        "5th percentile)",
        smi_men=41.6, smi_women=32.0, hu_men=29.3, hu_women=22.0,
    ),
}


# ------------------------------------------------------------------------------------------
# Interfaces a trained network can implement later.
# ------------------------------------------------------------------------------------------


@runtime_checkable
class BodyCompositionSegmenter(Protocol):
    """Segments one axial slice into SMA (1), SAT (2), VAT (3) and IMAT (4)."""

    def segment_slice(
        self, hu_slice: np.ndarray, pixel_spacing_mm: tuple[float, float]
    ) -> np.ndarray:
        """Label one slice.

        Parameters
        ----------
        hu_slice:
            ``(rows, columns)`` ``float32`` HU, rows anterior→posterior, columns right→left.
        pixel_spacing_mm:
            (row, column) spacing, mm.

        Returns
        -------
        numpy.ndarray
            ``(rows, columns)`` ``uint8`` labels (0 = none).
        """
        ...


@dataclass(frozen=True)
class L3Location:
    """Where the measured slice lies.

    Attributes
    ----------
    slice_index: int
        Canonical slice index of the measured slice.
    level: str
        ``"L3"``, or ``"unknown"`` when not determined (single slice).
    confidence: float
        0..1 (see :class:`pipelines.spine.SpineLabelling`).
    verified: bool
        ``True`` only when independent landmarks agree.
    method: str
        How it was found.
    evidence: list[str]
        Human-readable reasons.
    """

    slice_index: int
    level: str
    confidence: float
    verified: bool
    method: str
    evidence: list[str] = field(default_factory=list)


@runtime_checkable
class L3Locator(Protocol):
    """Finds the mid-L3 slice of a canonical CT volume."""

    def locate(self, volume: CTVolume) -> L3Location:
        """Return the mid-L3 slice; raise :class:`PipelineError` when it cannot be found."""
        ...


class ReferenceL3Locator:
    """Counts vertebrae with :func:`pipelines.spine.label_vertebrae` and takes mid-L3."""

    def __init__(self, spine_parameters: SpineParameters | None = None) -> None:
        self.spine_parameters = spine_parameters or SpineParameters()
        self.last_labelling: SpineLabelling | None = None

    def locate(self, volume: CTVolume) -> L3Location:
        """Find mid-L3 in ``volume``.

        Raises
        ------
        PipelineError
            If the spine cannot be labelled or L3 is not in the volume.
        """
        labelling = label_vertebrae(volume, self.spine_parameters)
        self.last_labelling = labelling
        l3 = labelling.find("L3")
        found = ", ".join(
            f"{v.label or ('rib-bearing' if v.bears_ribs else '?')} "
            f"(slices {v.first_slice}-{v.last_slice})" for v in labelling.vertebrae
        )
        if l3 is None:
            raise PipelineError(_l3_missing_reason(labelling, found))
        if l3.truncated:
            raise PipelineError(
                f"L3 touches the edge of the scanned range (slices {l3.first_slice}-"
                f"{l3.last_slice}); its midpoint cannot be determined. Send a CT covering all of L3"
            )
        return L3Location(
            slice_index=l3.centre_slice,
            level="L3",
            confidence=labelling.confidence,
            verified=labelling.method == "ribs+sacrum",
            method=labelling.method,
            evidence=list(labelling.evidence),
        )


#: Levels caudal to cranial (for saying which side of the scan L3 lies on).
_LEVEL_ORDER = ("S", "L5", "L4", "L3", "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6",
                "T5", "T4", "T3", "T2", "T1")


def _l3_missing_reason(labelling: SpineLabelling, found: str) -> str:
    """Why L3 was not found, naming the levels in view (for the refusal message)."""
    evidence = " ".join(labelling.evidence)
    labels = [v.label for v in labelling.vertebrae if v.label in _LEVEL_ORDER]
    if labels:
        positions = [_LEVEL_ORDER.index(lab) for lab in labels]
        side = (
            "caudal to" if min(positions) > _LEVEL_ORDER.index("L3") else "cranial to"
        )
        return (
            f"L3 is not in the scanned range: the levels in view are {labels[0]} to {labels[-1]} "
            f"(counted by {labelling.method}; L3 lies {side} the scan). Vertebrae found "
            f"caudal→cranial: {found}. {evidence}. Send a CT that covers L3"
        )
    if labelling.method == "thoracic only":
        return (
            "L3 is not in the scanned range: every vertebra seen whole bears ribs or lies above "
            "one that does (thoracic spine; a piece of vertebra at the caudal edge is too short "
            "to tell), so the lumbar spine lies below the scan. Vertebrae found "
            f"caudal→cranial: {found}. {evidence}. Send a CT that covers the lumbar spine"
        )
    if labelling.method == "anchors disagree":
        return (
            "L3 was not determined: the count from the last rib-bearing vertebra and the count "
            "from the sacrum disagree (transitional anatomy such as 11 or 13 rib pairs, a "
            "lumbarised S1 or sacralised L5, or a missed disc); the level is not guessed. "
            f"Vertebrae found caudal→cranial: {found}. {evidence}. Check the level by hand"
        )
    return (
        f"L3 could not be identified (counting method: {labelling.method}; vertebrae found "
        f"caudal→cranial: {found}). {evidence}. Send a CT that covers the lower thoracic and "
        "lumbar spine (last ribs or sacrum)"
    )


class ModelSegmenter:
    """A :class:`BodyCompositionSegmenter` backed by a trained network (``model.predict``)."""

    def __init__(self, model: LearnedModel) -> None:
        self.model = model

    def segment_slice(
        self, hu_slice: np.ndarray, pixel_spacing_mm: tuple[float, float]
    ) -> np.ndarray:
        """Label one slice with the network (see :meth:`BodyCompositionSegmenter.segment_slice`).

        Raises
        ------
        PipelineError
            If the network returns a label slice of another shape or with labels above IMAT.
        """
        labels = np.asarray(self.model.predict(hu_slice, pixel_spacing_mm))
        if labels.shape != hu_slice.shape or (labels.size and int(labels.max()) > LABEL_IMAT):
            raise PipelineError(
                f"model {self.model.algorithm.name} returned labels of shape {labels.shape} "
                f"(max {int(labels.max()) if labels.size else 0}) for a slice of shape "
                f"{hu_slice.shape}; expected the same shape and labels 0..{LABEL_IMAT}"
            )
        return labels.astype(np.uint8)


class ModelL3Locator:
    """An :class:`L3Locator` backed by a trained level network (``model.locate``).

    The network's position is never "verified": only independent landmarks (ribs and sacrum, in
    the reference method) verify a level. When the network finds no L3 (it raises
    :class:`PipelineError`), the reference locator runs and the method says so.
    """

    def __init__(self, model: LearnedModel) -> None:
        self.model = model

    def locate(self, volume: CTVolume) -> L3Location:
        """Find mid-L3 with the network.

        Raises
        ------
        PipelineError
            If the network returns a slice outside the volume, or it finds no L3 and the
            reference locator cannot find it either.
        """
        assert self.model.locate is not None
        name = f"{self.model.algorithm.name} {self.model.algorithm.version}"
        try:
            index, confidence = self.model.locate(volume.hu, tuple(volume.spacing_mm))
        except PipelineError as exc:
            logger.info("L3 level network: %s; counting vertebrae instead", exc)
            location = ReferenceL3Locator().locate(volume)
            return L3Location(
                slice_index=location.slice_index, level=location.level,
                confidence=location.confidence, verified=location.verified,
                method=f"{location.method} (the level network {name} found no L3)",
                evidence=[f"level network {name}: {exc}", *location.evidence],
            )
        if not 0 <= int(index) < volume.hu.shape[0]:
            raise PipelineError(
                f"model {self.model.algorithm.name} placed L3 at slice {index}, outside the "
                f"volume's {volume.hu.shape[0]} slices"
            )
        return L3Location(
            slice_index=int(index), level="L3", confidence=float(confidence), verified=False,
            method=f"network ({name})",
            evidence=[f"L3 vertebra segmented on frontal/sagittal MIPs by {name}"],
        )


# ------------------------------------------------------------------------------------------
# Reference segmentation of one slice.
# ------------------------------------------------------------------------------------------


def _disk(radius_px: float) -> np.ndarray:
    r = max(1, round(radius_px))
    yy, xx = np.ogrid[-r : r + 1, -r : r + 1]
    return np.asarray(xx * xx + yy * yy <= r * r)


def _in_band(hu: np.ndarray, band: tuple[float, float]) -> np.ndarray:
    return (hu >= band[0]) & (hu <= band[1])


@dataclass
class SliceCompartments:
    """Intermediate masks of :class:`ReferenceSegmenter` (for inspection and tests).

    All ``(rows, columns)`` bool: ``body`` outline, ``fascia`` (everything inside the outer
    surface of the muscle wall), ``muscle_compartment`` (selected muscles incl. IMAT holes),
    ``excluded_organs`` (thick soft tissue removed from the wall candidates), ``bone``.
    """

    body: np.ndarray
    fascia: np.ndarray
    muscle_compartment: np.ndarray
    excluded_organs: np.ndarray
    bone: np.ndarray
    vertebra: VertebraInSlice | None


class ReferenceSegmenter:
    """Rule-based SMA/SAT/VAT/IMAT segmentation of one axial slice at L3.

    Steps (canonical orientation: rows anterior→posterior, columns right→left; every distance in
    mm, so it runs at 0.5-3.5 mm pixels):

    1. Body: largest region above -500 HU, holes filled (the table is cut off by an opening); an
       arm joined to the trunk by a narrow contact (< 2 ``arm_neck_mm``) is cut off, one lying
       flush against it is cut between the two skin notches (:func:`_cut_flush_arms`).
    2. Skin (dense tissue reached from the edge without crossing fat) is set aside; fascia =
       tissue above the fat band inside the body minus skin, closed by ``wall_closing_mm`` to
       bridge gaps of the muscle ring; the ring's interior plus the (unclosed) tissue, holes
       filled, is everything inside the outer muscle surface. SAT is fat in the body outside it.
    3. Spine: the vertebra (scan-adapted bone threshold) with marrow, disc, arch and spinal canal
       (:func:`pipelines.spine.vertebra_block`) is neither muscle nor fat; nor is the 1 mm
       partial-volume rim of ribs and enhanced vessels.
    4. Muscle compartment: soft tissue (muscle band) inside the fascia that touches its outer
       surface (abdominal wall), lies beside the vertebral body (psoas) or lies mostly behind the
       vertebral body within 1.5 body widths of the midline (paraspinal muscles). The posterior
       compartment behind the arch, transverse processes and ribs
       (:func:`pipelines.spine.paraspinal_compartment`, from the skeleton, not from fat planes)
       is muscle whatever the organ rule says. Thick soft tissue (> ``organ_min_thickness_mm``)
       is split into blobs by a watershed of its thickness map; a blob whose thickest part is not
       in the paraspinal or psoas zone is an organ (liver, spleen, kidney, bowel) and is removed
       even where it touches a muscle. Nothing in front of the central 70 % of the vertebral
       body (diaphragmatic crura around the aorta) is muscle.
    5. SMA = muscle-band pixels of the compartment; IMAT = fat-band holes inside it up to
       ``imat_max_hole_cm2``; VAT = VAT-band pixels inside the fascia outside the muscle
       compartment and bone.

    Limits: bowel wall against the abdominal wall, hernias and the crura beside the vertebral
    body are counted as muscle; an organ touching a wall muscle or psoas is split only where the
    thickness map has a saddle (at 3 mm pixels thin lateral wall muscles can go with the liver);
    an arm lying flush against the trunk without two clear skin notches is not removed; muscle
    thicker than ``organ_min_thickness_mm`` anterior to the spine (very muscular rectus) would
    be lost.
    """

    def __init__(self, params: L3Parameters | None = None) -> None:
        self.params = params or L3Parameters()
        self.last_compartments: SliceCompartments | None = None

    def segment_slice(
        self, hu_slice: np.ndarray, pixel_spacing_mm: tuple[float, float]
    ) -> np.ndarray:
        """Label one slice: 1 SMA, 2 SAT, 3 VAT, 4 IMAT.

        Parameters
        ----------
        hu_slice:
            ``(rows, columns)`` HU, canonical orientation.
        pixel_spacing_mm:
            (row, column) spacing, mm.

        Returns
        -------
        numpy.ndarray
            ``(rows, columns)`` ``uint8``.

        Raises
        ------
        PipelineError
            If no body is found in the slice.
        """
        p = self.params
        hu = np.asarray(hu_slice, dtype=np.float32)
        dr, dc = (float(v) for v in pixel_spacing_mm)
        mm_px = min(dr, dc)
        pixel_mm2 = dr * dc
        body = find_body_mask(hu, (dr, dc))
        if body.sum() * pixel_mm2 < 100.0 * 100.0:
            raise PipelineError(
                f"no body cross-section found in the slice (largest region above -500 HU is "
                f"{body.sum() * pixel_mm2 / 100.0:.0f} cm²); is this an abdominal CT slice?"
            )
        body = _trunk_only(body, hu, mm_px, p.arm_neck_mm)
        bone_threshold, _, _ = scan_bone_threshold(hu)
        vertebra = find_vertebra_in_slice(hu, (dr, dc), body, bone_threshold)

        # Bone (with what it encloses: marrow, spinal canal) is never muscle or fat; neither is
        # the partial-volume rim of ribs and of enhanced vessels (one pixel, at least 1 mm).
        bone_raw = (hu > p.muscle_hu[1]) & body
        bone = np.asarray(ndimage.binary_fill_holes(
            ndimage.binary_closing(bone_raw, structure=_disk(1.5 / mm_px)) | bone_raw))
        spine_block = np.zeros_like(body)
        if vertebra is not None:
            spine_block = vertebra_block(hu, (dr, dc), vertebra, body, bone_threshold)
            bone |= vertebra.enclosed | spine_block
        bright_rim = ndimage.binary_dilation(bone_raw & ~spine_block,
                                             structure=_disk(max(1.0, 1.0 / mm_px)))

        # 2. Fascia (everything inside the outer surface of the muscle wall).
        inner = ndimage.binary_erosion(body, structure=_disk(p.skin_mm / mm_px))
        # Skin: dense tissue reached from the body's edge without crossing fat (up to three
        # skin thicknesses deep, e.g. where the back is pressed on the table). It must not
        # close the muscle ring around the subcutaneous fat.
        edge_mm = ndimage.distance_transform_edt(body, sampling=(dr, dc))
        dense = (hu > p.sat_hu[1]) & body
        skin = ndimage.binary_propagation(
            dense & (edge_mm <= min(dr, dc) + 1e-6), mask=dense & (edge_mm <= 3.0 * p.skin_mm))
        tissue = (hu > p.sat_hu[1]) & inner & ~skin
        closed = ndimage.binary_closing(tissue, structure=_disk(p.wall_closing_mm / mm_px))
        closed &= inner
        interior = np.asarray(ndimage.binary_fill_holes(closed)) & ~closed
        fascia = np.asarray(ndimage.binary_fill_holes(tissue | interior)) & inner
        fascia = _open_mm(fascia, 1.0, mm_px)
        fascia = largest_component(fascia, FACE)

        fat = _in_band(hu, p.sat_hu) & body
        sat = fat & ~fascia

        # 3. Muscle compartment.
        lean = _in_band(hu, p.muscle_hu) & fascia & ~bone & ~bright_rim
        # Cut one-pixel bridges (about 1 mm; none at coarse pixels, where they are real tissue).
        lean_open = _open_mm(lean, 1.0, mm_px)
        depth_mm = ndimage.distance_transform_edt(fascia, sampling=(dr, dc))
        rim = fascia & (depth_mm <= 3.0)
        wall_zone = depth_mm <= p.wall_max_depth_mm
        psoas_zone = np.zeros_like(body)
        posterior_zone = np.zeros_like(body)
        paraspinal_zone = np.zeros_like(body)
        paraspinal_core = np.zeros_like(body)
        near_vb = np.zeros_like(body)
        if vertebra is not None:
            vb = vertebra.mask.copy()
            vb[vertebra.posterior_row + 1 :] = False
            near_vb = ndimage.binary_dilation(vb, structure=_disk(6.0 / mm_px))
            rows, cols = np.indices(hu.shape)
            vb_row, vb_col = vertebra.body_centre_rc
            lateral_mm = np.abs(cols - vb_col) * dc
            psoas_zone = (
                (rows >= vertebra.anterior_row - round(15.0 / dr))
                & (rows <= vertebra.posterior_row + round(10.0 / dr))
                & (lateral_mm <= 70.0)
            )
            near_vb &= psoas_zone
            posterior_zone = (rows >= vb_row) & (lateral_mm <= 85.0)
            # Behind the vertebral body, within the width of the back muscles (about 1.5 body
            # widths either side of the midline; scales with the patient's own vertebra).
            paraspinal_zone = (
                (rows > vertebra.posterior_row)
                & (lateral_mm <= 1.5 * max(vertebra.body_width_mm, 30.0))
                & fascia & ~bone
            )
            # Their core: within one vertebral-body width of the midline (erector spinae and
            # multifidus beside the spinous process), where no organ lies.
            paraspinal_core = paraspinal_zone & (lateral_mm <= max(vertebra.body_width_mm, 30.0))
        # The posterior compartment behind the arch, transverse processes and ribs (back
        # muscles), defined from the skeleton, not from fat planes: no organ rule removes it.
        back_compartment = np.zeros_like(body)
        if vertebra is not None:
            back_compartment = paraspinal_compartment(hu, (dr, dc), vertebra, fascia,
                                                      bone_threshold) & ~bone
        protected = posterior_zone | psoas_zone
        # Organs against the wall (liver, spleen): thick soft-tissue blobs lying mostly outside
        # the posterior and psoas zones.
        # Enhanced organs reach above the muscle band (speckle above 150 HU), so the thickness
        # test runs on all soft tissue up to 300 HU, outside the vertebra, speckle closed.
        soft = (hu >= p.muscle_hu[0]) & (hu <= 300.0) & fascia
        if vertebra is not None:
            soft &= ~vertebra.enclosed
        soft = np.asarray(ndimage.binary_closing(soft, structure=_disk(1.0))) & fascia
        thick = np.asarray(ndimage.binary_opening(
            soft, structure=_disk(0.5 * p.organ_min_thickness_mm / mm_px)))
        # Blobs touching each other (liver or spleen against the back muscles) are split at
        # their narrowest contact: watershed of the thickness map from its distinct maxima.
        organs = np.zeros_like(body)
        if thick.any():
            from skimage.morphology import h_maxima
            from skimage.segmentation import watershed

            dist = ndimage.distance_transform_edt(soft, sampling=(dr, dc))
            # Every blob at least ~17 mm thick gets a marker of its own (a thinner back muscle
            # is not flooded from the liver beside it).
            core = dist >= 0.35 * p.organ_min_thickness_mm
            peaks = h_maxima(np.round(dist / mm_px).astype(np.int32),
                             max(1, round(3.0 / mm_px))).astype(bool) & core
            markers, n_markers = ndimage.label(peaks, structure=np.ones((3, 3), dtype=bool))
            if n_markers:
                regions = watershed(-dist, markers, mask=thick)
                # A blob is a muscle when its thickest part (its marker) lies beside the
                # spinous process behind the vertebral body (back muscles) or beside the body
                # (psoas); any other thick blob (liver, spleen, kidney, bowel) is an organ.
                muscle_home = paraspinal_zone | psoas_zone
                at_home = np.bincount(markers[muscle_home], minlength=n_markers + 1)
                size = np.bincount(markers.ravel(), minlength=n_markers + 1)
                is_organ = at_home < 0.5 * size
                is_organ[0] = False
                organs = is_organ[regions]
            organs = _dilate_mm(organs, 1.0, mm_px) & lean & ~back_compartment
        candidate = lean_open & ~organs & (wall_zone | protected | back_compartment)
        comps, n = ndimage.label(candidate, structure=np.ones((3, 3), dtype=bool))
        selected = np.zeros(n + 1, dtype=bool)
        selected[np.unique(comps[rim])] = True
        selected[np.unique(comps[near_vb])] = True
        if n and paraspinal_zone.any():
            # Paraspinal muscles (erector spinae, multifidus): soft tissue lying mostly behind
            # the vertebral body beside the arch, even when fat separates it from the wall.
            total = np.bincount(comps.ravel(), minlength=n + 1)
            behind = np.bincount(comps[paraspinal_zone], minlength=n + 1)
            selected |= (behind >= 0.5 * total) & (total * pixel_mm2 >= 50.0)
        selected[0] = False
        candidate = selected[comps]
        # Grow back the one-pixel rim lost by the opening, inside the muscle band.
        muscle = (lean & _dilate_mm(candidate, 1.0, mm_px) & ~organs) | (lean & back_compartment)
        # Drop crumbs left over from removed organs.
        if vertebra is not None:
            # Diaphragmatic crura (around the aorta, in front of the vertebral body) are not
            # skeletal muscle of the protocol: nothing in front of the central 70 % of the body's
            # width, up to 25 mm anterior to it, is muscle (psoas lies beside the body).
            rows, cols = np.indices(hu.shape)
            prevertebral = (
                (rows < vertebra.anterior_row + max(1, round(3.0 / dr)))
                & (rows >= vertebra.anterior_row - round(25.0 / dr))
                & (np.abs(cols - vertebra.body_centre_rc[1]) * dc
                   <= 0.35 * max(vertebra.body_width_mm, 30.0))
            )
            muscle &= ~prevertebral
        muscle = remove_small_components(
            muscle, min_size=max(4, round(20.0 / pixel_mm2)), connectivity=full_connectivity(2)
        )

        # 4. IMAT: fat holes inside the muscle up to imat_max_hole_cm2.
        holes = np.asarray(ndimage.binary_fill_holes(muscle)) & ~muscle
        hole_labels, n_holes = ndimage.label(holes)
        if n_holes:
            sizes = np.bincount(hole_labels.ravel()) * pixel_mm2 / 100.0
            small = sizes <= p.imat_max_hole_cm2
            small[0] = False
            enclosed = small[hole_labels]
        else:
            enclosed = np.zeros_like(holes)
        imat = enclosed & _in_band(hu, p.imat_hu)
        compartment = muscle | enclosed
        vat = _in_band(hu, p.vat_hu) & fascia & ~compartment & ~bone

        labels = np.zeros(hu.shape, dtype=np.uint8)
        labels[sat] = LABEL_SAT
        labels[vat] = LABEL_VAT
        labels[muscle] = LABEL_SMA
        labels[imat] = LABEL_IMAT
        self.last_compartments = SliceCompartments(
            body=body, fascia=fascia, muscle_compartment=compartment, excluded_organs=organs,
            bone=bone, vertebra=vertebra,
        )
        return labels


def _trunk_only(body: np.ndarray, hu: np.ndarray, mm_px: float, neck_mm: float) -> np.ndarray:
    """The trunk without arms lying against it (arms down, e.g. PET/CT).

    An opening by a disk of ``neck_mm`` radius cuts the narrow skin contact between an arm and
    the trunk; the largest remaining region is the trunk, grown back by the same radius inside
    the body outline so its own skin line is kept.

    Parameters
    ----------
    body:
        ``(rows, columns)`` bool body outline.
    hu:
        ``(rows, columns)`` HU of the slice (an arm holds bone).
    mm_px:
        Pixel size, mm.
    neck_mm:
        Contacts narrower than twice this are cut, mm.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool.
    """
    radius = neck_mm / mm_px
    if radius < 1.0:
        return body
    step = max(1, int(radius // 4))  # coarse grid: same result at a fraction of the cost
    coarse = body[::step, ::step]
    opened = ndimage.binary_opening(coarse, structure=_disk(radius / step))
    trunk = largest_component(opened, FACE)
    if not trunk.any():
        return body
    grown = ndimage.binary_dilation(trunk, structure=_disk(radius / step + 1))
    grown = np.repeat(np.repeat(grown, step, axis=0), step, axis=1)[: body.shape[0],
                                                                     : body.shape[1]]
    kept = body & grown
    labels, n = ndimage.label(kept)
    if n > 1:
        kept = largest_component(kept, FACE)
    kept = _cut_flush_arms(np.asarray(ndimage.binary_fill_holes(kept)), hu, mm_px)
    return kept


def _cut_flush_arms(body: np.ndarray, hu: np.ndarray, mm_px: float) -> np.ndarray:
    """Cut off an arm lying flush against the trunk along the line joining the two notches
    (convexity defects) where its skin meets the trunk's, anterior and posterior to it.

    A pair of notches qualifies when both are at least 8 mm deep, lie in the lateral thirds on the
    same side, are less than 150 mm apart and the line between them runs mostly inside the body
    (the rest through the air gap between arm and trunk); the part cut off must be smaller than a
    quarter of the body and hold at least 1 cm² of bone (humerus, or radius and ulna), so a skin
    fold or pannus is never cut.

    Parameters
    ----------
    body:
        ``(rows, columns)`` bool outline (one region, holes filled).
    hu:
        ``(rows, columns)`` HU.
    mm_px:
        Pixel size, mm.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` bool: the trunk.
    """
    from skimage.draw import line as draw_line
    from skimage.morphology import convex_hull_image

    if body.sum() < 100:
        return body
    hull = convex_hull_image(body)
    defects = hull & ~body
    labels, n = ndimage.label(defects)
    if n < 2:
        return body
    depth = ndimage.distance_transform_edt(hull) * mm_px
    cols = np.flatnonzero(body.any(axis=0))
    left_edge, right_edge = cols[0], cols[-1]
    third = (right_edge - left_edge + 1) / 3.0
    notches = []
    for i, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        piece = labels[region] == i
        d = np.where(piece, depth[region], 0.0)
        if d.max() < 8.0:
            continue
        r, c = np.unravel_index(int(np.argmax(d)), d.shape)
        r, c = r + region[0].start, c + region[1].start
        side = -1 if c < left_edge + third else (1 if c > right_edge - third else 0)
        if side:
            notches.append((side, int(r), int(c)))
    trunk = body
    for side in (-1, 1):
        points = [(r, c) for s, r, c in notches if s == side]
        best = None
        for i in range(len(points)):
            for j in range(i + 1, len(points)):
                (r0, c0), (r1, c1) = points[i], points[j]
                length_mm = float(np.hypot(r1 - r0, c1 - c0)) * mm_px
                if length_mm > 150.0:
                    continue
                rr, cc = draw_line(r0, c0, r1, c1)
                if body[rr, cc].mean() < 0.5:
                    continue
                if best is None or length_mm < best[0]:
                    best = (length_mm, rr, cc)
        if best is None:
            continue
        cut = trunk.copy()
        cut[best[1], best[2]] = False
        # 4-connected labelling: the 8-connected cut line separates the two sides.
        cut_labels, count = ndimage.label(cut)
        if count < 2:
            continue
        sizes = np.bincount(cut_labels.ravel())
        sizes[0] = 0
        main = int(np.argmax(sizes))
        removed = trunk.sum() - sizes[main]
        bone_cm2 = float(((cut_labels != main) & cut & (hu > 200.0)).sum()) * mm_px**2 / 100.0
        if removed < 0.25 * trunk.sum() and bone_cm2 >= 1.0:
            trunk = np.asarray(cut_labels == main)
            trunk[best[1], best[2]] = True  # the cut line itself stays with the trunk
            trunk = largest_component(trunk, FACE)
    return trunk


def _open_mm(mask: np.ndarray, radius_mm: float, mm_px: float) -> np.ndarray:
    """Opening by a disk of ``radius_mm``; none when that is under about one pixel."""
    if radius_mm / mm_px < 0.75:
        return np.asarray(mask)
    return np.asarray(ndimage.binary_opening(mask, structure=_disk(radius_mm / mm_px)))


def _dilate_mm(mask: np.ndarray, radius_mm: float, mm_px: float) -> np.ndarray:
    """Dilation by a disk of ``radius_mm``; none when that is under about one pixel."""
    if radius_mm / mm_px < 0.75:
        return np.asarray(mask)
    return np.asarray(ndimage.binary_dilation(mask, structure=_disk(radius_mm / mm_px)))


# ------------------------------------------------------------------------------------------
# The pipeline.
# ------------------------------------------------------------------------------------------


def _cutoff_value(value: float | tuple[float, float] | None, bmi: float | None) -> float | None:
    if value is None or not isinstance(value, tuple):
        return value
    if bmi is None:
        return None
    return value[0] if bmi < 25.0 else value[1]


def run_l3_body_composition(
    volume: CTVolume,
    params: L3Parameters | None = None,
    *,
    segmenter: BodyCompositionSegmenter | None = None,
    locator: L3Locator | None = None,
    model: LearnedModel | None = None,
    context: PatientContext | None = None,
) -> PipelineResult:
    """Measure body composition at mid-L3 on an abdominal CT.

    Parameters
    ----------
    volume:
        Canonical CT volume (:func:`pipelines.volume.load_ct_volume`), axial. A volume must cover
        the lower thoracic and lumbar spine so that L3 can be counted; a single slice is measured
        as given, with the level reported as not verified.
    params:
        HU bands, cut-off set and method constants (:class:`L3Parameters`).
    segmenter:
        Slice segmenter; default :class:`ReferenceSegmenter`.
    locator:
        Mid-L3 locator; default :class:`ReferenceL3Locator`.
    model:
        A trained network (:class:`pipelines.types.LearnedModel`, loaded by :mod:`models`).
        ``model.predict(hu_slice, pixel_spacing_mm) -> label slice`` replaces the reference
        segmentation (same signature and labels as
        :meth:`BodyCompositionSegmenter.segment_slice`); when ``model.locate`` is set,
        ``model.locate(hu, spacing_mm) -> (slice_index, confidence)`` (``hu`` the canonical
        ``(slices, rows, columns)`` HU volume, ``spacing_mm`` its (slice, row, column) spacing)
        replaces the reference level finding. Measurement and outputs are the same; the result
        names the model's algorithm, version and validation status. An explicit ``segmenter`` or
        ``locator`` wins over the model.
    context:
        Patient's height, weight and sex and the acquisition's kVp, kernel, slice thickness and
        contrast (:class:`pipelines.protocol.PatientContext`, read by the core from the series'
        headers); ``None`` reads it from ``volume.datasets`` with the same rule.

    Returns
    -------
    PipelineResult
        Segments SMA/SAT/VAT/IMAT on the measured slice only (label map on the source frames),
        measurements (areas in cm², HU, SMI), findings (level, verified, low SMI), summary and
        warnings.

    Raises
    ------
    UnsupportedInputError
        If the images are not CT or not axial.
    PipelineError
        If no body or no L3 is found.
    """
    p = params or L3Parameters()
    algorithm = ALGORITHM
    if model is not None:
        algorithm = model.algorithm
        segmenter = segmenter or ModelSegmenter(model)
        if model.locate is not None:
            locator = locator or ModelL3Locator(model)
    segmenter = segmenter or ReferenceSegmenter(p)
    modalities = {str(ds.get("Modality", "")) for ds in volume.datasets}
    if modalities != {"CT"}:
        raise UnsupportedInputError(
            f"L3 body composition needs CT images, got Modality {sorted(modalities)}; route "
            "this series to a protocol for its modality"
        )
    warnings: list[str] = []
    if not volume.is_single_slice and not volume.slice_axis_is_axial:
        raise UnsupportedInputError(
            "the series is not axial (sagittal or coronal reconstruction); send the axial "
            "series: an axial cut through reformatted thick slices is not a valid L3 slice"
        )

    if volume.is_single_slice:
        if volume.hu.shape[0] != 1:
            raise UnsupportedInputError(
                "the single image is not an axial slice; send an axial abdominal CT image"
            )
        location = L3Location(
            slice_index=0, level="unknown", confidence=0.0, verified=False,
            method="single slice as given",
            evidence=["single image: measured as given, the vertebral level was not verified"],
        )
        warnings.append(
            "single slice: the vertebral level was not verified (the image is measured as given; "
            "make sure it is the mid-L3 slice)"
        )
    else:
        locator = locator or ReferenceL3Locator()
        location = locator.locate(volume)
        if not location.verified:
            warnings.append(
                f"the vertebral level was not verified: L3 found by {location.method} "
                f"(confidence {location.confidence:.1f}); check the level on the key image"
            )
    k = location.slice_index
    hu_slice = volume.hu[k]
    spacing_rc = (float(volume.spacing_mm[1]), float(volume.spacing_mm[2]))
    label_slice = np.asarray(segmenter.segment_slice(hu_slice, spacing_rc), dtype=np.uint8)

    pixel_cm2 = spacing_rc[0] * spacing_rc[1] / 100.0
    masks = {n: label_slice == n for n in (LABEL_SMA, LABEL_SAT, LABEL_VAT, LABEL_IMAT)}
    if not masks[LABEL_SMA].any():
        raise PipelineError(
            f"no skeletal muscle found on slice {k}; the slice may not be an abdominal CT at L3"
        )
    sma_cm2 = float(masks[LABEL_SMA].sum() * pixel_cm2)
    sat_cm2 = float(masks[LABEL_SAT].sum() * pixel_cm2)
    vat_cm2 = float(masks[LABEL_VAT].sum() * pixel_cm2)
    imat_cm2 = float(masks[LABEL_IMAT].sum() * pixel_cm2)
    muscle_hu = hu_slice[masks[LABEL_SMA]]
    muscle_mean = float(muscle_hu.mean())
    muscle_sd = float(muscle_hu.std(ddof=1)) if muscle_hu.size > 1 else 0.0
    sat_mean = float(hu_slice[masks[LABEL_SAT]].mean()) if masks[LABEL_SAT].any() else None
    vat_mean = float(hu_slice[masks[LABEL_VAT]].mean()) if masks[LABEL_VAT].any() else None

    source_index = 0 if volume.is_single_slice else volume.source_frame_of_slice(k)
    header = volume.datasets[source_index if source_index is not None else 0]
    if context is None:
        context = PatientContext.from_headers(volume.datasets)
    height_m, weight_kg, sex = context.height_m, context.weight_kg, context.sex
    if height_m is not None and not 0.4 <= height_m <= 2.5:
        warnings.append(
            f"Patient's Size {height_m:g} is not a height in metres (0.4..2.5); SMI not computed"
        )
        height_m = None
    bmi = weight_kg / height_m**2 if (weight_kg and height_m) else None
    smi = sma_cm2 / height_m**2 if height_m else None
    contrast, kvp, thickness = context.contrast, context.kvp, context.slice_thickness_mm
    kernel_text = context.kernel

    measurements = [
        Measurement("sma_cm2", SCT_AREA, sma_cm2, UCUM_CM2, LABEL_SMA, None, "SMA"),
        Measurement("muscle_mean_hu", DCM_ATTENUATION, muscle_mean, UCUM_HU, LABEL_SMA, SCT_MEAN,
                    "Muscle mean HU"),
        Measurement("muscle_sd_hu", DCM_ATTENUATION, muscle_sd, UCUM_HU, LABEL_SMA,
                    SCT_STANDARD_DEVIATION, "Muscle SD HU"),
        Measurement("sat_area_cm2", SCT_AREA, sat_cm2, UCUM_CM2, LABEL_SAT, None, "SAT"),
        Measurement("vat_area_cm2", SCT_AREA, vat_cm2, UCUM_CM2, LABEL_VAT, None, "VAT"),
        Measurement("imat_area_cm2", SCT_AREA, imat_cm2, UCUM_CM2, LABEL_IMAT, None, "IMAT"),
    ]
    if sat_mean is not None:
        measurements.append(Measurement("sat_mean_hu", DCM_ATTENUATION, sat_mean, UCUM_HU,
                                        LABEL_SAT, SCT_MEAN, "SAT mean HU"))
    if vat_mean is not None:
        measurements.append(Measurement("vat_mean_hu", DCM_ATTENUATION, vat_mean, UCUM_HU,
                                        LABEL_VAT, SCT_MEAN, "VAT mean HU"))
    if smi is not None:
        measurements.append(Measurement("smi_cm2_per_m2", SMI_CONCEPT, smi, UCUM_CM2_PER_M2,
                                        None, None, "SMI"))

    # Cut-offs.
    findings = [
        QualitativeFinding(MEASURED_LEVEL_CONCEPT,
                           L3_VERTEBRA if location.level == "L3" else LEVEL_UNKNOWN),
        QualitativeFinding(LEVEL_VERIFIED_CONCEPT, SCT_YES if location.verified else SCT_NO),
    ]
    low_smi: bool | None = None
    low_hu: bool | None = None
    low_smi_reason = low_hu_reason = (
        "no cut-off set configured: set l3.cutoff_set in the node's configuration (prado-2008, "
        "martin-2013 or van-der-werf-2018; docs/pipelines/l3-body-composition.md)")
    if p.cutoff_set != "none":
        cut = CUTOFFS[p.cutoff_set]
        sex_missing = [] if sex in ("M", "F") else ["Patient's Sex (M/F)"]
        bmi_missing = []
        if cut.needs_bmi:
            bmi_missing = [
                name
                for name, value in (("Patient's Size", height_m), ("Patient's Weight", weight_kg))
                if value is None
            ]
        smi_missing = sex_missing + (["Patient's Size"] if height_m is None else []) + [
            f"{name} (for BMI)" for name in bmi_missing if name != "Patient's Size"
        ]
        hu_missing = sex_missing + [f"{name} (for BMI)" for name in bmi_missing]
        if cut.hu_men is None and cut.hu_women is None:
            hu_missing = []  # the set has no attenuation cut-off: nothing is missing for it
        if smi_missing:
            low_smi_reason = (
                f"cut-off set {cut.name} cannot be applied to SMI: missing {', '.join(smi_missing)}"
            )
            warnings.append(low_smi_reason)
        if hu_missing:
            low_hu_reason = (
                f"cut-off set {cut.name} cannot be applied to muscle attenuation: missing "
                f"{', '.join(hu_missing)}"
            )
            warnings.append(low_hu_reason)
        if not (smi_missing and hu_missing):
            smi_cut = _cutoff_value(cut.smi_men if sex == "M" else cut.smi_women, bmi)
            hu_cut = _cutoff_value(cut.hu_men if sex == "M" else cut.hu_women, bmi)
            if smi_cut is not None and smi is not None and not smi_missing:
                low_smi = smi < smi_cut
                low_smi_reason = f"SMI {smi:.1f} vs cut-off < {smi_cut:g} cm²/m² ({cut.source})"
                findings.append(QualitativeFinding(LOW_SMI_CONCEPT, SCT_YES if low_smi else SCT_NO))
            if hu_cut is not None and not hu_missing:
                low_hu = muscle_mean < hu_cut
                low_hu_reason = f"muscle {muscle_mean:.1f} HU vs cut-off < {hu_cut:g} HU ({cut.source})"
                findings.append(
                    QualitativeFinding(LOW_MUSCLE_HU_CONCEPT, SCT_YES if low_hu else SCT_NO))
                if contrast:
                    warnings.append(
                        "contrast-enhanced scan: contrast raises muscle attenuation by about "
                        "6-9 HU (van Vugt 2017; Paris 2018), so the low-attenuation cut-offs, "
                        "derived largely on unenhanced/mixed scans, under-call myosteatosis"
                    )
            elif hu_cut is None:
                low_hu_reason = f"cut-off set {cut.name} has no attenuation cut-off"
    if contrast:
        warnings.append(
            "contrast agent recorded (Contrast/Bolus Agent); muscle HU is higher than on an "
            "unenhanced scan"
        )

    level_text = "L3 (mid-vertebra)" if location.level == "L3" else "level not verified"
    summary: dict[str, object] = {
        "protocol": PROTOCOL_NAME,
        "algorithm": algorithm.name,
        "algorithm_version": algorithm.version,
        "validation_status": algorithm.validation_status.value,
        "disclaimer": RESEARCH_USE_DISCLAIMER,
        "level": location.level,
        "level_confidence": round(location.confidence, 2),
        "level_verified": location.verified,
        "level_method": location.method,
        "level_evidence": list(location.evidence),
        "slice_convention": p.slice_convention,
        "slice_index": int(k),
        "source_sop_instance_uid": str(header.get("SOPInstanceUID", "")),
        "sma_cm2": round(sma_cm2, 2),
        "sat_area_cm2": round(sat_cm2, 2),
        "vat_area_cm2": round(vat_cm2, 2),
        "imat_area_cm2": round(imat_cm2, 2),
        "muscle_mean_hu": round(muscle_mean, 2),
        "muscle_sd_hu": round(muscle_sd, 2),
        "sat_mean_hu": None if sat_mean is None else round(sat_mean, 2),
        "vat_mean_hu": None if vat_mean is None else round(vat_mean, 2),
        "smi_cm2_per_m2": None if smi is None else round(smi, 2),
        "height_m": height_m,
        "weight_kg": weight_kg,
        "bmi_kg_per_m2": None if bmi is None else round(bmi, 1),
        "sex": sex,
        "cutoff_set": p.cutoff_set,
        "low_smi": low_smi,
        "low_smi_reason": low_smi_reason,
        "low_muscle_attenuation": low_hu,
        "low_muscle_attenuation_reason": low_hu_reason,
        "contrast": contrast,
        "kvp": kvp,
        "slice_thickness_mm": thickness,
        "convolution_kernel": kernel_text,
        "hu_bands": {"muscle": list(p.muscle_hu), "sat": list(p.sat_hu),
                     "imat": list(p.imat_hu), "vat": list(p.vat_hu)},
    }
    if smi is None:
        summary["smi_reason"] = "Patient's Size (0010,1020) missing or invalid"

    canonical = np.zeros(volume.hu.shape, dtype=np.uint8)
    canonical[k] = label_slice
    label_map = volume.to_source_frames(canonical)

    # Names, units and precision from the measurement table; unrounded values.
    shown = {"sma_cm2": sma_cm2, "muscle_mean_hu": muscle_mean, "imat_area_cm2": imat_cm2,
             "sat_area_cm2": sat_cm2, "vat_area_cm2": vat_cm2, "smi_cm2_per_m2": smi}
    text_lines = [
        f"{level_text}; slice {k}; cut-off set {p.cutoff_set}",
        measurements_line(MEASUREMENTS, shown, ("sma_cm2", "muscle_mean_hu", "imat_area_cm2")),
        measurements_line(MEASUREMENTS, shown, ("sat_area_cm2", "vat_area_cm2", "smi_cm2_per_m2")),
        f"{algorithm.name} {algorithm.version} ({algorithm.validation_status.value})",
    ]
    key_image = _key_image(hu_slice, label_slice, text_lines, spacing_rc, source_index)
    for message in warnings:
        logger.info("L3 body composition: %s", message)
    return PipelineResult(
        protocol=PROTOCOL_NAME,
        algorithm=algorithm,
        source_datasets=list(volume.datasets),
        segments=list(SEGMENTS),
        label_map=label_map,
        measurements=measurements,
        findings=findings,
        key_image=key_image,
        summary=summary,
        warnings=warnings,
    )


def _key_image(
    hu_slice: np.ndarray,
    label_slice: np.ndarray,
    text_lines: list[str],
    spacing_rc: tuple[float, float],
    source_index: int | None,
) -> KeyImageSpec | None:
    """Describe the key image of the measured slice (canonical axial: columns to the patient's
    left, rows to posterior, so Patient Orientation is ``("L", "P")``), soft-tissue window."""
    if source_index is None:
        return None
    return KeyImageSpec(
        panels=(
            KeyImagePanel(
                image=hu_slice,
                pixel_spacing_mm=spacing_rc,
                window_hu=SOFT_TISSUE_WINDOW_HU,
                labels=label_slice,
            ),
        ),
        segments=tuple(SEGMENTS),
        text_lines=tuple(text_lines),
        source_index=int(source_index),
        patient_orientation=("L", "P"),
    )
