"""The Secondary Capture (SC) key image of a pipeline result.

:class:`highdicom.sc.SCImage` of the RGB key image, Burned In Annotation YES, Conversion Type
WSD (Series Number :data:`SC_SERIES_NUMBER`). A method's :class:`~pipelines.types.KeyImageSpec`
is drawn here (:func:`pipelines.outputs.render.render_key_image_spec`); an already rendered
:class:`~pipelines.types.KeyImage` is used as it is. A key image whose pixel spacing is not
positive (spacing unknown, e.g. a CR whose header has none) gets no Pixel Spacing.
"""

from __future__ import annotations

import highdicom as hd
import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian

from pipelines.errors import OutputError
from pipelines.headers import positive_pair
from pipelines.outputs.headers import Equipment, set_common
from pipelines.outputs.render import render_key_image_spec
from pipelines.outputs.uids import derive_uid
from pipelines.types import RESEARCH_USE_DISCLAIMER, KeyImageSpec, PipelineResult

SC_SERIES_NUMBER = 9003


def build_sc(
    result: PipelineResult,
    headers: list[Dataset],
    key: list[str],
    patient_orientation: tuple[str, str] | None,
    equipment: Equipment,
) -> Dataset:
    """Build the Secondary Capture of the result's key image (rendered here from a spec)."""
    key_image = result.key_image
    assert key_image is not None
    if isinstance(key_image, KeyImageSpec):
        key_image = render_key_image_spec(key_image)
    pixels = np.asarray(key_image.pixels_rgb)
    if pixels.ndim != 3 or pixels.shape[2] != 3 or pixels.dtype != np.uint8:
        raise OutputError(
            f"protocol {result.protocol!r}: key image must be (rows, columns, 3) uint8 RGB, got "
            f"shape {pixels.shape} dtype {pixels.dtype}; render it with "
            "pipelines.outputs.render.render_key_image"
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
    set_common(
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
