"""Tests of pipelines.outputs: SEG, TID 1500 SR and SC key image, validated and read back.

Inputs: the real abdominal CT slice ``explicit_VR-UN.dcm`` (pydicom-data) with tissue masks from
Hounsfield bands, and a synthetic 5-slice axial CT series written with pydicom in shuffled order.
Every object is written to disk, checked with dciodvfy (zero errors) and read back with
highdicom.
"""

from __future__ import annotations

import os
import random
from dataclasses import replace
from pathlib import Path

import highdicom as hd
import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import CTImageStorage, ExplicitVRLittleEndian, generate_uid

from pipelines.errors import OutputError
from pipelines.outputs import (
    SC_SERIES_NUMBER,
    SEG_SERIES_NUMBER,
    SR_SERIES_NUMBER,
    OutputObjects,
    build_outputs,
    derive_uid,
    summarise_outputs,
    write_outputs,
)
from pipelines.outputs.render import render_key_image
from pipelines.types import (
    DCM_MEAN_ATTENUATION,
    PRIVATE_SCHEME,
    RESEARCH_USE_DISCLAIMER,
    SCT_AREA,
    SCT_MEAN,
    SCT_NO,
    SCT_TISSUE,
    SCT_VOLUME,
    UCUM_CM2,
    UCUM_CM2_PER_M2,
    UCUM_CM3,
    UCUM_HU,
    AlgorithmInfo,
    CodedTerm,
    KeyImage,
    Measurement,
    PipelineResult,
    QualitativeFinding,
    SegmentDefinition,
    ValidationStatus,
)
from pipelines.validation import dciodvfy_available, run_dciodvfy
from pipelines.volume import load_ct_volume, read_instance

data_store = pytest.importorskip(
    "data_store", reason="pydicom-data (test extra) is not installed"
)
CT_SLICE = Path(os.path.dirname(data_store.__file__)) / "data" / "explicit_VR-UN.dcm"

MUSCLE = SegmentDefinition(
    number=1,
    label="SMA",
    description="Skeletal muscle, -29..150 HU",
    category=SCT_TISSUE,
    property_type=CodedTerm("91727004", "SCT", "Muscle"),
    anatomic_region=None,
    tracking_id="skeletal-muscle",
    display_rgb=(220, 60, 60),
)
SAT = SegmentDefinition(
    number=2,
    label="SAT",
    description="Subcutaneous adipose tissue, -190..-30 HU",
    category=SCT_TISSUE,
    property_type=CodedTerm("55603005", "SCT", "Fat"),
    anatomic_region=CodedTerm("71966008", "SCT", "Subcutaneous tissue"),
    tracking_id="sat",
    display_rgb=(240, 210, 60),
)
VAT = SegmentDefinition(
    number=3,
    label="VAT",
    description="Visceral adipose tissue",
    category=SCT_TISSUE,
    property_type=CodedTerm("55603005", "SCT", "Fat"),
    anatomic_region=CodedTerm("818987002", "SCT", "Abdominopelvic cavity"),
    tracking_id="vat",
    display_rgb=(60, 200, 90),
)
ALGORITHM = AlgorithmInfo(
    name="ainode-test-bands",
    version="1.2.3",
    validation_status=ValidationStatus.REFERENCE_METHOD,
    is_ai=False,
    source="test fixture",
)
SMI = CodedTerm("SMI", PRIVATE_SCHEME, "Skeletal muscle index")
LOW_MUSCLE_MASS = CodedTerm("LOWSMI", PRIVATE_SCHEME, "Low muscle mass")
SEGMENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.66.4"

requires_dciodvfy = pytest.mark.skipif(
    not dciodvfy_available(),
    reason="dciodvfy (Debian package dicom3tools) is not installed",
)


# --------------------------------------------------------------------------- fixtures


