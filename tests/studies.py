"""Whole studies, as a PACS sends them, built from the real series of the corpus.

A PACS auto-routing rule forwards whole studies: besides the thin axial series a protocol wants,
a CT study holds a thick reconstruction, reformats, a scout, a dose report and, after a first
run, the node's own SEG/SR/SC. :func:`chest_study` and :func:`head_study` build such a study
from one real series of ``../shared/realdata`` (see :mod:`realdata_corpus`); :func:`send_study`
sends it with DCMTK ``storescu`` in shuffled order over several parallel associations.

Series of a built study (``BuiltStudy.series`` by role; one folder per series):

===============  ==================================================  ==============================
role             what it is                                          Image Type
===============  ==================================================  ==============================
``thin-axial``   the real series, copied byte for byte               as scanned
``thick-axial``  5 mm slabs: means of consecutive slices             ORIGINAL\\PRIMARY\\AXIAL
``bone-kernel``  the real pixels, Convolution Kernel ``B70f``        ORIGINAL\\PRIMARY\\AXIAL
``coronal``      a few coronal 3 mm slabs re-sliced from the volume  DERIVED\\SECONDARY\\REFORMATTED
``localizer``    one frontal scout: the mean along A-P               ORIGINAL\\PRIMARY\\LOCALIZER
``dose-sr``      X-Ray Radiation Dose SR (TID 10011)                 --
``ainode``       SEG + SR + SC of the node's own output builder      --
===============  ==================================================  ==============================

A second reconstruction by a scanner is ORIGINAL\\PRIMARY\\AXIAL too, so only the slice
thickness tells the thick series from the thin one. Every series shares the real series' Study
Instance UID and patient; new UIDs are derived deterministically (``2.25.`` UUID form) from the
source series' UID and the role, so a rebuilt study is the same study.

Built studies are cached beside the unpacked archives (``AINODE_REALDATA_CACHE``, default
``~/.cache/ainode-realdata``) under a key of the archive's sha256 and :data:`BUILDER_VERSION`;
building the chest study takes about 10 s once, the head study about 2 s.
"""

from __future__ import annotations

import copy
import importlib
import os
import random
import re
import shutil
import subprocess
import tempfile
import threading
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.sr.codedict import codes
from pydicom.uid import (
    ExplicitVRLittleEndian,
    XRayRadiationDoseSRStorage,
)
from realdata_corpus import ARCHIVE_OF_CASE, _sha256, case_path, realdata_root

from pipelines.outputs.build import build_outputs, write_outputs
from pipelines.types import SCT_AREA, UCUM_CM2, CodedTerm, KeyImage, Measurement, PipelineResult

#: Bump when what the builder writes changes: the cache key includes it.
BUILDER_VERSION = "3"

#: Roles of the series of a built study, in the order of the module's table.
ROLES = ("thin-axial", "thick-axial", "bone-kernel", "coronal", "localizer", "dose-sr", "ainode")

#: Roles that are axial image series (a protocol's candidates).
AXIAL_ROLES = ("thin-axial", "thick-axial", "bone-kernel")

_BUILD_LOCK = threading.Lock()

#: Namespace of the builder's name-based UIDs.
_UID_NAMESPACE = uuid.uuid5(uuid.NAMESPACE_URL, "https://ainode.invalid/tests/studies")


@dataclass(frozen=True)
class StudySeries:
    """One series of a built study.

    Attributes
    ----------
    role : str
        One of :data:`ROLES`.
    folder : Path
        The series' folder (one file per instance).
    series_instance_uid : str
        Series Instance UID; for ``ainode`` the SR's (the SEG and SC have their own series).
    sop_class_uids : frozenset of str
        SOP Class UIDs of its instances.
    files : tuple of Path
        The instance files, sorted by name.
    series_instance_uids : frozenset of str
        Every Series Instance UID in the folder (several for ``ainode``).
    """

    role: str
    folder: Path
    series_instance_uid: str
    sop_class_uids: frozenset[str]
    files: tuple[Path, ...]
    series_instance_uids: frozenset[str] = field(default_factory=frozenset)


