"""Small synthetic CT series (head, chest, abdomen) for the body-region and routing tests.

Each phantom is a few axial slices of simple ellipses with textbook Hounsfield units (air -1000,
fat -100, soft tissue 40, brain 35, cortical bone 1000, lung -850), written as real CT Image
Storage datasets so that they go through :func:`pipelines.volume.load_ct_volume` like received
images. The ground truth is the region the phantom was drawn as.

Imported by ``tests/pipelines/test_body_region.py`` and loaded by path from
``tests/node/test_routing.py`` (``tests`` is not a package).
"""

from __future__ import annotations

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

AIR_HU, FAT_HU, SOFT_HU, BRAIN_HU, WHITE_MATTER_HU, BONE_HU, LUNG_HU = (
    -1000,
    -100,
    40,
    38,
    26,
    1000,
    -850,
)


def _ellipse(
    shape: tuple[int, int],
    pixel_mm: float,
    centre_mm: tuple[float, float],
    semi_axes_mm: tuple[float, float],
) -> np.ndarray:
    """Boolean mask of an ellipse; centre (row, column) relative to the image centre, in mm."""
    rows, columns = np.indices(shape, dtype=float)
    rows = (rows - (shape[0] - 1) / 2) * pixel_mm - centre_mm[0]
    columns = (columns - (shape[1] - 1) / 2) * pixel_mm - centre_mm[1]
    return (rows / semi_axes_mm[0]) ** 2 + (columns / semi_axes_mm[1]) ** 2 <= 1.0


def head_slice(size: int = 96, pixel_mm: float = 2.5) -> np.ndarray:
    """Axial head: scalp, a 7 mm skull ring, brain (gray 38 HU with a white-matter core 26 HU)."""
    shape = (size, size)
    image = np.full(shape, AIR_HU, dtype=np.float32)
    image[_ellipse(shape, pixel_mm, (0, 0), (95, 78))] = SOFT_HU
    image[_ellipse(shape, pixel_mm, (0, 0), (90, 73))] = BONE_HU
    image[_ellipse(shape, pixel_mm, (0, 0), (83, 66))] = BRAIN_HU
    image[_ellipse(shape, pixel_mm, (0, 0), (50, 35))] = WHITE_MATTER_HU
    return image


def chest_slice(size: int = 128, pixel_mm: float = 3.5) -> np.ndarray:
    """Axial chest: body with subcutaneous fat, two lungs, mediastinum and a vertebra."""
    shape = (size, size)
    image = np.full(shape, AIR_HU, dtype=np.float32)
    image[_ellipse(shape, pixel_mm, (0, 0), (110, 160))] = FAT_HU
    image[_ellipse(shape, pixel_mm, (0, 0), (98, 148))] = SOFT_HU
    # Rows run anterior -> posterior, columns right -> left (canonical HPL display).
    image[_ellipse(shape, pixel_mm, (5, -72), (70, 50))] = LUNG_HU
    image[_ellipse(shape, pixel_mm, (5, 72), (70, 50))] = LUNG_HU
    image[_ellipse(shape, pixel_mm, (72, 0), (16, 16))] = BONE_HU
    return image


def abdomen_slice(size: int = 128, pixel_mm: float = 3.5) -> np.ndarray:
    """Axial abdomen: subcutaneous fat, muscle, liver, kidneys, visceral fat, vertebra; no air."""
    shape = (size, size)
    image = np.full(shape, AIR_HU, dtype=np.float32)
    image[_ellipse(shape, pixel_mm, (0, 0), (120, 170))] = FAT_HU
    image[_ellipse(shape, pixel_mm, (0, 0), (100, 150))] = SOFT_HU
    image[_ellipse(shape, pixel_mm, (-10, -60), (55, 60))] = 60  # liver
    image[_ellipse(shape, pixel_mm, (50, -55), (20, 14))] = 30  # right kidney
    image[_ellipse(shape, pixel_mm, (50, 55), (20, 14))] = 30  # left kidney
    image[_ellipse(shape, pixel_mm, (-20, 50), (30, 40))] = FAT_HU  # visceral fat
    image[_ellipse(shape, pixel_mm, (70, 0), (18, 18))] = BONE_HU  # vertebra
    return image


def ct_series(
    slices: list[np.ndarray],
    pixel_mm: float,
    *,
    slice_thickness_mm: float = 5.0,
    body_part: str | None = None,
    study_description: str = "",
    series_description: str = "",
    image_orientation: tuple[float, ...] = (1, 0, 0, 0, 1, 0),
    contrast_agent: str | None = None,
) -> list[Dataset]:
    """CT Image Storage datasets for axial slices given feet -> head, rows anterior -> posterior.

    Parameters
    ----------
    slices:
        ``(rows, columns)`` float HU images, in order of increasing z (feet to head).
    pixel_mm:
        Pixel Spacing (both directions).
    """
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    datasets = []
    for index, hu in enumerate(slices):
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.file_meta.MediaStorageSOPClassUID = CTImageStorage
        sop_uid = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = sop_uid
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = sop_uid
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.Modality = "CT"
        ds.Manufacturer = "phantom"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        if body_part is not None:
            ds.BodyPartExamined = body_part
        if contrast_agent is not None:
            ds.ContrastBolusAgent = contrast_agent
        ds.InstanceNumber = index + 1
        ds.ImageOrientationPatient = list(image_orientation)
        ds.ImagePositionPatient = [
            -(hu.shape[1] - 1) / 2 * pixel_mm,
            -(hu.shape[0] - 1) / 2 * pixel_mm,
            index * slice_thickness_mm,
        ]
        ds.PixelSpacing = [pixel_mm, pixel_mm]
        ds.SliceThickness = slice_thickness_mm
        ds.Rows, ds.Columns = hu.shape
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.BitsAllocated = 16
        ds.BitsStored = 16
        ds.HighBit = 15
        ds.PixelRepresentation = 0
        ds.RescaleIntercept = -1024
        ds.RescaleSlope = 1
        ds.RescaleType = "HU"
        ds.PixelData = np.clip(np.round(hu + 1024), 0, 65535).astype(np.uint16).tobytes()
        datasets.append(ds)
    return datasets


def head_series(**kwargs: object) -> list[Dataset]:
    """Six slices of :func:`head_slice`, 2.5 mm pixels."""
    return ct_series([head_slice()] * 6, 2.5, **kwargs)  # type: ignore[arg-type]


def chest_series(**kwargs: object) -> list[Dataset]:
    """Six slices of :func:`chest_slice`, 3.5 mm pixels."""
    return ct_series([chest_slice()] * 6, 3.5, **kwargs)  # type: ignore[arg-type]


def abdomen_series(**kwargs: object) -> list[Dataset]:
    """Six slices of :func:`abdomen_slice`, 3.5 mm pixels."""
    return ct_series([abdomen_slice()] * 6, 3.5, **kwargs)  # type: ignore[arg-type]
