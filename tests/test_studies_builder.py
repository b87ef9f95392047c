"""The whole-study builder (tests/studies.py): structure, geometry, SOP classes, validity, sending.

The small head study is checked in full (built in about 2 s once per cache); the chest study's
structure in a slow test. Geometry is checked against the real axial volume read independently:
a reformat whose orientation or position were wrong would not correlate with the volume
sampled at the plane it claims.
"""

from __future__ import annotations

import filecmp
import threading
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pynetdicom import AE, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from realdata_corpus import case_path
from studies import AXIAL_ROLES, ROLES, BuiltStudy, chest_study, head_study, send_study

from node.local_pacs import find_free_port
from pipelines.validation import run_dciodvfy

CT_IMAGE = "1.2.840.10008.5.1.4.1.1.2"
DOSE_SR = "1.2.840.10008.5.1.4.1.1.88.67"
SEGMENTATION = "1.2.840.10008.5.1.4.1.1.66.4"


@pytest.fixture(scope="module")
def head() -> BuiltStudy:
    return head_study()


def _headers(study: BuiltStudy, role: str) -> list[pydicom.Dataset]:
    return [pydicom.dcmread(p, stop_before_pixels=True) for p in study.series[role].files]


def _axial_volume(folder: Path) -> tuple[np.ndarray, list[pydicom.Dataset]]:
    """HU volume ``(slices, rows, columns)`` ascending z, and its sorted headers."""
    datasets = sorted((pydicom.dcmread(p) for p in folder.iterdir() if p.is_file()),
                      key=lambda ds: float(ds.ImagePositionPatient[2]))
    volume = np.stack([ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
                       for ds in datasets])
    return volume, datasets


def _sample_axial(volume: np.ndarray, datasets: list[pydicom.Dataset],
                  points: np.ndarray) -> np.ndarray:
    """Nearest-voxel HU of the axial volume at LPS ``points`` ``(n, 3)`` in mm (NaN outside)."""
    origin = np.array([float(v) for v in datasets[0].ImagePositionPatient])
    row_mm, col_mm = (float(v) for v in datasets[0].PixelSpacing)
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in datasets])
    k = np.abs(points[:, 2:3] - z[None, :]).argmin(axis=1)
    i = np.rint((points[:, 1] - origin[1]) / row_mm).astype(int)
    j = np.rint((points[:, 0] - origin[0]) / col_mm).astype(int)
    inside = (i >= 0) & (i < volume.shape[1]) & (j >= 0) & (j < volume.shape[2])
    values = np.full(len(points), np.nan)
    values[inside] = volume[k[inside], i[inside], j[inside]]
    return values


def _plane_points(ds: pydicom.Dataset) -> np.ndarray:
    """LPS centre of every pixel of an image, ``(rows * columns, 3)``, from its geometry."""
    position = np.array([float(v) for v in ds.ImagePositionPatient])
    orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
    row_dir, col_dir = orientation[:3], orientation[3:]
    row_mm, col_mm = (float(v) for v in ds.PixelSpacing)
    r, c = np.mgrid[0:int(ds.Rows), 0:int(ds.Columns)]
    return (position[None, :] + (c.reshape(-1, 1) * col_mm) * row_dir[None, :]
            + (r.reshape(-1, 1) * row_mm) * col_dir[None, :])


def test_one_study_one_patient_every_role(head: BuiltStudy) -> None:
    assert set(head.series) == set(ROLES)
    series_uids: set[str] = set()
    sop_uids: set[str] = set()
    for role, series in head.series.items():
        headers = _headers(head, role)
        assert {ds.StudyInstanceUID for ds in headers} == {head.study_instance_uid}, role
        assert {ds.PatientID for ds in headers} == {head.patient_id}, role
        assert not series_uids & series.series_instance_uids, f"{role} shares a series UID"
        series_uids |= series.series_instance_uids
        sops = {ds.SOPInstanceUID for ds in headers}
        assert len(sops) == len(headers) and not sops & sop_uids, role
        sop_uids |= sops
    for role in (*AXIAL_ROLES, "coronal", "localizer"):
        assert head.series[role].sop_class_uids == {CT_IMAGE}, role
    assert head.series["dose-sr"].sop_class_uids == {DOSE_SR}


def test_thin_series_is_the_real_series(head: BuiltStudy) -> None:
    source = case_path("head-ct-cranium-axial")
    names = sorted(p.name for p in head.series["thin-axial"].files)
    assert names == sorted(p.name for p in source.iterdir() if p.is_file())
    _match, mismatch, errors = filecmp.cmpfiles(source, head.series["thin-axial"].folder, names,
                                                shallow=False)
    assert mismatch == [] and errors == []


