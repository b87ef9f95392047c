"""Reading DICOM instances and turning a CT series into a Hounsfield-unit volume.

Geometry always comes from the headers (Image Orientation (Patient) and Image Position (Patient),
PS3.3 C.7.6.2), never from file order or Instance Number, and never assumes a supine patient or an
axial acquisition. Volumes are built with :func:`highdicom.get_volume_from_series` and put into one
canonical patient orientation, ``"HPL"``:

* axis 0 (slices) runs from feet to head (H),
* axis 1 (rows) from anterior to posterior (P),
* axis 2 (columns) from the patient's right to left (L),

i.e. the radiological display of axial images with slice index increasing cranially. Volumes that
are not axis-aligned (oblique or tilted acquisitions) are permuted/flipped to the closest
orientation without resampling, so one canonical voxel is always one source voxel, and masks map
back to the source frames exactly (:meth:`CTVolume.to_source_frames`).
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset
from pydicom.errors import InvalidDicomError
from pydicom.uid import UID

from pipelines.errors import InvalidInputError, InvalidSeriesError, UnsupportedInputError
from pipelines.headers import header_copy, positive_number

logger = logging.getLogger(__name__)

#: Canonical patient orientation of :attr:`CTVolume.hu` (see module docstring).
CANONICAL_ORIENTATION = "HPL"

CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2")
ENHANCED_CT_IMAGE_STORAGE = UID("1.2.840.10008.5.1.4.1.1.2.1")
CT_SOP_CLASSES = frozenset({CT_IMAGE_STORAGE, ENHANCED_CT_IMAGE_STORAGE})

#: Decimals to which Image Orientation (Patient) is rounded when grouping frames by geometry.
_ORIENTATION_DECIMALS = 3

#: Environment variable holding the largest decoded image (MiB) that may be decoded; the node
#: sets it from ``max_image_mb`` (node/config.py) for its job children, and it is that setting's
#: own environment name, so a Celery worker given it in its environment applies it too.
MAX_IMAGE_MB_ENV = "AINODE_MAX_IMAGE_MB"
#: Default of ``max_image_mb``: 2 GiB, e.g. 4,096 frames of 512 x 512 x 16 bit, or one
#: 32,768 x 32,768 x 16 bit image.
DEFAULT_MAX_IMAGE_MB = 2048.0


def max_image_bytes() -> int:
    """Largest decoded pixel data of one image that may be decoded (bytes).

    From the environment variable :data:`MAX_IMAGE_MB_ENV` (MiB), else
    :data:`DEFAULT_MAX_IMAGE_MB`; a value that is not a positive number falls back to the default.
    """
    try:
        value = float(os.environ.get(MAX_IMAGE_MB_ENV, DEFAULT_MAX_IMAGE_MB))
    except ValueError:
        value = DEFAULT_MAX_IMAGE_MB
    if not value > 0:
        value = DEFAULT_MAX_IMAGE_MB
    return int(value * 2**20)


def declared_pixel_bytes(ds: Dataset) -> int:
    """Bytes the decoded pixel data of ``ds`` takes, as its header declares it.

    Rows x Columns x Samples per Pixel x Number of Frames x ceil(Bits Allocated / 8)
    (PS3.5 §8.1.1, PS3.3 C.7.6.3). Read from the header only: nothing is decoded.

    Raises
    ------
    InvalidInputError
        If Rows, Columns or Bits Allocated is missing or not a number.
    """
    try:
        rows = int(ds.Rows)
        columns = int(ds.Columns)
        samples = int(ds.get("SamplesPerPixel", 1) or 1)
        frames = int(ds.get("NumberOfFrames", 1) or 1)
        bits = int(ds.BitsAllocated)
    except (AttributeError, TypeError, ValueError) as exc:
        raise InvalidInputError(
            f"SOP Instance UID {ds.get('SOPInstanceUID', '?')}: image pixel description "
            f"incomplete ({exc}); re-send the image from the modality or PACS"
        ) from exc
    return max(rows, 0) * max(columns, 0) * max(samples, 1) * max(frames, 1) * ((bits + 7) // 8)


def check_image_size(ds: Dataset, limit_bytes: int | None = None) -> None:
    """Refuse an image whose declared decoded size exceeds the limit, before any decoding.

    A few bytes of RLE or JPEG can claim 65535 x 65535 pixels; decoding would allocate what the
    header says. Call this before ``ds.pixel_array`` or any loader that decodes.

    Parameters
    ----------
    ds:
        The image (its header suffices).
    limit_bytes:
        Largest decoded size allowed; ``None``: :func:`max_image_bytes`.

    Raises
    ------
    InvalidInputError
        If the declared size is larger than the limit (the message gives both sizes and the
        setting to change), or the pixel description is incomplete.
    """
    if "Rows" not in ds and "PixelData" not in ds:
        return
    limit = max_image_bytes() if limit_bytes is None else int(limit_bytes)
    size = declared_pixel_bytes(ds)
    if size > limit:
        raise InvalidInputError(
            f"SOP Instance UID {ds.get('SOPInstanceUID', '?')}: the image declares "
            f"{int(ds.Rows)} x {int(ds.Columns)} pixels x "
            f"{int(ds.get('NumberOfFrames', 1) or 1)} frame(s) = {size / 2**20:,.0f} MiB decoded, "
            f"more than the limit of {limit / 2**20:,.0f} MiB (max_image_mb); it was not decoded. "
            "Check the sender, or raise max_image_mb if such images are expected"
        )


def expand_paths(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and directories (recursively) into a sorted list of regular files.

    Parameters
    ----------
    paths:
        Files and/or directories.

    Returns
    -------
    list[pathlib.Path]
        Every regular file found, sorted by path; hidden files (``.name``) are skipped.

    Raises
    ------
    InvalidInputError
        If a path does not exist.
    """
    files: list[Path] = []
    for raw in paths:
        path = Path(raw)
        if path.is_dir():
            files.extend(
                p for p in path.rglob("*") if p.is_file() and not p.name.startswith(".")
            )
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInputError(f"{path}: no such file or directory")
    return sorted(files)


