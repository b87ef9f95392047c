"""L3 body composition (reference method) against the abdominal phantom's ground truth.

Tolerances: areas within 3 % of the exact ground truth, muscle mean HU within 1 HU of the
realised (noisy) truth, measured slice within one slice of the true mid-L3 slice.
"""

from __future__ import annotations

import copy

import dataclasses
from pathlib import Path

import numpy as np
import pytest

from pipelines.errors import PipelineError, UnsupportedInputError
from pipelines.l3_body_composition import (
    LABEL_IMAT,
    LABEL_SAT,
    LABEL_SMA,
    LABEL_VAT,
    BodyCompositionSegmenter,
    L3Locator,
    L3Parameters,
    ReferenceL3Locator,
    ReferenceSegmenter,
    run_l3_body_composition,
)
from pipelines.spine import find_body_mask, label_vertebrae
from pipelines.types import SCT_NO, SCT_YES, ValidationStatus
from pipelines.volume import CTVolume, load_ct_volume, read_instances
from training.phantoms.abdomen import (
    AbdomenPhantom,
    make_abdomen_phantom,
    write_phantom_series,
)

AREA_KEYS = ("sma_cm2", "sat_area_cm2", "vat_area_cm2", "imat_area_cm2")


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return make_abdomen_phantom(seed=11, patient_weight_kg=None)


def _load(phantom: AbdomenPhantom, directory: Path, **kwargs: object) -> CTVolume:
    write_phantom_series(phantom, directory, **kwargs)  # type: ignore[arg-type]
    return load_ct_volume(read_instances([directory]).datasets)


@pytest.fixture(scope="module")
def hfs_volume(phantom: AbdomenPhantom, tmp_path_factory: pytest.TempPathFactory) -> CTVolume:
    return _load(phantom, tmp_path_factory.mktemp("hfs"))


@pytest.mark.parametrize(
    ("position", "iop"),
    [("HFS", None), ("FFP", None), ("FFS", (0.0, 1.0, 0.0, 1.0, 0.0, 0.0))],
    ids=["HFS-shuffled", "FFP-iop-flipped", "FFS-transposed"],
)
def test_phantom_measurements_match_ground_truth(
    phantom: AbdomenPhantom, tmp_path: Path, position: str,
    iop: tuple[float, float, float, float, float, float] | None,
) -> None:
    volume = _load(phantom, tmp_path, patient_position=position, image_orientation=iop)
    result = run_l3_body_composition(volume)
    s = result.summary
    truth = phantom.truth_l3
    assert s["level"] == "L3"
    assert s["level_verified"] is True
    assert abs(int(s["slice_index"]) - phantom.mid_l3_slice) <= 1
    for key in AREA_KEYS:
        assert s[key] == pytest.approx(truth[key], rel=0.03), key
    assert s["muscle_mean_hu"] == pytest.approx(truth["muscle_mean_hu"], abs=1.0)
    assert s["smi_cm2_per_m2"] == pytest.approx(truth["sma_cm2"] / 1.75**2, rel=0.03)
    assert not any("not verified" in w for w in result.warnings)

    # The label map lies on the source frames: exactly one frame is labelled, and it is the
    # image at the measured slice's position.
    assert result.label_map.shape == (len(volume.datasets), 256, 256)
    labelled = np.flatnonzero(result.label_map.reshape(len(volume.datasets), -1).any(axis=1))
    assert len(labelled) == 1
    frame = int(labelled[0])
    z_frame = float(volume.datasets[frame].ImagePositionPatient[2])
    expected_z = (int(s["slice_index"]) + 0.5) * phantom.spacing_mm[0] - 200.0
    assert z_frame == pytest.approx(expected_z)
    # Same pixels as the ground truth mapped onto that frame (Dice of SMA > 0.98).
    truth_canonical = np.zeros(phantom.labels.shape, dtype=np.uint8)
    truth_canonical[int(s["slice_index"])] = phantom.labels[int(s["slice_index"])]
    truth_frames = volume.to_source_frames(truth_canonical)
    ours, ref = result.label_map[frame] == LABEL_SMA, truth_frames[frame] == LABEL_SMA
    dice = 2 * (ours & ref).sum() / (ours.sum() + ref.sum())
    assert dice > 0.98
    if result.key_image is not None:
        assert result.key_image.source_index == frame


