"""Projection radiographs (CR, DX): input checks, display normalisation and pixel spacing.

Convention used by every radiograph protocol in ainode (decided once, here):

* **Intensity**: the Modality LUT, then the VOI LUT or window are applied
  (``pydicom.pixels.apply_modality_lut`` / ``apply_voi_lut``, PS3.3 C.11.1, C.11.2), the result
  is rescaled to 0..1 and MONOCHROME1 images are inverted *after* the LUTs (for MONOCHROME1 the
  lowest value is shown white, PS3.3 C.7.6.3.1.2), so that **0 = black, 1 = white** always:
  aerated lung is dark, bone and metal bright, as on a reading-room display. This is
  :func:`pipelines.body_region.load_radiograph`, reused as is.
* **Orientation**: pixels are kept as stored. Patient Orientation (0020,0020) says which patient
  direction the columns and rows run to (PS3.3 C.7.6.1.1.1); a frontal chest film is normally
  ``L\\F`` (patient's right on the image left). Protocols use it to tell right from left.
* **Pixel spacing** (:func:`radiograph_pixel_spacing`), in this order:

  1. Pixel Spacing (0028,0030), when present with positive values: the spacing "in the patient"
     as calibrated by the modality, qualified by Pixel Spacing Calibration Type (0028,0A02)
     (PS3.3 §10.7.1.3 for the row\\column order);
  2. Imager Pixel Spacing (0018,1164), measured at the detector front plane and never corrected
     for magnification (PS3.3 C.8.11.4 DX Detector Module; also in the CR Image Module), divided
     by Estimated Radiographic Magnification Factor (0018,1114) when present, else by
     Distance Source to Detector / Distance Source to Patient (0018,1110 / 0018,1111) when both
     are present, else used uncorrected (with a warning: areas are then overestimated by the
     geometric magnification, typically 5-20 %);
  3. a spacing given by the site (parameter), recorded as "assumed";
  4. none: areas cannot be given in cm².

  The source used is returned and must be stated in the SR.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

import numpy as np
from pydicom.dataset import Dataset

from pipelines.body_region import load_radiograph
from pipelines.errors import UnsupportedInputError
from pipelines.headers import positive_number, positive_pair
from pipelines.volume import check_image_size

logger = logging.getLogger(__name__)

#: Modalities accepted as projection radiographs.
RADIOGRAPH_MODALITIES = ("CR", "DX")

#: View Position (0018,5101) values that mean a lateral projection (PS3.3 C.8.11.5.1.1:
#: LL left lateral, RL right lateral). Decubitus (RLD, LLD) views are frontal projections.
LATERAL_VIEW_POSITIONS = frozenset({"LL", "RL", "LAT", "LATERAL"})


@dataclass
class Radiograph:
    """A decoded single-frame projection radiograph.

    Attributes
    ----------
    image: numpy.ndarray
        ``(rows, columns)`` float32 in 0..1, 0 = black, 1 = white (see module docstring).
    pixel_spacing_mm: tuple[float, float] | None
        (row, column) spacing in mm used for measurements, or ``None`` when unknown.
    spacing_source: str
        Which attribute the spacing came from, in words (goes into the SR).
    patient_orientation: tuple[str, str] | None
        Patient Orientation (0020,0020) of the source (column direction, row direction).
    warnings: list[str]
        Things the user should know about the input (uncorrected spacing, ...).
    """

    image: np.ndarray
    pixel_spacing_mm: tuple[float, float] | None
    spacing_source: str
    patient_orientation: tuple[str, str] | None
    warnings: list[str] = field(default_factory=list)


def radiograph_pixel_spacing(
    ds: Dataset, assumed_pixel_spacing_mm: float | None = None
) -> tuple[tuple[float, float] | None, str, list[str]]:
    """Pixel spacing of a projection radiograph in the patient, and where it came from.

    Parameters
    ----------
    ds:
        The radiograph header.
    assumed_pixel_spacing_mm:
        Square spacing (mm) to assume when the header gives none; ``None`` for no assumption.

    Returns
    -------
    tuple
        ``((row_mm, column_mm) or None, source description, warnings)``. Order of preference:
        Pixel Spacing; Imager Pixel Spacing / Estimated Radiographic Magnification Factor;
        Imager Pixel Spacing x SOD / SID; Imager Pixel Spacing uncorrected; the assumed value;
        none (PS3.3 §10.7.1.3, C.8.11.4).
    """
    warnings: list[str] = []
    pixel_spacing = positive_pair(ds.get("PixelSpacing"))
    if pixel_spacing is not None:
        calibration = str(ds.get("PixelSpacingCalibrationType", "") or "").strip()
        source = "Pixel Spacing (0028,0030)"
        if calibration:
            source += f", calibration type {calibration}"
        return pixel_spacing, source, warnings
    if "PixelSpacing" in ds:
        warnings.append(
            f"Pixel Spacing (0028,0030) is present but not usable ({ds.get('PixelSpacing')!s}); "
            "ignored"
        )
    imager = positive_pair(ds.get("ImagerPixelSpacing"))
    if imager is not None:
        magnification = positive_number(ds.get("EstimatedRadiographicMagnificationFactor"))
        if magnification is not None:
            source = (
                "Imager Pixel Spacing (0018,1164) / Estimated Radiographic Magnification "
                f"Factor (0018,1114) = {magnification:g}"
            )
            return (imager[0] / magnification, imager[1] / magnification), source, warnings
        sid = positive_number(ds.get("DistanceSourceToDetector"))
        sod = positive_number(ds.get("DistanceSourceToPatient"))
        if sid is not None and sod is not None and sid >= sod:
            factor = sid / sod
            source = (
                "Imager Pixel Spacing (0018,1164) x Distance Source to Patient / Distance "
                f"Source to Detector (magnification {factor:.3f})"
            )
            return (imager[0] / factor, imager[1] / factor), source, warnings
        warnings.append(
            "pixel size from Imager Pixel Spacing (0018,1164) at the detector, not corrected for "
            "geometric magnification (no magnification factor or source distances in the "
            "header): areas are overestimated by the magnification"
        )
        return imager, "Imager Pixel Spacing (0018,1164), not corrected for magnification", warnings
    if assumed_pixel_spacing_mm is not None and assumed_pixel_spacing_mm > 0:
        warnings.append(
            f"no pixel spacing in the header: an assumed {assumed_pixel_spacing_mm:g} mm "
            "(site parameter) is used for areas"
        )
        value = float(assumed_pixel_spacing_mm)
        return (value, value), f"assumed {value:g} mm (parameter, not from the header)", warnings
    warnings.append(
        "no usable pixel spacing in the header: areas are reported as fractions of the image, "
        "not in cm2"
    )
    return None, "none (no usable Pixel Spacing or Imager Pixel Spacing)", warnings


def check_projection_radiograph(ds: Dataset) -> None:
    """Reject images that are not single-frame grayscale CR/DX frontal projections.

    Parameters
    ----------
    ds:
        The image header.

    Raises
    ------
    UnsupportedInputError
        For another modality, multi-frame or colour images, and views tagged lateral (View
        Position LL/RL, or a View Code Sequence item whose meaning says lateral).
    """
    modality = str(ds.get("Modality", ""))
    if modality not in RADIOGRAPH_MODALITIES:
        raise UnsupportedInputError(
            f"expected a projection radiograph (Modality CR or DX), got Modality {modality!r}; "
            "route only chest radiographs to this protocol"
        )
    frames = int(ds.get("NumberOfFrames", 1) or 1)
    if frames > 1:
        raise UnsupportedInputError(
            f"expected a single-frame radiograph, got Number of Frames {frames}; multi-frame "
            "(e.g. fluoroscopy or tomosynthesis) images are not supported"
        )
    photometric = str(ds.get("PhotometricInterpretation", ""))
    samples = int(ds.get("SamplesPerPixel", 1) or 1)
    if photometric not in ("MONOCHROME1", "MONOCHROME2") or samples != 1:
        raise UnsupportedInputError(
            f"expected a grayscale radiograph (MONOCHROME1/2, one sample per pixel), got "
            f"Photometric Interpretation {photometric!r} with {samples} sample(s) per pixel; "
            "colour or secondary-capture images are not supported"
        )
    view = str(ds.get("ViewPosition", "") or "").strip().upper()
    if view in LATERAL_VIEW_POSITIONS:
        raise UnsupportedInputError(
            f"the image is tagged as a lateral view (View Position {view!r}); lung fields are "
            "measured on frontal (AP/PA) chest radiographs only"
        )
    for item in ds.get("ViewCodeSequence", []) or []:
        meaning = str(item.get("CodeMeaning", "")).lower()
        if "lateral" in meaning and "decubitus" not in meaning:
            raise UnsupportedInputError(
                f"the image is tagged as a lateral view (View Code Sequence {meaning!r}); lung "
                "fields are measured on frontal (AP/PA) chest radiographs only"
            )


def load_projection_radiograph(
    ds: Dataset, assumed_pixel_spacing_mm: float | None = None
) -> Radiograph:
    """Check, decode and normalise a single-frame projection radiograph.

    Parameters
    ----------
    ds:
        A CR or DX image with Pixel Data (uncompressed or any transfer syntax pydicom can
        decode with the installed plugins: JPEG 2000, JPEG lossless, RLE).
    assumed_pixel_spacing_mm:
        Spacing to assume when the header gives none (see :func:`radiograph_pixel_spacing`).

    Returns
    -------
    Radiograph
        Image in 0..1 (0 black, 1 white) with spacing and orientation.

    Raises
    ------
    UnsupportedInputError
        See :func:`check_projection_radiograph`.
    InvalidInputError
        If the pixel data cannot be decoded, or the image declares more decoded bytes than
        ``max_image_mb`` allows (:func:`pipelines.volume.check_image_size`, checked first).
    """
    check_projection_radiograph(ds)
    check_image_size(ds)
    image = load_radiograph(ds)
    spacing, source, warnings = radiograph_pixel_spacing(ds, assumed_pixel_spacing_mm)
    orientation_value = ds.get("PatientOrientation")
    orientation: tuple[str, str] | None = None
    if orientation_value is not None and len(orientation_value) == 2:
        orientation = (str(orientation_value[0]), str(orientation_value[1]))
    return Radiograph(
        image=image,
        pixel_spacing_mm=spacing,
        spacing_source=source,
        patient_orientation=orientation,
        warnings=warnings,
    )


__all__ = [
    "LATERAL_VIEW_POSITIONS",
    "RADIOGRAPH_MODALITIES",
    "Radiograph",
    "check_projection_radiograph",
    "load_projection_radiograph",
    "radiograph_pixel_spacing",
]
