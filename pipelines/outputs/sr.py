"""The TID 1500 Measurement Report (Comprehensive 3D SR) of a pipeline result.

:class:`highdicom.sr.Comprehensive3DSR` holding a TID 1500 Measurement Report: one measurement
group per segment referencing the SEG segment and its source images, a planar ROI group with the
segment outline (SCOORD closed POLYLINE, i.e. a polygon) for single-frame segments, a "summary"
group for whole-report measurements and coded findings, and a TID 1500 "Qualitative
Evaluations" container with the validation status, the research-use disclaimer and the pipeline
warnings as text (Series Number :data:`SR_SERIES_NUMBER`). For projection radiographs the SCOORD
polygons lie on the radiograph (column, row image coordinates).
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.sr.codedict import codes
from scipy import ndimage
from skimage import measure

from pipelines.errors import OutputError
from pipelines.outputs.codes import (
    AINODE_INTENDED_USE,
    AINODE_PROCESSING_WARNING,
    AINODE_RESEARCH_USE_ONLY,
    AINODE_VALIDATION_STATUS,
    UMLS_QUALITATIVE_EVALUATIONS,
    concept,
    private_scheme_item,
)
from pipelines.outputs.headers import Equipment, set_common
from pipelines.outputs.seg import seg_frame_on_source
from pipelines.outputs.uids import derive_uid
from pipelines.types import PRIVATE_SCHEME, RESEARCH_USE_DISCLAIMER, CodedTerm, PipelineResult

SR_SERIES_NUMBER = 9002


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


def build_sr(
    result: PipelineResult,
    label_map: np.ndarray,
    headers: list[Dataset],
    seg: Dataset | None,
    seg_number_of: dict[int, int],
    frames_of: dict[int, list[int]],
    key: list[str],
    procedure_code: CodedTerm,
    equipment: Equipment,
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
                name=concept(m.name),
                value=float(m.value),
                unit=concept(m.unit),
                derivation=concept(m.derivation) if m.derivation else None,
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
                        name=concept(m.name),
                        value=float(m.value),
                        unit=concept(m.unit),
                        derivation=concept(m.derivation) if m.derivation else None,
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
                    anatomic_location=concept(site),
                    laterality=concept(segment.laterality) if segment.laterality else None,
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
        finding_type = concept(segment.property_type)
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
                        finding_type=concept(segment.property_type),
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
                seg_frame = seg_frame_on_source(seg, seg_number, headers[frame_index])
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
        hd.sr.QualitativeEvaluation(name=concept(f.name), value=concept(f.value))
        for f in result.findings
    ]
    evaluations.append(
        hd.sr.QualitativeEvaluation(
            name=concept(AINODE_VALIDATION_STATUS),
            value=hd.sr.CodedConcept(
                value=str(result.algorithm.validation_status.value).upper()[:16],
                scheme_designator=PRIVATE_SCHEME,
                meaning=str(result.algorithm.validation_status.value),
            ),
        )
    )
    evaluations.append(
        hd.sr.QualitativeEvaluation(
            name=concept(AINODE_INTENDED_USE), value=concept(AINODE_RESEARCH_USE_ONLY)
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
            procedure_reported=concept(procedure_code),
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
    set_common(
        sr,
        description=f"ainode {result.protocol} SR",
        institution_name=None,
        device_serial_number=device_serial_number,
    )
    sr.SoftwareVersions = equipment.software_version
    sr.CodingSchemeIdentificationSequence = [private_scheme_item()]
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
        name=concept(UMLS_QUALITATIVE_EVALUATIONS),
        relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
    )
    algorithm = result.algorithm
    items = [
        hd.sr.TextContentItem(
            name=concept(AINODE_VALIDATION_STATUS),
            value=(
                f"{algorithm.name} {algorithm.version}: validation status "
                f"{algorithm.validation_status.value}"
            ),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
        hd.sr.TextContentItem(
            name=concept(AINODE_INTENDED_USE),
            value=RESEARCH_USE_DISCLAIMER,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        ),
    ]
    items.extend(
        hd.sr.TextContentItem(
            name=concept(AINODE_PROCESSING_WARNING),
            value=warning,
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS,
        )
        for warning in result.warnings
    )
    container.ContentSequence = hd.sr.ContentSequence(items)
    return container
