"""Wrap a plain chest-radiograph picture (JPEG/PNG, no DICOM header) as a DX DICOM image.

The paediatric radiographs of the real-data corpus (Kermany et al., Cell 2018, CC BY 4.0) are
published as JPEG files without any header. :func:`wrap_chest_picture` makes a DX Image
(For Presentation) from one: MONOCHROME2, 8 bits, **no Pixel Spacing** (none is known), fresh
UIDs, Patient's Age such as ``"003Y"``, Body Part Examined CHEST, View Position AP or PA and
Patient Orientation ``L\\F`` (the usual display of a frontal chest film, which is how these
pictures are published). Tests only: nothing here is imported by the product.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
from PIL import Image
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import DigitalXRayImageStorageForPresentation, ExplicitVRLittleEndian, generate_uid


def wrap_chest_array(
    pixels: np.ndarray,
    *,
    patient_age: str = "003Y",
    view_position: str = "AP",
    patient_id: str = "RD-CXR",
) -> Dataset:
    """A DX For Presentation dataset holding ``pixels``.

    Parameters
    ----------
    pixels:
        ``(rows, columns)`` uint8, 0 = black (MONOCHROME2), as displayed.
    patient_age:
        Patient's Age (0010,1010), AS value representation (``nnnY``/``nnnM``/``nnnW``/``nnnD``).
    view_position:
        View Position (0018,5101): ``AP`` or ``PA``.
    patient_id:
        Patient ID (0010,0020).

    Returns
    -------
    pydicom.dataset.Dataset
        With file meta (Explicit VR Little Endian), ready for ``save_as`` or a pipeline.
    """
    pixels = np.ascontiguousarray(pixels, dtype=np.uint8)
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = DigitalXRayImageStorageForPresentation
    ds.file_meta.MediaStorageSOPInstanceUID = generate_uid()
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.SOPClassUID = DigitalXRayImageStorageForPresentation
    ds.SOPInstanceUID = ds.file_meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.PatientName = "Realdata^Paediatric"
    ds.PatientID = patient_id
    ds.PatientBirthDate = ""
    ds.PatientSex = "O"
    ds.PatientAge = patient_age
    ds.StudyDate = "20180101"
    ds.StudyTime = "120000"
    ds.ContentDate = "20180101"
    ds.ContentTime = "120000"
    ds.AccessionNumber = ""
    ds.ReferringPhysicianName = ""
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.Modality = "DX"
    ds.Manufacturer = "unknown (wrapped JPEG)"
    ds.ImageType = ["DERIVED", "PRIMARY"]
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = view_position
    ds.PatientOrientation = ["L", "F"]
    ds.BurnedInAnnotation = "NO"
    ds.LossyImageCompression = "01"
    ds.LossyImageCompressionRatio = "10"
    ds.LossyImageCompressionMethod = "ISO_10918_1"
    ds.DetectorType = "SCINTILLATOR"
    ds.PixelIntensityRelationship = "LOG"
    ds.PixelIntensityRelationshipSign = 1
    ds.RescaleIntercept = "0"
    ds.RescaleSlope = "1"
    ds.RescaleType = "US"
    ds.WindowCenter = "127.5"
    ds.WindowWidth = "256"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.Rows, ds.Columns = pixels.shape
    ds.BitsAllocated = 8
    ds.BitsStored = 8
    ds.HighBit = 7
    ds.PixelRepresentation = 0
    ds.PixelData = pixels.tobytes()
    return ds


def wrap_chest_picture(path: Path | str, **kwargs: str) -> Dataset:
    """Read a grayscale picture file and wrap it with :func:`wrap_chest_array`.

    Parameters
    ----------
    path:
        JPEG or PNG file of a frontal chest radiograph, as displayed (dark lungs).
    **kwargs:
        Passed to :func:`wrap_chest_array` (``patient_age``, ``view_position``, ``patient_id``).

    Returns
    -------
    pydicom.dataset.Dataset
    """
    with Image.open(path) as picture:
        pixels = np.asarray(picture.convert("L"))
    return wrap_chest_array(pixels, **kwargs)