def _real_slice_result(algorithm: AlgorithmInfo = ALGORITHM) -> PipelineResult:
    ds = read_instance(CT_SLICE)
    volume = load_ct_volume([ds])
    hu = volume.hu
    rows, cols = hu.shape[1:]
    yy, xx = np.mgrid[:rows, :cols]
    disc = (yy - rows / 2) ** 2 + (xx - cols / 2) ** 2 < 150**2
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[disc & (hu >= -29) & (hu <= 150)] = MUSCLE.number
    label[disc & (hu >= -190) & (hu <= -30)] = SAT.number
    frames = volume.to_source_frames(label)
    pixel_cm2 = volume.spacing_mm[1] * volume.spacing_mm[2] / 100.0
    measurements = [
        Measurement(
            "sma_cm2",
            SCT_AREA,
            float((label == 1).sum() * pixel_cm2),
            UCUM_CM2,
            1,
            None,
            "SMA",
        ),
        Measurement(
            "muscle_mean_hu",
            DCM_MEAN_ATTENUATION,
            float(hu[label == 1].mean()),
            UCUM_HU,
            1,
            SCT_MEAN,
            "SMA HU",
        ),
        Measurement(
            "sat_area_cm2",
            SCT_AREA,
            float((label == 2).sum() * pixel_cm2),
            UCUM_CM2,
            2,
            None,
            "SAT",
        ),
        Measurement("smi_cm2_per_m2", SMI, 41.5, UCUM_CM2_PER_M2, None, None, "SMI"),
    ]
    key = render_key_image(
        hu[0],
        label[0],
        [MUSCLE, SAT],
        [
            f"SMA {measurements[0].value:.1f} cm2",
            f"{algorithm.name} {algorithm.version}",
        ],
        pixel_spacing_mm=(volume.spacing_mm[1], volume.spacing_mm[2]),
    )
    return PipelineResult(
        protocol="l3-body-composition",
        algorithm=algorithm,
        source_datasets=volume.datasets,
        segments=[
            MUSCLE,
            SAT,
            VAT,
        ],  # VAT defined but absent: must be left out of the SEG
        label_map=frames,
        measurements=measurements,
        findings=[QualitativeFinding(LOW_MUSCLE_MASS, SCT_NO)],
        key_image=KeyImage(key, 0, (volume.spacing_mm[1], volume.spacing_mm[2])),
        summary={"sma_cm2": measurements[0].value},
        warnings=["vertebral level not verified"],
    )


def _write_synthetic_series(directory: Path, n_slices: int = 5) -> list[Path]:
    """Axial CT series: a water cylinder (0 HU) holding a muscle rod (50 HU) and fat (-100 HU)."""
    directory.mkdir(parents=True, exist_ok=True)
    study_uid, series_uid, frame_uid = generate_uid(), generate_uid(), generate_uid()
    rows = cols = 64
    yy, xx = np.mgrid[:rows, :cols]
    paths = []
    for k in range(n_slices):
        pixels = np.full((rows, cols), -1000, dtype=np.int16)
        pixels[(yy - 32) ** 2 + (xx - 32) ** 2 < 28**2] = 0
        pixels[(yy - 32) ** 2 + (xx - 22) ** 2 < 6**2] = 50
        pixels[(yy - 32) ** 2 + (xx - 44) ** 2 < 5**2] = -100
        ds = Dataset()
        ds.file_meta = FileMetaDataset()
        ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds.SOPClassUID = CTImageStorage
        ds.SOPInstanceUID = generate_uid()
        ds.StudyInstanceUID, ds.SeriesInstanceUID = study_uid, series_uid
        ds.FrameOfReferenceUID = frame_uid
        ds.PatientName, ds.PatientID = "Phantom^Synthetic", "SYNTH-001"
        ds.PatientBirthDate, ds.PatientSex = "", "O"
        ds.StudyDate, ds.StudyTime, ds.StudyID, ds.AccessionNumber = (
            "20240101",
            "120000",
            "1",
            "",
        )
        ds.ReferringPhysicianName = ""
        ds.Modality, ds.Manufacturer, ds.SeriesNumber, ds.InstanceNumber = (
            "CT",
            "test",
            3,
            k + 1,
        )
        ds.PatientPosition = "FFS"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "AXIAL"]
        ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
        ds.ImagePositionPatient = [-32.0, -32.0, -100.0 + 2.5 * k]
        ds.PixelSpacing = [1.0, 1.0]
        ds.SliceThickness = 2.5
        ds.Rows, ds.Columns = rows, cols
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = (
            16,
            16,
            15,
            1,
        )
        ds.RescaleIntercept, ds.RescaleSlope, ds.RescaleType = 0, 1, "HU"
        ds.KVP = 120
        ds.PixelData = pixels.tobytes()
        path = directory / f"slice_{k}.dcm"
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


