"""The DICOM Segmentation (SEG) of a pipeline result.

:class:`highdicom.seg.Segmentation`, segmentation type BINARY, one segment per
:class:`~pipelines.types.SegmentDefinition` that occurs in the label map, only the labelled
frames, referencing the labelled source images (Series Number :data:`SEG_SERIES_NUMBER`).

Projection radiographs (CR, DX; :func:`pipelines.outputs.headers.is_projection_image`):

* the SEG has no Frame of Reference either; its Patient Orientation (0020,0020, General Image
  Module, Type 2C when there is no Frame of Reference) is copied from the source (empty when
  the source has none);
* no Slice Thickness is invented for the SEG's Pixel Measures (it is only needed for
  volumetric sources, PS3.3 C.7.6.16.2.1);
* a source Pixel Spacing (0028,0030) with a value that is not positive (e.g. ``0\\0``, seen in
  real CR headers) is left out of the SEG rather than copied (dciodvfy: "Value is zero").
"""

from __future__ import annotations

import copy
import logging

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset

from pipelines.errors import OutputError
from pipelines.headers import header_copy, positive_pair
from pipelines.outputs.codes import algorithm_family, concept, private_scheme_item, uses_private
from pipelines.outputs.headers import Equipment, is_projection_image, set_common
from pipelines.outputs.uids import content_label, derive_uid
from pipelines.types import PipelineResult, SegmentDefinition

logger = logging.getLogger(__name__)

SEG_SERIES_NUMBER = 9001


def build_seg(
    result: PipelineResult,
    label_map: np.ndarray,
    headers: list[Dataset],
    segments_present: list[SegmentDefinition],
    key: list[str],
    equipment: Equipment,
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

    family = concept(algorithm_family(result))
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
            segmented_property_category=concept(segment.category),
            segmented_property_type=concept(segment.property_type),
            algorithm_type=hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC,
            algorithm_identification=algorithm,
            tracking_uid=derive_uid(*key, "tracking", segment.tracking_id),
            tracking_id=segment.tracking_id[:64],
            anatomic_regions=(
                [concept(segment.anatomic_region)] if segment.anatomic_region else None
            ),
            display_color=hd.color.CIELabColor.from_rgb(*segment.display_rgb),
        )
        description.SegmentDescription = segment.description[:64]
        if segment.laterality is not None:
            # Laterality of a paired structure: Segmented Property Type Modifier Code Sequence
            # (PS3.3 C.8.20.2, Segment Description Macro; values from PS3.16 CID 244).
            description.SegmentedPropertyTypeCodeSequence[
                0
            ].SegmentedPropertyTypeModifierCodeSequence = [concept(segment.laterality)]
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
            content_label=content_label(result.protocol, "SEG"),
            content_creator_name=None,
            omit_empty_frames=True,
        )
    except (ValueError, TypeError, AttributeError) as exc:
        raise OutputError(
            f"protocol {result.protocol!r}: highdicom could not build the SEG: {exc}. Check that "
            "the source images share orientation and pixel spacing and that the label map lies "
            "on the source frames"
        ) from exc
    set_common(
        seg,
        description=f"ainode {result.protocol} SEG",
        institution_name=equipment.institution_name,
        device_serial_number=equipment.device_serial_number,
    )
    if any(uses_private(s) for s in segments_present):
        seg.CodingSchemeIdentificationSequence = [private_scheme_item()]
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


def seg_frame_on_source(seg: Dataset, seg_number: int, source: Dataset) -> int | None:
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

