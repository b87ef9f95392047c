"""brain-gwr (reference method) against the head phantom's ground truth, and on a real slice.

Ground truth: the phantom's gray matter (incl. caudate, putamen) is ``gm_hu`` and its white
matter (incl. PLIC, corpus callosum) ``wm_hu`` before noise, so every basal-ganglia GWR is
exactly ``gm_hu / wm_hu``; its landmark labels are the atlas labels placed by the same rigid
transform as the anatomy. Tolerances: GWR within 0.02 of truth; Dice >= 0.8 per landmark and
side on the source frames; landmark volumes within 25 % of truth.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import numpy as np
import pytest

from pipelines.brain_atlas import LANDMARK_LABELS
from pipelines.brain_gwr import (
    LABEL_BRAIN_PARENCHYMA,
    PROTOCOL_NAME,
    BrainGWRParameters,
    run_brain_gwr,
    run_from_datasets,
)
from pipelines.errors import ConfigError, PipelineError, UnsupportedInputError
from pipelines.outputs import build_outputs, write_outputs
from pipelines.outputs.render import render_key_image_spec
from pipelines.types import (
    SCT_NO,
    SCT_YES,
    AlgorithmInfo,
    LearnedModel,
    PipelineResult,
    ValidationStatus,
)
from pipelines.validation import dciodvfy_available, run_dciodvfy
from pipelines.volume import load_ct_volume, read_instances
from training.phantoms.head import HeadPhantom, make_head_phantom, write_head_series

GWR_TOLERANCE = 0.02
MIN_DICE = 0.8

requires_dciodvfy = pytest.mark.skipif(
    not dciodvfy_available(), reason="dciodvfy (Debian package dicom3tools) is not installed"
)


def _datasets(phantom: HeadPhantom, directory: Path, **kwargs: object) -> list:
    write_head_series(phantom, directory, **kwargs)  # type: ignore[arg-type]
    return read_instances([directory]).datasets


def _truth_on_source_frames(phantom: HeadPhantom, result: PipelineResult) -> np.ndarray:
    """Phantom truth labels in the order of ``result.source_datasets`` (Instance Number k+1)."""
    order = [int(ds.InstanceNumber) - 1 for ds in result.source_datasets]
    return phantom.labels[order]


def _dice(a: np.ndarray, b: np.ndarray) -> float:
    return float(2.0 * (a & b).sum() / max(1, a.sum() + b.sum()))


def _check_against_truth(phantom: HeadPhantom, result: PipelineResult) -> None:
    s = result.summary
    assert s["gwr_measurable"] is True
    for key in ("gwr_bg", "gwr_bg_right", "gwr_bg_left", "gwr_pu_pic"):
        assert s[key] == pytest.approx(phantom.expected_gwr, abs=GWR_TOLERANCE), key
    truth = _truth_on_source_frames(phantom, result)
    assert result.label_map.shape == truth.shape
    for label, name in LANDMARK_LABELS.items():
        dice = _dice(result.label_map == label, truth == label)
        assert dice >= MIN_DICE, f"{name}: Dice {dice:.3f}"
    # Sides are not swapped: right caudate against the left truth overlaps nothing.
    assert _dice(result.label_map == 1, truth == 2) < 0.05


@pytest.fixture(scope="module")
def upright_phantom() -> HeadPhantom:
    return make_head_phantom(seed=3)


@pytest.fixture(scope="module")
def upright_dir(upright_phantom: HeadPhantom, tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("upright")
    write_head_series(upright_phantom, directory)
    return directory


@pytest.fixture
def upright_datasets(upright_dir: Path) -> list:
    # Read afresh for every test: load_ct_volume removes Pixel Data from the datasets it gets.
    return read_instances([upright_dir]).datasets


@pytest.fixture(scope="module")
def upright_result(upright_dir: Path) -> PipelineResult:
    return run_from_datasets(read_instances([upright_dir]).datasets, {})


def test_upright_phantom_gwr_and_dice(upright_phantom: HeadPhantom,
                                      upright_result: PipelineResult) -> None:
    _check_against_truth(upright_phantom, upright_result)
    s = upright_result.summary
    assert s["protocol"] == PROTOCOL_NAME
    assert s["low_gwr"] is False  # 1.267 is not below the default 1.18
    assert s["gwr_cutoff"] == pytest.approx(1.18)
    assert s["registration_brain_dice"] >= 0.9
    assert s["gwr_cerebrum"] is None and "not in the shipped atlas" in s["gwr_cerebrum_reason"]
    # Landmark volumes (whole segments after refinement) close to the truth volumes.
    keys = {1: "caudate_right", 2: "caudate_left", 3: "putamen_right", 4: "putamen_left",
            5: "plic_right", 6: "plic_left", 7: "corpus_callosum"}
    for label, key in keys.items():
        truth_mm3 = upright_phantom.truth[f"volume_mm3_{label}"]
        assert s["landmarks"][key]["volume_mm3"] == pytest.approx(truth_mm3, rel=0.25), key
        # Noise-free truth is 38 / 30 HU; noise SD 4 HU, thousands of voxels.
        expected_hu = upright_phantom.gm_hu if label <= 4 else upright_phantom.wm_hu
        assert s["landmarks"][key]["core_mean_hu"] == pytest.approx(expected_hu, abs=0.6), key
    findings = {f.name.value: f.value for f in upright_result.findings}
    assert findings["LOW-GWR"] == SCT_NO and findings["GWR-MEASURABLE"] == SCT_YES
    assert upright_result.key_image is not None
    # The method describes its key image; the outputs draw it.
    assert render_key_image_spec(upright_result.key_image).pixels_rgb.dtype == np.uint8
    # The key image is the basal-ganglia level: its source frame holds putamen voxels.
    frame = upright_result.label_map[upright_result.key_image.source_index]
    assert (np.isin(frame, (3, 4))).any()


@pytest.mark.parametrize(
    ("rotation_deg", "shift_mm", "slice_mm", "seed"),
    [((15.0, -15.0, 15.0), (20.0, -20.0, 20.0), 3.0, 11),
     ((-15.0, 15.0, -15.0), (-20.0, 20.0, -20.0), 5.0, 12)],
    ids=["rot+15-shift+20-3mm", "rot-15-shift-20-5mm"],
)
def test_rotated_shifted_phantom(tmp_path: Path, rotation_deg: tuple[float, float, float],
                                 shift_mm: tuple[float, float, float], slice_mm: float,
                                 seed: int) -> None:
    phantom = make_head_phantom(seed=seed, rotation_deg=rotation_deg, shift_mm=shift_mm,
                                slice_spacing_mm=slice_mm)
    result = run_from_datasets(_datasets(phantom, tmp_path), {})
    _check_against_truth(phantom, result)


def test_gantry_tilted_phantom(tmp_path: Path) -> None:
    phantom = make_head_phantom(seed=21, gantry_tilt_deg=15.0, z_range_mm=(-60.0, 90.0))
    datasets = _datasets(phantom, tmp_path)
    result = run_from_datasets(datasets, {})
    assert any("gantry-tilted" in w for w in result.warnings)
    assert result.summary["gantry_tilt_deg"] == pytest.approx(15.0)
    # Labels land on the original (tilted) frames: Dice against the truth on those frames.
    _check_against_truth(phantom, result)


def _truth_model(phantom: HeadPhantom) -> LearnedModel:
    """A 'network' returning the phantom's truth labels (HFS, IOP [1,0,0,0,1,0], slices
    ascending: canonical order = phantom order)."""
    algorithm = AlgorithmInfo("test-net", "0.0.1", ValidationStatus.PHANTOM_ONLY, True, "test")
    return LearnedModel(algorithm=algorithm, predict=lambda hu, spacing_mm: phantom.labels.copy())


def test_low_gwr_flag_follows_the_configured_cutoff(upright_phantom: HeadPhantom,
                                                    upright_datasets: list) -> None:
    volume = load_ct_volume(upright_datasets)
    model = _truth_model(upright_phantom)
    gwr = upright_phantom.expected_gwr
    result = run_brain_gwr(volume, BrainGWRParameters(gwr_cutoff=gwr + 0.05), model=model)
    assert result.summary["low_gwr"] is True
    assert any("below the configured cut-off" in w for w in result.warnings)
    findings = {f.name.value: f.value for f in result.findings}
    assert findings["LOW-GWR"] == SCT_YES
    result = run_brain_gwr(volume, BrainGWRParameters(gwr_cutoff=gwr - 0.05), model=model)
    assert result.summary["low_gwr"] is False


def test_model_label_map_goes_through_the_same_measurement(
    upright_phantom: HeadPhantom, upright_datasets: list
) -> None:
    volume = load_ct_volume(upright_datasets)
    calls: list[tuple[tuple[int, ...], tuple[float, float, float]]] = []

    def predict(hu: np.ndarray, spacing_mm: tuple[float, float, float]) -> np.ndarray:
        calls.append((hu.shape, spacing_mm))
        # HFS, IOP [1,0,0,0,1,0], slices ascending: canonical order = phantom order.
        return upright_phantom.labels.copy()

    algorithm = AlgorithmInfo("test-net", "0.0.1", ValidationStatus.PHANTOM_ONLY, True, "test")
    result = run_brain_gwr(volume, None, model=LearnedModel(algorithm=algorithm, predict=predict))
    assert calls == [(volume.hu.shape, volume.spacing_mm)]
    assert result.algorithm == algorithm
    assert result.summary["algorithm"] == "test-net"
    assert "registration_brain_dice" not in result.summary
    assert result.summary["gwr_bg"] == pytest.approx(upright_phantom.expected_gwr, abs=0.01)
    truth = _truth_on_source_frames(upright_phantom, result)
    for label in LANDMARK_LABELS:
        # Only the intensity refinement removes voxels from the truth labels.
        assert _dice(result.label_map == label, truth == label) >= 0.9


@requires_dciodvfy
@pytest.mark.peers
def test_outputs_pass_dciodvfy(upright_result: PipelineResult, tmp_path: Path) -> None:
    objects = build_outputs(upright_result, software_version="0.1.0")
    assert objects.seg is not None and objects.sc is not None
    assert int(objects.seg.NumberOfFrames) > 0
    labels = {str(item.SegmentLabel) for item in objects.seg.SegmentSequence}
    assert labels == {"CN R", "CN L", "PU R", "PU L", "PIC R", "PIC L", "CC"}
    codes = {str(item.SegmentedPropertyTypeCodeSequence[0].CodeValue)
             for item in objects.seg.SegmentSequence}
    assert codes == {"11000004", "89278009", "85637007", "88442005"}
    paths = write_outputs(objects, tmp_path)
    expected_iod = {"seg": "Segmentation", "sr": "Comprehensive3DSR", "sc": "SCImage"}
    for kind, path in paths.items():
        report = run_dciodvfy(path)
        assert report.iod == expected_iod[kind], report.raw
        assert report.errors == [], f"{kind}: {report.errors}"
    # The GWR is in the SR.
    text = str(objects.sr)
    assert "GWR (CN+PU)/(CC+PIC)" in text


# ------------------------------------------------------------------------- rejections


def test_contrast_tagged_series_is_rejected(upright_phantom: HeadPhantom, tmp_path: Path) -> None:
    tagged = dataclasses.replace(upright_phantom, contrast_agent="IOPAMIDOL")
    datasets = _datasets(tagged, tmp_path, slice_indices=range(20, 40))
    with pytest.raises(UnsupportedInputError, match="contrast agent"):
        run_from_datasets(datasets, {})


def test_localizer_is_rejected(upright_phantom: HeadPhantom, tmp_path: Path) -> None:
    datasets = _datasets(upright_phantom, tmp_path, slice_indices=range(30, 33),
                         image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"))
    with pytest.raises(UnsupportedInputError, match="localizer"):
        run_from_datasets(datasets, {})


def test_volume_without_basal_ganglia_is_rejected(upright_phantom: HeadPhantom,
                                                  tmp_path: Path) -> None:
    # Slices 46.. lie above the corpus callosum (its truth ends at slice 41).
    assert not upright_phantom.labels[46:].any()
    datasets = _datasets(upright_phantom, tmp_path, slice_indices=range(46, 66))
    with pytest.raises(UnsupportedInputError, match="does not cover the basal ganglia"):
        run_from_datasets(datasets, {})


def test_volume_missing_the_landmarks_is_rejected(upright_phantom: HeadPhantom,
                                                  tmp_path: Path) -> None:
    # 90 mm of brain from just above the basal ganglia: enough extent, landmarks cut off.
    datasets = _datasets(upright_phantom, tmp_path, slice_indices=range(36, 66))
    with pytest.raises(UnsupportedInputError, match="covers none of the landmarks"):
        run_from_datasets(datasets, {})


def test_unknown_and_invalid_parameters() -> None:
    with pytest.raises(ConfigError, match="unknown brain-gwr parameter"):
        BrainGWRParameters.from_mapping({"gwr_cut_off": 1.2})
    with pytest.raises(ConfigError, match="lower must be < upper"):
        BrainGWRParameters.from_mapping({"parenchyma_hu": [60, 10]})
    with pytest.raises(ConfigError, match="gwr_cutoff"):
        BrainGWRParameters.from_mapping({"gwr_cutoff": 12})
    p = BrainGWRParameters.from_mapping({"parenchyma_hu": [15, 55], "gwr_cutoff": 1.22})
    assert p.parenchyma_hu == (15.0, 55.0) and p.gwr_cutoff == 1.22


def test_registration_failure_is_reported(upright_phantom: HeadPhantom, tmp_path: Path) -> None:
    # Lower part of the head only: the brain mask is too partial for a trustworthy registration.
    datasets = _datasets(upright_phantom, tmp_path, slice_indices=range(25))
    with pytest.raises((PipelineError, UnsupportedInputError)):
        run_from_datasets(datasets, {})


# ------------------------------------------------------------------------- real slice


def _pydicom_data(name: str) -> Path:
    data_store = pytest.importorskip("data_store")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / name
    if not path.is_file():
        pytest.skip(f"pydicom-data has no {name}")
    return path


@pytest.fixture(scope="module")
def real_slice_result() -> PipelineResult:
    # 693_J2KR.dcm: a real axial head CT slice (5 mm, JPEG 2000 lossless, no Frame of
    # Reference UID). 693_UNCR.dcm holds the same pixels uncompressed.
    return run_from_datasets(read_instances([_pydicom_data("693_J2KR.dcm")]).datasets, {})


def test_real_single_slice_reports_what_it_can(real_slice_result: PipelineResult) -> None:
    s = real_slice_result.summary
    assert s["gwr_measurable"] is False
    assert s["gwr_bg"] is None
    assert "single image" in s["gwr_reason"]
    # A supratentorial slice of an adult brain: about 80-200 cm² of parenchyma of 20-45 HU.
    assert 80.0 <= s["brain_parenchyma_area_cm2"] <= 200.0
    assert 20.0 <= s["brain_parenchyma_mean_hu"] <= 45.0
    findings = {f.name.value: f.value for f in real_slice_result.findings}
    assert findings["GWR-MEASURABLE"] == SCT_NO
    # The file has no Frame of Reference UID. Where the reader supplies one (it now does, with
    # a warning), the parenchyma can go into a SEG; otherwise nothing is labelled for the SEG.
    if "FrameOfReferenceUID" in real_slice_result.source_datasets[0]:
        assert [s_.number for s_ in real_slice_result.segments] == [8]
        assert real_slice_result.label_map.any()
    else:
        assert not real_slice_result.label_map.any()
    assert real_slice_result.key_image is not None
    assert any("Frame of Reference" in w for w in real_slice_result.warnings)


def test_single_slice_with_frame_of_reference_gets_a_segment(
    upright_phantom: HeadPhantom, tmp_path: Path
) -> None:
    datasets = _datasets(upright_phantom, tmp_path, slice_indices=[30])
    result = run_from_datasets(datasets, {})
    assert result.summary["gwr_measurable"] is False
    assert {s.number for s in result.segments} == {LABEL_BRAIN_PARENCHYMA}
    assert (result.label_map == LABEL_BRAIN_PARENCHYMA).any()
    # Brain parenchyma of the phantom: a GM/WM mixture between 30 and 38 HU.
    assert 30.0 <= result.summary["brain_parenchyma_mean_hu"] <= 38.0


@requires_dciodvfy
@pytest.mark.peers
def test_real_slice_outputs(real_slice_result: PipelineResult, tmp_path: Path) -> None:
    objects = build_outputs(real_slice_result, software_version="0.1.0")
    paths = write_outputs(objects, tmp_path)
    # A SEG exists only where the reader supplied the missing Frame of Reference UID.
    if "FrameOfReferenceUID" in real_slice_result.source_datasets[0]:
        assert set(paths) == {"seg", "sr", "sc"}
    else:
        assert objects.seg is None
        assert set(paths) == {"sr", "sc"}
    assert run_dciodvfy(paths["sc"]).errors == []
    # The source says Patient Identity Removed YES without a De-identification Method; the
    # shared writer copies the flag into the SR (reported to the lead). Nothing else may fail.
    sr_errors = run_dciodvfy(paths["sr"]).errors
    assert all("Deidentification" in e for e in sr_errors), sr_errors


@pytest.mark.parametrize("tilt_deg", [0.5, 5.0, -20.0])
def test_gantry_tilt_shear_correction_round_trip(tmp_path: Path, tilt_deg: float) -> None:
    """A tilted stack loads onto an orthogonal grid and masks map back onto the tilted frames."""
    phantom = make_head_phantom(seed=5, gantry_tilt_deg=tilt_deg, z_range_mm=(-20.0, 25.0))
    datasets = _datasets(phantom, tmp_path)
    volume = load_ct_volume(datasets)
    assert volume.frame_shift_px is not None
    # Slice spacing along the plane normal is the table increment times cos(tilt).
    assert volume.spacing_mm[0] == pytest.approx(3.0 * np.cos(np.deg2rad(tilt_deg)), abs=1e-3)
    # Bone found on the orthogonal grid, mapped back, matches the bone of the written frames.
    frames = volume.to_source_frames((volume.hu > 500).astype(np.uint8)).astype(bool)
    order = [int(ds.InstanceNumber) - 1 for ds in volume.datasets]
    truth = phantom.hu[order] > 500
    assert _dice(frames, truth) >= 0.9
    # The headers keep the original (tilted) geometry.
    positions = np.array([np.asarray(ds.ImagePositionPatient, dtype=float)
                          for ds in volume.datasets])
    assert positions == pytest.approx(phantom.positions_lps_mm[order], abs=1e-3)


def test_patient_context_given_by_the_core_is_what_the_method_uses(
    upright_phantom: HeadPhantom, upright_datasets: list
) -> None:
    """kVp, kernel, slice thickness and contrast come from the PatientContext the core passes,
    not from the volume's headers."""
    from pipelines.protocol import PatientContext

    volume = load_ct_volume(upright_datasets)
    headers = PatientContext.from_headers(upright_datasets)
    # Values that differ from whatever the phantom's headers hold.
    context = PatientContext(kvp=(headers.kvp or 120.0) + 17.0, kernel="CONTEXT-KERNEL",
                             slice_thickness_mm=(headers.slice_thickness_mm or 1.0) + 1.25,
                             contrast=False)
    model = _truth_model(upright_phantom)
    summary = run_brain_gwr(volume, None, model=model, context=context).summary
    assert summary["kvp"] == pytest.approx(context.kvp)
    assert summary["convolution_kernel"] == "CONTEXT-KERNEL"
    assert summary["slice_thickness_mm"] == pytest.approx(context.slice_thickness_mm)
    assert summary["contrast"] is False
    # The phantom records no contrast agent; a context that says so is refused all the same.
    assert headers.contrast is False
    with pytest.raises(UnsupportedInputError, match="contrast agent"):
        run_brain_gwr(volume, None, model=model,
                      context=dataclasses.replace(context, contrast=True))