def read_instance(path: str | os.PathLike[str], *, stop_before_pixels: bool = False) -> Dataset:
    """Read one DICOM Part 10 file, tolerant of minor deviations.

    Same as :func:`read_instance_with_warnings`, with the repairs logged instead of returned.

    Raises
    ------
    InvalidInputError
        If the file is not DICOM, is truncated, or cannot be identified.
    """
    ds, warnings = read_instance_with_warnings(path, stop_before_pixels=stop_before_pixels)
    for warning in warnings:
        logger.info("%s: %s", Path(path).name, warning)
    return ds


def read_instance_with_warnings(
    path: str | os.PathLike[str], *, stop_before_pixels: bool = False
) -> tuple[Dataset, list[str]]:
    """Read one DICOM Part 10 file, repairing what real archives get wrong.

    Repairs (each reported as a warning, never silently; the file on disk is not changed):

    * an empty or absent SOP Class / SOP Instance UID in the data set is taken from the File Meta
      Information (Media Storage SOP Class / Instance UID, PS3.10 §7.1);
    * an empty Study / Series Instance UID is replaced by a UID derived deterministically from
      the other identifying attributes (the same series always gets the same UID);
    * vendor private elements whose value cannot be decoded with the VR of pydicom's private
      dictionary (e.g. a length that is not a multiple of the VR's size) are dropped; nothing in
      ainode reads private elements.

    Parameters
    ----------
    path:
        The file.
    stop_before_pixels:
        Skip Pixel Data (for routing decisions on headers only).

    Returns
    -------
    tuple[pydicom.Dataset, list[str]]
        The dataset with its file meta information, and the repairs made.

    Raises
    ------
    InvalidInputError
        If the file is not DICOM, is truncated, or has no SOP Class / SOP Instance UID in the data
        set nor in the file meta information.
    """
    try:
        ds = pydicom.dcmread(path, stop_before_pixels=stop_before_pixels)
        warnings = _repair_identifiers(ds)
        warnings.extend(_drop_undecodable_private_elements(ds))
        # Touch the identifying elements so that a truncated header fails here, not later.
        sop_class_uid = ds.SOPClassUID
        sop_instance_uid = ds.SOPInstanceUID
    except InvalidDicomError as exc:
        raise InvalidInputError(f"{path}: not a DICOM Part 10 file ({exc})") from exc
    except AttributeError as exc:
        raise InvalidInputError(
            f"{path}: missing SOP Class UID or SOP Instance UID ({exc}); the object cannot be "
            "identified"
        ) from exc
    except (EOFError, OSError, ValueError, KeyError, TypeError) as exc:
        raise InvalidInputError(f"{path}: unreadable or truncated DICOM file ({exc})") from exc
    if not sop_class_uid or not sop_instance_uid:
        raise InvalidInputError(f"{path}: empty SOP Class UID or SOP Instance UID")
    return ds, warnings


#: Attributes from which a missing Study Instance UID / Series Instance UID is derived.
_STUDY_IDENTITY = ("PatientID", "StudyDate", "StudyTime", "AccessionNumber", "StudyID")
_SERIES_IDENTITY = (
    "FrameOfReferenceUID", "SeriesDate", "SeriesTime", "SeriesNumber", "SeriesDescription",
    "ImageOrientationPatient", "PixelSpacing", "Rows", "Columns",
)


def _repair_identifiers(ds: Dataset) -> list[str]:
    """Fill empty identifying UIDs (see :func:`read_instance_with_warnings`); return warnings."""
    warnings: list[str] = []
    meta = getattr(ds, "file_meta", None)
    for keyword, meta_keyword in (
        ("SOPClassUID", "MediaStorageSOPClassUID"),
        ("SOPInstanceUID", "MediaStorageSOPInstanceUID"),
    ):
        if not ds.get(keyword) and meta is not None and meta.get(meta_keyword):
            setattr(ds, keyword, meta[meta_keyword].value)
            warnings.append(
                f"{keyword} was empty in the data set; taken from the file meta information"
            )
    for keyword, sources in (
        ("StudyInstanceUID", _STUDY_IDENTITY),
        ("SeriesInstanceUID", (*_STUDY_IDENTITY, *_SERIES_IDENTITY)),
    ):
        if ds.get(keyword):
            continue
        entropy = [keyword] + [str(ds.get(name, "")) for name in sources]
        if keyword == "SeriesInstanceUID":
            entropy.append(str(ds.get("StudyInstanceUID", "")))
        setattr(ds, keyword, pydicom.uid.generate_uid(entropy_srcs=entropy))
        warnings.append(
            f"{keyword} was empty; a UID derived from the other identifying attributes was used "
            "(the outputs cannot be filed in the source's study in a PACS)"
        )
    return warnings


