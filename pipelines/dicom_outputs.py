"""Turn any protocol's :class:`~pipelines.types.PipelineResult` into DICOM output objects.

Every protocol's results are encoded here, the same way, with highdicom:

* **SEG** — :class:`highdicom.seg.Segmentation`, segmentation type BINARY, one segment per
  :class:`~pipelines.types.SegmentDefinition` that occurs in the label map, only the labelled
  frames, referencing the labelled source images (Series Number :data:`SEG_SERIES_NUMBER`).
* **SR** — :class:`highdicom.sr.Comprehensive3DSR` holding a TID 1500 Measurement Report: one
  measurement group per segment referencing the SEG segment and its source images, a planar ROI
  group with the segment outline (SCOORD closed POLYLINE, i.e. a polygon) for single-frame segments, a "summary" group
  for whole-report measurements and coded findings, and a TID 1500 "Qualitative Evaluations"
  container with the validation status, the research-use disclaimer and the pipeline warnings
  as text (Series Number :data:`SR_SERIES_NUMBER`).
* **SC** — :class:`highdicom.sc.SCImage` of the rendered RGB key image, Burned In Annotation
  YES, Conversion Type WSD (Series Number :data:`SC_SERIES_NUMBER`).

Projection radiographs (CR, DX: one frame, no Frame of Reference and no Image Position/Orientation
(Patient), see :func:`is_projection_image`) go through the same path, with these differences:

* the SEG has no Frame of Reference either; its Patient Orientation (0020,0020, General Image
  Module, Type 2C when there is no Frame of Reference) is copied from the source (empty when
  the source has none);
* no Slice Thickness is invented for the SEG's Pixel Measures (it is only needed for
  volumetric sources, PS3.3 C.7.6.16.2.1);
* a source Pixel Spacing (0028,0030) with a value that is not positive (e.g. ``0\\0``, seen in
  real CR headers) is left out of the SEG rather than copied (dciodvfy: "Value is zero"); the
  pipeline reports in its SR which spacing (Pixel Spacing, Imager Pixel Spacing, none) it used;
* a key image whose :attr:`~pipelines.types.KeyImage.pixel_spacing_mm` is not positive (spacing
  unknown) gets no Pixel Spacing in the SC.

The SR is unchanged: single-frame segments get a planar ROI group whose SCOORD polygon lies on
the radiograph (column, row image coordinates).

All UIDs are derived deterministically from the sorted source SOP Instance UIDs, the protocol,
the algorithm name and version and the output kind (:func:`derive_uid`): sending the same series
through the same algorithm version again produces the same SOP/Series Instance UIDs, so the PACS
replaces rather than duplicates the results. A new algorithm version gives new UIDs.

See ``docs/outputs.md`` for the codes used and their sources.
"""

from __future__ import annotations

import copy
import logging
import re
import uuid
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from pydicom.uid import ExplicitVRLittleEndian
from scipy import ndimage
from skimage import measure

from pipelines.errors import OutputError
from pipelines.headers import header_copy, positive_number, positive_pair
from pipelines.types import (
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    CodedTerm,
    PipelineResult,
    SegmentDefinition,
)

logger = logging.getLogger(__name__)

#: Namespace of the name-based UUIDs behind :func:`derive_uid` (fixed; changing it changes
#: every output UID).
AINODE_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "urn:ainode:dicom-outputs")

SEG_SERIES_NUMBER = 9001
SR_SERIES_NUMBER = 9002
SC_SERIES_NUMBER = 9003

#: Default procedure reported (TID 1500 row "Procedure reported", CID 100): SCT 363679005.
IMAGING_PROCEDURE = CodedTerm("363679005", "SCT", "Imaging procedure")

#: Segment Algorithm family, PS3.16 CID 7162 "Surface Processing Algorithm Families", the
#: context group highdicom uses for Algorithm Family Code Sequence.
FAMILY_ARTIFICIAL_INTELLIGENCE = CodedTerm("123110", "DCM", "Artificial Intelligence")
#: Rule-based reference methods (Hounsfield bands plus morphology and anatomical rules):
#: CID 7162 has no generic "image processing" code; "Morphological Operations" is the closest.
FAMILY_MORPHOLOGICAL_OPERATIONS = CodedTerm("123104", "DCM", "Morphological Operations")

#: TID 1500 row 12 "Qualitative Evaluations" container (UMLS C0034375); holds CODE/TEXT items.
UMLS_QUALITATIVE_EVALUATIONS = CodedTerm("C0034375", "UMLS", "Qualitative Evaluations")

#: Private concepts (scheme 99AINODE, declared in the Coding Scheme Identification Sequence).
AINODE_VALIDATION_STATUS = CodedTerm(
    "VALSTATUS", PRIVATE_SCHEME, "Algorithm validation status"
)
AINODE_INTENDED_USE = CodedTerm("INTENDEDUSE", PRIVATE_SCHEME, "Intended use")
AINODE_RESEARCH_USE_ONLY = CodedTerm("RUO", PRIVATE_SCHEME, RESEARCH_USE_DISCLAIMER)
AINODE_PROCESSING_WARNING = CodedTerm("WARNING", PRIVATE_SCHEME, "Processing warning")

# Patient/study attributes that are Type 2 in the output IODs; missing ones are added empty to
# a copy of the source header so that highdicom can copy them.
_TYPE2_PATIENT_STUDY = (
    "PatientName",
    "PatientID",
    "PatientBirthDate",
    "PatientSex",
    "AccessionNumber",
    "StudyID",
    "StudyDate",
    "StudyTime",
    "ReferringPhysicianName",
)