def test_thick_reconstruction_averages_the_thin_slices(head: BuiltStudy) -> None:
    thin, thin_headers = _axial_volume(head.series["thin-axial"].folder)
    thick, thick_headers = _axial_volume(head.series["thick-axial"].folder)
    thin_step = np.diff([float(ds.ImagePositionPatient[2]) for ds in thin_headers])
    thick_step = np.diff([float(ds.ImagePositionPatient[2]) for ds in thick_headers])
    per_slab = round(5.0 / float(np.median(thin_step)))
    assert len(thick_headers) == len(thin_headers) // per_slab
    assert np.allclose(thick_step, 5.0, atol=0.01)
    for ds in thick_headers:
        assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
        assert float(ds.SliceThickness) == pytest.approx(5.0, abs=0.05)
        assert [float(v) for v in ds.ImageOrientationPatient] == \
            [float(v) for v in thin_headers[0].ImageOrientationPatient]
    # the thick slab k covers thin slices k*n..k*n+n-1: its z is their mean, its HU their mean
    middle = len(thick_headers) // 2
    block = thin[middle * per_slab:(middle + 1) * per_slab]
    z_block = [float(ds.ImagePositionPatient[2])
               for ds in thin_headers[middle * per_slab:(middle + 1) * per_slab]]
    assert float(thick_headers[middle].ImagePositionPatient[2]) == pytest.approx(
        np.mean(z_block), abs=0.01)
    assert np.abs(thick[middle] - block.mean(axis=0)).max() <= 0.5 + 1e-6


def test_bone_kernel_copy(head: BuiltStudy) -> None:
    kernels = {str(ds.ConvolutionKernel) for ds in _headers(head, "bone-kernel")}
    assert kernels == {"B70f"}
    assert len(head.series["bone-kernel"].files) == len(head.series["thin-axial"].files)


def test_coronal_reformat_lies_where_its_geometry_says(head: BuiltStudy) -> None:
    volume, axial = _axial_volume(head.series["thin-axial"].folder)
    coronal = [pydicom.dcmread(p) for p in head.series["coronal"].files]
    assert len(coronal) >= 3
    normals = set()
    for ds in coronal:
        assert list(ds.ImageType) == ["DERIVED", "SECONDARY", "REFORMATTED"]
        orientation = np.array([float(v) for v in ds.ImageOrientationPatient])
        normals.add(tuple(np.round(np.abs(np.cross(orientation[:3], orientation[3:])), 6)))
        image = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        sampled = _sample_axial(volume, axial, _plane_points(ds))
        inside = ~np.isnan(sampled)
        assert inside.mean() > 0.9
        r = np.corrcoef(image.reshape(-1)[inside], sampled[inside])[0, 1]
        assert r > 0.9, f"coronal image {ds.InstanceNumber} does not match the volume (r={r:.2f})"
    assert normals == {(0.0, 1.0, 0.0)}, "coronal planes have the anterior-posterior normal"
    y = [float(ds.ImagePositionPatient[1]) for ds in coronal]
    assert len(set(y)) == len(y), "the slabs lie at different depths"


def test_localizer_is_one_frontal_projection(head: BuiltStudy) -> None:
    volume, axial = _axial_volume(head.series["thin-axial"].folder)
    (path,) = head.series["localizer"].files
    ds = pydicom.dcmread(path)
    assert list(ds.ImageType) == ["ORIGINAL", "PRIMARY", "LOCALIZER"]
    assert (ds.Rows, ds.Columns) == (volume.shape[0], volume.shape[2])
    scout = ds.pixel_array * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
    # row 0 is the most superior axial slice, column 0 the patient's right (LPS)
    projection = volume.mean(axis=1)
    assert np.abs(scout[0] - projection[-1]).max() <= 1.0
    assert np.abs(scout[-1] - projection[0]).max() <= 1.0
    assert float(ds.ImagePositionPatient[2]) == pytest.approx(
        float(axial[-1].ImagePositionPatient[2]), abs=0.01)


