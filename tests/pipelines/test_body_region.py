"""Tests of the pixel body-region heuristics (pipelines.body_region).

Ground truth: synthetic phantoms drawn as head, chest, abdomen or pelvis (region_phantoms.py),
the real upper-abdominal CT slice of pydicom-data (liver, kidneys, bowel gas; no lung bases
visible) and the real PA chest radiograph / leg radiograph of pydicom-data.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
import region_phantoms as rp

from pipelines.body_region import (
    RegionGuess,
    guess_ct_region,
    guess_radiograph_region,
    guess_series_region,
    load_radiograph,
)
from pipelines.errors import InvalidInputError
from pipelines.volume import load_ct_volume


def _guess(slices: list[np.ndarray], pixel_mm: float) -> RegionGuess:
    return guess_ct_region(load_ct_volume(rp.ct_series(slices, pixel_mm)))


# --- CT phantoms ---------------------------------------------------------------------------------


def test_head_phantom_is_head() -> None:
    guess = guess_ct_region(load_ct_volume(rp.head_series()))
    assert guess.regions == ["head"]
    assert guess.evidence["head_fraction"] == 1.0
    assert "bone ring" in guess.reason


def test_head_without_skull_is_not_head() -> None:
    # Same phantom with the skull replaced by soft tissue: no bone ring, so no "head".
    slice_ = rp.head_slice()
    slice_[slice_ == rp.BONE_HU] = rp.SOFT_HU
    guess = _guess([slice_] * 3, 2.5)
    assert "head" not in guess.regions


def test_chest_phantom_is_chest() -> None:
    guess = guess_ct_region(load_ct_volume(rp.chest_series()))
    assert guess.regions == ["chest"]
    # Each drawn lung is pi*70*50 mm^2 = 110 cm^2 of a 553 cm^2 body (20 %); 3.5 mm pixels.
    assert guess.evidence["max_right_air_fraction"] == pytest.approx(0.199, abs=0.02)
    assert guess.evidence["max_left_air_fraction"] == pytest.approx(0.199, abs=0.02)


def test_single_lung_is_unknown_not_abdomen() -> None:
    # A limit stated in the module: one large air region is neither chest nor abdomen.
    slice_ = rp.chest_slice()
    slice_[rp._ellipse(slice_.shape, 3.5, (5, 72), (70, 50))] = rp.SOFT_HU
    assert _guess([slice_] * 3, 3.5).regions == ["unknown"]


def test_abdomen_phantom_is_abdomen() -> None:
    guess = guess_ct_region(load_ct_volume(rp.abdomen_series()))
    assert guess.regions == ["abdomen"]
    assert guess.evidence["max_left_air_fraction"] == 0.0


def test_small_bowel_gas_keeps_abdomen() -> None:
    slice_ = rp.abdomen_slice()
    slice_[rp._ellipse(slice_.shape, 3.5, (-40, 60), (12, 15))] = rp.AIR_HU  # 5.7 cm^2 of gas
    assert _guess([slice_] * 3, 3.5).regions == ["abdomen"]


def test_iliac_wings_make_pelvis() -> None:
    slice_ = rp.abdomen_slice()
    for side in (-1, 1):
        slice_[rp._ellipse(slice_.shape, 3.5, (0, side * 125), (35, 10))] = rp.BONE_HU
    assert _guess([slice_] * 3, 3.5).regions == ["pelvis"]


def test_volume_spanning_chest_and_abdomen_reports_both() -> None:
    guess = _guess([rp.abdomen_slice()] * 4 + [rp.chest_slice()] * 4, 3.5)
    assert guess.regions == ["chest", "abdomen"]
    assert guess.evidence["chest_fraction"] == 0.5
    assert guess.evidence["abdomen_fraction"] == 0.5


def test_minor_region_below_twenty_percent_is_not_reported() -> None:
    # 1 abdominal slice among 9 chest slices (11 %) is below MIN_REGION_SLICE_FRACTION.
    guess = _guess([rp.abdomen_slice()] + [rp.chest_slice()] * 9, 3.5)
    assert guess.regions == ["chest"]


def test_empty_volume_is_unknown() -> None:
    guess = _guess([np.full((64, 64), rp.AIR_HU, dtype=np.float32)] * 3, 3.5)
    assert guess.regions == ["unknown"]
    assert "no body" in guess.reason


# --- Real CT slice -------------------------------------------------------------------------------


def test_real_abdominal_ct_slice_is_abdomen(real_ct_slice_path: Path) -> None:
    volume = load_ct_volume([pydicom.dcmread(real_ct_slice_path)])
    guess = guess_ct_region(volume)
    assert guess.regions == ["abdomen"]
    # Upper abdomen: no lung bases in this slice, and the bowel gas is not lung-like.
    assert guess.evidence["max_right_air_fraction"] < 0.04
    assert guess.evidence["max_left_air_fraction"] < 0.04
    # An adult trunk cross-section, not a head (~200 cm^2) or a limb.
    assert 400.0 < guess.evidence["max_body_area_cm2"] < 900.0


# --- Radiographs ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def chest_radiograph() -> np.ndarray:
    import os

    data_store = pytest.importorskip("data_store")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / "RG1_UNCI.dcm"
    return load_radiograph(pydicom.dcmread(path))


def test_load_radiograph_inverts_monochrome1(chest_radiograph: np.ndarray) -> None:
    assert chest_radiograph.dtype == np.float32
    assert chest_radiograph.min() == 0.0
    assert chest_radiograph.max() == 1.0
    # After inversion the right lung field (image left, mid-height) is darker than the spine.
    rows, columns = chest_radiograph.shape
    lung = chest_radiograph[
        rows * 45 // 100 : rows * 55 // 100, columns * 15 // 100 : columns * 25 // 100
    ]
    spine = chest_radiograph[
        rows * 45 // 100 : rows * 55 // 100, columns * 47 // 100 : columns * 53 // 100
    ]
    assert lung.mean() + 0.15 < spine.mean()


def test_real_chest_radiograph_is_chest(chest_radiograph: np.ndarray) -> None:
    guess = guess_radiograph_region(chest_radiograph)
    assert guess.regions == ["chest"]
    assert guess.evidence["image_left_field_fraction"] > 0.05
    assert guess.evidence["image_right_field_fraction"] > 0.05
    assert guess.evidence["mediastinum_contrast"] > 0.1


def test_mirrored_chest_radiograph_is_chest(chest_radiograph: np.ndarray) -> None:
    assert guess_radiograph_region(chest_radiograph[:, ::-1]).regions == ["chest"]


def test_inverted_polarity_is_not_chest(chest_radiograph: np.ndarray) -> None:
    # The heuristic needs "higher = brighter"; an uninverted MONOCHROME1 image is not a chest.
    assert guess_radiograph_region(1.0 - chest_radiograph).regions == ["unknown"]


def test_leg_radiograph_is_not_chest() -> None:
    import os

    data_store = pytest.importorskip("data_store")
    path = Path(os.path.dirname(data_store.__file__)) / "data" / "RG3_UNCI.dcm"
    guess = guess_series_region([pydicom.dcmread(path)])
    assert guess.regions == ["unknown"]


def test_uniform_image_is_unknown() -> None:
    assert guess_radiograph_region(np.full((100, 80), 0.5)).regions == ["unknown"]


def test_radiograph_must_be_2d() -> None:
    with pytest.raises(ValueError, match="2D"):
        guess_radiograph_region(np.zeros((2, 10, 10)))


def test_load_radiograph_rejects_color() -> None:
    ds = pydicom.Dataset()
    ds.PhotometricInterpretation = "RGB"
    with pytest.raises(InvalidInputError, match="grayscale"):
        load_radiograph(ds)


def test_series_region_for_mr_is_unknown() -> None:
    ds = pydicom.Dataset()
    ds.Modality = "MR"
    guess = guess_series_region([ds])
    assert guess.regions == ["unknown"]
    assert "MR" in guess.reason


def test_lower_ribs_do_not_make_pelvis() -> None:
    # Several small rib cross-sections (about 1 cm² each) in both lateral thirds, as at T11/T12.
    slice_ = rp.abdomen_slice()
    for side in (-1, 1):
        for row in (-40, 0, 40):
            slice_[rp._ellipse(slice_.shape, 3.5, (row, side * 125), (7, 5))] = rp.BONE_HU
    assert _guess([slice_] * 3, 3.5).regions == ["abdomen"]