@dataclass
class OutputObjects:
    """The DICOM objects built for one :class:`PipelineResult`.

    Attributes
    ----------
    seg: pydicom.Dataset | None
        The Segmentation, or ``None`` when the label map is empty.
    sr: pydicom.Dataset
        The Comprehensive 3D SR holding the TID 1500 Measurement Report.
    sc: pydicom.Dataset | None
        The Secondary Capture key image, or ``None`` when the result has no key image.
    notes: list[str]
        Source values changed on the way into the outputs (invalid ages or dates written
        empty...), for the job log.
    """

    seg: Dataset | None
    sr: Dataset
    sc: Dataset | None
    notes: list[str] = field(default_factory=list)

    def items(self) -> list[tuple[str, Dataset]]:
        """``(kind, dataset)`` pairs of the objects that exist, in the order SEG, SR, SC."""
        pairs: list[tuple[str, Dataset | None]] = [
            ("seg", self.seg),
            ("sr", self.sr),
            ("sc", self.sc),
        ]
        return [(kind, ds) for kind, ds in pairs if ds is not None]


def is_projection_image(ds: Dataset) -> bool:
    """Whether ``ds`` is a 2-D projection image without patient-space geometry.

    True when the header has neither Frame of Reference UID (0020,0052) nor Image Position
    (Patient) (0020,0032): CR and DX images (PS3.3 A.2, A.26: no Frame of Reference or Image
    Plane Module), whose orientation is given by Patient Orientation (0020,0020) only.

    Parameters
    ----------
    ds:
        A source image header.

    Returns
    -------
    bool
    """
    return "FrameOfReferenceUID" not in ds and "ImagePositionPatient" not in ds


def derive_uid(*parts: str) -> str:
    """Derive a deterministic UID from the given strings.

    The parts are joined (length-prefixed, so that ``("ab", "c")`` and ``("a", "bc")`` differ)
    and turned into an RFC 4122 name-based (version 5, SHA-1) UUID in the namespace
    :data:`AINODE_UID_NAMESPACE`, written as a ``2.25.<decimal>`` UID (PS3.5 B.2, "UUID Derived
    UID"). The same parts always give the same UID. (``pydicom.uid.generate_uid(prefix=None)``
    cannot be used: it ignores ``entropy_srcs`` and returns a random UUID.)

    Parameters
    ----------
    *parts:
        Strings identifying the object, e.g. sorted source SOP Instance UIDs, protocol,
        algorithm name and version, output kind.

    Returns
    -------
    str
        A valid UID of at most 44 characters.

    Raises
    ------
    OutputError
        If no part is given.
    """
    if not parts:
        raise OutputError("derive_uid needs at least one part to derive a UID from")
    name = "".join(f"{len(str(p))}:{p};" for p in parts)
    return f"2.25.{uuid.uuid5(AINODE_UID_NAMESPACE, name).int}"


def _concept(term: CodedTerm) -> hd.sr.CodedConcept:
    return hd.sr.CodedConcept(
        value=term.value, scheme_designator=term.scheme, meaning=term.meaning
    )


def _output_key(result: PipelineResult) -> list[str]:
    """Entropy parts shared by every UID of one result."""
    source_uids = sorted(str(ds.SOPInstanceUID) for ds in result.source_datasets)
    return [
        "|".join(source_uids),
        result.protocol,
        result.algorithm.name,
        result.algorithm.version,
    ]


def _content_label(protocol: str, suffix: str) -> str:
    """A Content Label (VR CS: upper case, digits, space, underscore; at most 16 characters)."""
    label = re.sub(r"[^A-Z0-9_]", "_", protocol.upper())
    label = re.sub(r"_+", "_", label).strip("_")
    label = (label[: 16 - len(suffix) - 1] + "_" + suffix) if label else suffix
    return label[:16]


#: VRs of copied source attributes whose values are checked against their VR (PS3.5 Table 6.2-1)
#: before they go into an output; an invalid value is written empty (the patient and study
#: attributes copied into the outputs are Type 2 or 3 there), with a warning.
_CHECKED_VRS = frozenset({"AS", "DA", "TM", "DT"})

#: Age String (PS3.5 Table 6.2-1): three digits and one of D, W, M, Y.
_AGE_STRING = re.compile(r"\d{3}[DWMY]")


def _valid_value(vr: str, value: object) -> bool:
    """Whether an AS, DA, TM or DT value conforms to its VR (PS3.5 Table 6.2-1)."""
    if vr == "AS":
        values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        return all(v in (None, "") or _AGE_STRING.fullmatch(str(v)) for v in values)
    return _valid_temporal(vr, value)


def _valid_temporal(vr: str, value: object) -> bool:
    """Whether a DA/TM/DT value parses (PS3.5 Table 6.2-1)."""
    from pydicom.valuerep import DA, DT, TM

    parser = {"DA": DA, "TM": TM, "DT": DT}[vr]
    values = value if isinstance(value, (list, tuple)) else [value]
    try:
        for item in values:
            if item not in (None, ""):
                parser(item)
    except (ValueError, TypeError):
        return False
    return True


def _source_header(ds: Dataset, notes: set[str]) -> Dataset:
    """A copy of a source header without Pixel Data, with missing Type 2 attributes added empty.

    Ages, dates and times that do not conform to their VR (e.g. ``1975-03-14`` for a DA, ``62``
    for Patient's Age, an AS) are written empty: highdicom copies patient and study attributes
    into every output, dciodvfy refuses such values, and an output must not fail (or quote
    patient data in an error) over them. A non-positive Spacing Between Slices is left out. Each
    change adds a note to ``notes`` (attribute names only, never values), which the caller logs
    once per series and returns for the job log.
    """
    header = Dataset()
    for element in ds:
        if element.tag == 0x7FE00010:
            continue
        if element.VR in _CHECKED_VRS and not _valid_value(element.VR, element.value):
            notes.add(
                f"source attribute {element.keyword or element.tag} has a value that is not a "
                f"valid {element.VR}; written empty in the outputs"
            )
            header.add_new(element.tag, element.VR, "")
            continue
        if element.keyword == "SpacingBetweenSlices" and positive_number(element.value) is None:
            # Some vendors write the signed step; the SEG's Pixel Measures copy of it must be
            # positive (PS3.3 C.7.6.16.2.1). Left out, the SEG states no spacing.
            notes.add(
                f"source Spacing Between Slices {element.value} is not positive; left out of "
                "the outputs"
            )
            continue
        header.add(element)
    if hasattr(ds, "file_meta"):
        header.file_meta = ds.file_meta
    for keyword in _TYPE2_PATIENT_STUDY:
        if keyword not in header:
            setattr(header, keyword, "")
    if (
        str(header.get("PatientIdentityRemoved", "")).upper() == "YES"
        and not header.get("DeidentificationMethod")
        and not header.get("DeidentificationMethodCodeSequence")
    ):
        # Type 1C when Patient Identity Removed is YES (PS3.3 C.7.1.1); some de-identified
        # sources omit it. Say so rather than copy an invalid Patient module into the outputs.
        header.DeidentificationMethod = "Not stated by the source image"
    return header


