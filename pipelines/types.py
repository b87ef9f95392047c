"""Typed dataclasses at the boundary between a pipeline and the rest of ainode.

A pipeline returns a :class:`PipelineResult`; :mod:`pipelines.outputs` turns it into a
DICOM-SEG, a TID 1500 Structured Report and a Secondary Capture key image, and the node stores
``PipelineResult.summary`` in the job database. Nothing here touches the network or the database.
A method describes its key image declaratively (:class:`KeyImageSpec`: panels, overlays,
annotations, text); :mod:`pipelines.outputs.render` draws it, so methods never import PIL.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum
from typing import Any

import numpy as np
from pydicom.dataset import Dataset

#: Every output says this, in the SR and printed on the key image.
RESEARCH_USE_DISCLAIMER = "Research use only, not for diagnosis."


class ValidationStatus(StrEnum):
    """How far the algorithm behind a result has been validated.

    ``reference-method``: a rule-based method (Hounsfield bands, morphology, anatomy) that needs no
    trained weights; checked on digital phantoms only. ``phantom-only``: a network trained on
    digital phantoms. ``research``: trained/evaluated on real data, not clinically validated.
    ``validated``: validated on clinical data by the installing site or vendor.
    """

    REFERENCE_METHOD = "reference-method"
    PHANTOM_ONLY = "phantom-only"
    RESEARCH = "research"
    VALIDATED = "validated"


@dataclass(frozen=True)
class CodedTerm:
    """A coded concept: (code value, coding scheme designator, code meaning).

    Example: ``CodedTerm("91727004", "SCT", "Muscle")``. Private concepts use the scheme
    ``99AINODE`` (declared in the SR's Coding Scheme Identification Sequence).
    """

    value: str
    scheme: str
    meaning: str


@dataclass(frozen=True)
class AlgorithmInfo:
    """The algorithm that produced a result, written into the SEG and SR.

    Attributes
    ----------
    name: str
        Human-readable algorithm name, e.g. ``"ainode-l3-reference"``.
    version: str
        Algorithm version; part of the deterministic output UIDs, so a new version gives new UIDs.
    validation_status: ValidationStatus
        Printed in the SR and on the key image.
    is_ai: bool
        ``True`` for a trained network (SEG Segment Algorithm Type ``AUTOMATIC`` with family
        "Artificial Intelligence"), ``False`` for a rule-based reference method.
    source: str
        Publication or document the method follows.
    """

    name: str
    version: str
    validation_status: ValidationStatus
    is_ai: bool
    source: str


@dataclass(frozen=True)
class SegmentDefinition:
    """One segment of the label map (one SEG segment).

    Attributes
    ----------
    number: int
        Label value in :attr:`PipelineResult.label_map` and SEG Segment Number (1-based).
    label: str
        Short Segment Label, e.g. ``"SMA"``.
    description: str
        Longer Segment Description, e.g. ``"Skeletal muscle, -29..150 HU"``.
    category: CodedTerm
        Segmented Property Category (PS3.16 CID 7150).
    property_type: CodedTerm
        Segmented Property Type (PS3.16 CID 7151 and related CIDs).
    anatomic_region: CodedTerm | None
        Anatomic Region, where the type alone is ambiguous (e.g. Fat in Subcutaneous tissue).
    tracking_id: str
        Tracking Identifier used in the SR measurement group of this segment.
    display_rgb: tuple[int, int, int]
        Colour used for this segment on the key image and as the SEG recommended display colour.
    laterality: CodedTerm | None
        Side of a paired structure (:data:`SCT_RIGHT` or :data:`SCT_LEFT`, PS3.16 CID 244),
        written as Segmented Property Type Modifier in the SEG and as the laterality of the
        finding site in the SR; ``None`` for unpaired structures.
    """

    number: int
    label: str
    description: str
    category: CodedTerm
    property_type: CodedTerm
    anatomic_region: CodedTerm | None
    tracking_id: str
    display_rgb: tuple[int, int, int]
    laterality: CodedTerm | None = None


@dataclass(frozen=True)
class Measurement:
    """One numeric measurement (one TID 300 item in a TID 1500 measurement group).

    Attributes
    ----------
    key: str
        Machine name with unit, e.g. ``"sma_cm2"``; key of :attr:`PipelineResult.summary`.
    name: CodedTerm
        Concept name, e.g. ``CodedTerm("42798000", "SCT", "Area")``.
    value: float
        The number, in ``unit``.
    unit: CodedTerm
        UCUM unit, e.g. ``CodedTerm("cm2", "UCUM", "square centimeter")``.
    segment_number: int | None
        Segment the measurement belongs to; ``None`` for a measurement of the whole report
        (e.g. SMI, GWR), which goes into its own measurement group.
    derivation: CodedTerm | None
        Derivation, e.g. ``CodedTerm("373098007", "SCT", "Mean")`` for a mean HU.
    label: str
        Short human label for printing, e.g. ``"SMA"``.
    frame_index: int | None
        For a single-slice measurement of a segment that spans several frames (e.g. pectoralis
        muscle area at T4): index into :attr:`PipelineResult.source_datasets` of the slice
        measured. Such measurements go into a planar ROI group that references that SEG frame;
        ``None`` for measurements of the whole segment.
    """

    key: str
    name: CodedTerm
    value: float
    unit: CodedTerm
    segment_number: int | None
    derivation: CodedTerm | None
    label: str
    frame_index: int | None = None


@dataclass(frozen=True)
class QualitativeFinding:
    """A coded qualitative evaluation, e.g. low muscle mass = yes/no, level verified = no."""

    name: CodedTerm
    value: CodedTerm


@dataclass(frozen=True)
class KeyImage:
    """A rendered key image for the Secondary Capture.

    Attributes
    ----------
    pixels_rgb: numpy.ndarray
        ``(rows, columns, 3)`` ``uint8`` RGB, already windowed, coloured and annotated.
    source_index: int
        Index into :attr:`PipelineResult.source_datasets` of the image it was rendered from.
    pixel_spacing_mm: tuple[float, float]
        (row spacing, column spacing) in mm of ``pixels_rgb``.
    patient_orientation: tuple[str, str] | None
        Patient Orientation (0020,0020) of the rendered image: the patient direction of
        increasing column index, then of increasing row index (PS3.3 C.7.6.1.1.1), e.g.
        ``("L", "P")`` for an axial slice in ainode's canonical orientation.
    """

    pixels_rgb: np.ndarray
    source_index: int
    pixel_spacing_mm: tuple[float, float]
    patient_orientation: tuple[str, str] | None = None


#: Soft-tissue display window (centre 40 HU, width 400 HU) as (lower, upper) HU; a common
#: abdominal soft-tissue window, used for display only.
SOFT_TISSUE_WINDOW_HU = (-160.0, 240.0)


@dataclass(frozen=True)
class KeyImageAnnotation:
    """Text and/or a horizontal line drawn over a key-image panel.

    Coordinates are panel pixels ``(row, column)`` before any display scaling (row 0 at the
    top); the renderer scales them with the panel.

    Attributes
    ----------
    row: float
        Row of the anchor.
    col: float
        Column of the anchor (left end of the text, or of the line when there is no text).
    text: str
        Text drawn at the anchor (top-left; vertically centred on ``row`` when there is a
        line); ``""`` for a line only.
    line_to_col: float | None
        Where given, a horizontal line at ``row`` from the end of the text (from ``col`` when
        there is no text) to this column.
    colour: tuple[int, int, int]
        RGB of the text and the line.
    dashed: bool
        Draw the line dashed (e.g. the level of another panel).
    """

    row: float
    col: float
    text: str = ""
    line_to_col: float | None = None
    colour: tuple[int, int, int] = (255, 255, 0)
    dashed: bool = False


@dataclass(frozen=True)
class KeyImagePanel:
    """One image of a key image, with its segmentation overlay and annotations.

    Attributes
    ----------
    image: numpy.ndarray
        ``(rows, columns)`` float: Hounsfield units when ``window_hu`` is given, otherwise a
        grey level in 0..1 (values outside are clipped; 0 = black). Display orientation (row 0
        at the top).
    pixel_spacing_mm: tuple[float, float] | None
        (row, column) spacing of ``image`` in mm; non-square pixels are shown square. ``None``:
        spacing unknown (drawn as square pixels; the Secondary Capture then states no Pixel
        Spacing).
    window_hu: tuple[float, float] | None
        Display window ``(lower, upper)`` in HU, or ``None`` for a grey image.
    labels: numpy.ndarray | None
        ``(rows, columns)`` integer label map on the same grid (0 = background, otherwise a
        :attr:`SegmentDefinition.number` of :attr:`KeyImageSpec.segments`), drawn as coloured,
        outlined regions; ``None``: no overlay.
    annotations: tuple[KeyImageAnnotation, ...]
        Text and lines drawn over the panel.
    """

    image: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    window_hu: tuple[float, float] | None = SOFT_TISSUE_WINDOW_HU
    labels: np.ndarray | None = None
    annotations: tuple[KeyImageAnnotation, ...] = ()


@dataclass(frozen=True)
class KeyImageSpec:
    """What a method wants on its key image; :mod:`pipelines.outputs.render` draws it.

    The panels are laid out left to right (several panels are brought to one square pixel
    spacing first), the image part is at least 512 pixels wide, and a black text panel below
    it holds the colour legend of the segments present, ``text_lines`` and ``disclaimer``.

    Attributes
    ----------
    panels: tuple[KeyImagePanel, ...]
        At least one panel.
    segments: tuple[SegmentDefinition, ...]
        Colours (``display_rgb``) and legend labels of the overlay labels.
    text_lines: tuple[str, ...]
        Lines printed below the image (measurements, algorithm name/version/status).
    source_index: int
        Index into :attr:`PipelineResult.source_datasets` of the image it shows (referenced by
        the Secondary Capture).
    patient_orientation: tuple[str, str] | None
        Patient Orientation (0020,0020) of the rendered image (see :class:`KeyImage`), or
        ``None`` when unknown (e.g. a composite of sagittal and axial panels).
    disclaimer: str
        Appended as the last line unless a text line already contains it.
    """

    panels: tuple[KeyImagePanel, ...]
    segments: tuple[SegmentDefinition, ...]
    text_lines: tuple[str, ...]
    source_index: int
    patient_orientation: tuple[str, str] | None = None
    disclaimer: str = RESEARCH_USE_DISCLAIMER


@dataclass
class PipelineResult:
    """What a pipeline returns: segmentation, measurements, findings and a key image.

    Attributes
    ----------
    protocol: str
        Protocol name, e.g. ``"l3-body-composition"``.
    algorithm: AlgorithmInfo
        The algorithm that produced the result.
    source_datasets: list[pydicom.Dataset]
        The source images, one frame each, in the order of ``label_map``'s first axis. Pixel Data
        may have been removed.
    segments: list[SegmentDefinition]
        Segment definitions; their numbers are the non-zero values of ``label_map``.
    label_map: numpy.ndarray
        ``(len(source_datasets), rows, columns)`` ``uint8`` label map aligned with the source
        frames (0 = background). Frames without any label are left out of the SEG.
    measurements: list[Measurement]
        All numeric measurements.
    findings: list[QualitativeFinding]
        Coded qualitative findings.
    key_image: KeyImageSpec | KeyImage | None
        The key image: a :class:`KeyImageSpec` (what methods return; rendered by
        :mod:`pipelines.outputs`), an already rendered :class:`KeyImage`, or ``None``.
    summary: dict[str, Any]
        Flat JSON-serialisable summary (measurement values by key, level, flags, cut-off set...)
        stored in the job database and printed by the CLI. Must not contain PHI.
    warnings: list[str]
        Things the user should know (level not verified, contrast present, ...); go into the job
        log and the SR.
    """

    protocol: str
    algorithm: AlgorithmInfo
    source_datasets: list[Dataset]
    segments: list[SegmentDefinition]
    label_map: np.ndarray
    measurements: list[Measurement] = field(default_factory=list)
    findings: list[QualitativeFinding] = field(default_factory=list)
    key_image: KeyImageSpec | KeyImage | None = None
    summary: dict[str, Any] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)


# Frequently used codes (sources in ../shared/reference/clinical.md §5, verified against pydicom
# 3.0.2's PS3.16 concept tables).
SCT_AREA = CodedTerm("42798000", "SCT", "Area")
SCT_VOLUME = CodedTerm("118565006", "SCT", "Volume")
SCT_MEAN = CodedTerm("373098007", "SCT", "Mean")
SCT_MEDIAN = CodedTerm("373099004", "SCT", "Median")
SCT_STANDARD_DEVIATION = CodedTerm("386136009", "SCT", "Standard Deviation")
DCM_MEAN_ATTENUATION = CodedTerm("112181", "DCM", "Mean Attenuation Coefficient")
DCM_ATTENUATION = CodedTerm("112031", "DCM", "Attenuation Coefficient")
SCT_RATIO = CodedTerm("118586006", "SCT", "Ratio")
SCT_YES = CodedTerm("373066001", "SCT", "Yes")
SCT_NO = CodedTerm("373067005", "SCT", "No")
UCUM_CM2 = CodedTerm("cm2", "UCUM", "square centimeter")
UCUM_CM3 = CodedTerm("cm3", "UCUM", "cubic centimeter")
UCUM_MM3 = CodedTerm("mm3", "UCUM", "cubic millimeter")
UCUM_HU = CodedTerm("[hnsf'U]", "UCUM", "Hounsfield unit")
UCUM_RATIO = CodedTerm("{ratio}", "UCUM", "ratio")
UCUM_NO_UNITS = CodedTerm("1", "UCUM", "no units")
UCUM_CM2_PER_M2 = CodedTerm("cm2/m2", "UCUM", "square centimeter per square meter")
UCUM_PERCENT = CodedTerm("%", "UCUM", "percent")
SCT_TISSUE = CodedTerm("85756007", "SCT", "Tissue")
SCT_ANATOMICAL_STRUCTURE = CodedTerm("91723000", "SCT", "Anatomical Structure")
PRIVATE_SCHEME = "99AINODE"
SCT_RIGHT = CodedTerm("24028007", "SCT", "Right")
SCT_LEFT = CodedTerm("7771000", "SCT", "Left")


@dataclass(frozen=True)
class LearnedModel:
    """A trained network, loaded and wrapped by :mod:`models` for one protocol's pipeline.

    Pipelines stay pure functions of the image and parameters: the node (or ``ainode run``)
    loads the model chosen in the configuration and passes this wrapper in; without one the
    pipeline runs its reference method. Pipelines never import torch or read model files.

    Attributes
    ----------
    algorithm: AlgorithmInfo
        Name, version and validation status of the model (from its model card); written into
        the SEG, the SR and the key image in place of the reference method's.
    predict: Callable
        The segmentation, with the signature the protocol module documents (e.g. for a CT
        protocol ``predict(hu, spacing_mm) -> label_map``: ``hu`` a ``(slices, rows, columns)``
        float32 Hounsfield-unit volume in canonical HPL orientation, ``spacing_mm`` its voxel
        spacing, the result a ``uint8`` array of the same shape in the protocol's label numbering).
    classify: Callable | None
        An image-level classifier where the protocol has one (neonatal RDS), with the signature
        the protocol module documents; ``None`` otherwise.
    locate: Callable | None
        A localiser where the protocol has one (the L3 level network:
        ``locate(hu, spacing_mm) -> (slice_index, confidence)``); ``None`` otherwise.
    device: str
        ``"cuda"`` or ``"cpu"``: where inference runs (recorded in the job).
    """

    algorithm: AlgorithmInfo
    predict: Callable[..., np.ndarray]
    classify: Callable[..., Any] | None = None
    device: str = "cpu"
    locate: Callable[..., Any] | None = None