@pytest.fixture(scope="module")
def real_result() -> PipelineResult:
    return _real_slice_result()


@pytest.fixture(scope="module")
def real_outputs(real_result: PipelineResult) -> OutputObjects:
    return build_outputs(
        real_result, software_version="0.1.0", institution_name="Test Hospital"
    )


@pytest.fixture(scope="module")
def series_result(tmp_path_factory: pytest.TempPathFactory) -> PipelineResult:
    paths = _write_synthetic_series(tmp_path_factory.mktemp("series"))
    random.Random(7).shuffle(paths)
    volume = load_ct_volume([read_instance(p) for p in paths])
    hu = volume.hu
    label = np.zeros(hu.shape, dtype=np.uint8)
    label[1:4][(hu[1:4] >= 30) & (hu[1:4] <= 70)] = MUSCLE.number  # 3-slice slab
    label[2][(hu[2] >= -150) & (hu[2] <= -50)] = SAT.number  # one slice only
    voxel_cm3 = float(np.prod(volume.spacing_mm)) / 1000.0
    return PipelineResult(
        protocol="test-volume",
        algorithm=replace(
            ALGORITHM, is_ai=True, validation_status=ValidationStatus.PHANTOM_ONLY
        ),
        source_datasets=volume.datasets,
        segments=[MUSCLE, SAT],
        label_map=volume.to_source_frames(label),
        measurements=[
            Measurement(
                "muscle_cm3",
                SCT_VOLUME,
                float((label == 1).sum() * voxel_cm3),
                UCUM_CM3,
                1,
                None,
                "Muscle",
            ),
        ],
        key_image=None,
    )


# --------------------------------------------------------------------------- helpers


def _source_uid_of_frame(result: PipelineResult, index: int) -> str:
    return str(result.source_datasets[index].SOPInstanceUID)


def _labelled_frames(result: PipelineResult) -> list[int]:
    return [i for i in range(result.label_map.shape[0]) if result.label_map[i].any()]


def _all_groups(sr: hd.sr.Comprehensive3DSR) -> list[object]:
    report = sr.content
    return [
        *report.get_planar_roi_measurement_groups(),
        *report.get_volumetric_roi_measurement_groups(),
        *report.get_image_measurement_groups(),
    ]


# --------------------------------------------------------------------------- tests


def test_derive_uid_is_deterministic_and_valid() -> None:
    uid = derive_uid("1.2.3", "protocol", "algo", "1.0", "seg")
    assert uid == derive_uid("1.2.3", "protocol", "algo", "1.0", "seg")
    assert uid != derive_uid("1.2.3", "protocol", "algo", "1.1", "seg")
    # Length-prefixed joining: moving a character between parts changes the UID.
    assert derive_uid("ab", "c") != derive_uid("a", "bc")
    assert uid.startswith("2.25.") and len(uid) <= 64
    assert pydicom.uid.UID(uid).is_valid


@requires_dciodvfy
@pytest.mark.peers
def test_real_slice_outputs_pass_dciodvfy(
    real_outputs: OutputObjects, tmp_path: Path
) -> None:
    paths = write_outputs(real_outputs, tmp_path)
    assert set(paths) == {"seg", "sr", "sc"}
    expected_iod = {"seg": "Segmentation", "sr": "Comprehensive3DSR", "sc": "SCImage"}
    for kind, path in paths.items():
        report = run_dciodvfy(path)
        assert report.iod == expected_iod[kind], report.raw
        assert report.errors == [], f"{kind}: {report.errors}"


@requires_dciodvfy
@pytest.mark.peers
def test_multi_slice_outputs_pass_dciodvfy(
    series_result: PipelineResult, tmp_path: Path
) -> None:
    objects = build_outputs(series_result, software_version="0.1.0")
    assert objects.sc is None  # no key image in this result
    paths = write_outputs(objects, tmp_path)
    assert set(paths) == {"seg", "sr"}
    for kind, path in paths.items():
        report = run_dciodvfy(path)
        assert report.errors == [], f"{kind}: {report.errors}"