def _check_result(result: PipelineResult) -> np.ndarray:
    if not result.source_datasets:
        raise OutputError(
            f"protocol {result.protocol!r}: the result has no source datasets; outputs must "
            "reference the images they were derived from"
        )
    label_map = np.asarray(result.label_map)
    first = result.source_datasets[0]
    expected = (len(result.source_datasets), int(first.Rows), int(first.Columns))
    if label_map.shape != expected:
        raise OutputError(
            f"protocol {result.protocol!r}: label map shape {label_map.shape} does not match the "
            f"source frames (len(source_datasets), Rows, Columns) = {expected}; map the mask onto "
            "the source frames with CTVolume.to_source_frames"
        )
    if not np.issubdtype(label_map.dtype, np.integer) or label_map.min(initial=0) < 0:
        raise OutputError(
            f"protocol {result.protocol!r}: label map must hold non-negative integers, got dtype "
            f"{label_map.dtype}"
        )
    defined = {segment.number for segment in result.segments}
    if len(defined) != len(result.segments):
        raise OutputError(
            f"protocol {result.protocol!r}: segment numbers {[s.number for s in result.segments]} "
            "are not unique"
        )
    present = {int(v) for v in np.unique(label_map) if v != 0}
    undefined = sorted(present - defined)
    if undefined:
        raise OutputError(
            f"protocol {result.protocol!r}: label values {undefined} occur in the label map but "
            f"have no SegmentDefinition (defined: {sorted(defined)}); add definitions or clear "
            "those labels"
        )
    known_segments = defined | {None}
    stray = [
        m.key for m in result.measurements if m.segment_number not in known_segments
    ]
    if stray:
        raise OutputError(
            f"protocol {result.protocol!r}: measurements {stray} refer to segment numbers that "
            "have no SegmentDefinition"
        )
    bad_frames = [
        m.key
        for m in result.measurements
        if m.frame_index is not None
        and (
            m.segment_number is None
            or not 0 <= m.frame_index < label_map.shape[0]
            or not (label_map[m.frame_index] == m.segment_number).any()
        )
    ]
    if bad_frames:
        raise OutputError(
            f"protocol {result.protocol!r}: slice measurements {bad_frames} need a segment "
            "number and a frame index of a source frame where that segment is present"
        )
    return (
        label_map.astype(np.uint8, copy=False)
        if label_map.max(initial=0) <= 255
        else label_map
    )


def build_outputs(
    result: PipelineResult,
    *,
    manufacturer: str = "ainode",
    software_version: str,
    device_serial_number: str = "ainode",
    institution_name: str | None = None,
    procedure_code: CodedTerm | None = None,
    key_image_patient_orientation: tuple[str, str] | None = None,
) -> OutputObjects:
    """Build the SEG, SR and SC objects of one pipeline result.

    Parameters
    ----------
    result:
        The pipeline result. ``label_map`` is ``(len(source_datasets), Rows, Columns)`` on the
        source frames; ``source_datasets`` are the source image headers (Pixel Data not needed).
    manufacturer:
        Manufacturer (0008,0070) of the output objects and of the SR device observer.
    software_version:
        Software Versions (0018,1020): the ainode version.
    device_serial_number:
        Device Serial Number (0018,1000) and SR device observer serial number.
    institution_name:
        Institution Name (0008,0080) of the outputs; ``None`` leaves it out.
    procedure_code:
        TID 1500 "Procedure reported" (e.g. CT of abdomen); default SCT 363679005
        "Imaging procedure".
    key_image_patient_orientation:
        Patient Orientation (0020,0020) of the key image, e.g. ``("L", "P")`` for a canonical
        axial slice rendered with rows anterior→posterior and columns right→left. ``None``
        leaves the (Type 2) attribute empty, i.e. unknown.

    Returns
    -------
    OutputObjects
        ``seg`` is ``None`` when the label map has no labels, ``sc`` when there is no key image.

    Raises
    ------
    OutputError
        If the result is inconsistent (label map shape, undefined labels) or highdicom rejects
        the inputs (message carries highdicom's reason).
    """
    # highdicom warns about unusual Person Names and quotes the name: never let the patient's
    # name reach a log. The names are copied unchanged from the source (tolerant when reading).
    with warnings.catch_warnings():
        warnings.filterwarnings(
            "ignore", message=".*unlikely to represent the intended person name"
        )
        return _build_outputs(
            result,
            manufacturer=manufacturer,
            software_version=software_version,
            device_serial_number=device_serial_number,
            institution_name=institution_name,
            procedure_code=procedure_code,
            key_image_patient_orientation=key_image_patient_orientation,
        )


