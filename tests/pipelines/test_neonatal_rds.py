"""Tests of the neonatal-rds protocol (pipelines.neonatal_rds, pipelines.radiograph).

Ground truth: the synthetic chest radiograph of training.phantoms.chest_radiograph (exact lung
masks; tubes, catheters, ECG electrodes and wires drawn over the lungs), written as CR/DX
MONOCHROME1/2 datasets. Real input: the adult PA chest radiograph RG1 of pydicom-data
(uncompressed and JPEG 2000 reversible) and the extremity radiograph RG3 (non-chest rejection).
Tolerances: lung Dice >= 0.95 and area error <= 5 % per lung (issue 5).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.errors import ConfigError, PipelineError, UnsupportedInputError
from pipelines.neonatal_rds import (
    LABEL_LEFT_LUNG,
    LABEL_RIGHT_LUNG,
    RDS_CLASSIFICATION,
    RDS_CLASSIFICATION_PERFORMED,
    NeonatalRDSParameters,
    run_from_datasets,
    segment_reference,
)
from pipelines.outputs import build_outputs, write_outputs
from pipelines.radiograph import radiograph_pixel_spacing
from pipelines.types import SCT_NO, AlgorithmInfo, LearnedModel, ValidationStatus
from pipelines.validation import dciodvfy_available, run_dciodvfy
from training.phantoms.chest_radiograph import make_chest_radiograph, phantom_to_dataset

data_store = pytest.importorskip("data_store", reason="pydicom-data is not installed")
DATA = Path(os.path.dirname(data_store.__file__)) / "data"

requires_dciodvfy = pytest.mark.skipif(
    not dciodvfy_available(), reason="dciodvfy (dicom3tools) is not installed"
)

#: Phantom size used in the tests (0.4 mm pixels: 13.4 x 15.4 cm).
ROWS, COLUMNS, SPACING_MM = 384, 336, 0.4


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * np.logical_and(a, b).sum() / (a.sum() + b.sum()))


@pytest.fixture(scope="module")
def normal_phantom():
    return make_chest_radiograph(ROWS, COLUMNS, SPACING_MM, devices=True, seed=3)


@pytest.fixture(scope="module")
def glass_phantom():
    return make_chest_radiograph(ROWS, COLUMNS, SPACING_MM, devices=True, ground_glass=True, seed=4)


@pytest.fixture(scope="module")
def real_result():
    ds = pydicom.dcmread(DATA / "RG1_UNCR.dcm")
    return ds, run_from_datasets([ds], {})


@pytest.mark.parametrize(
    ("variant", "kwargs"),
    [
        ("normal", {"photometric_interpretation": "MONOCHROME2"}),
        ("normal", {"photometric_interpretation": "MONOCHROME1"}),
        ("glass", {"photometric_interpretation": "MONOCHROME1"}),
        (
            "glass",
            {
                "modality": "DX",
                "spacing_attribute": "ImagerPixelSpacing",
                "estimated_magnification": 1.15,
            },
        ),
    ],
)
def test_lung_fields_match_phantom_truth_with_devices(
    variant: str, kwargs: dict, normal_phantom, glass_phantom
) -> None:
    phantom = normal_phantom if variant == "normal" else glass_phantom
    assert phantom.devices  # tubes, catheters, electrodes and wires over the lungs
    ds = phantom_to_dataset(phantom, **kwargs)
    result = run_from_datasets([ds], {})
    labels = result.label_map[0]
    for label, name in ((LABEL_RIGHT_LUNG, "right"), (LABEL_LEFT_LUNG, "left")):
        dice = _dice(labels == label, phantom.label_map == label)
        assert dice >= 0.95, f"{name} lung Dice {dice:.3f}"
        truth_cm2 = phantom.lung_area_cm2(label)
        measured_cm2 = result.summary[f"{name}_lung_area_cm2"]
        assert abs(measured_cm2 / truth_cm2 - 1.0) <= 0.05, (measured_cm2, truth_cm2)
    assert result.summary["rds_classification_performed"] is False
    assert result.summary["rds_label"] is None
    assert result.summary["lungs_cut_off"] is False
    assert result.summary["area_implausible_for_neonate"] is False
    assert result.summary["area_implausible_for_adult"] is True


def test_lung_opacity_index_rises_with_ground_glass(normal_phantom, glass_phantom) -> None:
    normal = run_from_datasets([phantom_to_dataset(normal_phantom)], {})
    glass = run_from_datasets([phantom_to_dataset(glass_phantom)], {})
    loi_normal = normal.summary["lung_opacity_index"]
    loi_glass = glass.summary["lung_opacity_index"]
    assert 0.2 < loi_normal < 0.5
    assert loi_glass > loi_normal + 0.15


def test_no_model_means_no_rds_label_and_sr_says_so(normal_phantom) -> None:
    result = run_from_datasets([phantom_to_dataset(normal_phantom)], {})
    performed = [f for f in result.findings if f.name == RDS_CLASSIFICATION_PERFORMED]
    assert performed and performed[0].value == SCT_NO
    assert not [f for f in result.findings if f.name == RDS_CLASSIFICATION]
    assert any("RDS classification not performed" in w for w in result.warnings)
    assert not [m for m in result.measurements if m.key == "rds_probability"]


def _stand_in_model(phantom, status: ValidationStatus, probability: float) -> LearnedModel:
    """A stand-in for a trained network (none exists yet): returns the phantom's truth."""
    calls: list[tuple] = []

    def predict(image: np.ndarray, spacing: object) -> np.ndarray:
        calls.append((image.shape, spacing))
        return phantom.label_map.copy()

    def classify(image: np.ndarray, lung_mask: np.ndarray) -> float:
        assert lung_mask.dtype == bool and lung_mask.shape == image.shape
        return probability

    algorithm = AlgorithmInfo("stand-in-unet", "0.0.1", status, True, "test stand-in")
    return LearnedModel(algorithm=algorithm, predict=predict, classify=classify)


