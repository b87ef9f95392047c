"""Synthetic frontal chest radiograph of a neonate, with exact lung-field masks.

A software test object for the ``neonatal-rds`` protocol (:mod:`pipelines.neonatal_rds`). The image
is drawn on the pixel grid in display convention (row 0 at the top = head, columns from the
patient's right to the patient's left, as a frontal AP/PA chest film is read: Patient Orientation
``("L", "F")``) and in *display intensity*: ``0`` = black (air, no attenuation), ``1`` = white
(metal). :func:`phantom_to_dataset` writes it as a CR or DX image, MONOCHROME2 or MONOCHROME1.

Anatomy (fractions of the image width ``u`` and height ``v``; nominal display intensities):

* air outside the body (0.04) and a trunk with a neck (soft tissue 0.46, with a smooth
  left-right and cranio-caudal gradient of +-0.03 as skin folds and overlying tissue give);
* two lung fields (0.17) with a rounded apex, a convex lateral wall, a sharp costophrenic angle
  and a domed diaphragm; the left lung's medial lower border is indented by the heart;
* mediastinum (0.60), heart (0.63), vertebral column (0.76) with brighter vertebral bodies,
  subdiaphragmatic soft tissue (0.55);
* eight pairs of posterior ribs and the clavicles, added (+0.12) over lungs and soft tissue;
* devices (optional): an endotracheal tube and a nasogastric tube (radiopaque lines 1.5 mm and
  2 mm wide), three ECG electrodes (8 mm discs, one over each lung) and their lead wires (0.8 mm)
  running across the lungs to the image edge, and an umbilical venous catheter;
* an RDS-like "ground-glass" variant: lung intensity raised to 0.31 with fine granular texture
  and darker branching air bronchograms (the lung *mask* is unchanged);
* the picture is blurred (Gaussian, sigma 0.6 pixel) and Gaussian noise is added.

The ground-truth lung fields are the exact polygon rasters minus the heart (what a reader would
outline: the aerated lung projection, including the parts behind ribs and devices). Areas are
pixel counts times the pixel area.

Anatomical proportions are those of a term neonate's chest film drawn by hand (thorax about
12 cm wide at the default 0.3 mm pixels and 448 columns); they are not taken from a measured
population. Results on this phantom show that the code computes what it claims, not that it is
clinically valid.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass, field
from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid
from scipy import ndimage
from skimage.draw import disk, polygon

#: Label values of :attr:`ChestRadiographPhantom.label_map` (same numbering as
#: :data:`pipelines.neonatal_rds.LABEL_RIGHT_LUNG` / ``LABEL_LEFT_LUNG``).
LABEL_RIGHT_LUNG = 1
LABEL_LEFT_LUNG = 2

#: Nominal display intensities (0 = black, 1 = white) of the phantom's structures.
INTENSITY: dict[str, float] = {
    "air": 0.04,
    "soft_tissue": 0.46,
    "lung": 0.17,
    "lung_ground_glass": 0.31,
    "mediastinum": 0.60,
    "heart": 0.63,
    "spine": 0.76,
    "abdomen": 0.55,
    "rib": 0.12,  # added
    "device": 0.40,  # added
    "electrode": 0.55,  # added
}

_CR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
_DX_IMAGE_STORAGE_PRESENTATION = "1.2.840.10008.5.1.4.1.1.1.1"


@dataclass
class ChestRadiographPhantom:
    """A synthetic chest radiograph and its ground truth.

    Attributes
    ----------
    image: numpy.ndarray
        ``(rows, columns)`` float32 display intensity in 0..1 (0 black, 1 white), row 0 = head,
        column 0 = patient's right.
    label_map: numpy.ndarray
        ``(rows, columns)`` uint8: 0 background, :data:`LABEL_RIGHT_LUNG`, :data:`LABEL_LEFT_LUNG`.
    pixel_spacing_mm: tuple[float, float]
        (row, column) pixel spacing in mm.
    ground_glass: bool
        Whether the lungs have the RDS-like ground-glass pattern.
    devices: list[str]
        Names of the devices drawn.
    """

    image: np.ndarray
    label_map: np.ndarray
    pixel_spacing_mm: tuple[float, float]
    ground_glass: bool
    devices: list[str] = field(default_factory=list)

    def lung_area_cm2(self, label: int) -> float:
        """Exact area of one lung field (label 1 right, 2 left) in cm²."""
        pixel_cm2 = self.pixel_spacing_mm[0] * self.pixel_spacing_mm[1] / 100.0
        return float(np.count_nonzero(self.label_map == label)) * pixel_cm2


def _lung_outline(rows: int, columns: int, side: str) -> tuple[np.ndarray, np.ndarray]:
    """Row and column vertices of one lung polygon (side ``"right"`` = image left)."""
    # Normalised outline of the right lung (image left), from the apex clockwise (as displayed).
    # u = column fraction, v = row fraction.
    t = np.linspace(0.0, np.pi / 2, 12)
    apex_u, apex_v = 0.33, 0.17
    lateral_u, angle_v = 0.165, 0.74  # costophrenic angle
    medial_u = 0.445
    # Lateral wall: a quarter ellipse from the apex to the costophrenic angle.
    lateral = [
        (apex_u - (apex_u - lateral_u) * np.sin(a), apex_v + (angle_v - apex_v) * (1 - np.cos(a)))
        for a in t
    ]
    # Diaphragm dome from the costophrenic angle to the medial end (highest at u ~ 0.31).
    dome_u = np.linspace(lateral_u + 0.01, medial_u, 14)
    dome_v = 0.715 - 0.075 * np.sin(np.pi * (dome_u - lateral_u) / (medial_u - lateral_u))
    dome = list(zip(dome_u, dome_v))
    # Medial border (mediastinum) back up to the apex.
    medial = [(medial_u, 0.60), (medial_u - 0.01, 0.40), (0.42, 0.26), (0.39, 0.19)]
    points = np.array(lateral + dome + medial)
    u, v = points[:, 0], points[:, 1]
    if side == "left":
        u = 1.0 - u
    return v * rows, u * columns


def _polyline_mask(shape: tuple[int, int], points_rc: np.ndarray, width_px: float) -> np.ndarray:
    """Boolean mask of a polyline of the given width."""
    mask = np.zeros(shape, dtype=bool)
    for (r0, c0), (r1, c1) in itertools.pairwise(points_rc):
        n = int(max(abs(r1 - r0), abs(c1 - c0))) + 1
        rr = np.round(np.linspace(r0, r1, n)).astype(int)
        cc = np.round(np.linspace(c0, c1, n)).astype(int)
        ok = (rr >= 0) & (rr < shape[0]) & (cc >= 0) & (cc < shape[1])
        mask[rr[ok], cc[ok]] = True
    if width_px > 1:
        distance = ndimage.distance_transform_edt(~mask)
        mask = distance <= width_px / 2.0
    return mask


def _curve(points_uv: list[tuple[float, float]], rows: int, columns: int) -> np.ndarray:
    """A smooth curve through normalised (u, v) points as (row, column) samples."""
    pts = np.array(points_uv, dtype=float)
    s = np.linspace(0, 1, len(pts))
    fine = np.linspace(0, 1, 200)
    u = np.interp(fine, s, pts[:, 0])
    v = np.interp(fine, s, pts[:, 1])
    u = ndimage.gaussian_filter1d(u, 6, mode="nearest")
    v = ndimage.gaussian_filter1d(v, 6, mode="nearest")
    return np.stack([v * rows, u * columns], axis=1)


def make_chest_radiograph(
    rows: int = 512,
    columns: int = 448,
    pixel_spacing_mm: float = 0.3,
    *,
    devices: bool = True,
    ground_glass: bool = False,
    noise_sd: float = 0.015,
    seed: int = 0,
) -> ChestRadiographPhantom:
    """Draw a synthetic neonatal frontal chest radiograph.

    Parameters
    ----------
    rows, columns:
        Image size in pixels (row 0 = head, column 0 = patient's right).
    pixel_spacing_mm:
        Square pixel size in mm (default 0.3: the default image is 13.4 x 15.4 cm).
    devices:
        Draw the endotracheal and nasogastric tubes, an umbilical venous catheter, three ECG
        electrodes and their lead wires.
    ground_glass:
        RDS-like variant: raised, granular lung intensity with air bronchograms.
    noise_sd:
        Standard deviation of the additive Gaussian noise (display intensity units).
    seed:
        Seed of the random generator (noise, texture, device paths).

    Returns
    -------
    ChestRadiographPhantom
        The image (display intensity, 0..1) with its exact lung label map.
    """
    rng = np.random.default_rng(seed)
    shape = (rows, columns)
    vv, uu = np.mgrid[0:rows, 0:columns].astype(np.float32)
    vv /= rows
    uu /= columns

    # Body: neck above, trunk below with rounded shoulders.
    half_width = np.where(
        vv < 0.08,
        0.13,
        np.where(vv < 0.16, 0.13 + (0.385 - 0.13) * np.sin((vv - 0.08) / 0.08 * np.pi / 2), 0.385),
    )
    body = np.abs(uu - 0.5) <= half_width
    image = np.full(shape, INTENSITY["air"], dtype=np.float32)
    gradient = 0.03 * (vv - 0.5) + 0.02 * np.cos(np.pi * (uu - 0.5) / 0.77)
    image[body] = INTENSITY["soft_tissue"] + gradient[body]

    # Subdiaphragmatic soft tissue.
    abdomen = body & (vv > 0.70)
    image[abdomen] = INTENSITY["abdomen"] + gradient[abdomen]

    # Lungs (polygons), heart (ellipse).
    lungs = np.zeros(shape, dtype=np.uint8)
    for label, side in ((LABEL_RIGHT_LUNG, "right"), (LABEL_LEFT_LUNG, "left")):
        r, c = _lung_outline(rows, columns, side)
        rr, cc = polygon(r, c, shape)
        lungs[rr, cc] = label
    heart = ((uu - 0.555) / 0.165) ** 2 + ((vv - 0.60) / 0.115) ** 2 <= 1.0
    lungs[heart] = 0
    lung_value = INTENSITY["lung_ground_glass"] if ground_glass else INTENSITY["lung"]
    image[lungs > 0] = lung_value + 0.5 * gradient[lungs > 0]

    mediastinum = (np.abs(uu - 0.5) <= 0.055) & (vv > 0.05) & (vv < 0.72) & (lungs == 0)
    image[mediastinum] = INTENSITY["mediastinum"]
    image[heart] = INTENSITY["heart"]
    spine = (np.abs(uu - 0.5) <= 0.03) & body
    image[spine] = INTENSITY["spine"]
    # Vertebral bodies: brighter blocks separated by discs.
    vertebra = spine & (np.mod(vv * rows * pixel_spacing_mm, 7.0) > 1.5)
    image[vertebra] += 0.05

    if ground_glass:
        texture = ndimage.gaussian_filter(rng.normal(0.0, 1.0, shape), 1.2)
        texture *= 0.03 / max(float(texture.std()), 1e-6)
        inside = lungs > 0
        image[inside] += texture[inside].astype(np.float32)
        # Air bronchograms: darker branches from each hilum.
        for hilum_u, direction in ((0.43, -1.0), (0.57, 1.0)):
            for angle in np.linspace(-0.9, 0.9, 5):
                length = 0.16
                end_u = hilum_u + direction * length * np.cos(angle)
                end_v = 0.42 + length * np.sin(angle)
                branch = _polyline_mask(
                    shape,
                    np.array([[0.42 * rows, hilum_u * columns], [end_v * rows, end_u * columns]]),
                    2.0,
                )
                image[branch & inside] -= 0.09

    # Ribs and clavicles, added over everything inside the body.
    ribs = np.zeros(shape, dtype=bool)
    rib_width_px = max(2.0, 3.0 / pixel_spacing_mm)
    for k in range(8):
        v0 = 0.19 + 0.068 * k
        for sign in (-1.0, 1.0):
            curve = _curve(
                [
                    (0.5 + sign * 0.04, v0 - 0.03),
                    (0.5 + sign * 0.20, v0 - 0.045),
                    (0.5 + sign * 0.33, v0 + 0.01),
                    (0.5 + sign * 0.37, v0 + 0.07),
                ],
                rows,
                columns,
            )
            ribs |= _polyline_mask(shape, curve, rib_width_px)
    for sign in (-1.0, 1.0):
        clavicle = _curve(
            [(0.5 + sign * 0.05, 0.15), (0.5 + sign * 0.2, 0.135), (0.5 + sign * 0.33, 0.12)],
            rows,
            columns,
        )
        ribs |= _polyline_mask(shape, clavicle, rib_width_px * 1.2)
    ribs &= body
    image[ribs] += INTENSITY["rib"]

    drawn: list[str] = []
    if devices:
        px = 1.0 / pixel_spacing_mm
        ett = _curve([(0.5, 0.0), (0.505, 0.12), (0.5, 0.24)], rows, columns)
        ng = _curve(
            [(0.49, 0.0), (0.48, 0.3), (0.485, 0.6), (0.56, 0.8), (0.6, 0.86)], rows, columns
        )
        uvc = _curve([(0.52, 1.0), (0.51, 0.85), (0.50, 0.70), (0.51, 0.62)], rows, columns)
        image[_polyline_mask(shape, ett, 1.5 * px)] += INTENSITY["device"]
        image[_polyline_mask(shape, ng, 2.0 * px)] += INTENSITY["device"]
        image[_polyline_mask(shape, uvc, 1.2 * px)] += INTENSITY["device"]
        drawn += ["endotracheal tube", "nasogastric tube", "umbilical venous catheter"]
        electrodes = [(0.29, 0.38), (0.71, 0.40), (0.5, 0.86)]
        exits = [(0.0, 0.55), (1.0, 0.62), (0.15, 1.0)]
        for (eu, ev), (xu, xv) in zip(electrodes, exits):
            mid = (
                (eu + xu) / 2 + rng.uniform(-0.05, 0.05),
                (ev + xv) / 2 + rng.uniform(-0.05, 0.05),
            )
            wire = _curve([(eu, ev), mid, (xu, xv)], rows, columns)
            image[_polyline_mask(shape, wire, max(1.0, 0.8 * px))] += INTENSITY["device"] * 0.8
            rr, cc = disk((ev * rows, eu * columns), 4.0 * px, shape=shape)
            image[rr, cc] += INTENSITY["electrode"]
        drawn += ["ECG electrodes", "ECG lead wires"]

    image = ndimage.gaussian_filter(image, 0.6)
    image += rng.normal(0.0, noise_sd, shape).astype(np.float32)
    image = np.clip(image, 0.0, 1.0).astype(np.float32)
    return ChestRadiographPhantom(
        image=image,
        label_map=lungs,
        pixel_spacing_mm=(pixel_spacing_mm, pixel_spacing_mm),
        ground_glass=ground_glass,
        devices=drawn,
    )


def phantom_to_dataset(
    phantom: ChestRadiographPhantom,
    *,
    photometric_interpretation: str = "MONOCHROME2",
    modality: str = "CR",
    spacing_attribute: str = "PixelSpacing",
    estimated_magnification: float | None = None,
    bits_stored: int = 12,
    view_position: str = "AP",
    body_part_examined: str = "CHEST",
    patient_orientation: tuple[str, str] = ("L", "F"),
    study_instance_uid: str | None = None,
) -> Dataset:
    """Write a phantom as a single-frame CR or DX image (uncompressed, Explicit VR Little Endian).

    Parameters
    ----------
    phantom:
        The phantom.
    photometric_interpretation:
        ``"MONOCHROME2"`` (stored value high = white) or ``"MONOCHROME1"`` (stored value high =
        black; the phantom's intensity is inverted before storing).
    modality:
        ``"CR"`` (Computed Radiography Image Storage) or ``"DX"`` (Digital X-Ray Image Storage -
        For Presentation).
    spacing_attribute:
        ``"PixelSpacing"`` (0028,0030), ``"ImagerPixelSpacing"`` (0018,1164) or ``"none"``.
    estimated_magnification:
        Estimated Radiographic Magnification Factor (0018,1114) to write, or ``None``. With
        Imager Pixel Spacing, the detector spacing written is the phantom's spacing times this
        factor, so that the corrected spacing equals the phantom's.
    bits_stored:
        Bits Stored; values are scaled to the full range, Bits Allocated 16.
    view_position:
        View Position (0018,5101), e.g. ``"AP"``, ``"PA"``, ``"LL"``.
    body_part_examined:
        Body Part Examined (0018,0015).
    patient_orientation:
        Patient Orientation (0020,0020).
    study_instance_uid:
        Study Instance UID; a new one when ``None``.

    Returns
    -------
    pydicom.Dataset
        A dataset with file meta, ready for ``save_as`` or direct use.

    Raises
    ------
    ValueError
        For an unknown photometric interpretation, modality or spacing attribute.
    """
    if photometric_interpretation not in ("MONOCHROME1", "MONOCHROME2"):
        raise ValueError(f"unknown photometric interpretation {photometric_interpretation!r}")
    if modality not in ("CR", "DX"):
        raise ValueError(f"modality must be CR or DX, got {modality!r}")
    if spacing_attribute not in ("PixelSpacing", "ImagerPixelSpacing", "none"):
        raise ValueError(f"unknown spacing attribute {spacing_attribute!r}")
    maximum = (1 << bits_stored) - 1
    intensity = phantom.image
    if photometric_interpretation == "MONOCHROME1":
        intensity = 1.0 - intensity
    stored = np.round(intensity * maximum).astype(np.uint16)

    sop_class = _CR_IMAGE_STORAGE if modality == "CR" else _DX_IMAGE_STORAGE_PRESENTATION
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(sop_class)
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    now = datetime(2024, 1, 2, 3, 4, 5)
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = study_instance_uid or generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = modality
    ds.PatientName = "Phantom^Neonate"
    ds.PatientID = "PHANTOM-RDS"
    ds.PatientBirthDate = "20240101"
    ds.PatientSex = "O"
    ds.PatientAge = "001D"
    ds.StudyDate = now.strftime("%Y%m%d")
    ds.StudyTime = now.strftime("%H%M%S")
    ds.ContentDate = ds.StudyDate
    ds.ContentTime = ds.StudyTime
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Manufacturer = "ainode phantom"
    ds.BodyPartExamined = body_part_examined
    ds.ViewPosition = view_position
    ds.PatientOrientation = list(patient_orientation)
    ds.ImageType = ["ORIGINAL", "PRIMARY"] if modality == "CR" else ["ORIGINAL", "PRIMARY", ""]
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = photometric_interpretation
    ds.Rows, ds.Columns = stored.shape
    ds.BitsAllocated = 16
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = 0
    ds.RescaleSlope = 1
    ds.WindowCenter = maximum / 2.0
    ds.WindowWidth = float(maximum + 1)
    if modality == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.PresentationLUTShape = (
            "IDENTITY" if photometric_interpretation == "MONOCHROME2" else "INVERSE"
        )
        ds.DetectorType = "SCINTILLATOR"
        ds.RescaleType = "US"
        ds.PatientOrientation = list(patient_orientation)
    row_mm, col_mm = phantom.pixel_spacing_mm
    if spacing_attribute == "PixelSpacing":
        ds.PixelSpacing = [row_mm, col_mm]
    elif spacing_attribute == "ImagerPixelSpacing":
        factor = estimated_magnification or 1.0
        ds.ImagerPixelSpacing = [round(row_mm * factor, 6), round(col_mm * factor, 6)]
    if estimated_magnification is not None:
        ds.EstimatedRadiographicMagnificationFactor = estimated_magnification
    ds.PixelData = stored.tobytes()
    return ds


__all__ = [
    "INTENSITY",
    "LABEL_LEFT_LUNG",
    "LABEL_RIGHT_LUNG",
    "ChestRadiographPhantom",
    "make_chest_radiograph",
    "phantom_to_dataset",
]