def _drop_undecodable_private_elements(ds: Dataset) -> list[str]:
    """Delete private elements whose value does not decode; return the warning.

    See :func:`read_instance_with_warnings`.
    """
    broken: list[str] = []

    def visit(dataset: Dataset) -> None:
        for tag in list(dataset.keys()):
            if not tag.is_private:
                try:
                    elem = dataset[tag]
                except Exception:  # noqa: BLE001 - a standard element that fails is reported later
                    continue
                if elem.VR == "SQ":
                    for item in elem.value:
                        visit(item)
                continue
            try:
                elem = dataset[tag]
                if elem.VR == "SQ":
                    for item in elem.value:
                        visit(item)
                else:
                    elem.value  # noqa: B018 - decoding is the check
            except Exception:  # noqa: BLE001 - any decoding failure of a private element
                del dataset[tag]
                broken.append(str(tag))

    visit(ds)
    if not broken:
        return []
    return [
        f"dropped {len(broken)} vendor private element(s) whose value cannot be decoded "
        f"(first: {broken[0]}); private elements are not used"
    ]


@dataclass
class ReadResult:
    """Datasets read from files, plus one message per file that could not be read."""

    datasets: list[Dataset] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_instances(
    paths: Iterable[str | os.PathLike[str]], *, stop_before_pixels: bool = False
) -> ReadResult:
    """Read many files, collecting errors instead of stopping at the first bad file.

    Parameters
    ----------
    paths:
        Files and/or directories (expanded with :func:`expand_paths`).
    stop_before_pixels:
        Skip Pixel Data.

    Returns
    -------
    ReadResult
        Readable datasets and one error message per unreadable file.

    Raises
    ------
    InvalidInputError
        If a path does not exist.
    """
    result = ReadResult()
    for path in expand_paths(paths):
        try:
            ds, _warnings = read_instance_with_warnings(path, stop_before_pixels=stop_before_pixels)
            result.datasets.append(ds)
        except InvalidInputError as exc:
            result.errors.append(str(exc))
    return result


def group_by_series(datasets: Iterable[Dataset]) -> dict[str, list[Dataset]]:
    """Group datasets by Series Instance UID, dropping repeated SOP Instance UIDs.

    Returns
    -------
    dict[str, list[pydicom.Dataset]]
        Series Instance UID -> its datasets, in input order.
    """
    series: dict[str, list[Dataset]] = defaultdict(list)
    seen: set[str] = set()
    for ds in datasets:
        uid = str(ds.SOPInstanceUID)
        if uid in seen:
            continue
        seen.add(uid)
        series[str(ds.get("SeriesInstanceUID", ""))].append(ds)
    return dict(series)


@dataclass
class CTVolume:
    """A CT series as a Hounsfield-unit volume in canonical orientation.

    Attributes
    ----------
    hu: numpy.ndarray
        ``(slices, rows, columns)`` ``float32`` Hounsfield units (Modality LUT applied), in the
        canonical ``"HPL"`` orientation (slices feet→head, rows anterior→posterior, columns
        right→left).
    spacing_mm: tuple[float, float, float]
        Voxel spacing in mm along (slices, rows, columns) of :attr:`hu`. For a single slice the
        slice spacing is Slice Thickness (or 1.0 mm if absent).
    volume: highdicom.Volume
        The canonical volume with its affine (LPS patient coordinates, mm).
    datasets: list[pydicom.Dataset]
        The source datasets used (single frame images), Pixel Data removed.
    source_volume: highdicom.Volume
        The volume in highdicom's own (source) ordering; used to map masks back.
    frame_of_source_slice: list[int]
        For each slice of :attr:`source_volume`, the index into :attr:`datasets`.
    warnings: list[str]
        Deviations tolerated while reading (localizers dropped, mixed geometry...).
    frame_shift_px: list[tuple[float, float]] | None
        Only for gantry-tilted (sheared) series: for each of :attr:`datasets`, the in-plane
        (row, column) shift in pixels applied to that image to put it on the orthogonal grid of
        :attr:`hu` (see :func:`gantry_tilt_shear`); :meth:`to_source_frames` shifts masks
        back. ``None`` for orthogonal series.
    source_slice_of_frame: list[int] | None
        Only for unevenly spaced series resampled onto a regular grid: for each of
        :attr:`datasets`, the slice of :attr:`source_volume` nearest to it (masks are mapped
        back by nearest slice). ``None`` when source slices and images correspond one to one.
    interpolated_source_slices: list[int]
        Slices of :attr:`source_volume` that were interpolated across a gap of missing slices
        (empty for complete series).
    """

    hu: np.ndarray
    spacing_mm: tuple[float, float, float]
    volume: hd.Volume
    datasets: list[Dataset]
    source_volume: hd.Volume
    frame_of_source_slice: list[int]
    warnings: list[str] = field(default_factory=list)
    frame_shift_px: list[tuple[float, float]] | None = None
    source_slice_of_frame: list[int] | None = None
    interpolated_source_slices: list[int] = field(default_factory=list)

    @property
    def is_single_slice(self) -> bool:
        """``True`` when the series has one image."""
        return len(self.datasets) == 1

    @property
    def slice_axis_is_axial(self) -> bool:
        """``True`` when the source images are (closest to) axial."""
        orientation = self.source_volume.get_closest_patient_orientation()
        return orientation[0].value in ("H", "F")

    def to_source_frames(self, mask: np.ndarray) -> np.ndarray:
        """Map a canonical mask back onto the source frames.

        Parameters
        ----------
        mask:
            ``(slices, rows, columns)`` array on the grid of :attr:`hu`.

        Returns
        -------
        numpy.ndarray
            ``(len(datasets), Rows, Columns)`` array, frame ``i`` lying on ``datasets[i]``.

        Raises
        ------
        ValueError
            If ``mask`` does not have the shape of :attr:`hu`.
        """
        if mask.shape != self.hu.shape:
            raise ValueError(f"mask shape {mask.shape} differs from volume shape {self.hu.shape}")
        in_source = self.volume.with_array(mask).match_geometry(self.source_volume).array
        frames = np.zeros((len(self.datasets), *in_source.shape[1:]), dtype=mask.dtype)
        if self.source_slice_of_frame is not None:
            for frame_index, slice_index in enumerate(self.source_slice_of_frame):
                frames[frame_index] = in_source[slice_index]
        else:
            for slice_index, frame_index in enumerate(self.frame_of_source_slice):
                frames[frame_index] = in_source[slice_index]
        if self.frame_shift_px is not None:
            from scipy import ndimage

            for frame_index, (shift_rows, shift_columns) in enumerate(self.frame_shift_px):
                if shift_rows or shift_columns:
                    frames[frame_index] = ndimage.shift(
                        frames[frame_index], (-shift_rows, -shift_columns), order=0,
                        mode="constant", cval=0,
                    )
        return frames

    def source_frame_of_slice(self, canonical_slice: int) -> int | None:
        """Index into :attr:`datasets` of the source image holding canonical slice ``k``.

        Returns ``None`` when the source images are not axial (a canonical axial slice then cuts
        through many source frames).
        """
        if not self.slice_axis_is_axial:
            return None
        marker = np.zeros(self.hu.shape, dtype=np.uint8)
        marker[canonical_slice] = 1
        frames = self.to_source_frames(marker)
        hits = np.flatnonzero(frames.reshape(len(self.datasets), -1).any(axis=1))
        return int(hits[0]) if len(hits) == 1 else None


