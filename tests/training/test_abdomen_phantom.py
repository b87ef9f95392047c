"""The abdominal CT phantom: ground truth is self-consistent and survives the DICOM round trip."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pydicom
import pytest

from pipelines.volume import load_ct_volume, read_instances
from training.phantoms.abdomen import (
    LABEL_IMAT,
    LABEL_SAT,
    LABEL_SMA,
    LABEL_VAT,
    VERTEBRA_NAMES,
    AbdomenPhantom,
    make_abdomen_phantom,
    write_phantom_series,
)


@pytest.fixture(scope="module")
def phantom() -> AbdomenPhantom:
    return make_abdomen_phantom(seed=3)


def test_truth_areas_are_label_counts(phantom: AbdomenPhantom) -> None:
    labels = phantom.labels[phantom.mid_l3_slice]
    pixel_cm2 = phantom.spacing_mm[1] * phantom.spacing_mm[2] / 100.0
    for key, label in (("sma_cm2", LABEL_SMA), ("sat_area_cm2", LABEL_SAT),
                       ("vat_area_cm2", LABEL_VAT), ("imat_area_cm2", LABEL_IMAT)):
        assert phantom.truth_l3[key] == pytest.approx((labels == label).sum() * pixel_cm2)
    assert phantom.truth_l3["imat_area_cm2"] > 0.0
    # Plausible adult L3 numbers (clinical.md §1.5: median SMA 125 cm², IQR 102-149).
    assert 80.0 < phantom.truth_l3["sma_cm2"] < 200.0


def test_tissue_hu_sit_inside_the_bands(phantom: AbdomenPhantom) -> None:
    k = phantom.mid_l3_slice
    noise_free, labels, hu = phantom.hu_noise_free[k], phantom.labels[k], phantom.hu[k]
    assert np.all(noise_free[labels == LABEL_SMA] == 40.0)
    assert np.all(noise_free[labels == LABEL_SAT] == -100.0)
    assert np.all(noise_free[labels == LABEL_VAT] == -100.0)
    assert np.all(noise_free[labels == LABEL_IMAT] == -80.0)
    # With noise (SD 10 HU) every pixel still lies in its band: truth is recoverable.
    assert np.all((hu[labels == LABEL_SMA] >= -29) & (hu[labels == LABEL_SMA] <= 150))
    assert np.all((hu[labels == LABEL_SAT] >= -190) & (hu[labels == LABEL_SAT] <= -30))
    assert np.all((hu[labels == LABEL_VAT] >= -150) & (hu[labels == LABEL_VAT] <= -50))
    assert np.all(hu == np.round(hu))
    assert phantom.truth_l3["muscle_mean_hu"] == pytest.approx(40.0, abs=1.0)
    assert phantom.truth_l3["muscle_mean_hu"] != phantom.truth_l3["muscle_mean_hu_nominal"]


def test_spine_truth(phantom: AbdomenPhantom) -> None:
    assert list(phantom.vertebra_slices) == ["S", "L5", "L4", "L3", "L2", "L1", "T12", "T11",
                                             "T10"]
    first, last = phantom.vertebra_slices["L3"]
    assert first <= phantom.mid_l3_slice <= last
    l3_label = VERTEBRA_NAMES.index("L3") + 1
    assert (phantom.vertebra_labels[phantom.mid_l3_slice] == l3_label).sum() > 100
    # Ribs: lateral bone (> 60 mm from the midline) at T12 but not at L3 or below.
    columns = phantom.hu.shape[2]
    lateral = np.abs(np.arange(columns) - (columns - 1) / 2.0) * phantom.spacing_mm[2] > 60.0
    def lateral_bone(k: int) -> int:
        return int(((phantom.hu_noise_free[k] > 500) & lateral[None, :]).sum())
    t12 = phantom.vertebra_slices["T12"]
    assert max(lateral_bone(k) for k in range(t12[0], t12[1] + 1)) > 0
    assert all(lateral_bone(k) == 0 for k in range(phantom.vertebra_slices["L2"][0]))


def test_too_thick_slices_are_refused() -> None:
    with pytest.raises(ValueError, match="thinner than a slice"):
        make_abdomen_phantom(n_slices=30, slice_thickness_mm=10.0)


@pytest.mark.parametrize(
    ("position", "iop"),
    [("HFS", None), ("FFP", None), ("HFS", (0.0, 1.0, 0.0, 1.0, 0.0, 0.0))],
    ids=["HFS", "FFP-flipped", "HFS-transposed"],
)
def test_written_series_reads_back_exactly(
    phantom: AbdomenPhantom, tmp_path: Path, position: str,
    iop: tuple[float, float, float, float, float, float] | None,
) -> None:
    paths = write_phantom_series(phantom, tmp_path, patient_position=position,
                                 image_orientation=iop)
    assert len(paths) == phantom.hu.shape[0]
    # Shuffled, randomly named: file order says nothing about slice order.
    instance_numbers = [int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber)
                        for p in sorted(paths)]
    assert instance_numbers != sorted(instance_numbers)
    ds = pydicom.dcmread(paths[0])
    assert ds.Modality == "CT" and ds.BodyPartExamined == "ABDOMEN"
    assert str(ds.PatientName) == "PHANTOM^ABDOMEN"
    assert float(ds.PatientSize) == pytest.approx(1.75) and ds.PatientSex == "M"
    assert ds.PatientPosition == position
    volume = load_ct_volume(read_instances([tmp_path]).datasets)
    assert volume.hu.shape == phantom.hu.shape
    np.testing.assert_array_equal(volume.hu, phantom.hu)
    assert volume.spacing_mm == pytest.approx(phantom.spacing_mm)


def _vertebra_centroid(ph: AbdomenPhantom, name: str) -> np.ndarray:
    first, last = ph.vertebra_slices[name]
    k = (first + last) // 2
    return np.argwhere(ph.vertebra_labels[k] == VERTEBRA_NAMES.index(name) + 1).mean(axis=0)


def test_curved_spine_moves_the_column() -> None:
    straight = make_abdomen_phantom(seed=3, noise_hu=0.0)
    curved = make_abdomen_phantom(seed=3, noise_hu=0.0, lordosis_mm=20.0, scoliosis_mm=15.0)
    px = curved.spacing_mm[1]
    shift = (_vertebra_centroid(curved, "L3") - _vertebra_centroid(straight, "L3")) * px
    assert shift[0] < -10.0  # lordosis: L3 lies anterior
    assert shift[1] > 10.0  # scoliosis: towards the patient's left
    # The sacrum end stays where it was (the curve is anchored there).
    base = (_vertebra_centroid(curved, "S") - _vertebra_centroid(straight, "S")) * px
    assert abs(base[0]) < 3.0


def test_osteopenic_bone_and_rib_pairs() -> None:
    ph = make_abdomen_phantom(seed=3, noise_hu=0.0, cortical_bone_hu=330.0,
                              cancellous_bone_hu=90.0, rib_bearing=("T10", "T11"))
    assert ph.hu_noise_free.max() == pytest.approx(330.0)
    columns = ph.hu.shape[2]
    lateral = np.abs(np.arange(columns) - (columns - 1) / 2.0) * ph.spacing_mm[2] > 80.0
    def lateral_bone(name: str) -> int:
        first, last = ph.vertebra_slices[name]
        return int(((ph.hu_noise_free[first:last + 1] > 200) & lateral[None, None, :]).sum())
    assert lateral_bone("T11") > 0
    # 11 pairs: no rib starts at T12 (ribs of T11 may still slope past it laterally).
    thirteen = make_abdomen_phantom(seed=3, noise_hu=0.0, rib_bearing=("T10", "T11", "T12", "L1"))
    first, last = thirteen.vertebra_slices["L1"]
    assert ((thirteen.hu_noise_free[first:last + 1] > 500) & lateral[None, None, :]).sum() > 0


def test_body_size_varies() -> None:
    thin = make_abdomen_phantom(seed=3, body_scale=0.85, sat_thickness_mm=6.0)
    obese = make_abdomen_phantom(seed=3, body_scale=1.3, sat_thickness_mm=55.0, rows=300,
                                 columns=300)
    assert obese.truth_l3["sat_area_cm2"] > 4.0 * thin.truth_l3["sat_area_cm2"]
    with pytest.raises(ValueError, match="too small"):
        make_abdomen_phantom(body_scale=1.3)


def test_arms_down_touch_the_trunk_and_carry_no_truth_label() -> None:
    ph = make_abdomen_phantom(seed=3, noise_hu=0.0, arms_down=True, rows=340, columns=340)
    k = ph.mid_l3_slice
    body = ph.hu_noise_free[k] > -500
    from scipy import ndimage

    labels, count = ndimage.label(body)
    assert count == 1  # arms and trunk form one region (flush skin contact)
    columns = np.flatnonzero(body.any(axis=0))
    assert (columns[-1] - columns[0]) * ph.spacing_mm[2] > 450.0  # trunk 300 mm + two arms
    truth_columns = np.flatnonzero((ph.labels[k] > 0).any(axis=0))
    assert (truth_columns[-1] - truth_columns[0]) * ph.spacing_mm[2] < 310.0
