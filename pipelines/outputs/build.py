"""Build the SEG, SR and SC of one pipeline result; write them as files.

Every protocol's results are encoded here, the same way, fed only by the
:class:`~pipelines.types.PipelineResult` (label map on the source frames, segment definitions,
measurements, findings, key-image description) and the source headers. Nothing here knows a
protocol by name. See ``docs/outputs.md`` for the codes used and their sources.
"""

from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset

from pipelines.errors import OutputError
from pipelines.outputs.codes import IMAGING_PROCEDURE
from pipelines.outputs.headers import Equipment, declare_character_set, source_header
from pipelines.outputs.sc import build_sc
from pipelines.outputs.seg import build_seg
from pipelines.outputs.sr import build_sr
from pipelines.outputs.uids import output_key
from pipelines.types import CodedTerm, PipelineResult

logger = logging.getLogger(__name__)


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


def _check_result(result: PipelineResult) -> np.ndarray:
    """The label map, checked against the source frames, segments and measurements."""
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
    uid_scope: str = "series",
) -> OutputObjects:
    """Build the SEG, SR and SC objects of one pipeline result.

    ``uid_scope`` (``"series"`` or ``"study"``) chooses what the deterministic output UIDs derive
    from (:func:`pipelines.outputs.uids.output_key`).

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
            uid_scope=uid_scope,
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
    uid_scope: str = "series",
) -> OutputObjects:
    label_map = _check_result(result)
    key = output_key(result, uid_scope)
    notes: set[str] = set()
    headers = [source_header(ds, notes) for ds in result.source_datasets]
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

    equipment = Equipment(
        manufacturer, software_version, device_serial_number, institution_name
    )
    seg: Dataset | None = None
    seg_number_of: dict[int, int] = {}
    frames_of: dict[int, list[int]] = {}
    if segments_present:
        seg, seg_number_of, frames_of = build_seg(
            result, label_map, headers, segments_present, key, equipment
        )
    sr = build_sr(
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
        sc = build_sc(result, headers, key, orientation, equipment)
    for ds in (seg, sr, sc):
        if ds is not None:
            declare_character_set(ds)
    logger.info(
        "protocol %s: built outputs %s",
        result.protocol,
        {
            kind: str(ds.SOPInstanceUID)
            for kind, ds in OutputObjects(seg, sr, sc).items()
        },
    )
    return OutputObjects(seg=seg, sr=sr, sc=sc, notes=sorted(notes))



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

