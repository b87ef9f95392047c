"""The digital head phantom: exact tissue values, placement, geometry of the written series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest
from scipy import ndimage

from pipelines.brain_atlas import LANDMARK_LABELS, load_atlas
from pipelines.volume import load_ct_volume, read_instances
from training.phantoms.head import make_head_phantom, write_head_series


@pytest.fixture(scope="module")
def noiseless():  # type: ignore[no-untyped-def]
    return make_head_phantom(seed=0, noise_sd_hu=0.0)


def test_landmarks_have_exact_tissue_values(noiseless) -> None:  # type: ignore[no-untyped-def]
    assert noiseless.expected_gwr == pytest.approx(38.0 / 30.0)
    for label in LANDMARK_LABELS:
        values = noiseless.hu[noiseless.labels == label]
        assert values.size > 100, label
        expected = noiseless.gm_hu if label <= 4 else noiseless.wm_hu
        assert np.all(values == expected), label
    # Skull, CSF and air are present with their set values.
    for value in (1100.0, 8.0, -1000.0):
        assert (noiseless.hu == value).any()


def test_sides_follow_the_patient(noiseless) -> None:  # type: ignore[no-untyped-def]
    # Columns run to the patient's left (x increases, LPS): right structures have lower columns.
    for right, left in ((1, 2), (3, 4), (5, 6)):
        right_col = ndimage.center_of_mass(noiseless.labels == right)[2]
        left_col = ndimage.center_of_mass(noiseless.labels == left)[2]
        assert right_col < left_col


def test_landmark_volumes_match_the_atlas(noiseless) -> None:  # type: ignore[no-untyped-def]
    atlas = load_atlas()
    for label in LANDMARK_LABELS:
        atlas_mm3 = (atlas.landmarks == label).sum() * atlas.voxel_volume_mm3
        assert noiseless.truth[f"volume_mm3_{label}"] == pytest.approx(atlas_mm3, rel=0.1)


def test_shift_moves_the_anatomy() -> None:
    base = make_head_phantom(seed=0, noise_sd_hu=0.0, z_range_mm=(-30.0, 60.0))
    moved = make_head_phantom(seed=0, noise_sd_hu=0.0, z_range_mm=(-30.0, 60.0),
                              shift_mm=(12.0, -9.0, 0.0))
    c0 = np.asarray(ndimage.center_of_mass(base.labels == 7))
    c1 = np.asarray(ndimage.center_of_mass(moved.labels == 7))
    # (slice, row, column) = (z, y, x) at 3.0 / 1.5 / 1.5 mm.
    assert (c1 - c0) * np.array([3.0, 1.5, 1.5]) == pytest.approx([0.0, -9.0, 12.0], abs=1.0)


def test_rotation_keeps_volumes() -> None:
    rotated = make_head_phantom(seed=0, noise_sd_hu=0.0, rotation_deg=(15.0, -10.0, 12.0))
    base = make_head_phantom(seed=0, noise_sd_hu=0.0)
    for label in LANDMARK_LABELS:
        assert (rotated.labels == label).sum() == pytest.approx((base.labels == label).sum(),
                                                                rel=0.08)


def test_written_series_reads_back(tmp_path: Path) -> None:
    phantom = make_head_phantom(seed=4, z_range_mm=(-20.0, 25.0))
    paths = write_head_series(phantom, tmp_path)
    assert len(paths) == phantom.hu.shape[0]
    volume = load_ct_volume(read_instances([tmp_path]).datasets)
    assert volume.hu.shape == phantom.hu.shape
    # Stored as integers (0..4095 with intercept -1024): within 0.5 HU of the clipped phantom.
    expected = np.clip(phantom.hu, -1024.0, 3071.0)
    assert np.abs(volume.hu - expected).max() <= 0.501  # float32 rounding near -1000 HU
    assert volume.spacing_mm == pytest.approx(phantom.spacing_mm)


def test_gantry_tilt_geometry(tmp_path: Path) -> None:
    phantom = make_head_phantom(seed=5, gantry_tilt_deg=20.0, z_range_mm=(-10.0, 10.0))
    write_head_series(phantom, tmp_path, shuffle=False)
    first = pydicom.dcmread(min(tmp_path.iterdir()), stop_before_pixels=True)
    assert float(first.GantryDetectorTilt) == pytest.approx(20.0)
    iop = np.asarray(first.ImageOrientationPatient, dtype=float)
    assert iop[3:] == pytest.approx([0.0, np.cos(np.deg2rad(20)), -np.sin(np.deg2rad(20))],
                                    abs=1e-6)
    # The table moves along z only: positions differ in z, not in x or y.
    positions = phantom.positions_lps_mm
    assert np.ptp(positions[:, 0]) == pytest.approx(0.0) and np.ptp(positions[:, 1]) == pytest.approx(0.0)
    assert np.ptp(positions[:, 2]) > 0