def test_result_metadata(phantom: AbdomenPhantom, hfs_volume: CTVolume) -> None:
    result = run_l3_body_composition(hfs_volume)
    assert result.algorithm.name == "ainode-l3-reference"
    assert result.algorithm.validation_status is ValidationStatus.REFERENCE_METHOD
    assert result.algorithm.is_ai is False
    by_label = {seg.label: seg for seg in result.segments}
    assert by_label["SMA"].property_type.value == "91727004"
    assert by_label["SAT"].anatomic_region is not None
    assert by_label["SAT"].anatomic_region.value == "71966008"
    assert by_label["VAT"].anatomic_region.value == "818987002"  # type: ignore[union-attr]
    assert by_label["IMAT"].anatomic_region.value == "127954009"  # type: ignore[union-attr]
    keys = {m.key for m in result.measurements}
    assert {"sma_cm2", "sat_area_cm2", "vat_area_cm2", "imat_area_cm2", "muscle_mean_hu",
            "muscle_sd_hu", "smi_cm2_per_m2"} <= keys
    assert result.summary["kvp"] == 120.0
    assert result.summary["slice_thickness_mm"] == 5.0
    assert result.summary["contrast"] is False
    verified = [f for f in result.findings if f.name.meaning == "Vertebral level verified"]
    assert verified and verified[0].value == SCT_YES


def test_spine_labels_every_vertebra(phantom: AbdomenPhantom, hfs_volume: CTVolume) -> None:
    labelling = label_vertebrae(hfs_volume)
    assert labelling.method == "ribs+sacrum"
    found = {v.label: v for v in labelling.vertebrae}
    assert set(found) == set(phantom.vertebra_slices)
    for name, (first, last) in phantom.vertebra_slices.items():
        assert abs(found[name].first_slice - first) <= 1, name
        assert abs(found[name].last_slice - last) <= 1, name
    assert [v.label for v in labelling.vertebrae if v.bears_ribs] == ["T12", "T11", "T10"]
    assert found["S"].is_sacrum


def test_cutoff_sets(phantom: AbdomenPhantom, hfs_volume: CTVolume) -> None:
    smi = phantom.truth_l3["sma_cm2"] / 1.75**2  # about 34 cm²/m²: low for men in every set
    prado = run_l3_body_composition(hfs_volume, L3Parameters(cutoff_set="prado-2008")).summary
    assert prado["low_smi"] is (smi < 52.4) and prado["low_smi"] is True
    assert "Prado" in str(prado["low_smi_reason"])
    assert prado["low_muscle_attenuation"] is None
    werf = run_l3_body_composition(hfs_volume, L3Parameters(cutoff_set="van-der-werf-2018"))
    assert werf.summary["low_smi"] is True
    assert werf.summary["low_muscle_attenuation"] is False  # 40 HU vs < 29.3 HU
    assert any(f.name.meaning == "Low skeletal muscle index" and f.value == SCT_YES
               for f in werf.findings)
    assert any(f.name.meaning == "Low muscle attenuation" and f.value == SCT_NO
               for f in werf.findings)
    # Martin needs BMI; this phantom has no Patient's Weight.
    martin = run_l3_body_composition(hfs_volume, L3Parameters(cutoff_set="martin-2013"))
    assert martin.summary["low_smi"] is None
    assert "Patient's Weight" in str(martin.summary["low_smi_reason"])
    none = run_l3_body_composition(hfs_volume).summary
    assert none["cutoff_set"] == "none" and none["low_smi"] is None
    with pytest.raises(PipelineError, match="unknown cut-off set"):
        L3Parameters(cutoff_set="baumgartner")


def test_single_phantom_slice_is_measured_as_given(phantom: AbdomenPhantom,
                                                   tmp_path: Path) -> None:
    volume = _load(phantom, tmp_path, slice_indices=[phantom.mid_l3_slice])
    assert volume.is_single_slice
    result = run_l3_body_composition(volume)
    assert result.summary["level_verified"] is False
    assert result.summary["level"] == "unknown"
    assert any("the vertebral level was not verified" in w for w in result.warnings)
    for key in AREA_KEYS:
        assert result.summary[key] == pytest.approx(phantom.truth_l3[key], rel=0.03), key


