"""The chest CT phantom: labels, tissue values, geometry and the written series."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.volume import load_ct_volume, read_instances
from training.phantoms.chest import (
    LABEL_DIAPHRAGM_LEFT,
    LABEL_DIAPHRAGM_RIGHT,
    LABEL_ERECTOR_SPINAE_LEFT,
    LABEL_ERECTOR_SPINAE_RIGHT,
    LABEL_INTERCOSTAL_LEFT,
    LABEL_INTERCOSTAL_RIGHT,
    LABEL_OTHER_MUSCLE,
    LABEL_PECTORALIS_LEFT,
    LABEL_PECTORALIS_RIGHT,
    RIGHT_LARGER,
    TISSUE_HU,
    ChestPhantom,
    make_chest_phantom,
    write_chest_series,
)

PAIRS = [
    (LABEL_PECTORALIS_RIGHT, LABEL_PECTORALIS_LEFT),
    (LABEL_ERECTOR_SPINAE_RIGHT, LABEL_ERECTOR_SPINAE_LEFT),
    (LABEL_INTERCOSTAL_RIGHT, LABEL_INTERCOSTAL_LEFT),
    (LABEL_DIAPHRAGM_RIGHT, LABEL_DIAPHRAGM_LEFT),
]


@pytest.fixture(scope="module")
def phantom() -> ChestPhantom:
    return make_chest_phantom(seed=3)


def test_every_class_is_present_on_both_sides_and_the_right_is_larger(
    phantom: ChestPhantom,
) -> None:
    columns = phantom.hu.shape[2]
    for right, left in PAIRS:
        n_right = int((phantom.labels == right).sum())
        n_left = int((phantom.labels == left).sum())
        assert n_right > 1000 and n_left > 1000, (right, left)
        # Right labels lie on the patient's right (low columns), left labels on the left.
        cols_right = np.argwhere(phantom.labels == right)[:, 2]
        cols_left = np.argwhere(phantom.labels == left)[:, 2]
        assert cols_right.max() < columns / 2 < cols_left.min()
        if right in (LABEL_PECTORALIS_RIGHT, LABEL_ERECTOR_SPINAE_RIGHT):
            # About 10 % more on the right: a left/right swap exceeds the 5 % volume tolerance.
            assert n_right / n_left == pytest.approx(RIGHT_LARGER, abs=0.02), (right, left)
        elif right == LABEL_INTERCOSTAL_RIGHT:
            assert n_right == n_left
    assert (phantom.labels == LABEL_OTHER_MUSCLE).sum() > 1000


def test_labels_carry_their_tissue_values(phantom: ChestPhantom) -> None:
    expected = {
        LABEL_PECTORALIS_RIGHT: TISSUE_HU["pectoralis"],
        LABEL_PECTORALIS_LEFT: TISSUE_HU["pectoralis"],
        LABEL_INTERCOSTAL_RIGHT: TISSUE_HU["intercostal"],
        LABEL_INTERCOSTAL_LEFT: TISSUE_HU["intercostal"],
        LABEL_DIAPHRAGM_RIGHT: TISSUE_HU["diaphragm"],
        LABEL_DIAPHRAGM_LEFT: TISSUE_HU["diaphragm"],
        LABEL_OTHER_MUSCLE: TISSUE_HU["muscle"],
    }
    for label, hu in expected.items():
        assert abs(float(phantom.hu[phantom.labels == label].mean()) - hu) < 0.5, label
    # Erector spinae: 36 HU muscle with fatty spots at 10 HU (about a fifth of its voxels).
    for label in (LABEL_ERECTOR_SPINAE_RIGHT, LABEL_ERECTOR_SPINAE_LEFT):
        values = phantom.hu[phantom.labels == label]
        fatty = (TISSUE_HU["erector_spinae"] - float(values.mean())) / (
            TISSUE_HU["erector_spinae"] - TISSUE_HU["erector_spinae_fatty"])
        assert 0.15 < fatty < 0.3, (label, fatty)
        low = float(((values >= -29) & (values <= 29)).mean())
        assert low > 0.3  # far above the pectoralis (48 HU: a few per cent)
    pec = phantom.hu[np.isin(phantom.labels, (LABEL_PECTORALIS_RIGHT, LABEL_PECTORALIS_LEFT))]
    assert float(((pec >= -29) & (pec <= 29)).mean()) < 0.06
    muscle = phantom.labels > 0
    assert abs(float(phantom.hu[phantom.lungs].mean()) - TISSUE_HU["lung"]) < 0.5
    assert not np.any(phantom.lungs & muscle)
    # Noise SD about 10 HU: (almost) every muscle voxel stays inside the -29..150 HU band.
    outside = (phantom.hu[muscle] < -29) | (phantom.hu[muscle] > 150)
    assert outside.mean() < 1e-4


def test_geometry_levels_and_slab(phantom: ChestPhantom) -> None:
    names = {"L2", "L1", "C7", *(f"T{i}" for i in range(1, 13))}
    assert names <= set(phantom.vertebra_slices)
    order = [phantom.mid_slice[n] for n in ("L2", "L1", "T12", "T8", "T4", "T1")]
    assert order == sorted(order)
    k0, k1 = phantom.lung_slab
    assert 0 < k0 < phantom.mid_slice["T10"] and phantom.mid_slice["T1"] <= k1 < phantom.hu.shape[0]
    # The diaphragm lies directly below the lungs.
    dia = np.isin(phantom.labels, (LABEL_DIAPHRAGM_RIGHT, LABEL_DIAPHRAGM_LEFT))
    assert np.all(phantom.lungs[1:][dia[:-1]])


def test_rotation_keeps_volumes(phantom: ChestPhantom) -> None:
    rotated = make_chest_phantom(seed=3, rotation_deg=10.0, shift_mm=(8.0, -12.0))
    for right, left in PAIRS:
        for label in (right, left):
            a = int((phantom.labels == label).sum())
            b = int((rotated.labels == label).sum())
            assert b == pytest.approx(a, rel=0.03), label
    # The anatomy moved: the labels differ voxel by voxel.
    assert (rotated.labels != phantom.labels).sum() > 10000


def test_written_series_round_trips(phantom: ChestPhantom, tmp_path: Path) -> None:
    paths = write_chest_series(phantom, tmp_path, patient_position="FFS")
    assert len(paths) == phantom.hu.shape[0]
    first = pydicom.dcmread(paths[0], stop_before_pixels=True)
    assert first.BodyPartExamined == "CHEST"
    assert first.StudyDescription == "Digital chest phantom"
    assert list(first.ImageType) == ["ORIGINAL", "PRIMARY", "AXIAL"]
    assert first.Modality == "CT"
    volume = load_ct_volume(read_instances([tmp_path]).datasets)
    np.testing.assert_array_equal(volume.hu, phantom.hu)
    assert volume.spacing_mm == pytest.approx(phantom.spacing_mm)


def test_thick_slices_are_refused() -> None:
    with pytest.raises(ValueError, match="discs"):
        make_chest_phantom(slice_thickness_mm=8.0)