@dataclass(frozen=True)
class BuiltStudy:
    """A built multi-series study.

    Attributes
    ----------
    root : Path
        Folder holding one sub-folder per series (named by role).
    study_instance_uid : str
        The Study Instance UID every instance carries.
    patient_id : str
        The Patient ID every instance carries.
    protocol : str
        The protocol the study is meant for (its earlier ``ainode`` outputs name it).
    series : dict of str to StudySeries
        The series by role.
    """

    root: Path
    study_instance_uid: str
    patient_id: str
    protocol: str
    series: dict[str, StudySeries]

    def files(self, roles: Sequence[str] | None = None) -> list[Path]:
        """Files of the series of ``roles`` (all series when ``None``), role by role."""
        wanted = ROLES if roles is None else roles
        return [p for role in wanted if role in self.series for p in self.series[role].files]


def _uid(*parts: str) -> str:
    """A deterministic UID of ``parts``: ``2.25.`` and a name-based UUID (PS3.5 B.2, RFC 4122 v5).

    (pydicom's ``generate_uid(prefix=None)`` ignores its entropy sources and is random.)
    """
    return f"2.25.{uuid.uuid5(_UID_NAMESPACE, '|'.join(parts)).int}"


def _read_series(folder: Path) -> list[Dataset]:
    """The series' datasets with pixels, sorted inferior -> superior (ascending z, LPS)."""
    datasets = [pydicom.dcmread(p) for p in sorted(folder.iterdir()) if p.is_file()]
    datasets.sort(key=lambda ds: float(ds.ImagePositionPatient[2]))
    return datasets


def _stored_volume(datasets: Sequence[Dataset]) -> np.ndarray:
    """Stored pixel values, ``(slices, rows, columns)``, slices ascending in z, source dtype."""
    return np.stack([ds.pixel_array for ds in datasets])


def _new_instance(template: Dataset, series_uid: str, sop_uid: str, number: int) -> Dataset:
    """A copy of ``template``'s header (no pixels, no private tags) with a new identity.

    The copy is written Explicit VR Little Endian.
    """
    ds = Dataset()
    for element in template:
        if element.tag.group not in (0x0002, 0x7FE0) and not element.tag.is_private:
            ds.add(copy.deepcopy(element))
    ds.SeriesInstanceUID = series_uid
    ds.SOPInstanceUID = sop_uid
    ds.InstanceNumber = number
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = ds.SOPClassUID
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta = meta
    return ds


def _set_pixels(ds: Dataset, stored: np.ndarray) -> None:
    """Pixel Data from ``stored`` ``(rows, columns)`` in the template's stored dtype."""
    ds.Rows, ds.Columns = int(stored.shape[0]), int(stored.shape[1])
    ds.PixelData = np.ascontiguousarray(stored).tobytes()
    for name in ("LargestImagePixelValue", "SmallestImagePixelValue"):
        if name in ds:
            delattr(ds, name)


def _save(ds: Dataset, folder: Path, index: int) -> Path:
    path = folder / f"{index:04d}.dcm"
    ds.save_as(path, enforce_file_format=True)
    return path