def test_real_slice_gives_plausible_numbers(real_ct_slice_path: Path) -> None:
    volume = load_ct_volume(read_instances([real_ct_slice_path]).datasets)
    result = run_l3_body_composition(volume)
    s = result.summary
    assert s["level_verified"] is False
    assert any("the vertebral level was not verified" in w for w in result.warnings)
    # A real contrast-enhanced slice at about L1-L2 (clinical.md §1.5 typical ranges).
    assert 80.0 <= s["sma_cm2"] <= 200.0
    assert 20.0 <= s["muscle_mean_hu"] <= 60.0
    assert 50.0 <= s["sat_area_cm2"] <= 300.0
    assert 20.0 <= s["vat_area_cm2"] <= 200.0
    assert -120.0 <= s["sat_mean_hu"] <= -80.0
    # Nothing is labelled outside the body: the patient table below it is not counted.
    # (The source image has IOP [1,0,0,0,-1,0]: compare on the source frame.)
    body_canonical = find_body_mask(volume.hu[0], volume.spacing_mm[1:])
    body = volume.to_source_frames(body_canonical[None].astype(np.uint8))[0].astype(bool)
    labels = result.label_map[0]
    assert labels.any() and not np.any(labels[~body])
    table = (volume.hu[0] > -500) & ~body_canonical
    assert table.sum() > 1000  # the table is there, and left out


def test_interfaces_allow_a_replacement_segmenter(phantom: AbdomenPhantom,
                                                  hfs_volume: CTVolume) -> None:
    assert isinstance(ReferenceSegmenter(), BodyCompositionSegmenter)
    assert isinstance(ReferenceL3Locator(), L3Locator)

    class TruthSegmenter:
        def segment_slice(self, hu_slice: np.ndarray,
                          pixel_spacing_mm: tuple[float, float]) -> np.ndarray:
            k = int(np.argmin([np.abs(phantom.hu[i] - hu_slice).sum()
                               for i in range(phantom.hu.shape[0])]))
            return phantom.labels[k]

    result = run_l3_body_composition(hfs_volume, segmenter=TruthSegmenter())
    k = int(result.summary["slice_index"])
    pixel_cm2 = phantom.spacing_mm[1] * phantom.spacing_mm[2] / 100.0
    assert result.summary["sma_cm2"] == pytest.approx(
        (phantom.labels[k] == LABEL_SMA).sum() * pixel_cm2, abs=0.01)
    labels = {LABEL_SMA, LABEL_SAT, LABEL_VAT, LABEL_IMAT}
    assert set(np.unique(result.label_map)) - {0} == labels


def test_non_ct_volume_is_refused(hfs_volume: CTVolume) -> None:
    datasets = [copy.deepcopy(ds) for ds in hfs_volume.datasets]  # ds.copy() shares elements
    for ds in datasets:
        ds.Modality = "MR"
    volume = dataclasses.replace(hfs_volume, datasets=datasets)
    with pytest.raises(UnsupportedInputError, match="needs CT images, got Modality"):
        run_l3_body_composition(volume)


def test_few_slices_without_spine_raise(phantom: AbdomenPhantom, tmp_path: Path) -> None:
    hu = phantom.hu.copy()
    hu[hu > 150] = 40.0
    no_bone = dataclasses.replace(phantom, hu=hu)
    volume = _load(no_bone, tmp_path, slice_indices=range(20, 26))
    with pytest.raises(PipelineError, match="no vertebral column found"):
        run_l3_body_composition(volume)


def test_volume_without_l3_raises(phantom: AbdomenPhantom, tmp_path: Path) -> None:
    first_l2 = phantom.vertebra_slices["L2"][0]
    volume = _load(phantom, tmp_path, slice_indices=range(first_l2, phantom.hu.shape[0]))
    with pytest.raises(PipelineError, match="L3 is not in the scanned range.*L3 lies caudal"):
        run_l3_body_composition(volume)


def test_headers_without_height_still_get_the_sex_only_attenuation_flag(
    hfs_volume: CTVolume,
) -> None:
    volume = copy.copy(hfs_volume)
    volume.datasets = [copy.deepcopy(ds) for ds in hfs_volume.datasets]
    for ds in volume.datasets:
        del ds.PatientSize
        ds.ContrastBolusAgent = "NONE"  # sites write this for unenhanced scans
    werf = run_l3_body_composition(volume, L3Parameters(cutoff_set="van-der-werf-2018")).summary
    assert werf["low_smi"] is None and "Patient's Size" in str(werf["low_smi_reason"])
    assert werf["low_muscle_attenuation"] is False  # sex-only HU cut-off: height not needed
    assert werf["contrast"] is False
    for ds in volume.datasets:
        ds.ContrastBolusAgent = "IOHEXOL 350"
    assert run_l3_body_composition(volume).summary["contrast"] is True


