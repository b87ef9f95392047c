"""CT header pieces shared by the digital phantoms' DICOM writers (abdomen, head).

Every phantom instance is CT Image Storage (DICOM PS3.3 A.3), Explicit VR Little Endian,
unsigned 16-bit stored values with rescale intercept -1024 HU and slope 1.
"""

from __future__ import annotations

from datetime import datetime

import numpy as np
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import UID, ExplicitVRLittleEndian, generate_uid

#: CT Image Storage SOP Class UID (PS3.4 B.5).
CT_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.2"
#: Stored value 0 is this many HU (stored = HU + 1024, unsigned 16 bits).
RESCALE_INTERCEPT_HU = -1024.0


def new_ct_instance(entropy: list[str], k: int, image_type: list[str], now: datetime,
                    accession_number: str, modality: str = "CT") -> Dataset:
    """A CT instance with its file meta, SOP Common and date/time attributes set.

    Parameters
    ----------
    entropy:
        Entropy sources of the series; the SOP Instance UID is derived from them and ``k``
        (reproducible for the same phantom).
    k:
        Instance index in the series (0-based).
    image_type:
        Image Type values.
    now:
        Study, series and content date and time.
    accession_number:
        Accession Number.
    modality:
        Modality (``"CT"``; the abdomen phantom can write another to test refusals).
    """
    sop_uid = generate_uid(entropy_srcs=entropy + ["instance", str(k)])
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = UID(CT_IMAGE_STORAGE)
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = list(image_type)
    ds.SOPClassUID = UID(CT_IMAGE_STORAGE)
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = now.strftime("%Y%m%d")
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = now.strftime("%H%M%S")
    ds.AccessionNumber = accession_number
    ds.Modality = modality
    ds.Manufacturer = "ainode digital phantom"
    ds.ReferringPhysicianName = ""
    return ds


def set_ct_pixels(ds: Dataset, stored: np.ndarray, pixel_spacing_mm: float,
                  window_center_hu: float, window_width_hu: float) -> None:
    """Set the Image Pixel attributes, pixel spacing, rescale (HU) and window of ``ds``.

    Parameters
    ----------
    ds:
        The instance, changed in place.
    stored:
        ``(rows, columns)`` uint16 stored values (HU - :data:`RESCALE_INTERCEPT_HU`).
    pixel_spacing_mm:
        Square pixel spacing, mm.
    window_center_hu, window_width_hu:
        Default display window, HU.
    """
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = stored.shape
    ds.PixelSpacing = [f"{pixel_spacing_mm:g}", f"{pixel_spacing_mm:g}"]
    ds.BitsAllocated = 16
    ds.BitsStored = 16
    ds.HighBit = 15
    ds.PixelRepresentation = 0
    ds.RescaleIntercept = f"{RESCALE_INTERCEPT_HU:g}"
    ds.RescaleSlope = "1"
    ds.RescaleType = "HU"
    ds.WindowCenter = f"{window_center_hu:g}"
    ds.WindowWidth = f"{window_width_hu:g}"
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