def test_seg_round_trip_real_slice(
    real_result: PipelineResult, real_outputs: OutputObjects, tmp_path: Path
) -> None:
    paths = write_outputs(real_outputs, tmp_path)
    seg = hd.seg.segread(paths["seg"])
    assert seg.SegmentationType == "BINARY"
    assert seg.number_of_segments == 2  # VAT is defined but absent
    segments = {s.SegmentNumber: s for s in seg.SegmentSequence}
    assert [segments[n].SegmentLabel for n in (1, 2)] == ["SMA", "SAT"]
    assert segments[1].segmented_property_type.value == "91727004"
    assert segments[2].segmented_property_type.value == "55603005"
    assert segments[2].anatomic_regions[0].value == "71966008"
    assert segments[1].algorithm_type == hd.seg.SegmentAlgorithmTypeValues.AUTOMATIC
    assert segments[1].algorithm_identification[0].AlgorithmName == ALGORITHM.name
    assert segments[1].algorithm_identification[0].AlgorithmVersion == ALGORITHM.version
    family = segments[1].algorithm_identification[0].AlgorithmFamilyCodeSequence[0]
    assert (family.CodeValue, family.CodingSchemeDesignator) == ("123104", "DCM")
    assert segments[1].tracking_id == "skeletal-muscle"
    # Recommended display colour round-trips to the definition's RGB within 1 unit.
    rgb = hd.color.CIELabColor.from_dicom_value(
        segments[1].RecommendedDisplayCIELabValue
    ).to_rgb()
    assert np.abs(np.subtract(rgb, MUSCLE.display_rgb)).max() <= 1
    assert seg.SeriesNumber == SEG_SERIES_NUMBER
    assert seg.SeriesDescription == "ainode l3-body-composition SEG"

    source_uid = _source_uid_of_frame(real_result, 0)
    pixels = seg.get_pixels_by_source_instance(
        [source_uid], combine_segments=True, relabel=False
    )
    np.testing.assert_array_equal(pixels[0], real_result.label_map[0])


def test_seg_multi_frame_round_trip(
    series_result: PipelineResult, tmp_path: Path
) -> None:
    objects = build_outputs(series_result, software_version="0.1.0")
    seg = hd.seg.segread(write_outputs(objects, tmp_path)["seg"])
    labelled = _labelled_frames(series_result)
    assert len(labelled) == 3
    # Only labelled frames are stored: 3 muscle frames + 1 SAT frame.
    assert int(seg.NumberOfFrames) == 4
    referenced = {uid for _, _, uid in seg.get_source_image_uids()}
    assert referenced == {_source_uid_of_frame(series_result, i) for i in labelled}
    uids = [_source_uid_of_frame(series_result, i) for i in labelled]
    pixels = seg.get_pixels_by_source_instance(
        uids, combine_segments=True, relabel=False
    )
    np.testing.assert_array_equal(pixels, series_result.label_map[labelled])
    family = (
        seg.SegmentSequence[0]
        .algorithm_identification[0]
        .AlgorithmFamilyCodeSequence[0]
    )
    assert family.CodeValue == "123110"  # Artificial Intelligence for is_ai=True


def test_seg_renumbers_segments_with_gaps(
    real_result: PipelineResult, tmp_path: Path
) -> None:
    # Labels 1 and 3 present, 2 absent: SEG segments must run 1..2 and keep their labels.
    label_map = real_result.label_map.copy()
    label_map[label_map == SAT.number] = VAT.number
    result = replace(
        real_result,
        label_map=label_map,
        measurements=[
            m for m in real_result.measurements if m.segment_number != SAT.number
        ],
    )
    objects = build_outputs(result, software_version="0.1.0")
    seg = hd.seg.segread(write_outputs(objects, tmp_path)["seg"])
    assert [s.SegmentLabel for s in seg.SegmentSequence] == ["SMA", "VAT"]
    pixels = seg.get_pixels_by_source_instance(
        [_source_uid_of_frame(result, 0)], combine_segments=True, relabel=False
    )
    np.testing.assert_array_equal(pixels[0] == 2, label_map[0] == VAT.number)
    np.testing.assert_array_equal(pixels[0] == 1, label_map[0] == MUSCLE.number)


