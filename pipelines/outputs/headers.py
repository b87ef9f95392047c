"""Source headers for the outputs: the copy handed to highdicom, character set, equipment.

Patient and study attributes are copied from the source images into every output (highdicom
does so from the headers given here). The copy is tolerant of what PACS send: values that do not
conform to their VR are written empty, with a note that names the attribute, never its value.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import pydicom
from pydicom.dataset import Dataset

from pipelines.headers import positive_number

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


def source_header(ds: Dataset, notes: set[str]) -> Dataset:
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


#: VRs whose values are encoded with the Specific Character Set (PS3.5 §6.1.2.3).
_TEXT_VRS = frozenset({"SH", "LO", "ST", "LT", "UT", "UC", "PN"})


def declare_character_set(ds: Dataset) -> None:
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
class Equipment:
    """General Equipment module values shared by the three objects."""

    manufacturer: str
    software_version: str
    device_serial_number: str
    institution_name: str | None


def set_common(
    ds: Dataset,
    *,
    description: str,
    institution_name: str | None,
    device_serial_number: str,
) -> None:
    """Series Description, Institution Name and Device Serial Number of an output."""
    ds.SeriesDescription = description[:64]
    if institution_name:
        ds.InstitutionName = institution_name[:64]
    ds.DeviceSerialNumber = device_serial_number