# --- Anatomy drawn independently of the pipeline's defaults (issue 12 item 7) -------------------


@pytest.mark.parametrize(
    "anatomy",
    [
        {"lordosis_mm": 20.0, "scoliosis_mm": 15.0},
        {"cortical_bone_hu": 330.0, "cancellous_bone_hu": 90.0},  # osteopenic
        {"body_scale": 0.85, "sat_thickness_mm": 6.0, "muscle_wall_thickness_mm": 8.0},  # thin
        {"body_scale": 1.3, "sat_thickness_mm": 55.0, "rows": 300, "columns": 300},  # obese
        {"n_slices": 150, "slice_thickness_mm": 2.0, "lordosis_mm": 15.0,
         "cortical_bone_hu": 400.0, "cancellous_bone_hu": 120.0},
        {"arms_down": True, "rows": 340, "columns": 340},  # arms flush against the trunk
    ],
    ids=["curved", "osteopenic", "thin", "obese", "2mm-curved-osteopenic", "arms-down"],
)
def test_l3_found_on_varied_anatomy(anatomy: dict[str, float], tmp_path: Path) -> None:
    ph = make_abdomen_phantom(seed=5, **anatomy)  # type: ignore[arg-type]
    volume = _load(ph, tmp_path)
    result = run_l3_body_composition(volume)
    s = result.summary
    assert s["level"] == "L3" and s["level_verified"] is True
    assert "rib" in s["level_method"] and "sacrum" in s["level_method"]
    assert abs(int(s["slice_index"]) - ph.mid_l3_slice) <= 1
    truth = _truth_at(ph, int(s["slice_index"]))
    for key in ("sma_cm2", "sat_area_cm2"):
        assert s[key] == pytest.approx(truth[key], rel=0.05), key


def _truth_at(ph: AbdomenPhantom, k: int) -> dict[str, float]:
    cm2 = ph.spacing_mm[1] * ph.spacing_mm[2] / 100.0
    return {"sma_cm2": float((ph.labels[k] == LABEL_SMA).sum() * cm2),
            "sat_area_cm2": float((ph.labels[k] == LABEL_SAT).sum() * cm2)}


@pytest.mark.parametrize("ribs", [("T10", "T11"), ("T10", "T11", "T12", "L1")],
                         ids=["11-rib-pairs", "13-rib-pairs"])
def test_transitional_rib_count_is_flagged_not_guessed(ribs: tuple[str, ...],
                                                       tmp_path: Path) -> None:
    ph = make_abdomen_phantom(seed=6, rib_bearing=ribs)
    volume = _load(ph, tmp_path)
    with pytest.raises(PipelineError, match="disagree"):
        run_l3_body_composition(volume)


def test_partial_coverage_names_the_anchor(tmp_path: Path) -> None:
    ph = make_abdomen_phantom(seed=7, lordosis_mm=12.0)
    # No ribs in view: from the sacrum up to the top of L1.
    top = ph.vertebra_slices["L1"][1] + 1
    no_ribs = _load(ph, tmp_path / "no-ribs", slice_indices=range(0, top))
    result = run_l3_body_composition(no_ribs)
    assert result.summary["level_method"] == "sacrum"
    assert result.summary["level_verified"] is False
    assert abs(int(result.summary["slice_index"]) - ph.mid_l3_slice) <= 1
    # No sacrum in view: from mid-L5 up.
    bottom = sum(ph.vertebra_slices["L5"]) // 2
    no_sacrum = _load(ph, tmp_path / "no-sacrum", slice_indices=range(bottom, ph.hu.shape[0]))
    result = run_l3_body_composition(no_sacrum)
    assert result.summary["level_method"] == "ribs"
    assert result.summary["level_verified"] is False
    assert abs(int(result.summary["slice_index"]) + bottom - ph.mid_l3_slice) <= 1


def test_patient_context_given_by_the_core_is_what_the_method_uses(hfs_volume: CTVolume) -> None:
    """Height and sex come from the PatientContext the core passes, not from the headers."""
    from pipelines.protocol import PatientContext

    height = 1.37  # drawn independently of the phantom's header
    result = run_l3_body_composition(hfs_volume, context=PatientContext(height_m=height, sex="F"))
    summary = result.summary
    assert summary["height_m"] == pytest.approx(height)
    assert summary["sex"] == "F"
    # Both values are rounded to 0.01 in the summary.
    assert summary["smi_cm2_per_m2"] == pytest.approx(summary["sma_cm2"] / height**2, abs=0.02)