@pytest.mark.parametrize(
    ("status", "label"),
    [(ValidationStatus.RESEARCH, None), (ValidationStatus.VALIDATED, "RDS")],
)
def test_model_probability_and_label_only_when_validated(
    normal_phantom, status: ValidationStatus, label: str | None
) -> None:
    model = _stand_in_model(normal_phantom, status, 0.8)
    result = run_from_datasets([phantom_to_dataset(normal_phantom)], {}, model=model)
    assert result.algorithm.name == "stand-in-unet"
    assert result.summary["rds_probability"] == pytest.approx(0.8)
    assert result.summary["rds_label"] == label
    assert bool([f for f in result.findings if f.name == RDS_CLASSIFICATION]) is (label is not None)
    # The model's lungs go through the same measurement: median filter only changes edges.
    assert _dice(result.label_map[0] > 0, normal_phantom.label_map > 0) > 0.99


@requires_dciodvfy
def test_phantom_outputs_pass_dciodvfy(normal_phantom, tmp_path: Path) -> None:
    ds = phantom_to_dataset(normal_phantom, modality="DX", photometric_interpretation="MONOCHROME1")
    result = run_from_datasets([ds], {})
    written = write_outputs(build_outputs(result, software_version="test"), tmp_path)
    assert set(written) == {"seg", "sr", "sc"}
    for kind, path in written.items():
        report = run_dciodvfy(path)
        assert report.ok, (kind, report.errors)
    sc = pydicom.dcmread(written["sc"])
    assert list(sc.PatientOrientation) == ["L", "F"]
    seg = pydicom.dcmread(written["seg"])
    assert "FrameOfReferenceUID" not in seg
    assert list(seg.PatientOrientation) == ["L", "F"]


@requires_dciodvfy
def test_real_radiograph_lung_fields_and_outputs(real_result, tmp_path: Path) -> None:
    ds, result = real_result
    summary = result.summary
    labels = result.label_map[0]
    # Masks on the real lung fields: one lung each side of the midline, about a tenth to a
    # sixth of the film each (checked by eye on the key image,
    # docs/images/validation/cxr-rg1-neonatal-rds.png).
    right_columns = np.nonzero(labels == LABEL_RIGHT_LUNG)[1]
    left_columns = np.nonzero(labels == LABEL_LEFT_LUNG)[1]
    assert right_columns.max() < ds.Columns / 2 < left_columns.min()
    for name in ("right", "left"):
        assert 8.0 < summary[f"{name}_lung_area_percent"] < 20.0
    assert 0.8 < summary["left_right_area_ratio"] < 1.5
    assert summary["lungs_cut_off"] is False
    # Pixel Spacing is 0\0 in this header: no cm², said so.
    assert summary["right_lung_area_cm2"] is None
    assert summary["pixel_spacing_source"].startswith("none")
    written = write_outputs(build_outputs(result, software_version="test"), tmp_path)
    for kind, path in written.items():
        report = run_dciodvfy(path)
        assert report.ok, (kind, report.errors)


def test_jpeg2000_radiograph_gives_the_same_lung_fields(real_result) -> None:
    _, uncompressed = real_result
    ds = pydicom.dcmread(DATA / "RG1_J2KR.dcm")  # JPEG 2000 reversible: same pixels
    result = run_from_datasets([ds], {"assumed_pixel_spacing_mm": 0.2})
    np.testing.assert_array_equal(result.label_map, uncompressed.label_map)
    assert result.summary["right_lung_area_cm2"] == pytest.approx(
        np.count_nonzero(result.label_map == LABEL_RIGHT_LUNG) * 0.04 / 100.0
    )
    assert "assumed" in result.summary["pixel_spacing_source"]