def _geometry_key(ds: Dataset) -> tuple[object, ...]:
    iop = ds.get("ImageOrientationPatient")
    iop_key = tuple(np.round(np.asarray(iop, dtype=float), _ORIENTATION_DECIMALS)) if iop else None
    spacing = ds.get("PixelSpacing")
    spacing_key = tuple(round(float(v), 4) for v in spacing) if spacing else None
    return (iop_key, int(ds.get("Rows", 0)), int(ds.get("Columns", 0)), spacing_key)


def _is_localizer(ds: Dataset) -> bool:
    image_type = [str(v).upper() for v in ds.get("ImageType", [])]
    return "LOCALIZER" in image_type


def select_volume_frames(datasets: Sequence[Dataset]) -> tuple[list[Dataset], list[str]]:
    """Choose the images of a series that form one volume.

    Localizers are dropped; when images of several geometries (orientation, matrix size, pixel
    spacing) are mixed in one series, the largest group is kept and the others are reported.

    Parameters
    ----------
    datasets:
        The datasets of one series (single frame images), in any order.

    Returns
    -------
    tuple[list[pydicom.Dataset], list[str]]
        The kept datasets and warnings.

    Raises
    ------
    InvalidSeriesError
        If nothing is left (e.g. the series holds only localizers) or geometry tags are missing.
    """
    warnings: list[str] = []
    images = [ds for ds in datasets if not _is_localizer(ds)]
    if len(images) < len(datasets):
        warnings.append(f"dropped {len(datasets) - len(images)} localizer image(s)")
    if not images:
        raise UnsupportedInputError(
            "the series holds only localizer images (Image Type LOCALIZER); send the axial "
            "reconstruction instead"
        )
    missing = [
        str(ds.SOPInstanceUID)
        for ds in images
        if "ImageOrientationPatient" not in ds
        or "ImagePositionPatient" not in ds
        or "PixelSpacing" not in ds
    ]
    if missing:
        raise InvalidSeriesError(
            f"{len(missing)} image(s) lack Image Orientation (Patient), Image Position (Patient) "
            f"or Pixel Spacing (first: SOP Instance UID {missing[0]}); the geometry cannot be "
            "established"
        )
    groups: dict[tuple[object, ...], list[Dataset]] = defaultdict(list)
    for ds in images:
        groups[_geometry_key(ds)].append(ds)
    if len(groups) > 1:
        sizes = Counter({key: len(group) for key, group in groups.items()})
        (best, kept), *_ = sizes.most_common(1)
        warnings.append(
            f"mixed geometry in one series: {len(groups)} groups of images with different "
            f"orientation/matrix/pixel spacing; kept the largest ({kept} of {len(images)} images)"
        )
        images = groups[best]
    warnings.extend(_unify_frame_of_reference(images))
    # Duplicate positions (e.g. two reconstructions in one series) make the volume ambiguous.
    positions = Counter(
        tuple(np.round(np.asarray(ds.ImagePositionPatient, dtype=float), 2)) for ds in images
    )
    duplicates = sum(count - 1 for count in positions.values() if count > 1)
    if duplicates:
        raise InvalidSeriesError(
            f"{duplicates} image(s) share an Image Position (Patient) with another image of the "
            "same series (two reconstructions mixed in one series?); send each reconstruction "
            "as its own series"
        )
    return images, warnings


