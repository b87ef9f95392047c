"""The L1 plug-in's method against the abdominal phantom's ground truth.

The phantom (:mod:`training.phantoms.abdomen`) has vertebral bodies with a 2.5 mm cortical shell
(``cortical_bone_hu``) around cancellous bone (``cancellous_bone_hu``), exact on the voxel grid,
plus Gaussian noise (SD 10 HU). Tolerances: ROI mean within 3 HU of the nominal cancellous HU
(the noise's standard error over >= 100 pixels is about 1 HU); the ROI lies wholly in the
cancellous bone of L1, at least 1 mm from any cortical pixel; the measured slice lies inside L1.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from pydantic import ValidationError
from scipy import ndimage

from pipelines.errors import UnsupportedInputError
from pipelines.protocol import PatientContext
from pipelines.volume import CTVolume, load_ct_volume, read_instances
from training.phantoms.abdomen import (
    VERTEBRA_NAMES,
    AbdomenPhantom,
    make_abdomen_phantom,
    write_phantom_series,
)


def _load(phantom: AbdomenPhantom, directory: Path, **kwargs: object) -> CTVolume:
    write_phantom_series(phantom, directory, **kwargs)  # type: ignore[arg-type]
    return load_ct_volume(read_instances([directory]).datasets)


@pytest.fixture(scope="module")
def normal_case(tmp_path_factory: pytest.TempPathFactory) -> tuple[AbdomenPhantom, CTVolume]:
    phantom = make_abdomen_phantom(seed=21)
    return phantom, _load(phantom, tmp_path_factory.mktemp("normal"))


@pytest.mark.parametrize(
    ("cortical_hu", "cancellous_hu", "low"),
    [(700.0, 250.0, False), (350.0, 100.0, True)],
    ids=["normal-bone", "osteopenic-bone"],
)
def test_roi_mean_is_the_phantoms_trabecular_hu(
    l1_plugin_site: Path, tmp_path: Path, cortical_hu: float, cancellous_hu: float, low: bool,
) -> None:
    from ainode_l1.method import LABEL_ROI, run_l1_trabecular
    from ainode_l1.parameters import L1Parameters

    phantom = make_abdomen_phantom(seed=5, cortical_bone_hu=cortical_hu,
                                   cancellous_bone_hu=cancellous_hu)
    volume = _load(phantom, tmp_path)
    np.testing.assert_array_equal(volume.hu, phantom.hu)  # HFS: canonical grid = phantom grid
    params = L1Parameters()
    result = run_l1_trabecular(volume, params, PatientContext.from_headers(volume.datasets))
    s = result.summary

    assert s["level"] == "L1" and s["level_verified"] is True
    first, last = phantom.vertebra_slices["L1"]
    k = int(s["slice_index"])
    assert first <= k <= last
    assert abs(k - (first + last) / 2) <= 1.0
    assert s["l1_trabecular_mean_hu"] == pytest.approx(cancellous_hu, abs=3.0)
    assert s["l1_trabecular_sd_hu"] == pytest.approx(10.0, abs=2.0)  # the phantom's noise
    assert s["low_attenuation"] is low
    assert s["threshold_hu"] == params.threshold_hu
    assert "Pickhardt" in str(s["threshold_source"])

    # The ROI on the source frames: one frame, the measured slice's.
    frames = np.flatnonzero(result.label_map.reshape(len(result.label_map), -1).any(axis=1))
    assert frames.tolist() == [volume.source_frame_of_slice(k)]
    roi = result.label_map[frames[0]] == LABEL_ROI  # HFS: the source frame is the canonical grid
    assert roi.sum() * 1.5 * 1.5 == pytest.approx(s["l1_roi_area_mm2"], abs=1.0)
    assert s["l1_roi_area_mm2"] >= params.min_roi_area_mm2

    truth = phantom.hu_noise_free[k]
    l1_bone = phantom.vertebra_labels[k] == VERTEBRA_NAMES.index("L1") + 1
    cancellous = (truth == cancellous_hu) & ndimage.binary_fill_holes(l1_bone)
    assert cancellous[roi].all(), "the ROI leaves the cancellous bone of L1"
    cortex = l1_bone & (truth == cortical_hu)
    distance_mm = ndimage.distance_transform_edt(~cortex, sampling=(1.5, 1.5))
    assert distance_mm[roi].min() >= 1.0, "the ROI touches the cortical shell"
    # Anterior part of the body: the ROI's posterior edge lies in the front 60 % of its depth.
    anterior_row = int(np.flatnonzero(l1_bone.any(axis=1))[0])  # the body is L1's front
    roi_rows = np.flatnonzero(roi.any(axis=1))
    depth_px = 32.0 / 1.5  # the phantom's vertebral body is 32 mm deep
    assert roi_rows[-1] <= anterior_row + params.posterior_limit_fraction * depth_px + 1

    # The key image: two panels (axial with the ROI, sagittal with L1), drawn by the core's
    # renderer into RGB with the ROI's colour and the disclaimer's panel.
    from pipelines.outputs.render import render_key_image_spec
    from pipelines.types import KeyImageSpec

    spec = result.key_image
    assert isinstance(spec, KeyImageSpec)
    assert len(spec.panels) == 2 and spec.patient_orientation is None
    assert spec.source_index == volume.source_frame_of_slice(k)
    assert (spec.panels[0].labels == LABEL_ROI).sum() == roi.sum()
    drawn = render_key_image_spec(spec)
    pixels = drawn.pixels_rgb
    assert pixels.ndim == 3 and pixels.shape[2] == 3 and pixels.dtype == np.uint8
    colour = np.array(result.segments[0].display_rgb, dtype=np.uint8)
    assert np.all(pixels == colour, axis=2).sum() > 20


def test_contrast_and_tube_voltage_warn(l1_plugin_site: Path,
                                        normal_case: tuple[AbdomenPhantom, CTVolume]) -> None:
    from ainode_l1.method import run_l1_trabecular
    from ainode_l1.parameters import L1Parameters

    _, volume = normal_case
    plain = run_l1_trabecular(volume, L1Parameters(), PatientContext(contrast=False, kvp=120.0))
    assert not any("contrast" in w for w in plain.warnings)
    enhanced = run_l1_trabecular(volume, L1Parameters(), PatientContext(contrast=True, kvp=80.0))
    assert any("contrast" in w and "raises" in w for w in enhanced.warnings)
    assert any("80 kV" in w for w in enhanced.warnings)
    assert enhanced.summary["contrast"] is True
    assert enhanced.summary["l1_trabecular_mean_hu"] == plain.summary["l1_trabecular_mean_hu"]


def test_threshold_is_configurable(l1_plugin_site: Path,
                                   normal_case: tuple[AbdomenPhantom, CTVolume]) -> None:
    from ainode_l1.method import run_l1_trabecular
    from ainode_l1.parameters import L1Parameters

    _, volume = normal_case
    result = run_l1_trabecular(volume, L1Parameters(threshold_hu=260.0), PatientContext())
    assert result.summary["low_attenuation"] is True  # 250 HU phantom bone <= 260 HU
    assert "possible osteoporosis" in str(result.summary["low_attenuation_text"])


def test_l1_outside_the_scan_is_refused_naming_the_levels(
    l1_plugin_site: Path, normal_case: tuple[AbdomenPhantom, CTVolume], tmp_path: Path,
) -> None:
    from ainode_l1.method import run_l1_trabecular
    from ainode_l1.parameters import L1Parameters

    phantom, _ = normal_case
    last_l3 = phantom.vertebra_slices["L3"][1]
    volume = _load(phantom, tmp_path, slice_indices=range(0, last_l3 + 3))
    with pytest.raises(UnsupportedInputError,
                       match=r"L1 is not in the scanned range: the levels in view are S to L3"):
        run_l1_trabecular(volume, L1Parameters(), PatientContext())


def test_transitional_anatomy_is_refused_not_guessed(l1_plugin_site: Path,
                                                     tmp_path: Path) -> None:
    from ainode_l1.method import run_l1_trabecular
    from ainode_l1.parameters import L1Parameters

    phantom = make_abdomen_phantom(seed=8, rib_bearing=("T10", "T11", "T12", "L1"))
    volume = _load(phantom, tmp_path)
    with pytest.raises(UnsupportedInputError, match=r"L1 was not determined.*disagree"):
        run_l1_trabecular(volume, L1Parameters(), PatientContext())


def test_parameters_refuse_wrong_types_ranges_and_names(l1_plugin_site: Path) -> None:
    from ainode_l1.parameters import L1Parameters

    with pytest.raises(ValidationError, match="threshold_hu"):
        L1Parameters(threshold_hu="abc")  # type: ignore[arg-type]
    with pytest.raises(ValidationError, match="cortex_margin_mm"):
        L1Parameters(cortex_margin_mm=50.0)
    with pytest.raises(ValidationError, match="roi_radius"):
        L1Parameters(roi_radius=3.0)  # type: ignore[call-arg]
    assert L1Parameters(threshold_hu=160).threshold_hu == 160.0


@pytest.mark.parametrize(
    ("anatomy", "position"),
    [
        ({"lordosis_mm": 15.0, "scoliosis_mm": 10.0}, "FFS"),
        ({"n_slices": 120, "slice_thickness_mm": 2.5, "body_scale": 1.3,
          "sat_thickness_mm": 40.0, "rows": 320, "columns": 320}, "HFP"),
    ],
    ids=["curved-column-FFS", "obese-2.5mm-slices-prone"],
)
def test_l1_measured_on_varied_anatomy(l1_plugin_site: Path, tmp_path: Path,
                                       anatomy: dict[str, float], position: str) -> None:
    from ainode_l1.method import run_l1_trabecular
    from ainode_l1.parameters import L1Parameters

    phantom = make_abdomen_phantom(seed=9, **anatomy)  # type: ignore[arg-type]
    volume = _load(phantom, tmp_path, patient_position=position)
    result = run_l1_trabecular(volume, L1Parameters(), PatientContext())
    first, last = phantom.vertebra_slices["L1"]
    assert first <= int(result.summary["slice_index"]) <= last
    assert result.summary["l1_trabecular_mean_hu"] == pytest.approx(250.0, abs=3.0)
    assert result.summary["level_verified"] is True