def _build_outputs(
    result: PipelineResult,
    *,
    manufacturer: str,
    software_version: str,
    device_serial_number: str,
    institution_name: str | None,
    procedure_code: CodedTerm | None,
    key_image_patient_orientation: tuple[str, str] | None,
) -> OutputObjects:
    label_map = _check_result(result)
    key = _output_key(result)
    notes: set[str] = set()
    headers = [_source_header(ds, notes) for ds in result.source_datasets]
    for note in sorted(notes):
        logger.warning("protocol %s: %s", result.protocol, note)
    present = sorted(int(v) for v in np.unique(label_map) if v != 0)
    segments_present = [
        s
        for s in sorted(result.segments, key=lambda s: s.number)
        if s.number in present
    ]
    absent = [s.label for s in result.segments if s.number not in present]
    if absent:
        logger.info(
            "protocol %s: segments %s are empty and left out of the SEG",
            result.protocol,
            absent,
        )

    equipment = _Equipment(
        manufacturer, software_version, device_serial_number, institution_name
    )
    seg: Dataset | None = None
    seg_number_of: dict[int, int] = {}
    frames_of: dict[int, list[int]] = {}
    if segments_present:
        seg, seg_number_of, frames_of = _build_seg(
            result, label_map, headers, segments_present, key, equipment
        )
    sr = _build_sr(
        result,
        label_map,
        headers,
        seg,
        seg_number_of,
        frames_of,
        key,
        procedure_code or IMAGING_PROCEDURE,
        equipment,
    )
    sc = None
    if result.key_image is not None:
        orientation = key_image_patient_orientation or result.key_image.patient_orientation
        sc = _build_sc(result, headers, key, orientation, equipment)
    for ds in (seg, sr, sc):
        if ds is not None:
            _declare_character_set(ds)
    logger.info(
        "protocol %s: built outputs %s",
        result.protocol,
        {
            kind: str(ds.SOPInstanceUID)
            for kind, ds in OutputObjects(seg, sr, sc).items()
        },
    )
    return OutputObjects(seg=seg, sr=sr, sc=sc, notes=sorted(notes))


#: VRs whose values are encoded with the Specific Character Set (PS3.5 §6.1.2.3).
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def _declare_character_set(ds: Dataset) -> None:
    """Declare UTF-8 (``ISO_IR 192``) when a text value of ``ds`` is not plain ASCII.

    Without Specific Character Set (0008,0005) only the default repertoire (ASCII) may be used
    (PS3.5 §6.1.2.3); a "cm²" in an SR text or a patient name with accents copied from a Latin-1
    source would otherwise make the object invalid. All values are held as text here, so pydicom
    re-encodes them in UTF-8 on writing.
    """

    def non_ascii(value: object) -> bool:
        values = value if isinstance(value, (list, tuple, pydicom.multival.MultiValue)) else [value]
        return any(not str(v).isascii() for v in values if v is not None)

    for element in ds.iterall():
        if element.VR in _TEXT_VRS and non_ascii(element.value):
            ds.SpecificCharacterSet = "ISO_IR 192"
            return


@dataclass(frozen=True)
class _Equipment:
    """General Equipment module values shared by the three objects."""

    manufacturer: str
    software_version: str
    device_serial_number: str
    institution_name: str | None


def _algorithm_family(result: PipelineResult) -> CodedTerm:
    return (
        FAMILY_ARTIFICIAL_INTELLIGENCE
        if result.algorithm.is_ai
        else FAMILY_MORPHOLOGICAL_OPERATIONS
    )


def _set_common(
    ds: Dataset,
    *,
    description: str,
    institution_name: str | None,
    device_serial_number: str,
) -> None:
    ds.SeriesDescription = description[:64]
    if institution_name:
        ds.InstitutionName = institution_name[:64]
    ds.DeviceSerialNumber = device_serial_number


