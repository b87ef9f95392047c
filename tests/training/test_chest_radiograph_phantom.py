"""Tests of the synthetic neonatal chest radiograph phantom (training.phantoms.chest_radiograph)."""

from __future__ import annotations

import numpy as np
import pytest

from pipelines.body_region import load_radiograph
from training.phantoms.chest_radiograph import (
    LABEL_LEFT_LUNG,
    LABEL_RIGHT_LUNG,
    make_chest_radiograph,
    phantom_to_dataset,
)


@pytest.fixture(scope="module")
def phantom():
    return make_chest_radiograph(rows=320, columns=280, pixel_spacing_mm=0.48)


def test_lungs_are_two_separate_fields_with_exact_areas(phantom) -> None:
    right = phantom.label_map == LABEL_RIGHT_LUNG
    left = phantom.label_map == LABEL_LEFT_LUNG
    assert right.any() and left.any()
    # Right lung on the image left (patient's right, Patient Orientation L\F).
    assert np.nonzero(right)[1].mean() < phantom.image.shape[1] / 2 < np.nonzero(left)[1].mean()
    assert phantom.lung_area_cm2(LABEL_RIGHT_LUNG) == pytest.approx(
        right.sum() * 0.48 * 0.48 / 100.0
    )
    # A neonatal chest: each lung field between 5 and 40 cm² (project estimate).
    for label in (LABEL_RIGHT_LUNG, LABEL_LEFT_LUNG):
        assert 5.0 < phantom.lung_area_cm2(label) < 40.0


def test_lungs_are_darker_than_soft_tissue_and_devices_bright(phantom) -> None:
    lungs = phantom.label_map > 0
    assert np.median(phantom.image[lungs]) < 0.3
    assert phantom.devices
    glass = make_chest_radiograph(rows=320, columns=280, pixel_spacing_mm=0.48, ground_glass=True)
    np.testing.assert_array_equal(glass.label_map, phantom.label_map)
    assert np.median(glass.image[lungs]) > np.median(phantom.image[lungs]) + 0.08


@pytest.mark.parametrize("photometric", ["MONOCHROME1", "MONOCHROME2"])
def test_dataset_round_trip_gives_the_same_display_image(phantom, photometric: str) -> None:
    ds = phantom_to_dataset(phantom, photometric_interpretation=photometric)
    assert ds.PhotometricInterpretation == photometric
    image = load_radiograph(ds)
    # The window covers the full stored range, so display = phantom intensity within 1/4095.
    assert np.abs(image - phantom.image).max() < 2e-3


def test_imager_pixel_spacing_carries_the_magnification(phantom) -> None:
    ds = phantom_to_dataset(
        phantom, modality="DX", spacing_attribute="ImagerPixelSpacing", estimated_magnification=1.1
    )
    assert "PixelSpacing" not in ds
    assert float(ds.ImagerPixelSpacing[0]) == pytest.approx(0.48 * 1.1)