def test_sr_round_trip_real_slice(
    real_result: PipelineResult, real_outputs: OutputObjects, tmp_path: Path
) -> None:
    sr = hd.sr.srread(write_outputs(real_outputs, tmp_path)["sr"])
    assert sr.SeriesNumber == SR_SERIES_NUMBER
    assert sr.ContentTemplateSequence[0].TemplateIdentifier == "1500"
    report = sr.content
    seg_uid = str(real_outputs.seg.SOPInstanceUID)
    source_uid = _source_uid_of_frame(real_result, 0)

    planar = {
        g.tracking_identifier: g for g in report.get_planar_roi_measurement_groups()
    }
    assert set(planar) == {
        "skeletal-muscle",
        "skeletal-muscle outline",
        "sat",
        "sat outline",
    }
    muscle = planar["skeletal-muscle"]
    reference = muscle.referenced_segmentation_frame
    assert reference.referenced_sop_instance_uid == seg_uid
    assert (
        reference.source_image_for_segmentation.referenced_sop_instance_uid
        == source_uid
    )
    values = {(m.name.value, m.unit.value): m.value for m in muscle.get_measurements()}
    assert values[("42798000", "cm2")] == pytest.approx(
        real_result.measurements[0].value, rel=1e-9
    )
    assert values[("112181", "[hnsf'U]")] == pytest.approx(
        real_result.measurements[1].value, rel=1e-9
    )
    for measurement in muscle.get_measurements():
        modifiers = {
            item.ConceptNameCodeSequence[0].CodeValue: item.get("TextValue")
            for item in measurement[0].ContentSequence
        }
        assert modifiers["111001"] == ALGORITHM.name  # Algorithm Name
        assert modifiers["111003"] == ALGORITHM.version  # Algorithm Version

    # The outline polygon is closed, on the source image, in (column, row) pixel coordinates,
    # and lies on the muscle mask.
    outline = planar["skeletal-muscle outline"]
    assert outline.roi.graphic_type == hd.sr.GraphicTypeValues.POLYLINE
    polygon = outline.roi.value
    assert len(polygon) >= 4
    np.testing.assert_array_equal(polygon[0], polygon[-1])
    assert (
        outline.roi.ContentSequence[0].ReferencedSOPSequence[0].ReferencedSOPInstanceUID
        == source_uid
    )
    columns = np.clip(np.floor(polygon[:, 0]).astype(int), 0, 511)
    rows = np.clip(np.floor(polygon[:, 1]).astype(int), 0, 511)
    near_mask = np.zeros((512, 512), dtype=bool)
    for dr in (-1, 0, 1):
        for dc in (-1, 0, 1):
            near_mask |= np.roll(
                real_result.label_map[0] == MUSCLE.number, (dr, dc), axis=(0, 1)
            )
    assert near_mask[rows, columns].mean() > 0.95

    summary = {g.tracking_identifier: g for g in report.get_image_measurement_groups()}[
        "summary"
    ]
    smi = summary.get_measurements()[0]
    assert (smi.name.value, smi.name.scheme_designator, smi.value, smi.unit.value) == (
        "SMI",
        PRIVATE_SCHEME,
        41.5,
        "cm2/m2",
    )
    evaluations = {
        q.name.meaning: q.value.meaning for q in summary.get_qualitative_evaluations()
    }
    assert evaluations["Low muscle mass"] == "No"
    assert evaluations["Algorithm validation status"] == "reference-method"
    assert evaluations["Intended use"] == RESEARCH_USE_DISCLAIMER

    # Free-text statements in the TID 1500 "Qualitative Evaluations" container.
    container = [
        item
        for item in sr.ContentSequence
        if item.ConceptNameCodeSequence[0].CodeValue == "C0034375"
    ]
    texts = [item.TextValue for item in container[0].ContentSequence]
    assert RESEARCH_USE_DISCLAIMER in texts
    assert "vertebral level not verified" in texts
    assert any("reference-method" in text for text in texts)

    schemes = [
        item.CodingSchemeDesignator for item in sr.CodingSchemeIdentificationSequence
    ]
    assert PRIVATE_SCHEME in schemes
    evidence = {sop_uid for _, _, sop_uid, _ in sr.get_evidence()}
    assert {seg_uid, source_uid} <= evidence