def _thick_axial(
    datasets: Sequence[Dataset], volume: np.ndarray, folder: Path, thickness_mm: float,
    series_number: int, description: str,
) -> None:
    """Average consecutive slices to ``thickness_mm`` slabs (a second axial reconstruction)."""
    step = abs(float(datasets[1].ImagePositionPatient[2])
               - float(datasets[0].ImagePositionPatient[2]))
    per_slab = max(2, round(thickness_mm / step))
    source_uid = str(datasets[0].SeriesInstanceUID)
    series_uid = _uid(source_uid, "thick-axial")
    frame_uid = str(datasets[0].FrameOfReferenceUID)
    for index, start in enumerate(range(0, len(datasets) - per_slab + 1, per_slab)):
        block = datasets[start:start + per_slab]
        template = block[len(block) // 2]
        ds = _new_instance(template, series_uid, _uid(series_uid, str(index)), index + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = series_number
        ds.SeriesDescription = description
        ds.SliceThickness = f"{per_slab * step:.1f}"
        ds.FrameOfReferenceUID = frame_uid
        position = np.mean([[float(v) for v in b.ImagePositionPatient] for b in block], axis=0)
        ds.ImagePositionPatient = [f"{v:.3f}" for v in position]
        if "SliceLocation" in ds:
            ds.SliceLocation = f"{position[2]:.3f}"
        mean = volume[start:start + per_slab].astype(np.float64).mean(axis=0)
        _set_pixels(ds, np.rint(mean).astype(volume.dtype))
        _save(ds, folder, index)


def _bone_kernel(datasets: Sequence[Dataset], folder: Path, series_number: int) -> None:
    """The same slices as a bone-kernel reconstruction (same pixels, kernel ``B70f``)."""
    source_uid = str(datasets[0].SeriesInstanceUID)
    series_uid = _uid(source_uid, "bone-kernel")
    frame_uid = str(datasets[0].FrameOfReferenceUID)
    for index, source in enumerate(datasets):
        ds = _new_instance(source, series_uid, _uid(series_uid, str(index)), index + 1)
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "Bone B70f"
        ds.ConvolutionKernel = "B70f"
        ds.FrameOfReferenceUID = frame_uid
        _set_pixels(ds, source.pixel_array)
        _save(ds, folder, index)


def _frontal_geometry(datasets: Sequence[Dataset]) -> tuple[list[str], float, float, float, float]:
    """Coronal plane of the axial stack: orientation, top z, column origin x, z step, x step."""
    top_z = float(datasets[-1].ImagePositionPatient[2])
    x0 = float(datasets[0].ImagePositionPatient[0])
    z_step = abs(float(datasets[1].ImagePositionPatient[2])
                 - float(datasets[0].ImagePositionPatient[2]))
    x_step = float(datasets[0].PixelSpacing[1])
    # rows run +x (patient's left), columns run -z (head -> feet): PS3.3 C.7.6.2.1.1, LPS
    return ["1", "0", "0", "0", "0", "-1"], top_z, x0, z_step, x_step


def _coronal(
    datasets: Sequence[Dataset], volume: np.ndarray, folder: Path, count: int, series_number: int,
) -> None:
    """``count`` coronal slabs 3 mm thick, evenly spaced from anterior to posterior."""
    orientation, top_z, x0, z_step, x_step = _frontal_geometry(datasets)
    y0 = float(datasets[0].ImagePositionPatient[1])
    y_step = float(datasets[0].PixelSpacing[0])
    rows_per_slab = max(1, round(3.0 / y_step))
    source_uid = str(datasets[0].SeriesInstanceUID)
    series_uid = _uid(source_uid, "coronal")
    frame_uid = str(datasets[0].FrameOfReferenceUID)
    height = volume.shape[1]
    centres = np.linspace(height * 0.3, height * 0.7, count).astype(int)
    for index, centre in enumerate(centres):
        first = int(centre) - rows_per_slab // 2
        slab = volume[:, first:first + rows_per_slab, :].astype(np.float64).mean(axis=1)
        image = slab[::-1]  # superior first: rows go head -> feet
        template = datasets[len(datasets) // 2]
        ds = _new_instance(template, series_uid, _uid(series_uid, str(index)), index + 1)
        ds.ImageType = ["DERIVED", "SECONDARY", "REFORMATTED"]
        ds.SeriesNumber = series_number
        ds.SeriesDescription = "Coronal MPR 3 mm"
        ds.FrameOfReferenceUID = frame_uid
        ds.ImageOrientationPatient = orientation
        y = y0 + (first + (rows_per_slab - 1) / 2) * y_step
        ds.ImagePositionPatient = [f"{x0:.3f}", f"{y:.3f}", f"{top_z:.3f}"]
        ds.PixelSpacing = [f"{z_step:.4f}", f"{x_step:.6f}"]
        ds.SliceThickness = f"{rows_per_slab * y_step:.3f}"
        if "SliceLocation" in ds:
            del ds.SliceLocation
        _set_pixels(ds, np.rint(image).astype(volume.dtype))
        _save(ds, folder, index)


def _localizer(
    datasets: Sequence[Dataset], volume: np.ndarray, folder: Path, series_number: int,
) -> None:
    """One frontal scout: the mean of the volume along anterior-posterior (the y axis)."""
    orientation, top_z, x0, z_step, x_step = _frontal_geometry(datasets)
    source_uid = str(datasets[0].SeriesInstanceUID)
    series_uid = _uid(source_uid, "localizer")
    template = datasets[len(datasets) // 2]
    ds = _new_instance(template, series_uid, _uid(series_uid, "0"), 1)
    ds.ImageType = ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    ds.SeriesNumber = series_number
    ds.SeriesDescription = "Topogram 0.6"
    ds.FrameOfReferenceUID = _uid(source_uid, "localizer-frame")
    ds.ImageOrientationPatient = orientation
    y_centre = float(datasets[0].ImagePositionPatient[1]) + volume.shape[1] / 2 * float(
        datasets[0].PixelSpacing[0])
    ds.ImagePositionPatient = [f"{x0:.3f}", f"{y_centre:.3f}", f"{top_z:.3f}"]
    ds.PixelSpacing = [f"{z_step:.4f}", f"{x_step:.6f}"]
    for name in ("SliceLocation", "ConvolutionKernel", "RescaleType"):
        if name in ds:
            delattr(ds, name)
    projection = volume.astype(np.float64).mean(axis=1)[::-1]
    _set_pixels(ds, np.rint(projection).astype(volume.dtype))
    _save(ds, folder, 0)


def _dose_sr(datasets: Sequence[Dataset], folder: Path, series_number: int,
             target_region: CodedTerm) -> None:
    """An X-Ray Radiation Dose SR (PS3.16 TID 10011) of one spiral acquisition.

    The values (CTDIvol 8 mGy, DLP = CTDIvol x scan length) are typical of a routine CT, not
    measured; the scan length is the series' z extent.
    """
    source = datasets[0]
    source_uid = str(source.SeriesInstanceUID)
    series_uid = _uid(source_uid, "dose-sr")
    z = [float(ds.ImagePositionPatient[2]) for ds in datasets]
    length_mm = max(z) - min(z)
    ctdi_vol = 8.0
    dlp = ctdi_vol * length_mm / 10.0
    dcm = "DCM"

    def concept(value: str, scheme: str, meaning: str) -> hd.sr.CodedConcept:
        return hd.sr.CodedConcept(value, scheme, meaning)

    def num(value: str, meaning: str, number: float, unit: tuple[str, str]) -> hd.sr.NumContentItem:
        return hd.sr.NumContentItem(
            name=concept(value, dcm, meaning), value=number,
            unit=concept(unit[0], "UCUM", unit[1]),
            relationship_type=hd.sr.RelationshipTypeValues.CONTAINS)

    contains = hd.sr.RelationshipTypeValues.CONTAINS
    mgy, mgycm, mm, seconds = ("mGy", "mGy"), ("mGy.cm", "mGy.cm"), ("mm", "mm"), ("s", "s")
    irradiation_uid = _uid(source_uid, "irradiation-event")
    parameters = hd.sr.ContainerContentItem(
        name=concept("113822", dcm, "CT Acquisition Parameters"), relationship_type=contains)
    parameters.ContentSequence = [
        num("113824", "Exposure Time", 6.2, seconds),
        num("113825", "Scanning Length", round(length_mm, 1), mm),
        num("113826", "Nominal Single Collimation Width", 0.75, mm),
        num("113827", "Nominal Total Collimation Width", 12.0, mm),
        num("113828", "Pitch Factor", 0.9, ("{ratio}", "ratio")),
        num("113823", "Number of X-Ray Sources", 1, ("{X-Ray sources}", "X-Ray sources")),
    ]
    dose = hd.sr.ContainerContentItem(
        name=concept("113829", dcm, "CT Dose"), relationship_type=contains)
    dose.ContentSequence = [
        num("113830", "Mean CTDIvol", ctdi_vol, mgy),
        hd.sr.CodeContentItem(
            name=concept("113835", dcm, "CTDIw Phantom Type"),
            value=concept("113691", dcm, "IEC Body Dosimetry Phantom"),
            relationship_type=contains),
        num("113838", "DLP", round(dlp, 1), mgycm),
    ]
    acquisition = hd.sr.ContainerContentItem(
        name=concept("113819", dcm, "CT Acquisition"), relationship_type=contains)
    acquisition.ContentSequence = [
        hd.sr.TextContentItem(name=concept("125203", dcm, "Acquisition Protocol"),
                              value="Routine", relationship_type=contains),
        hd.sr.CodeContentItem(
            name=concept("123014", dcm, "Target Region"),
            value=concept(target_region.value, target_region.scheme, target_region.meaning),
            relationship_type=contains),
        hd.sr.CodeContentItem(
            name=concept("113820", dcm, "CT Acquisition Type"),
            value=concept("116152004", "SCT", "Spiral Acquisition"), relationship_type=contains),
        hd.sr.UIDRefContentItem(name=concept("113769", dcm, "Irradiation Event UID"),
                                value=irradiation_uid, relationship_type=contains),
        parameters,
        dose,
    ]
    accumulated = hd.sr.ContainerContentItem(
        name=concept("113811", dcm, "CT Accumulated Dose Data"), relationship_type=contains)
    accumulated.ContentSequence = [
        num("113812", "Total Number of Irradiation Events", 1, ("{events}", "events")),
        num("113813", "CT Dose Length Product Total", round(dlp, 1), mgycm),
    ]
    scope = hd.sr.CodeContentItem(
        name=concept("113705", dcm, "Scope of Accumulation"),
        value=concept("113014", dcm, "Study"), relationship_type=contains)
    scope.ContentSequence = [hd.sr.UIDRefContentItem(
        name=concept("110180", dcm, "Study Instance UID"), value=str(source.StudyInstanceUID),
        relationship_type=hd.sr.RelationshipTypeValues.HAS_PROPERTIES)]
    start = f"{source.get('StudyDate') or '20000101'}{source.get('StudyTime') or '120000'}"
    root = hd.sr.ContainerContentItem(
        name=concept("113701", dcm, "X-Ray Radiation Dose Report"), template_id="10011")
    root.ContentSequence = [
        hd.sr.CodeContentItem(
            name=concept("121058", dcm, "Procedure reported"),
            value=concept("77477000", "SCT", "Computed Tomography X-Ray"),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_CONCEPT_MOD),
        *hd.sr.ObserverContext(
            observer_type=codes.DCM.Device,
            observer_identifying_attributes=hd.sr.DeviceObserverIdentifyingAttributes(
                uid=_uid(source_uid, "dose-device"),
                manufacturer_name=str(source.get("Manufacturer") or "CT"))),
        hd.sr.DateTimeContentItem(
            name=concept("113809", dcm, "Start of X-Ray Irradiation"),
            value=pydicom.valuerep.DT(start.split(".")[0][:14]),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT),
        hd.sr.DateTimeContentItem(
            name=concept("113810", dcm, "End of X-Ray Irradiation"),
            value=pydicom.valuerep.DT(start.split(".")[0][:14]),
            relationship_type=hd.sr.RelationshipTypeValues.HAS_OBS_CONTEXT),
        scope,
        accumulated,
        acquisition,
    ]
    # highdicom's SR base class writes the SR Document modules for any SR SOP Class; its public
    # subclasses fix the class to Enhanced/Comprehensive/3D, none to X-Ray Radiation Dose SR.
    from highdicom.sr.sop import _SR

    evidence = Dataset()  # the study's identity; not recorded (the report cites no image)
    for name in ("StudyInstanceUID", "SeriesInstanceUID", "SOPInstanceUID", "SOPClassUID",
                 "PatientID", "PatientName", "PatientBirthDate",
                 "PatientSex", "AccessionNumber", "StudyID", "StudyDate", "StudyTime",
                 "ReferringPhysicianName", "SpecificCharacterSet"):
        setattr(evidence, name, source.get(name))
    sr = _SR(
        evidence=[evidence],
        content=root,
        series_instance_uid=series_uid,
        series_number=series_number,
        sop_instance_uid=_uid(series_uid, "0"),
        sop_class_uid=XRayRadiationDoseSRStorage,
        instance_number=1,
        manufacturer=str(source.get("Manufacturer") or "CT"),
        is_complete=True,
        record_evidence=False,
    )
    sr.SeriesDescription = "Dose Report"
    sr.ManufacturerModelName = str(source.get("ManufacturerModelName") or "CT")
    sr.DeviceSerialNumber = "0"
    sr.SoftwareVersions = "1"
    _save(sr, folder, 0)


def _ainode_outputs(datasets: Sequence[Dataset], folder: Path, protocol_module: str) -> None:
    """SEG + SR + SC of an earlier run, written by the node's own output builder.

    The earlier run measured a square on three middle slices of the thin series; its algorithm
    version is marked ``-earlier`` so that its UIDs differ from a new run's.
    """
    module = importlib.import_module(protocol_module)
    algorithm = replace(module.ALGORITHM, version=f"{module.ALGORITHM.version}-earlier")
    segment = module.SEGMENTS[0]
    middle = len(datasets) // 2
    frame_uid = str(datasets[0].FrameOfReferenceUID)
    sources = []
    for source in datasets[middle - 1:middle + 2]:
        header = copy.deepcopy(source)
        header.FrameOfReferenceUID = frame_uid  # one frame of reference, as the node repairs it
        sources.append(header)
    rows, columns = int(sources[0].Rows), int(sources[0].Columns)
    label_map = np.zeros((len(sources), rows, columns), dtype=np.uint8)
    label_map[:, rows // 3:rows // 2, columns // 3:columns // 2] = segment.number
    spacing = [float(v) for v in sources[0].PixelSpacing]
    area_cm2 = float((label_map[1] > 0).sum()) * spacing[0] * spacing[1] / 100.0
    pixels = np.zeros((rows, columns, 3), dtype=np.uint8)
    pixels[label_map[1] > 0] = segment.display_rgb
    result = PipelineResult(
        protocol=module.PROTOCOL_NAME,
        algorithm=algorithm,
        source_datasets=sources,
        segments=[segment],
        label_map=label_map,
        measurements=[Measurement(
            key="area_cm2", name=SCT_AREA, value=round(area_cm2, 2), unit=UCUM_CM2,
            segment_number=segment.number, derivation=None, label="Area", frame_index=1)],
        key_image=KeyImage(pixels_rgb=pixels, source_index=1,
                           pixel_spacing_mm=(spacing[0], spacing[1]),
                           patient_orientation=("L", "P")),
        summary={"area_cm2": round(area_cm2, 2)},
    )
    objects = build_outputs(result, software_version="0.0.0-earlier")
    write_outputs(objects, folder)


def _series_of(role: str, folder: Path) -> StudySeries:
    files = tuple(sorted(p for p in folder.iterdir() if p.is_file()))
    headers = [pydicom.dcmread(p, stop_before_pixels=True) for p in files]
    series_uids = {str(ds.SeriesInstanceUID) for ds in headers}
    main = next((str(ds.SeriesInstanceUID) for ds in headers if ds.Modality == "SR"),
                str(headers[0].SeriesInstanceUID))
    return StudySeries(
        role=role, folder=folder, series_instance_uid=main if len(series_uids) > 1 else
        str(headers[0].SeriesInstanceUID),
        sop_class_uids=frozenset(str(ds.SOPClassUID) for ds in headers), files=files,
        series_instance_uids=frozenset(series_uids))


def _build(name: str, case: str, protocol_module: str, target_region: CodedTerm,
           bone_kernel: bool, coronal_count: int) -> BuiltStudy:
    source_folder = case_path(case)  # skips (fails under CI) when the corpus is missing
    archive = realdata_root() / ARCHIVE_OF_CASE[case]
    cache = Path(
        os.environ.get("AINODE_REALDATA_CACHE", Path.home() / ".cache" / "ainode-realdata"))
    root = cache / "studies" / f"{name}-{_sha256(archive)[:16]}-v{BUILDER_VERSION}"
    with _BUILD_LOCK:
        if not (root / ".built").exists():
            root.parent.mkdir(parents=True, exist_ok=True)
            work = Path(tempfile.mkdtemp(prefix=f".{name}-", dir=root.parent))
            try:
                _write_study(work, source_folder, protocol_module, target_region,
                             bone_kernel, coronal_count)
                (work / ".built").touch()
                try:
                    work.rename(root)
                except OSError:  # another process built it meanwhile
                    if not (root / ".built").exists():
                        raise
            finally:
                shutil.rmtree(work, ignore_errors=True)
    series = {role: _series_of(role, root / role) for role in ROLES if (root / role).is_dir()}
    first = pydicom.dcmread(series["thin-axial"].files[0], stop_before_pixels=True)
    return BuiltStudy(root=root, study_instance_uid=str(first.StudyInstanceUID),
                      patient_id=str(first.PatientID), protocol=importlib.import_module(
                          protocol_module).PROTOCOL_NAME, series=series)


def _write_study(work: Path, source_folder: Path, protocol_module: str,
                 target_region: CodedTerm, bone_kernel: bool, coronal_count: int) -> None:
    for role in ROLES:
        if role != "bone-kernel" or bone_kernel:
            (work / role).mkdir()
    for path in sorted(p for p in source_folder.iterdir() if p.is_file()):
        target = work / "thin-axial" / path.name
        try:
            os.link(path, target)  # the real series as is
        except OSError:
            shutil.copy2(path, target)
    datasets = _read_series(source_folder)
    volume = _stored_volume(datasets)
    _localizer(datasets, volume, work / "localizer", series_number=1)
    _thick_axial(datasets, volume, work / "thick-axial", 5.0, series_number=2,
                 description="Axial 5.0 mm")
    if bone_kernel:
        _bone_kernel(datasets, work / "bone-kernel", series_number=4)
    _coronal(datasets, volume, work / "coronal", coronal_count, series_number=5)
    _dose_sr(datasets, work / "dose-sr", series_number=990, target_region=target_region)
    _ainode_outputs(datasets, work / "ainode", protocol_module)


def chest_study() -> BuiltStudy:
    """The whole chest CT study built from LIDC-IDRI-0314 (275 slices of 1 mm).

    Series: the real 1 mm axial series, a 5 mm axial reconstruction (55 slices), 4 coronal
    slabs, a scout, a dose SR, and an earlier chest-respiratory-muscle SEG + SR + SC.

    Raises
    ------
    pytest.skip.Exception
        When the corpus is missing (a failure under ``CI=true``).
    """
    return _build("chest", "chest-ct-lidc-0314", "pipelines.chest_respiratory_muscle",
                  CodedTerm("51185008", "SCT", "Chest"), bone_kernel=False, coronal_count=4)


def head_study() -> BuiltStudy:
    """The small and fast study built from the real head CT (98 axial slices of 2.5 mm).

    Series: the real 2.5 mm axial series, a bone-kernel copy of it, a 5 mm axial
    reconstruction (49 slices), 3 coronal slabs, a scout, a dose SR, and an earlier brain-gwr
    SEG + SR + SC.

    Raises
    ------
    pytest.skip.Exception
        When the corpus is missing (a failure under ``CI=true``).
    """
    return _build("head", "head-ct-cranium-axial", "pipelines.brain_gwr",
                  CodedTerm("69536005", "SCT", "Head"), bone_kernel=True, coronal_count=3)


@dataclass
class SendResult:
    """What ``storescu`` acknowledged for a shuffled send.

    Attributes
    ----------
    statuses : dict of Path to str
        For every file storescu sent, the status text of its C-STORE response
        (``"Success"``, ``"Warning"``...), from ``storescu -v``.
    returncodes : list of int
        Exit status of each parallel storescu run (one per association group).
    output : str
        stdout and stderr of all runs.
    """

    statuses: dict[Path, str]
    returncodes: list[int]
    output: str

    @property
    def acknowledged(self) -> set[Path]:
        """Files whose C-STORE the peer answered with Success or a Warning."""
        return {p for p, s in self.statuses.items() if s == "Success" or s.startswith("Warning")}


_SENDING = re.compile(r"Sending file: (?P<path>.+?)\s*$")
_RESPONSE = re.compile(r"Received Store Response \((?P<status>[^)]*)\)")


def _parse_storescu(output: str) -> dict[Path, str]:
    statuses: dict[Path, str] = {}
    current: Path | None = None
    for line in output.splitlines():
        sending = _SENDING.search(line)
        if sending:
            current = Path(sending["path"])
            continue
        response = _RESPONSE.search(line)
        if response and current is not None:
            statuses[current] = response["status"]
            current = None
    return statuses


def send_study(
    files: Sequence[Path],
    port: int,
    host: str = "127.0.0.1",
    called_aet: str = "AINODE",
    calling_aet: str = "PACS",
    associations: int = 3,
    seed: int = 15,
) -> SendResult:
    """Send ``files`` with DCMTK ``/usr/bin/storescu`` as a PACS forwards a study.

    The files are shuffled (``random.Random(seed)``), dealt round-robin into ``associations``
    groups, and each group is sent by its own storescu run, all at the same time (each run
    opens one association per transfer syntax, see :func:`peers.storescu`). storescu runs with
    ``--required``: it proposes the SOP classes of its files, as its default proposal list lacks
    Segmentation and Comprehensive 3D SR.

    Parameters
    ----------
    files : sequence of Path
        The instances (e.g. :meth:`BuiltStudy.files`).
    port, host, called_aet, calling_aet
        The Storage SCP and our AE title.
    associations : int
        Number of parallel storescu runs.
    seed : int
        Seed of the shuffle.

    Returns
    -------
    SendResult
        The per-file C-STORE status storescu reported, and the exit statuses.
    """
    from peers import storescu

    order = list(files)
    random.Random(seed).shuffle(order)
    groups = [order[i::associations] for i in range(associations) if order[i::associations]]

    def send(group: list[Path]) -> subprocess.CompletedProcess[str]:
        return storescu(host, port, called_aet, group, calling_aet=calling_aet,
                        extra_args=["-v", "--required"], timeout_s=300)

    with ThreadPoolExecutor(max_workers=len(groups)) as pool:
        results = list(pool.map(send, groups))
    output = "".join(r.stdout + r.stderr for r in results)
    return SendResult(statuses=_parse_storescu(output),
                      returncodes=[r.returncode for r in results], output=output)