def _unify_frame_of_reference(images: list[Dataset]) -> list[str]:
    """Give images of one geometry group one Frame of Reference UID; return warnings.

    Some de-identification tools give every image its own (or no) Frame of Reference UID
    (PS3.3 C.7.4.1) although the images come from one acquisition. Once the images are known to
    share orientation, matrix and pixel spacing (the caller's grouping) and are one series,
    their positions are taken as one coordinate system: the most common UID is written into
    ``images`` (the in-memory datasets, not the files); the later volume assembly still checks
    that the positions form a regular stack.
    """
    uids = Counter(str(ds.get("FrameOfReferenceUID", "") or "") for ds in images)
    if len(uids) <= 1 and "" not in uids:
        return []
    named = [(uid, n) for uid, n in uids.most_common() if uid]
    if named:
        chosen = named[0][0]
    else:
        chosen = pydicom.uid.generate_uid(
            entropy_srcs=["FrameOfReferenceUID", str(images[0].get("SeriesInstanceUID", ""))]
        )
    for ds in images:
        ds.FrameOfReferenceUID = chosen
    return [
        f"the images carry {len(named)} different Frame of Reference UID(s)"
        + (f" and {uids['']} none" if uids.get("") else "")
        + " although they share one geometry in one series (a de-identification artefact?); "
        "they were treated as one frame of reference. Check that the series is one acquisition"
    ]


def load_ct_volume(datasets: Sequence[Dataset]) -> CTVolume:
    """Build a canonical Hounsfield-unit volume from the images of one CT series.

    Parameters
    ----------
    datasets:
        Single-frame CT images (CT Image Storage) of one series in any order, or one Enhanced CT
        multi-frame image. Pixel data may be compressed with any transfer syntax that pydicom's
        installed handlers decode (pylibjpeg, GDCM).

    Returns
    -------
    CTVolume
        The volume, in canonical ``"HPL"`` orientation, in Hounsfield units.

    Raises
    ------
    InvalidSeriesError
        If the images are not CT, lack geometry, are irregularly spaced or mixed.
    UnsupportedInputError
        If the series holds only localizers.
    InvalidInputError
        If pixel data cannot be decoded, or an image declares more decoded bytes than
        ``max_image_mb`` allows (:func:`check_image_size`; nothing is decoded then).
    """
    if not datasets:
        raise InvalidSeriesError("the series is empty")
    modalities = {str(ds.get("Modality", "")) for ds in datasets}
    if modalities != {"CT"}:
        raise InvalidSeriesError(
            f"expected a CT series, got Modality {sorted(modalities)}; route this series to a "
            "protocol for its modality"
        )
    if len(datasets) == 1 and int(datasets[0].get("NumberOfFrames", 1) or 1) > 1:
        check_image_size(datasets[0])
        return _load_multiframe(datasets[0])
    images, warnings = select_volume_frames(datasets)
    limit = max_image_bytes()
    for ds in images:
        check_image_size(ds, limit)
    check_decodable(images)
    # A gantry-tilted (sheared) stack is not an orthogonal volume: shear-correct it. In-plane
    # offsets that are not proportional to the slice position are left to highdicom to judge.
    try:
        shear = gantry_tilt_shear(images)
    except InvalidSeriesError:
        shear = None
    if shear is not None:
        return _load_sheared(images, shear, warnings)
    if len(images) > 2 and not _regularly_spaced(images):
        return _load_irregular(images, warnings)
    try:
        source_volume = hd.get_volume_from_series(images, dtype=np.float32)
    except Exception as exc:
        undecodable = _first_undecodable(images)
        if undecodable is not None:
            raise InvalidInputError(undecodable) from exc
        raise InvalidSeriesError(
            f"cannot build a volume from {len(images)} image(s): {exc}. Check for missing "
            "slices (irregular spacing) or images from different reconstructions"
        ) from exc
    return _finish(source_volume, images, warnings)


#: Relative variation of the slice step within which a stack counts as regularly spaced (the
#: tolerance highdicom applies by default, :func:`highdicom.spatial.get_volume_positions`).
_SPACING_RTOL = 0.01
#: A gap wider than this many usual steps is reported as missing slices.
_MISSING_SLICE_FACTOR = 1.5
#: Resampling refuses to create more than this many slices per source image (a stray image far
#: from the others would otherwise make a huge, mostly interpolated volume).
_MAX_RESAMPLING_FACTOR = 4