def test_sr_volumetric_group_for_multi_slice_segment(
    series_result: PipelineResult,
) -> None:
    objects = build_outputs(series_result, software_version="0.1.0")
    report = hd.sr.Comprehensive3DSR.from_dataset(objects.sr).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    assert [g.tracking_identifier for g in volumetric] == ["skeletal-muscle"]
    reference = volumetric[0].referenced_segment
    assert reference.referenced_sop_instance_uid == str(objects.seg.SOPInstanceUID)
    muscle_volume = volumetric[0].get_measurements()[0]
    assert muscle_volume.value == pytest.approx(
        series_result.measurements[0].value, rel=1e-9
    )
    assert muscle_volume.unit.value == "cm3"
    # SAT lies on one slice: planar group plus outline.
    planar = {g.tracking_identifier for g in report.get_planar_roi_measurement_groups()}
    assert planar == {"sat", "sat outline"}


def test_sc_key_image(
    real_result: PipelineResult, real_outputs: OutputObjects, tmp_path: Path
) -> None:
    sc = pydicom.dcmread(write_outputs(real_outputs, tmp_path)["sc"])
    assert sc.PhotometricInterpretation == "RGB"
    assert sc.BurnedInAnnotation == "YES"
    assert sc.ConversionType == "WSD"
    assert sc.SeriesNumber == SC_SERIES_NUMBER
    assert sc.SeriesDescription == "ainode l3-body-composition key image"
    np.testing.assert_array_equal(sc.pixel_array, real_result.key_image.pixels_rgb)
    assert sc.SourceImageSequence[0].ReferencedSOPInstanceUID == _source_uid_of_frame(
        real_result, 0
    )


def test_same_study_and_patient_new_series(
    real_result: PipelineResult, real_outputs: OutputObjects
) -> None:
    source = real_result.source_datasets[0]
    series_uids = set()
    for ds in (real_outputs.seg, real_outputs.sr, real_outputs.sc):
        assert ds.StudyInstanceUID == source.StudyInstanceUID
        assert ds.PatientID == source.PatientID
        assert ds.SeriesInstanceUID != source.SeriesInstanceUID
        assert ds.Manufacturer == "ainode"
        series_uids.add(ds.SeriesInstanceUID)
    assert len(series_uids) == 3
    assert real_outputs.seg.InstitutionName == "Test Hospital"


def test_uids_are_deterministic(
    real_result: PipelineResult, real_outputs: OutputObjects
) -> None:
    again = build_outputs(real_result, software_version="0.1.0")
    for (kind, first), (_, second) in zip(
        real_outputs.items(), again.items(), strict=True
    ):
        assert first.SOPInstanceUID == second.SOPInstanceUID, kind
        assert first.SeriesInstanceUID == second.SeriesInstanceUID, kind
    new_version = build_outputs(
        replace(real_result, algorithm=replace(ALGORITHM, version="1.2.4")),
        software_version="0.1.0",
    )
    for (kind, first), (_, other) in zip(
        real_outputs.items(), new_version.items(), strict=True
    ):
        assert first.SOPInstanceUID != other.SOPInstanceUID, kind
        assert first.SeriesInstanceUID != other.SeriesInstanceUID, kind
    summary = summarise_outputs(real_outputs)
    assert summary["sr"]["sop_instance_uid"] == str(real_outputs.sr.SOPInstanceUID)


def test_empty_label_map_gives_sr_without_seg(
    real_result: PipelineResult, tmp_path: Path
) -> None:
    result = replace(
        real_result,
        label_map=np.zeros_like(real_result.label_map),
        measurements=[m for m in real_result.measurements if m.segment_number is None],
    )
    objects = build_outputs(result, software_version="0.1.0")
    assert objects.seg is None
    sr = hd.sr.srread(write_outputs(objects, tmp_path)["sr"])
    assert [g.tracking_identifier for g in _all_groups(sr)] == ["summary"]


def test_inconsistent_results_raise_output_error(real_result: PipelineResult) -> None:
    with pytest.raises(OutputError, match="label map shape"):
        build_outputs(
            replace(real_result, label_map=real_result.label_map[:, :10]),
            software_version="0",
        )
    bad = real_result.label_map.copy()
    bad[0, 0, 0] = 7
    with pytest.raises(OutputError, match=r"label values \[7\]"):
        build_outputs(replace(real_result, label_map=bad), software_version="0")
    with pytest.raises(OutputError, match="no source datasets"):
        build_outputs(replace(real_result, source_datasets=[]), software_version="0")
    key = real_result.key_image
    with pytest.raises(OutputError, match="uint8 RGB"):
        build_outputs(
            replace(
                real_result, key_image=replace(key, pixels_rgb=key.pixels_rgb[..., 0])
            ),
            software_version="0",
        )


