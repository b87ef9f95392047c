"""Reading what real archives send: header quirks of the real corpus never stop reading or writing.

Each test starts from real files of ``../shared/realdata`` (copied, then changed where a quirk
is simulated) and checks what a site would see: the series is read, the repair is stated in a
warning, the volume is geometrically right, and objects written on it pass dciodvfy.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest

from realdata_corpus import dicom_files
from peers import require_binary
from pipelines.errors import InvalidSeriesError
from pipelines.outputs import build_outputs, write_outputs
from pipelines.types import (
    AlgorithmInfo,
    CodedTerm,
    Measurement,
    PipelineResult,
    SegmentDefinition,
    ValidationStatus,
)
from pipelines.validation import run_dciodvfy
from pipelines.volume import (
    load_ct_volume,
    read_instance_with_warnings,
    read_instances,
)

pytestmark = pytest.mark.peers

ALGORITHM = AlgorithmInfo(
    name="ainode-test-reader",
    version="0.0.1",
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source="tests/realdata/test_reading.py",
)
BODY = SegmentDefinition(
    number=1,
    label="Body",
    description="Body, > -300 HU",
    category=CodedTerm("91723000", "SCT", "Anatomical structure"),
    property_type=CodedTerm("38266002", "SCT", "Entire body as a whole"),
    anatomic_region=None,
    tracking_id="body",
    display_rgb=(200, 200, 60),
)
UCUM_CM3 = CodedTerm("cm3", "UCUM", "cubic centimeter")
SCT_VOLUME = CodedTerm("118565006", "SCT", "Volume")


@pytest.fixture(scope="module")
def lidc_sorted(realdata_case: Callable[[str], Path]) -> list[pydicom.Dataset]:
    """The real LIDC chest CT slices, sorted feet to head (read once per module)."""
    read = read_instances([realdata_case("chest-ct-lidc-0314")])
    assert not read.errors
    return sorted(read.datasets, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _body_result(volume_datasets: list[pydicom.Dataset], hu: np.ndarray,
                 frames: np.ndarray, voxel_cm3: float) -> PipelineResult:
    label = (hu > -300).astype(np.uint8)
    return PipelineResult(
        protocol="test-reading",
        algorithm=ALGORITHM,
        source_datasets=volume_datasets,
        segments=[BODY],
        label_map=frames,
        measurements=[
            Measurement("body_cm3", SCT_VOLUME, float(label.sum() * voxel_cm3), UCUM_CM3, 1,
                        None, "Body")
        ],
        key_image=None,
    )


def _write_and_validate(result: PipelineResult, out: Path) -> dict[str, Path]:
    require_binary("dciodvfy")
    objects = build_outputs(result, software_version="test")
    paths = write_outputs(objects, out)
    for kind, path in paths.items():
        report = run_dciodvfy(path)
        assert report.ok, f"{kind}: {report.errors}"
    return paths


def test_identifiers_only_in_file_meta_are_taken_from_it(
    realdata_case: Callable[[str], Path],
) -> None:
    """The Siemens upper-abdomen files have empty SOP/Study/Series UIDs in the data set."""
    files = dicom_files(realdata_case("abdomen-ct-upper-siemens"))
    results = [read_instance_with_warnings(f) for f in files]
    series = {str(ds.SeriesInstanceUID) for ds, _ in results}
    studies = {str(ds.StudyInstanceUID) for ds, _ in results}
    assert len(series) == 1 and len(studies) == 1, "one series must stay one series"
    for (ds, warnings), path in zip(results, files, strict=True):
        assert ds.SOPInstanceUID == pydicom.dcmread(path).file_meta.MediaStorageSOPInstanceUID
        assert any("file meta" in w for w in warnings)
        assert any("SeriesInstanceUID was empty" in w for w in warnings)
    # Deterministic: read again, same UIDs.
    again, _ = read_instance_with_warnings(files[0])
    assert str(again.SeriesInstanceUID) in series
    volume = load_ct_volume([ds for ds, _ in results])
    assert volume.hu.shape == (20, 512, 512)
    assert volume.spacing_mm[0] == pytest.approx(2.0, abs=0.01)


def test_undecodable_private_element_is_dropped_with_a_warning(
    lidc_sorted: list[pydicom.Dataset], tmp_path: Path
) -> None:
    """A vendor private element whose length does not fit its dictionary VR (seen on Philips)."""
    ds = copy.deepcopy(lidc_sorted[0])
    ds.add_new(0x01F10010, "LO", "ELSCINT1")
    ds.add_new(0x01F11026, "OB", b"1.25 ")  # the dictionary says FD: 8 bytes
    path = tmp_path / "private.dcm"
    ds.save_as(path, implicit_vr=True, little_endian=True)
    with pytest.raises(Exception):  # noqa: B017,PT011 - pydicom's own failure, any type
        for element in pydicom.dcmread(path):
            element.value  # noqa: B018
    read, warnings = read_instance_with_warnings(path)
    assert 0x01F11026 not in read
    assert any("private" in w and "(01F1,1026)" in w for w in warnings)
    assert read.pixel_array.shape == (512, 512)


def test_per_slice_frame_of_reference_is_one_volume_and_outputs_validate(
    lidc_sorted: list[pydicom.Dataset], tmp_path: Path
) -> None:
    """LIDC gives every slice its own Frame of Reference UID; its geometry is consistent."""
    subset = [copy.deepcopy(ds) for ds in lidc_sorted[100:130]]
    assert len({ds.FrameOfReferenceUID for ds in subset}) == len(subset)
    for ds in subset:
        ds.SpacingBetweenSlices = -1.0  # the signed step some vendors write
    volume = load_ct_volume(subset[::-1])
    assert volume.hu.shape == (30, 512, 512)
    assert volume.spacing_mm[0] == pytest.approx(1.0, abs=1e-3)
    assert any("Frame of Reference" in w for w in volume.warnings)
    # Canonical slice 0 is the most caudal image.
    assert np.allclose(volume.hu[0], pydicom.pixels.apply_modality_lut(
        subset[0].pixel_array, subset[0]))
    frames = volume.to_source_frames((volume.hu > -300).astype(np.uint8))
    result = _body_result(volume.datasets, volume.hu, frames,
                          float(np.prod(volume.spacing_mm)) / 1000.0)
    paths = _write_and_validate(result, tmp_path / "out")
    seg = pydicom.dcmread(paths["seg"])
    spacing = seg.SharedFunctionalGroupsSequence[0].PixelMeasuresSequence[0].get(
        "SpacingBetweenSlices")
    assert spacing is None or float(spacing) > 0


def test_missing_slices_are_resampled_reported_and_mapped_back(
    lidc_sorted: list[pydicom.Dataset],
) -> None:
    kept = [ds for i, ds in enumerate(lidc_sorted[60:100]) if i not in range(12, 18)]
    kept = kept[::3] + kept[1::3] + kept[2::3]  # not in position order
    volume = load_ct_volume(kept)
    assert volume.hu.shape[0] == 40, "the grid spans the whole range at the usual 1 mm step"
    assert any("missing slices" in w and "interpolated" in w for w in volume.warnings)
    assert len(volume.interpolated_source_slices) == 6
    # Kept slices keep their values; an interpolated slice lies between its neighbours.
    z_of = {float(ds.ImagePositionPatient[2]): ds for ds in kept}
    z0 = min(z_of)
    for z, ds in z_of.items():
        k = int(round(z - z0))
        assert np.allclose(volume.hu[k], pydicom.pixels.apply_modality_lut(ds.pixel_array, ds))
    below, above = volume.hu[11], volume.hu[18]
    middle = volume.hu[14]
    between = (middle >= np.minimum(below, above) - 1e-3) & (middle <= np.maximum(below, above) + 1e-3)
    assert between.mean() > 0.999
    # A mask on a kept slice comes back on its own frame.
    mask = np.zeros(volume.hu.shape, dtype=np.uint8)
    mask[25] = 1
    frames = volume.to_source_frames(mask)
    hit = [i for i in range(len(kept)) if frames[i].any()]
    assert len(hit) == 1
    assert float(volume.datasets[hit[0]].ImagePositionPatient[2]) == pytest.approx(z0 + 25)


def test_a_stray_image_far_away_is_refused_with_the_reason(
    lidc_sorted: list[pydicom.Dataset],
) -> None:
    stray = copy.deepcopy(lidc_sorted[274])
    stray.ImagePositionPatient = [
        float(stray.ImagePositionPatient[0]), float(stray.ImagePositionPatient[1]),
        float(stray.ImagePositionPatient[2]) + 500.0,
    ]
    stray.SOPInstanceUID = pydicom.uid.generate_uid()
    with pytest.raises(InvalidSeriesError, match="gaps of up to"):
        load_ct_volume([*lidc_sorted[250:270], stray])


def test_coronal_acquisition_is_reoriented_to_axial_slices(
    realdata_case: Callable[[str], Path],
) -> None:
    """The coronal and the axial reconstruction of one real head lie in one patient space."""
    coronal = load_ct_volume(read_instances([realdata_case("head-ct-cranium-coronal")]).datasets)
    axial = load_ct_volume(read_instances([realdata_case("head-ct-cranium-axial")]).datasets)
    assert not coronal.slice_axis_is_axial and axial.slice_axis_is_axial
    for volume in (coronal, axial):
        extent = np.array(volume.hu.shape) * np.array(volume.spacing_mm)
        assert extent[0] > 150, "head-feet extent of a whole head"
    # The skull's centre of mass agrees between the two reconstructions (patient coordinates).
    centres = []
    for volume in (coronal, axial):
        bone = np.argwhere(volume.hu > 300)
        centre_index = bone.mean(axis=0)
        centres.append(np.asarray(volume.volume.map_indices_to_reference(centre_index[None])[0]))
    assert np.linalg.norm(centres[0] - centres[1]) < 5.0


def test_non_ascii_text_and_invalid_age_give_valid_outputs(
    lidc_sorted: list[pydicom.Dataset], tmp_path: Path
) -> None:
    subset = [copy.deepcopy(ds) for ds in lidc_sorted[200:204]]
    for ds in subset:
        ds.PatientAge = "62"  # not an Age String (nnnY)
        ds.PatientName = "Müller^Zoë"
    volume = load_ct_volume(subset)
    frames = volume.to_source_frames((volume.hu > -300).astype(np.uint8))
    result = _body_result(volume.datasets, volume.hu, frames,
                          float(np.prod(volume.spacing_mm)) / 1000.0)
    result.measurements[0] = Measurement(
        "body_cm3", SCT_VOLUME, result.measurements[0].value, UCUM_CM3, 1, None, "Body (cm³)")
    result.warnings.append("area not in cm² — no pixel spacing")
    paths = _write_and_validate(result, tmp_path / "out")
    for path in paths.values():
        ds = pydicom.dcmread(path)
        assert ds.get("PatientAge", "") == ""
        assert str(ds.PatientName) == "Müller^Zoë"


@pytest.mark.parametrize("thickness", ["-2.5", None])
def test_single_image_without_a_positive_thickness_is_warned(
    lidc_sorted: list[pydicom.Dataset], thickness: str | None
) -> None:
    ds = copy.deepcopy(lidc_sorted[150])
    if thickness is None:
        del ds.SliceThickness
    else:
        ds.SliceThickness = thickness
    volume = load_ct_volume([ds])
    assert volume.spacing_mm[0] == pytest.approx(1.0)
    assert any("Slice Thickness" in w and "1.0 mm is assumed" in w for w in volume.warnings)
    ds.SliceThickness = "2.5"
    assert load_ct_volume([ds]).spacing_mm[0] == pytest.approx(2.5)