def _positions_along_normal(images: Sequence[Dataset]) -> np.ndarray:
    """Position (mm) of each image along the slice normal of the first image's orientation."""
    iop = np.asarray(images[0].ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    return np.array([np.asarray(ds.ImagePositionPatient, dtype=float) @ normal for ds in images])


def _regularly_spaced(images: Sequence[Dataset]) -> bool:
    """Whether the slice steps of ``images`` agree within :data:`_SPACING_RTOL` (any order)."""
    gaps = np.diff(np.sort(_positions_along_normal(images)))
    if not len(gaps) or float(gaps.min()) <= 0:
        return True  # duplicates and single images are judged elsewhere
    return float(gaps.max() - gaps.min()) <= _SPACING_RTOL * float(gaps.mean())


def _load_irregular(images: list[Dataset], warnings: list[str]) -> CTVolume:
    """Resample an unevenly spaced stack onto a regular grid (linear along the slice normal).

    The grid runs from the first to the last image with a step close to the median step. Gaps
    wider than :data:`_MISSING_SLICE_FACTOR` steps are reported as missing slices; their
    interpolated slices are listed in :attr:`CTVolume.interpolated_source_slices` so that a
    protocol can refuse when its target lies in one.

    Raises
    ------
    InvalidSeriesError
        If the gaps would need more than :data:`_MAX_RESAMPLING_FACTOR` interpolated slices per
        source image (a stray image far from the others).
    InvalidInputError
        If pixel data cannot be decoded.
    """
    from pydicom.pixels import apply_modality_lut

    along = _positions_along_normal(images)
    order = np.argsort(along)
    along = along[order]
    gaps = np.diff(along)
    step = float(np.median(gaps))
    count = int(round((along[-1] - along[0]) / step)) + 1
    if count > _MAX_RESAMPLING_FACTOR * len(images):
        raise InvalidSeriesError(
            f"the {len(images)} images span {along[-1] - along[0]:.1f} mm with a usual step of "
            f"{step:.2f} mm but gaps of up to {gaps.max():.1f} mm: too much of the range is "
            "missing to make a volume; send the complete series"
        )
    target = np.linspace(along[0], along[-1], count)
    grid_step = float(target[1] - target[0])
    stack = []
    for index in order:
        ds = images[int(index)]
        try:
            stack.append(apply_modality_lut(ds.pixel_array, ds).astype(np.float32))
        except Exception as exc:  # noqa: BLE001 - any decoder failure
            raise InvalidInputError(
                f"SOP Instance UID {ds.SOPInstanceUID}: the pixel data cannot be decoded "
                f"({type(exc).__name__}: {exc}); re-send it from the modality or PACS"
            ) from exc
    source = np.stack(stack)
    lower = np.clip(np.searchsorted(along, target, side="right") - 1, 0, len(along) - 2)
    weight = ((target - along[lower]) / (along[lower + 1] - along[lower])).astype(np.float32)
    array = np.empty((count, *source.shape[1:]), dtype=np.float32)
    for k in range(count):
        array[k] = (1 - weight[k]) * source[lower[k]] + weight[k] * source[lower[k] + 1]
    del source, stack
    # highdicom stacks slices against the slice normal (its right-handed index convention):
    # the first slice is the one furthest along the normal.
    array = np.ascontiguousarray(array[::-1])
    target = target[::-1]
    first = images[int(order[-1])]
    source_volume = hd.Volume.from_attributes(
        array=array,
        image_position=[float(v) for v in first.ImagePositionPatient],
        image_orientation=[float(v) for v in first.ImageOrientationPatient],
        pixel_spacing=[float(v) for v in first.PixelSpacing],
        spacing_between_slices=grid_step,
        coordinate_system="PATIENT",
        frame_of_reference_uid=str(first.get("FrameOfReferenceUID", "")) or None,
    )
    # Source slice k of the grid lies at target[k]; check highdicom's stacking direction.
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    normal = np.cross(iop[:3], iop[3:])
    second = np.asarray(source_volume.get_plane_position(1)[0].ImagePositionPatient, dtype=float)
    if abs(float(second @ normal) - target[1]) > 0.01 * abs(grid_step) + 1e-3:
        raise InvalidSeriesError(  # pragma: no cover - guards highdicom's convention
            "internal geometry check failed while resampling an unevenly spaced series"
        )
    nearest_image = np.abs(target[:, None] - along[None, :]).argmin(axis=1)
    frame_of_source_slice = [int(order[i]) for i in nearest_image]
    source_slice_of_frame = [0] * len(images)
    for rank, index in enumerate(order):
        source_slice_of_frame[int(index)] = int(np.abs(target - along[rank]).argmin())
    wide = np.flatnonzero(gaps > _MISSING_SLICE_FACTOR * step)
    interpolated: list[int] = []
    for g in wide:
        inside = (target > along[g]) & (target < along[g + 1])
        interpolated.extend(int(k) for k in np.flatnonzero(inside))
    message = (
        f"uneven slice spacing (steps {gaps.min():.2f}-{gaps.max():.2f} mm): resampled to a "
        f"regular grid of {count} slices every {grid_step:.2f} mm (linear interpolation)"
    )
    if len(wide):
        message += (
            f"; {len(wide)} gap(s) wider than {_MISSING_SLICE_FACTOR:g} steps (missing slices?), "
            f"the widest {gaps.max():.1f} mm; {len(interpolated)} slice(s) are interpolated "
            "across them"
        )
    volume = _finish(source_volume, images, [*warnings, message],
                     frame_of_source_slice=frame_of_source_slice)
    volume.source_slice_of_frame = source_slice_of_frame
    volume.interpolated_source_slices = interpolated
    return volume


def check_decodable(datasets: Sequence[Dataset]) -> None:
    """Check that pydicom has a working decoder for every transfer syntax in ``datasets``.

    Raises
    ------
    InvalidInputError
        Naming the transfer syntax when no installed decoder handles it (e.g. MPEG-2 video).
    """
    from pydicom.pixels import get_decoder

    syntaxes = {
        meta.TransferSyntaxUID
        for meta in (getattr(ds, "file_meta", None) for ds in datasets)
        if meta is not None and "TransferSyntaxUID" in meta
    }
    for syntax in syntaxes:
        try:
            available = get_decoder(syntax).is_available
        except NotImplementedError:
            available = False
        if not available:
            raise InvalidInputError(
                f"pixel data in transfer syntax {syntax.name} ({syntax}) cannot be decoded: no "
                "decoder is installed for it; ask the sender for an uncompressed or a JPEG/"
                "JPEG 2000/JPEG-LS/RLE transfer syntax"
            )


def _first_undecodable(datasets: Sequence[Dataset]) -> str | None:
    """Message for the first image whose pixel data fails to decode, or ``None``."""
    for ds in datasets:
        try:
            ds.pixel_array  # noqa: B018 - decoding is the check
        except Exception as exc:  # noqa: BLE001 - any decoder failure
            return (
                f"SOP Instance UID {ds.SOPInstanceUID}: the pixel data cannot be decoded "
                f"({type(exc).__name__}: {exc}); the file may be truncated or corrupt, re-send "
                "it from the modality or PACS"
            )
    return None


def _load_multiframe(ds: Dataset) -> CTVolume:
    try:
        image = hd.image.Image.from_dataset(ds, copy=False)
        source_volume = image.get_volume(dtype=np.float32)
    except (ValueError, RuntimeError, AttributeError) as exc:
        raise InvalidSeriesError(
            f"cannot build a volume from the multi-frame image {ds.SOPInstanceUID}: {exc}"
        ) from exc
    volume = source_volume.to_patient_orientation(CANONICAL_ORIENTATION)
    raise UnsupportedInputError(
        "Enhanced (multi-frame) CT is stored and routed, but measurement on multi-frame images "
        f"is not supported in this version (volume {volume.spatial_shape}); send the series as "
        "single-frame CT Image Storage"
    )


def _frames_by_position(source_volume: hd.Volume, images: list[Dataset]) -> list[int]:
    """For each slice of ``source_volume``, the index of the image at its position.

    Raises
    ------
    InvalidSeriesError
        If a slice matches no image.
    """
    index_by_position = {
        tuple(np.round(np.asarray(ds.ImagePositionPatient, dtype=float), 2)): i
        for i, ds in enumerate(images)
    }
    frames: list[int] = []
    for k in range(source_volume.spatial_shape[0]):
        position = source_volume.get_plane_position(k)[0].ImagePositionPatient
        key = tuple(np.round(np.asarray(position, dtype=float), 2))
        if key not in index_by_position:
            raise InvalidSeriesError(
                f"slice {k} of the volume at {key} matches no image; the series geometry is "
                "inconsistent"
            )
        frames.append(index_by_position[key])
    return frames


def _finish(
    source_volume: hd.Volume,
    images: list[Dataset],
    warnings: list[str],
    frame_of_source_slice: list[int] | None = None,
) -> CTVolume:
    if frame_of_source_slice is None:
        frame_of_source_slice = _frames_by_position(source_volume, images)
    volume = source_volume.to_patient_orientation(CANONICAL_ORIENTATION)
    hu = np.ascontiguousarray(volume.array, dtype=np.float32)
    spacing = tuple(float(s) for s in volume.spacing)
    if len(images) == 1:
        # A single image has no slice spacing: use Slice Thickness on the axis of length one.
        thickness = positive_number(images[0].get("SliceThickness"))
        if thickness is None:
            warnings = [
                *warnings,
                "Slice Thickness "
                + ("is missing" if images[0].get("SliceThickness") in (None, "")
                   else f"{images[0].get('SliceThickness')} is not a positive number")
                + "; 1.0 mm is assumed for the single image's depth (volumes computed from "
                "this image are per mm of depth)",
            ]
        single_axis = hu.shape.index(1)
        spacing = tuple(
            (thickness or 1.0) if axis == single_axis else value
            for axis, value in enumerate(spacing)
        )
    headers = [header_copy(ds) for ds in images]
    return CTVolume(
        hu=hu,
        spacing_mm=(spacing[0], spacing[1], spacing[2]),
        volume=volume,
        datasets=headers,
        source_volume=source_volume,
        frame_of_source_slice=frame_of_source_slice,
        warnings=warnings,
    )


#: In-plane offset (mm) between consecutive slice origins above which a series counts as
#: sheared (gantry tilt) rather than orthogonal.
_SHEAR_TOLERANCE_MM = 0.05


def gantry_tilt_shear(datasets: Sequence[Dataset]) -> list[tuple[float, float]] | None:
    """Detect a sheared stack (gantry tilt) and compute the per-image correction.

    On a tilted gantry the image planes are tilted while the table moves along the patient's
    z axis, so consecutive Image Position (Patient) values are offset *within* the image plane,
    not only along its normal (PS3.3 C.7.6.2.1.1; Gantry/Detector Tilt (0018,1120) is not
    needed, the geometry is read from the positions). Shifting every image in-plane by its
    offset relative to the middle image turns the stack into an orthogonal volume.

    Parameters
    ----------
    datasets:
        Images of one geometry group (same Image Orientation (Patient), Pixel Spacing).

    Returns
    -------
    list[tuple[float, float]] | None
        For each dataset (same order), the (row, column) shift in pixels that moves its content
        onto the orthogonal grid; ``None`` when the stack is not sheared (or has one image).

    Raises
    ------
    InvalidSeriesError
        If the in-plane offsets are not proportional to the slice position (not a tilt).
    """
    if len(datasets) < 2:
        return None
    iop = np.asarray(datasets[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    normal = np.cross(row_dir, col_dir)
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) for ds in datasets])
    along = positions @ normal
    reference = positions[int(np.argsort(along)[len(along) // 2])]
    offsets = positions - reference
    offsets -= np.outer(offsets @ normal, normal)
    if float(np.abs(offsets).max()) <= _SHEAR_TOLERANCE_MM:
        return None
    # Offsets must be linear in the position along the normal (a constant tilt).
    relative = along - float(reference @ normal)
    design = relative[:, None]
    fit, *_ = np.linalg.lstsq(design, offsets, rcond=None)
    residual = float(np.abs(offsets - design @ fit).max())
    if residual > 0.5:
        raise InvalidSeriesError(
            f"the image positions are offset within the image plane by up to "
            f"{float(np.abs(offsets).max()):.1f} mm, not proportionally to the slice position "
            f"(residual {residual:.1f} mm): neither an orthogonal nor a gantry-tilted stack"
        )
    row_mm, col_mm = (float(v) for v in datasets[0].PixelSpacing)
    # An offset along the column direction (down the rows) moves content by rows, and vice versa.
    return [
        (float(offset @ col_dir) / row_mm, float(offset @ row_dir) / col_mm)
        for offset in offsets
    ]


def _load_sheared(
    images: list[Dataset], shear: list[tuple[float, float]], warnings: list[str]
) -> CTVolume:
    """Shear-correct a gantry-tilted stack (linear interpolation in-plane) and load it."""
    from pydicom.pixels import apply_modality_lut
    from scipy import ndimage

    iop = np.asarray(images[0].ImageOrientationPatient, dtype=float)
    row_dir, col_dir = iop[:3], iop[3:]
    row_mm, col_mm = (float(v) for v in images[0].PixelSpacing)
    corrected: list[Dataset] = []
    for ds, (shift_rows, shift_columns) in zip(images, shear, strict=True):
        try:
            hu = apply_modality_lut(ds.pixel_array, ds).astype(np.float32)
        except Exception as exc:  # any decoder failure
            raise InvalidInputError(
                f"SOP Instance UID {ds.SOPInstanceUID}: the pixel data cannot be decoded "
                f"({type(exc).__name__}: {exc})"
            ) from exc
        moved = ndimage.shift(hu, (shift_rows, shift_columns), order=1, mode="constant",
                              cval=float(hu.min()))
        copy = header_copy(ds)
        copy.file_meta.TransferSyntaxUID = pydicom.uid.ExplicitVRLittleEndian
        copy.BitsAllocated = 16
        copy.BitsStored = 16
        copy.HighBit = 15
        copy.PixelRepresentation = 1
        copy.RescaleSlope = 1
        copy.RescaleIntercept = 0
        for keyword in ("ModalityLUTSequence", "FloatPixelData", "DoubleFloatPixelData"):
            if keyword in copy:
                delattr(copy, keyword)
        copy.PixelData = np.clip(np.round(moved), -32768, 32767).astype("<i2").tobytes()
        corrected.append(copy)
    # Corrected positions on an exactly regular line along the normal (so that the volume's
    # computed plane positions match them), from the first image's shifted position.
    normal = np.cross(row_dir, col_dir)
    along = np.array([np.asarray(ds.ImagePositionPatient, dtype=float) @ normal for ds in images])
    order = np.argsort(along)
    first = order[0]
    spacing = float(np.median(np.diff(along[order]))) if len(images) > 1 else 0.0
    origin = np.asarray(images[first].ImagePositionPatient, dtype=float) \
        - shear[first][0] * row_mm * col_dir - shear[first][1] * col_mm * row_dir
    for rank, index in enumerate(order):
        position = np.round(origin + rank * spacing * normal, 4)
        corrected[int(index)].ImagePositionPatient = [f"{v:.4f}" for v in position]
    try:
        source_volume = hd.get_volume_from_series(corrected, dtype=np.float32)
    except Exception as exc:
        raise InvalidSeriesError(
            f"cannot build a volume from {len(images)} gantry-tilted image(s) after shear "
            f"correction: {exc}. Check for missing slices"
        ) from exc
    # Give each corrected image exactly the plane position highdicom computed for it (nearest
    # within 0.1 mm), so that _finish's position matching cannot trip over rounding.
    planes = np.array([
        np.asarray(source_volume.get_plane_position(k)[0].ImagePositionPatient, dtype=float)
        for k in range(source_volume.spatial_shape[0])
    ])
    for copy in corrected:
        position = np.asarray(copy.ImagePositionPatient, dtype=float)
        distances = np.linalg.norm(planes - position, axis=1)
        nearest = int(np.argmin(distances))
        if distances[nearest] > 0.1:
            raise InvalidSeriesError(
                f"gantry-tilted series: an image at {position.round(2).tolist()} lies "
                f"{distances[nearest]:.2f} mm from the nearest plane of the corrected volume; "
                "check for missing slices"
            )
        copy.ImagePositionPatient = [float(v) for v in planes[nearest]]
    tilt = float(images[0].get("GantryDetectorTilt", 0) or 0)
    max_shift = max(max(abs(r), abs(c)) for r, c in shear)
    warnings = [
        *warnings,
        (f"gantry-tilted series (Gantry/Detector Tilt {tilt:g} deg): images shifted in-plane by "
         f"up to {max_shift:.1f} pixels onto an orthogonal grid (linear interpolation); content "
         "shifted out of the field of view is lost"),
    ]
    volume = _finish(source_volume, corrected, warnings)
    volume.datasets = [header_copy(ds) for ds in images]
    volume.frame_shift_px = list(shear)
    return volume