def test_rejections(normal_phantom) -> None:
    lateral = phantom_to_dataset(normal_phantom, view_position="LL")
    with pytest.raises(UnsupportedInputError, match="lateral"):
        run_from_datasets([lateral], {})
    multi = phantom_to_dataset(normal_phantom)
    multi.NumberOfFrames = 2
    with pytest.raises(UnsupportedInputError, match="multi-frame"):
        run_from_datasets([multi], {})
    colour = phantom_to_dataset(normal_phantom)
    colour.PhotometricInterpretation = "RGB"
    colour.SamplesPerPixel = 3
    with pytest.raises(UnsupportedInputError, match="grayscale"):
        run_from_datasets([colour], {})
    extremity = pydicom.dcmread(DATA / "RG3_UNCR.dcm")
    with pytest.raises(UnsupportedInputError, match="EXTREMITY"):
        run_from_datasets([extremity], {})
    del extremity.BodyPartExamined
    with pytest.raises(UnsupportedInputError, match="do not look like a frontal chest"):
        run_from_datasets([extremity], {})
    extremity.BodyPartExamined = "OTHER"  # uninformative: the pixels decide
    with pytest.raises(UnsupportedInputError, match="'OTHER' and the pixels do not look"):
        run_from_datasets([extremity], {})
    with pytest.raises(ConfigError, match="unknown neonatal-rds parameter"):
        run_from_datasets([lateral], {"threshold": 1})


def test_uninformative_body_part_is_checked_on_the_pixels(normal_phantom) -> None:
    ds = phantom_to_dataset(normal_phantom, body_part_examined="OTHER")
    result = run_from_datasets([ds], {})
    assert any("chest recognised from the pixels" in w for w in result.warnings)


def test_lateral_view_in_series_is_skipped(normal_phantom) -> None:
    lateral = phantom_to_dataset(normal_phantom, view_position="RL")
    lateral.InstanceNumber = 1
    frontal = phantom_to_dataset(normal_phantom)
    frontal.InstanceNumber = 2
    result = run_from_datasets([lateral, frontal], {})
    assert result.source_datasets[0].SOPInstanceUID == frontal.SOPInstanceUID
    assert any("skipped" in w for w in result.warnings)


def test_flipped_orientation_swaps_right_and_left(normal_phantom) -> None:
    ds = phantom_to_dataset(normal_phantom, patient_orientation=("R", "F"))
    labels = run_from_datasets([ds], {}).label_map[0]
    # Columns now run to the patient's right: the image-left lung is the patient's left.
    assert _dice(labels == LABEL_LEFT_LUNG, normal_phantom.label_map == LABEL_RIGHT_LUNG) > 0.95


def test_white_out_image_raises_pipeline_error(normal_phantom) -> None:
    ds = phantom_to_dataset(normal_phantom)
    flat = np.full((ROWS, COLUMNS), 2000, dtype=np.uint16)
    ds.PixelData = flat.tobytes()
    with pytest.raises(PipelineError, match="no lung field"):
        run_from_datasets([ds], {})


def test_rotation_fallback_runs_on_sideways_image(normal_phantom) -> None:
    sideways = np.ascontiguousarray(np.rot90(normal_phantom.image))
    truth = np.rot90(normal_phantom.label_map) > 0
    fields = segment_reference(sideways, NeonatalRDSParameters())
    assert fields.rotation_fallback_applied
    assert _dice(fields.label_map > 0, truth) >= 0.9


def test_pixel_spacing_precedence() -> None:
    ds = pydicom.Dataset()
    ds.ImagerPixelSpacing = [0.2, 0.2]
    ds.DistanceSourceToDetector = 1000
    ds.DistanceSourceToPatient = 800
    spacing, source, _ = radiograph_pixel_spacing(ds)
    assert spacing == pytest.approx((0.16, 0.16)) and "Distance" in source
    ds.EstimatedRadiographicMagnificationFactor = 1.1
    spacing, source, _ = radiograph_pixel_spacing(ds)
    assert spacing == pytest.approx((0.2 / 1.1, 0.2 / 1.1)) and "Magnification" in source
    ds.PixelSpacing = [0.15, 0.16]
    spacing, source, _ = radiograph_pixel_spacing(ds)
    assert spacing == (0.15, 0.16) and source.startswith("Pixel Spacing")
    ds.PixelSpacing = [0, 0]
    del ds.EstimatedRadiographicMagnificationFactor, ds.DistanceSourceToPatient
    spacing, source, warnings = radiograph_pixel_spacing(ds)
    assert spacing == (0.2, 0.2) and "not corrected" in source and len(warnings) == 2


def test_patient_context_given_by_the_core_is_what_the_method_uses(normal_phantom) -> None:
    """Age and kVp in the summary come from the PatientContext the core passes, not from the
    image's headers."""
    from pipelines.protocol import PatientContext

    ds = phantom_to_dataset(normal_phantom)
    ds.PatientAge = "003D"
    ds.KVP = 60
    from_headers = run_from_datasets([ds], {}).summary
    assert from_headers["patient_age_days"] == pytest.approx(3.0, abs=0.1)
    assert from_headers["kvp"] == pytest.approx(60.0)
    context = PatientContext(age_years=20 / 365.25, kvp=71.0)
    summary = run_from_datasets([ds], {}, context=context).summary
    assert summary["patient_age_days"] == pytest.approx(20.0, abs=0.1)
    assert summary["kvp"] == pytest.approx(71.0)
    # The measurement itself does not depend on the context.
    assert summary["total_lung_area_cm2"] == pytest.approx(from_headers["total_lung_area_cm2"])