def test_dciodvfy_output_parsing_redacts_patient_values() -> None:
    from pipelines.validation import parse_dciodvfy_output

    text = (
        "Warning - </PatientName(0010,0010)[1]> - Value dubious for this VR [PN] = <DOE_J> "
        "- Retired Person Name form\n"
        "Segmentation\n"
        "Error - </PatientPosition(0018,5100)> - Missing attribute for Type 2C Conditional "
        "- Module=<GeneralSeries>\n"
    )
    report = parse_dciodvfy_output(text, Path("x.dcm"))
    assert report.iod == "Segmentation"
    expected_error = (
        "</PatientPosition(0018,5100)> - Missing attribute for Type 2C Conditional "
        "- Module=<GeneralSeries>"
    )
    assert report.errors == [expected_error]
    assert len(report.warnings) == 1 and "DOE_J" not in report.warnings[0]
    assert "DOE_J" not in report.raw and "<redacted>" in report.raw
    assert not report.ok


def test_laterality_and_slice_measurements_are_encoded(
    series_result: PipelineResult, tmp_path: Path
) -> None:
    """A paired segment carries its laterality (SEG property type modifier, SR finding site
    laterality) and a single-slice measurement of a multi-frame segment gets its own planar
    group referencing the SEG frame on that slice."""
    from pipelines.types import SCT_RIGHT

    muscle = replace(MUSCLE, laterality=SCT_RIGHT)
    frame = _labelled_frames(series_result)[0]
    assert (series_result.label_map[frame] == MUSCLE.number).any()
    slice_area = Measurement(
        "muscle_slice_cm2", SCT_AREA, 12.5, UCUM_CM2, MUSCLE.number, None, "Muscle slice",
        frame_index=frame,
    )
    result = replace(
        series_result,
        segments=[muscle, SAT],
        measurements=[*series_result.measurements, slice_area],
    )
    objects = build_outputs(result, software_version="0.1.0")
    item = next(
        s for s in objects.seg.SegmentSequence if s.SegmentLabel == MUSCLE.label
    )
    modifier = item.SegmentedPropertyTypeCodeSequence[0].SegmentedPropertyTypeModifierCodeSequence
    assert (modifier[0].CodeValue, modifier[0].CodingSchemeDesignator) == ("24028007", "SCT")
    report = hd.sr.Comprehensive3DSR.from_dataset(objects.sr).content
    volumetric = report.get_volumetric_roi_measurement_groups()
    assert [m.value for m in volumetric[0].get_measurements()] == [
        pytest.approx(series_result.measurements[0].value)
    ]
    sites = volumetric[0].finding_sites
    assert sites[0].laterality is not None and sites[0].laterality.value == "24028007"
    slice_groups = [
        g
        for g in report.get_planar_roi_measurement_groups()
        if str(g.tracking_identifier).startswith(f"{MUSCLE.tracking_id} slice")
    ]
    assert len(slice_groups) == 1
    assert [m.value for m in slice_groups[0].get_measurements()] == [pytest.approx(12.5)]
    referenced = slice_groups[0].referenced_segmentation_frame
    assert referenced is not None
    assert referenced.referenced_sop_instance_uid == str(objects.seg.SOPInstanceUID)
    # The referenced source image is the measured slice.
    assert str(result.source_datasets[frame].SOPInstanceUID) in str(slice_groups[0])
    if dciodvfy_available():
        for path in write_outputs(objects, tmp_path).values():
            assert run_dciodvfy(path).errors == []


def test_slice_measurement_on_an_empty_frame_is_refused(series_result: PipelineResult) -> None:
    empty = [i for i in range(series_result.label_map.shape[0])
             if not (series_result.label_map[i] == MUSCLE.number).any()]
    bad = Measurement(
        "muscle_slice_cm2", SCT_AREA, 1.0, UCUM_CM2, MUSCLE.number, None, "x",
        frame_index=empty[0],
    )
    with pytest.raises(OutputError, match="slice measurements"):
        build_outputs(
            replace(series_result, measurements=[*series_result.measurements, bad]),
            software_version="0.1.0",
        )