def test_dose_report(head: BuiltStudy) -> None:
    (path,) = head.series["dose-sr"].files
    ds = pydicom.dcmread(path)
    assert ds.SOPClassUID == DOSE_SR and ds.Modality == "SR"
    root = ds.ConceptNameCodeSequence[0]
    assert (root.CodeValue, root.CodingSchemeDesignator) == ("113701", "DCM")

    def find(items: pydicom.Sequence, code: str) -> pydicom.Dataset:
        for item in items:
            if item.ConceptNameCodeSequence[0].CodeValue == code:
                return item
            if "ContentSequence" in item:
                try:
                    return find(item.ContentSequence, code)
                except LookupError:
                    continue
        raise LookupError(code)

    ctdi = float(find(ds.ContentSequence, "113830").MeasuredValueSequence[0].NumericValue)
    length_mm = float(find(ds.ContentSequence, "113825").MeasuredValueSequence[0].NumericValue)
    dlp = float(find(ds.ContentSequence, "113813").MeasuredValueSequence[0].NumericValue)
    assert dlp == pytest.approx(ctdi * length_mm / 10, rel=0.01)
    z = [float(h.ImagePositionPatient[2]) for h in _headers(head, "thin-axial")]
    assert length_mm == pytest.approx(max(z) - min(z), abs=0.1)


def test_earlier_ainode_outputs_reference_the_thin_series(head: BuiltStudy) -> None:
    headers = _headers(head, "ainode")
    assert sorted(ds.Modality for ds in headers) == ["OT", "SEG", "SR"]
    for ds in headers:
        assert ds.Manufacturer == "ainode"
        assert str(ds.SeriesDescription).startswith("ainode")
    (seg_path,) = [p for p in head.series["ainode"].files
                   if pydicom.dcmread(p, stop_before_pixels=True).SOPClassUID == SEGMENTATION]
    seg = hd.seg.segread(seg_path)
    referenced = {item.SeriesInstanceUID for item in seg.ReferencedSeriesSequence}
    assert referenced == {head.series["thin-axial"].series_instance_uid}


@pytest.mark.peers
def test_every_generated_object_passes_dciodvfy(head: BuiltStudy) -> None:
    for role in ROLES:
        if role == "thin-axial":
            continue  # the real series, not ours
        for path in head.series[role].files[:2]:
            report = run_dciodvfy(path)
            assert report.errors == [], f"{role} {path.name}: {report.errors}"


def test_uids_are_deterministic(head: BuiltStudy, tmp_path: Path,
                                monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINODE_REALDATA_CACHE", str(tmp_path))
    again = head_study()
    assert again.root != head.root
    for role in ROLES:
        first = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                 for p in head.series[role].files}
        second = {pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID
                  for p in again.series[role].files}
        assert first == second, role


def test_send_study_shuffles_over_parallel_associations(head: BuiltStudy) -> None:
    """A real pynetdicom Storage SCP receives every file, in shuffled order, on 3 associations."""
    received: list[tuple[int, str]] = []
    lock = threading.Lock()

    def on_store(event: evt.Event) -> int:
        with lock:
            received.append((id(event.assoc), event.request.AffectedSOPInstanceUID))
        return 0x0000

    ae = AE(ae_title="AINODE")
    for context in AllStoragePresentationContexts:
        ae.add_supported_context(context.abstract_syntax,
                                 ["1.2.840.10008.1.2", "1.2.840.10008.1.2.1"])
    port = find_free_port()
    server = ae.start_server(("127.0.0.1", port), block=False,
                             evt_handlers=[(evt.EVT_C_STORE, on_store)])
    try:
        files = head.files()
        result = send_study(files, port, associations=3)
    finally:
        server.shutdown()
    assert result.returncodes == [0, 0, 0], result.output[-2000:]
    assert result.acknowledged == set(files)
    assert len({assoc for assoc, _ in received}) >= 3
    sent_order = [pydicom.dcmread(p, stop_before_pixels=True).SOPInstanceUID for p in files]
    arrived = [uid for _, uid in received]
    assert sorted(arrived) == sorted(sent_order)
    assert arrived != sent_order, "the files arrive shuffled, not series by series"


@pytest.mark.slow
@pytest.mark.peers
def test_chest_study_structure() -> None:
    chest = chest_study()
    assert set(chest.series) == set(ROLES) - {"bone-kernel"}
    thin = _headers(chest, "thin-axial")
    thick = _headers(chest, "thick-axial")
    assert len(thin) == 275 and len(thick) == 55
    assert {float(ds.SliceThickness) for ds in thick} == {5.0}
    assert {float(ds.SliceThickness) for ds in thin} == {1.0}
    assert len({ds.FrameOfReferenceUID for ds in thick}) == 1
    for role, series in chest.series.items():
        uids = {pydicom.dcmread(p, stop_before_pixels=True).StudyInstanceUID for p in series.files}
        assert uids == {chest.study_instance_uid}, role
        if role != "thin-axial":
            report = run_dciodvfy(series.files[0])
            assert report.errors == [], f"{role}: {report.errors}"