def _build_seg(
    result: PipelineResult,
    label_map: np.ndarray,
    headers: list[Dataset],
    segments_present: list[SegmentDefinition],
    key: list[str],
    equipment: _Equipment,
) -> tuple[Dataset, dict[int, int], dict[int, list[int]]]:
    """Build the SEG; return it, definition number -> SEG segment number, and for each SEG
    segment number the 1-based SEG frame numbers that hold it."""
    labelled = [i for i in range(label_map.shape[0]) if label_map[i].any()]
    # SEG segment numbers must run 1..N: renumber the present segments in definition order.
    seg_number_of = {s.number: i + 1 for i, s in enumerate(segments_present)}
    lookup = np.zeros(int(label_map.max()) + 1, dtype=np.uint8)
    for number, seg_number in seg_number_of.items():
        lookup[number] = seg_number
    pixel_array = lookup[label_map[labelled]]

    family = _concept(_algorithm_family(result))
    algorithm = hd.AlgorithmIdentificationSequence(
        name=result.algorithm.name[:64],
        family=family,
        version=result.algorithm.version[:64],
        source=result.algorithm.source[:64] or None,
    )
    descriptions = []
    for segment in segments_present:
        description = hd.seg.SegmentDescription(
            segment_number=seg_number_of[segment.number],
            segment_label=segment.label[:64],
            segmented_property_category=_concept(segment.category),
            segmented_property_type=_concept(segment.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=derive_uid(*key, "tracking", segment.tracking_id),
            tracking_id=segment.tracking_id[:64],
            anatomic_regions=(
                [_concept(segment.anatomic_region)] if segment.anatomic_region else None
            ),
            display_color=hd.color.CIELabColor.from_rgb(*segment.display_rgb),
        )
        description.SegmentDescription = segment.description[:64]
        if segment.laterality is not None:
            # Laterality of a paired structure: Segmented Property Type Modifier Code Sequence
            # (PS3.3 C.8.20.2, Segment Description Macro; values from PS3.16 CID 244).
            description.SegmentedPropertyTypeCodeSequence[
                0
            ].SegmentedPropertyTypeModifierCodeSequence = [_concept(segment.laterality)]
        descriptions.append(description)

    projection = is_projection_image(headers[0])
    seg_sources = (
        _projection_sources([headers[i] for i in labelled])
        if projection
        else _with_slice_thickness([headers[i] for i in labelled], headers)
    )
    try:
        seg = hd.seg.Segmentation(
            source_images=seg_sources,
            pixel_array=pixel_array,
            segmentation_type=hd.seg.SegmentationTypeValues.BINARY,
            segment_descriptions=descriptions,
            series_instance_uid=derive_uid(*key, "seg", "series"),
            series_number=SEG_SERIES_NUMBER,
            sop_instance_uid=derive_uid(*key, "seg", "instance"),
            instance_number=1,
            manufacturer=equipment.manufacturer,
            manufacturer_model_name="ainode",
            software_versions=equipment.software_version,
            device_serial_number=equipment.device_serial_number,
            content_description=f"{result.algorithm.name} {result.algorithm.version}"[
                :64
            ],
            content_label=_content_label(result.protocol, "SEG"),
            content_creator_name=None,
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(
            f"protocol {result.protocol!r}: highdicom could not build the SEG: {exc}. Check that "
            "the source images share orientation and pixel spacing and that the label map lies "
            "on the source frames"
        ) from exc
    _set_common(
        seg,
        description=f"ainode {result.protocol} SEG",
        institution_name=equipment.institution_name,
        device_serial_number=equipment.device_serial_number,
    )
    if any(_uses_private(s) for s in segments_present):
        seg.CodingSchemeIdentificationSequence = [_private_scheme_item()]
    if projection and "FrameOfReferenceUID" not in seg:
        # General Image Module: Patient Orientation is Type 2C, required without a Frame of
        # Reference (PS3.3 C.7.6.1); the SEG frame lies on the source pixels, so it is the same.
        orientation = headers[labelled[0]].get("PatientOrientation")
        seg.PatientOrientation = list(orientation) if orientation else None

    _segment_identification_per_frame(seg)
    # SEG frame numbers (1-based) of each SEG segment.
    frames_of: dict[int, list[int]] = {}
    for frame_number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        frames_of.setdefault(_frame_segment_number(item), []).append(frame_number)
    return seg, seg_number_of, frames_of


def _segment_identification_per_frame(seg: Dataset) -> None:
    """Move a shared Segment Identification Sequence into every Per-Frame Functional Groups item.

    highdicom writes it into the Shared Functional Groups when the SEG has one segment; both
    places are valid (PS3.3 C.7.6.16, C.8.20.3.1.1), but readers, highdicom's own
    ``ReferencedSegment.from_segmentation`` included, look for it per frame.
    """
    shared = seg.SharedFunctionalGroupsSequence[0]
    if "SegmentIdentificationSequence" not in shared:
        return
    identification = shared.SegmentIdentificationSequence
    del shared.SegmentIdentificationSequence
    for item in seg.PerFrameFunctionalGroupsSequence:
        item.SegmentIdentificationSequence = copy.deepcopy(identification)


def _frame_segment_number(item: Dataset) -> int:
    """Referenced Segment Number of one SEG frame's Per-Frame Functional Groups item."""
    return int(item.SegmentIdentificationSequence[0].ReferencedSegmentNumber)


def _seg_frame_on_source(seg: Dataset, seg_number: int, source: Dataset) -> int | None:
    """1-based SEG frame number of segment ``seg_number`` derived from image ``source``."""
    for frame_number, item in enumerate(seg.PerFrameFunctionalGroupsSequence, start=1):
        if _frame_segment_number(item) != seg_number:
            continue
        for derivation in item.DerivationImageSequence:
            for ref in derivation.SourceImageSequence:
                if ref.ReferencedSOPInstanceUID == source.SOPInstanceUID:
                    return frame_number
    return None


def _projection_sources(images: list[Dataset]) -> list[Dataset]:
    """Copies of projection-image headers for highdicom to copy into the SEG.

    A Pixel Spacing whose values are not positive (``0\\0`` in some CR headers) is removed, so
    that the SEG states no spacing rather than an invalid one; a warning is logged.
    """
    copies = []
    for ds in images:
        if "PixelSpacing" in ds and positive_pair(ds.PixelSpacing) is None:
            logger.warning(
                "source image %s has Pixel Spacing %s (not positive); left out of the SEG",
                ds.SOPInstanceUID,
                list(ds.PixelSpacing) if ds.PixelSpacing is not None else None,
            )
            ds = header_copy(ds, ("PixelSpacing",))
        copies.append(ds)
    return copies


def _with_slice_thickness(
    images: list[Dataset], series: list[Dataset]
) -> list[Dataset]:
    """Copies of ``images`` with a Slice Thickness value, for highdicom to copy into the SEG.

    Slice Thickness is Type 1C in the SEG Pixel Measures Macro (PS3.3 C.7.6.16.2.1) but Type 2
    (may be empty) in the CT Image module. When the source has no value, the distance between
    neighbouring positions of the series along the slice normal is used, or 1.0 mm for a single
    image (the fallback :func:`pipelines.volume.load_ct_volume` also uses); a warning is logged.
    """
    thickness = images[0].get("SliceThickness")
    if thickness not in (None, "") and float(thickness) > 0:
        return images
    first = series[0]
    slice_mm = 1.0
    if len(series) > 1 and "ImageOrientationPatient" in first:
        orientation = np.asarray(first.ImageOrientationPatient, dtype=float)
        normal = np.cross(orientation[:3], orientation[3:])
        positions = sorted(
            float(np.dot(normal, np.asarray(ds.ImagePositionPatient, dtype=float)))
            for ds in series
            if "ImagePositionPatient" in ds
        )
        gaps = np.diff(positions)
        gaps = gaps[gaps > 1e-3]
        if len(gaps):
            slice_mm = float(np.median(gaps))
    logger.warning(
        "source images have no Slice Thickness; the SEG states %.3f mm (%s)",
        slice_mm,
        "slice spacing" if len(series) > 1 else "fallback for a single image",
    )
    copies = []
    for ds in images:
        copy = header_copy(ds, ())  # never change the caller's header
        if "SliceThickness" in copy:
            del copy.SliceThickness
        copy.SliceThickness = round(slice_mm, 6)
        copies.append(copy)
    return copies


def _uses_private(segment: SegmentDefinition) -> bool:
    terms = [segment.category, segment.property_type, segment.anatomic_region]
    return any(t is not None and t.scheme == PRIVATE_SCHEME for t in terms)


def _private_scheme_item() -> Dataset:
    item = Dataset()
    item.CodingSchemeDesignator = PRIVATE_SCHEME
    item.CodingSchemeName = "ainode private concepts"
    item.CodingSchemeResponsibleOrganization = "ainode project"
    return item


def _largest_component_polygon(mask: np.ndarray) -> np.ndarray | None:
    """Outer boundary of the largest connected component of a 2-D mask as a closed polygon.

    Returns ``(n, 2)`` float32 ``(column, row)`` image coordinates in the SCOORD convention
    (PS3.3 C.18.6.1.1: (0, 0) is the top left corner of the top left pixel, so pixel centres
    are at +0.5), first point repeated at the end; ``None`` for an empty mask. Holes are
    filled (a polygon cannot have holes).
    """
    # Work on the bounding box of the mask only (same result, much faster on large images
    # such as radiographs); (row0, column0) is added back to the coordinates.
    nonzero_rows = np.flatnonzero(np.any(mask, axis=1))
    if nonzero_rows.size == 0:
        return None
    nonzero_columns = np.flatnonzero(np.any(mask, axis=0))
    row0, column0 = int(nonzero_rows[0]), int(nonzero_columns[0])
    mask = mask[row0 : int(nonzero_rows[-1]) + 1, column0 : int(nonzero_columns[-1]) + 1]
    components, count = ndimage.label(mask)
    if count == 0:
        return None
    sizes = np.bincount(components.ravel(), minlength=count + 1)[1:]
    largest = ndimage.binary_fill_holes(components == (int(np.argmax(sizes)) + 1))
    padded = np.pad(largest.astype(np.float32), 1)
    contours = measure.find_contours(padded, 0.5)
    contour = max(contours, key=len)
    contour = measure.approximate_polygon(contour, tolerance=0.5)
    if len(contour) < 4:  # 3 distinct points plus the closing point
        return None
    rows = contour[:, 0] - 1.0 + 0.5 + row0
    columns = contour[:, 1] - 1.0 + 0.5 + column0
    polygon = np.stack([columns, rows], axis=1).astype(np.float32)
    if not np.array_equal(polygon[0], polygon[-1]):
        polygon = np.vstack([polygon, polygon[:1]])
    return polygon


def _build_sr(
    result: PipelineResult,
    label_map: np.ndarray,
    headers: list[Dataset],
    seg: Dataset | None,
    seg_number_of: dict[int, int],
    frames_of: dict[int, list[int]],
    key: list[str],
    procedure_code: CodedTerm,
    equipment: _Equipment,
) -> Dataset:
    manufacturer = equipment.manufacturer
    device_serial_number = equipment.device_serial_number
    algorithm_id = hd.sr.AlgorithmIdentification(
        name=result.algorithm.name[:64], version=result.algorithm.version[:64]
    )
    observer = hd.sr.ObserverContext(
        observer_type=codes.DCM.Device,
        observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
            uid=derive_uid("device", manufacturer, device_serial_number),
            name="ainode",
            manufacturer_name=manufacturer,
            model_name=result.algorithm.name[:64],
            serial_number=device_serial_number,
        ),
    )
    observation_context = hd.sr.ObservationContext(observer_device_context=observer)

    def measurements_of(segment_number: int | None) -> list[hd.sr.Measurement]:
        return [
            hd.sr.Measurement(
                name=_concept(m.name),
                value=float(m.value),
                unit=_concept(m.unit),
                derivation=_concept(m.derivation) if m.derivation else None,
                algorithm_id=algorithm_id,
            )
            for m in result.measurements
            if m.segment_number == segment_number and m.frame_index is None
        ]

    def frame_measurements_of(segment_number: int) -> dict[int, list[hd.sr.Measurement]]:
        by_frame: dict[int, list[hd.sr.Measurement]] = {}
        for m in result.measurements:
            if m.segment_number == segment_number and m.frame_index is not None:
                by_frame.setdefault(m.frame_index, []).append(
                    hd.sr.Measurement(
                        name=_concept(m.name),
                        value=float(m.value),
                        unit=_concept(m.unit),
                        derivation=_concept(m.derivation) if m.derivation else None,
                        algorithm_id=algorithm_id,
                    )
                )
        return by_frame

    groups: list[
        hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations
        | hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations
        | hd.sr.MeasurementsAndQualitativeEvaluations
    ] = []
    referenced_sources: set[int] = set()
    by_number = {s.number: s for s in result.segments}
    for number, seg_number in seg_number_of.items():
        assert seg is not None
        segment = by_number[number]
        site = segment.anatomic_region
        if site is None and segment.laterality is not None:
            site = segment.property_type
        finding_sites = (
            [
                hd.sr.FindingSite(
                    anatomic_location=_concept(site),
                    laterality=_concept(segment.laterality) if segment.laterality else None,
                )
            ]
            if site is not None
            else None
        )
        tracking = hd.sr.TrackingIdentifier(
            uid=derive_uid(*key, "sr-group", segment.tracking_id),
            identifier=segment.tracking_id[:64],
        )
        source_frames = [
            i for i in range(label_map.shape[0]) if (label_map[i] == number).any()
        ]
        referenced_sources.update(source_frames)
        seg_frames = frames_of[seg_number]
        finding_type = _concept(segment.property_type)
        segment_measurements = measurements_of(number) or None
        if len(seg_frames) == 1:
            reference = hd.sr.ReferencedSegmentationFrame.from_segmentation(
                seg, frame_number=seg_frames[0], segment_number=seg_number
            )
            groups.append(
                hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_segment=reference,
                    finding_type=finding_type,
                    algorithm_id=algorithm_id,
                    finding_sites=finding_sites,
                    measurements=segment_measurements,
                )
            )
            # Viewers that do not resolve SEG references still show the outline.
            source = headers[source_frames[0]]
            polygon = _largest_component_polygon(label_map[source_frames[0]] == number)
            if polygon is not None:
                region = hd.sr.ImageRegion(
                    graphic_type=hd.sr.GraphicTypeValues.POLYLINE,
                    graphic_data=polygon,
                    source_image=hd.sr.SourceImageForRegion(
                        referenced_sop_class_uid=source.SOPClassUID,
                        referenced_sop_instance_uid=source.SOPInstanceUID,
                    ),
                )
                groups.append(
                    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=hd.sr.TrackingIdentifier(
                            uid=derive_uid(*key, "sr-outline", segment.tracking_id),
                            identifier=f"{segment.tracking_id} outline"[:64],
                        ),
                        referenced_region=region,
                        finding_type=_concept(segment.property_type),
                        algorithm_id=algorithm_id,
                        finding_sites=finding_sites,
                    )
                )
        else:
            reference_volume = hd.sr.ReferencedSegment.from_segmentation(
                seg, segment_number=seg_number
            )
            # Single-slice measurements of this segment (e.g. an area at one vertebral level):
            # one planar ROI group per slice, referencing the SEG frame on that slice.
            for frame_index, frame_measurements in sorted(frame_measurements_of(number).items()):
                seg_frame = _seg_frame_on_source(seg, seg_number, headers[frame_index])
                if seg_frame is None:
                    raise OutputError(
                        f"protocol {result.protocol!r}: a slice measurement of segment "
                        f"{segment.label!r} refers to source frame {frame_index}, where the "
                        "segment is empty"
                    )
                groups.append(
                    hd.sr.PlanarROIMeasurementsAndQualitativeEvaluations(
                        tracking_identifier=hd.sr.TrackingIdentifier(
                            uid=derive_uid(*key, "sr-slice", segment.tracking_id, str(frame_index)),
                            identifier=(
                                f"{segment.tracking_id} slice {headers[frame_index].SOPInstanceUID}"
                            )[:64],
                        ),
                        referenced_segment=hd.sr.ReferencedSegmentationFrame.from_segmentation(
                            seg, frame_number=seg_frame, segment_number=seg_number
                        ),
                        finding_type=finding_type,
                        algorithm_id=algorithm_id,
                        finding_sites=finding_sites,
                        measurements=frame_measurements,
                    )
                )
            groups.append(
                hd.sr.VolumetricROIMeasurementsAndQualitativeEvaluations(
                    tracking_identifier=tracking,
                    referenced_segment=reference_volume,
                    finding_type=finding_type,
                    algorithm_id=algorithm_id,
                    finding_sites=finding_sites,
                    measurements=segment_measurements,
                )
            )

    # Summary group: whole-report measurements, coded findings, validation status, intended use.
    summary_sources = sorted(referenced_sources)
    if not summary_sources:
        summary_sources = [result.key_image.source_index] if result.key_image else [0]
    evaluations = [
        hd.sr.QualitativeEvaluation(name=_concept(f.name), value=_concept(f.value))
        for f in result.findings
    ]
    evaluations.append(
        hd.sr.QualitativeEvaluation(
            name=_concept(AINODE_VALIDATION_STATUS),
            value=hd.sr.CodedConcept(
                value=str(result.algorithm.validation_status.value).upper()[:16],
                scheme_designator=PRIVATE_SCHEME,
                meaning=str(result.algorithm.validation_status.value),
            ),
        )
    )
    evaluations.append(
        hd.sr.QualitativeEvaluation(
            name=_concept(AINODE_INTENDED_USE), value=_concept(AINODE_RESEARCH_USE_ONLY)
        )
    )
    groups.append(
        hd.sr.MeasurementsAndQualitativeEvaluations(
            tracking_identifier=hd.sr.TrackingIdentifier(
                uid=derive_uid(*key, "sr-group", "summary"), identifier="summary"
            ),
            algorithm_id=algorithm_id,
            measurements=measurements_of(None) or None,
            qualitative_evaluations=evaluations,
            source_images=[
                hd.sr.SourceImageForMeasurementGroup(
                    referenced_sop_class_uid=headers[i].SOPClassUID,
                    referenced_sop_instance_uid=headers[i].SOPInstanceUID,
                )
                for i in summary_sources
            ],
        )
    )

    try:
        report = hd.sr.MeasurementReport(
            observation_context=observation_context,
            procedure_reported=_concept(procedure_code),
            imaging_measurements=groups,
        )
        report[0].ContentSequence.append(_text_evaluations(result))
        _fix_image_references(report[0])
        evidence = [headers[i] for i in summary_sources]
        if seg is not None:
            evidence.append(seg)
        sr = hd.sr.Comprehensive3DSR(
            evidence=evidence,
            content=report[0],
            series_instance_uid=derive_uid(*key, "sr", "series"),
            series_number=SR_SERIES_NUMBER,
            sop_instance_uid=derive_uid(*key, "sr", "instance"),
            instance_number=1,
            manufacturer=manufacturer,
            is_complete=True,
            is_final=False,
            is_verified=False,
            institution_name=equipment.institution_name,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(
            f"protocol {result.protocol!r}: highdicom could not build the SR: {exc}. Check the "
            "measurement codes and units (CodedTerm value/scheme/meaning must be non-empty)"
        ) from exc
    _set_common(
        sr,
        description=f"ainode {result.protocol} SR",
        institution_name=None,
        device_serial_number=device_serial_number,
    )
    sr.SoftwareVersions = equipment.software_version
    sr.CodingSchemeIdentificationSequence = [_private_scheme_item()]
    return sr


_SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"


def _fix_image_references(item: Dataset) -> None:
    """Make IMAGE references follow the Image SOP Instance Reference Macro (PS3.3 Table 10-3).

    highdicom's planar "Referenced Segmentation Frame" item carries both Referenced Frame Number
    and Referenced Segment Number, and its "Source image for segmentation" item carries a
    Referenced Frame Number even for single-frame images; dciodvfy rejects both (Referenced
    Segment Number shall not be present with Referenced Frame Number, and Referenced Frame
    Number only for multi-frame SOP Instances). The SEG frame number identifies the segment.
    """
    for child in item.get("ContentSequence", []):
        if child.get("ValueType") == "IMAGE":
            for reference in child.get("ReferencedSOPSequence", []):
                is_seg = reference.ReferencedSOPClassUID == _SEGMENTATION_STORAGE
                if is_seg and "ReferencedFrameNumber" in reference:
                    if "ReferencedSegmentNumber" in reference:
                        del reference.ReferencedSegmentNumber
                elif not is_seg and "ReferencedFrameNumber" in reference:
                    del reference.ReferencedFrameNumber
        _fix_image_references(child)


def _text_evaluations(result: PipelineResult) -> hd.sr.ContainerContentItem:
    """TID 1500 "Qualitative Evaluations" container with the free-text statements."""
    container = hd.sr.ContainerContentItem(
        name=_concept(UMLS_QUALITATIVE_EVALUATIONS),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    algorithm = result.algorithm
    items = [
        hd.sr.TextContentItem(
            name=_concept(AINODE_VALIDATION_STATUS),
            value=(
                f"{algorithm.name} {algorithm.version}: validation status "
                f"{algorithm.validation_status.value}"
            ),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.TextContentItem(
            name=_concept(AINODE_INTENDED_USE),
            value=RESEARCH_USE_DISCLAIMER,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
    ]
    items.extend(
        hd.sr.TextContentItem(
            name=_concept(AINODE_PROCESSING_WARNING),
            value=warning,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for warning in result.warnings
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container


def _build_sc(
    result: PipelineResult,
    headers: list[Dataset],
    key: list[str],
    patient_orientation: tuple[str, str] | None,
    equipment: _Equipment,
) -> Dataset:
    key_image = result.key_image
    assert key_image is not None
    pixels = np.asarray(key_image.pixels_rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise OutputError(
            f"protocol {result.protocol!r}: key image must be (rows, columns, 3) uint8 RGB, got "
            f"shape {pixels.shape} dtype {pixels.dtype}; render it with "
            "pipelines.render.render_key_image"
        )
    if not 0 <= key_image.source_index < len(headers):
        raise OutputError(
            f"protocol {result.protocol!r}: key image source_index {key_image.source_index} is "
            f"outside the {len(headers)} source datasets"
        )
    source = headers[key_image.source_index]
    # No Pixel Spacing when the key image's spacing is unknown (e.g. a CR whose header has none).
    sc_pixel_spacing = (
        (float(key_image.pixel_spacing_mm[0]), float(key_image.pixel_spacing_mm[1]))
        if positive_pair(key_image.pixel_spacing_mm) is not None
        else None
    )
    try:
        sc = hd.sc.SCImage.from_ref_dataset(
            ref_dataset=source,
            pixel_array=np.ascontiguousarray(pixels),
            photometric_interpretation=hd.PhotometricInterpretationValues.RGB,
            bits_allocated=8,
            coordinate_system=hd.CoordinateSystemNames.PATIENT,
            series_instance_uid=derive_uid(*key, "sc", "series"),
            series_number=SC_SERIES_NUMBER,
            sop_instance_uid=derive_uid(*key, "sc", "instance"),
            instance_number=1,
            manufacturer=equipment.manufacturer,
            pixel_spacing=sc_pixel_spacing,  # type: ignore[arg-type]  # highdicom's hint says int
            patient_orientation=patient_orientation or ("L", "P"),
            transfer_syntax_uid=ExplicitVRLittleEndian,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(
            f"protocol {result.protocol!r}: highdicom could not build the key image SC: {exc}"
        ) from exc
    if patient_orientation is None:
        sc.PatientOrientation = None  # type: ignore[assignment]  # Type 2: empty = unknown
    _set_common(
        sc,
        description=f"ainode {result.protocol} key image",
        institution_name=equipment.institution_name,
        device_serial_number=equipment.device_serial_number,
    )
    sc.SoftwareVersions = equipment.software_version
    if "Laterality" not in sc:
        sc.Laterality = None  # type: ignore[assignment]  # General Series, Type 2C: present and empty (not a paired organ)
    sc.BurnedInAnnotation = "YES"
    sc.ConversionType = "WSD"  # Workstation (PS3.3 C.8.6.1)
    sc.ImageType = ["DERIVED", "SECONDARY", "OTHER"]
    sc.ImageComments = (
        f"{result.algorithm.name} {result.algorithm.version} "
        f"({result.algorithm.validation_status.value}). {RESEARCH_USE_DISCLAIMER}"
    )[:10240]
    reference = Dataset()
    reference.ReferencedSOPClassUID = source.SOPClassUID
    reference.ReferencedSOPInstanceUID = source.SOPInstanceUID
    sc.SourceImageSequence = [reference]
    return sc


def write_outputs(objects: OutputObjects, out_dir: Path) -> dict[str, Path]:
    """Write the output objects as DICOM Part 10 files.

    Parameters
    ----------
    objects:
        The objects from :func:`build_outputs`.
    out_dir:
        Directory (created if missing). Files are named ``<kind>_<SOP Instance UID>.dcm``.

    Returns
    -------
    dict[str, pathlib.Path]
        ``"seg"``/``"sr"``/``"sc"`` -> file path, for the objects that exist.

    Raises
    ------
    OutputError
        If the directory cannot be created or a file cannot be written.
    """
    out_dir = Path(out_dir)
    try:
        out_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise OutputError(f"cannot create output directory {out_dir}: {exc}") from exc
    written: dict[str, Path] = {}
    for kind, ds in objects.items():
        path = out_dir / f"{kind}_{ds.SOPInstanceUID}.dcm"
        try:
            ds.save_as(path, enforce_file_format=True)
        except (OSError, ValueError, TypeError) as exc:
            raise OutputError(
                f"cannot write the {kind.upper()} (SOP Instance UID {ds.SOPInstanceUID}) to "
                f"{path}: {exc}"
            ) from exc
        written[kind] = path
    return written


def summarise_outputs(objects: OutputObjects) -> dict[str, dict[str, str]]:
    """Identify the output objects without PHI, for the job log and database.

    Returns
    -------
    dict[str, dict[str, str]]
        kind -> SOP Class UID, SOP Instance UID, Series Instance UID, Series Number.
    """
    return {
        kind: {
            "sop_class_uid": str(ds.SOPClassUID),
            "sop_instance_uid": str(ds.SOPInstanceUID),
            "series_instance_uid": str(ds.SeriesInstanceUID),
            "series_number": str(ds.SeriesNumber),
        }
        for kind, ds in objects.items()
    }


__all__ = [
    "SC_SERIES_NUMBER",
    "SEG_SERIES_NUMBER",
    "SR_SERIES_NUMBER",
    "OutputObjects",
    "build_outputs",
    "derive_uid",
    "is_projection_image",
    "summarise_outputs",
    "write_outputs",
]
