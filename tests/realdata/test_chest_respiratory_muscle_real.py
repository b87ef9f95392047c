"""Chest respiratory muscles on a real chest CT (LIDC-IDRI-0314; TCIA, CC BY 3.0,
Armato et al., Med Phys 2011).

The series (275 axial slices of 1 mm, 0.78 mm pixels) runs from the lower neck (C6/C7, larynx)
to the upper abdomen (T12). Facts asserted are anatomy read on the images by eye, not outputs
of our method (docs/pipelines/chest-respiratory-muscle.md, "Real case"):

* 12 rib pairs. The highest is the first rib: short, broad and flat, a tight ring under the
  clavicle whose anterior end meets the manubrium; it leaves the column about 255 mm above the
  first slice (canonical slice 255). The 12th rib is short and ends free; its neck is in the
  lowest 20 mm of the series; L1 is not in view.
* The T4 vertebral body spans canonical slices 203-220 (its discs on the sagittal profile), the
  T12 body the lowest 25 mm.

Variants derived from the case: every fifth slice (5 mm), the top 40 mm removed (lung apices out
of view), Gaussian noise of SD 15 HU. Each must give the same T4 within one vertebra (or say that
the levels are not named) and the same PMA within 10 %.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realdata_corpus import case_path, dicom_files, run_case

CASE = "chest-ct-lidc-0314"
#: Canonical slices (1 mm, from the first slice) of the T4 body, read on the sagittal images.
T4_BODY_SLICES = (203, 220)
#: One vertebra plus disc at T4, mm (the rib spacing there is about 20 mm).
ONE_VERTEBRA_MM = 25.0


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Any:
    files = dicom_files(case_path(CASE))
    return run_case("chest-respiratory-muscle", files, tmp_path_factory.mktemp("chest"))


@pytest.fixture(scope="module")
def datasets() -> list[Any]:
    """The case's datasets, foot to head."""
    from pipelines.volume import read_instances

    found = read_instances(dicom_files(case_path(CASE))).datasets
    return sorted(found, key=lambda ds: float(ds.ImagePositionPatient[2]))


def _run(datasets: list[Any]) -> dict[str, Any]:
    from pipelines.chest_respiratory_muscle import run_chest_respiratory_muscle
    from pipelines.volume import load_ct_volume

    result = run_chest_respiratory_muscle(load_ct_volume(datasets))
    return {"summary": result.summary, "warnings": result.warnings}


def test_runs_and_outputs_are_valid(outcome: Any) -> None:
    assert outcome.ok, outcome.error


def test_twelve_rib_pairs_labelled_t1_to_t12(outcome: Any) -> None:
    levels = outcome.summary["levels"]
    ribbed = levels["rib_bearing_vertebrae"]
    assert len(ribbed) == 12  # 12 rib pairs, counted by eye
    slices = [v["rib_slice"] for v in ribbed]
    assert slices == sorted(slices, reverse=True)  # head to foot
    assert [v["label"] for v in ribbed] == [f"T{i + 1}" for i in range(12)]
    # The first rib leaves the column just below the top of the thorax; the 12th in the lowest
    # 20 mm of the series.
    assert 245 <= slices[0] <= 265
    assert slices[-1] <= 20
    assert "T1" in levels["anchor"]


def test_mid_t4_lies_in_the_t4_body(outcome: Any) -> None:
    t4 = outcome.summary["levels"]["t4_slice"]
    assert T4_BODY_SLICES[0] <= t4 <= T4_BODY_SLICES[1]


def test_pma_and_esma(outcome: Any) -> None:
    s = outcome.summary
    pma = s["pma_t4"]
    assert pma is not None
    # PMA (pectoralis major and minor, both sides) at T4 of adults: about 20-60 cm2.
    assert 15.0 < pma["area_cm2"] < 80.0
    assert pma["area_right_cm2"] > 0 and pma["area_left_cm2"] > 0
    esma = s["esma_t12"]
    assert esma is not None  # T12 is in view
    assert 10.0 < esma["area_cm2"] < 80.0
    assert esma["slice_index"] <= 25  # in the T12 body (the lowest 25 mm)


def test_apices_in_view(outcome: Any) -> None:
    assert outcome.summary["coverage"]["lung_apices_included"] is True


def test_muscle_hu_and_volumes_physiological(outcome: Any) -> None:
    classes = outcome.summary["classes"]
    for name in ("pectoralis_right", "pectoralis_left", "erector_spinae_right",
                 "erector_spinae_left", "intercostal_right", "intercostal_left"):
        entry = classes[name]
        assert -30.0 <= entry["mean_hu"] <= 100.0, name
        assert 10.0 < entry["volume_cm3"] < 1500.0, name


@pytest.fixture(scope="module")
def segmentation() -> tuple[np.ndarray, np.ndarray, Any, np.ndarray]:
    """Canonical label map, lungs, anatomy and HU of the reference segmentation (HPL axes)."""
    from pipelines.chest_respiratory_muscle import segment_reference
    from pipelines.volume import load_ct_volume, read_instances

    volume = load_ct_volume(read_instances(dicom_files(case_path(CASE))).datasets)
    labels, anatomy = segment_reference(volume.hu, volume.spacing_mm)
    return labels, anatomy.lungs, anatomy, volume.hu


def test_classes_where_anatomy_puts_them(segmentation: Any) -> None:
    labels, lungs, anatomy, _ = segmentation
    origin_r, origin_c = anatomy.origin_rc
    for number in (1, 2):  # pectoralis: anterior chest wall, in front of the lungs
        anterior = total = 0
        for k in np.flatnonzero((labels == number).any(axis=(1, 2))):
            lung_rows = np.nonzero(lungs[k])[0]
            if len(lung_rows) == 0:
                continue
            rows = np.nonzero(labels[k] == number)[0]
            anterior += int((rows < lung_rows.mean()).sum())
            total += len(rows)
        assert total and anterior / total > 0.9, number
    for number in (3, 4):  # erector spinae: behind the vertebral bodies
        _, rows, _ = np.nonzero(labels == number)
        assert np.median(rows) > origin_r, number
    # Columns run from the patient's right to left: left-labelled structures lie at larger
    # columns than the midline, right-labelled ones at smaller columns.
    for right, left in ((1, 2), (3, 4), (5, 6)):
        cols_r = np.nonzero(labels == right)[2]
        cols_l = np.nonzero(labels == left)[2]
        assert np.median(cols_r) < origin_c < np.median(cols_l), (right, left)


def test_erector_spinae_is_deep_and_paravertebral(segmentation: Any) -> None:
    """The erector spinae lies in the gutters beside the spine, under the trapezius and
    rhomboids (and the latissimus lower down): none of it at the skin of the back, all of it
    within 10 cm of the midline."""
    from scipy import ndimage

    labels, _, anatomy, hu = segmentation
    _, origin_c = anatomy.origin_rc
    for k in (210, 120, 15):  # mid-T4, mid-thorax, T12
        erector = np.isin(labels[k], (3, 4))
        assert erector.sum() > 300, k
        rows, cols = np.nonzero(erector)
        assert np.abs(cols - origin_c).max() * 0.78125 < 100.0, k
        body = ndimage.binary_fill_holes(hu[k] > -500.0)
        depth_mm = ndimage.distance_transform_edt(body) * 0.78125
        # Skin and subcutaneous fat of the back are at least 4 mm thick; the superficial
        # muscles lie between them and the erector spinae.
        assert np.percentile(depth_mm[erector], 5) > 8.0, k


def _t4_z_and_pma(summary: dict[str, Any]) -> tuple[float | None, float | None]:
    pma = summary["pma_t4"]
    if pma is None:
        return None, None
    return float(pma["slab"]["z_min_mm"]), float(pma["area_cm2"])


@pytest.mark.parametrize("variant", ["5 mm slices", "top 40 mm removed", "noise SD 15 HU"])
def test_variant_same_t4_and_pma(variant: str, outcome: Any, datasets: list[Any]) -> None:
    base_z, base_pma = _t4_z_and_pma(outcome.summary)
    assert base_z is not None and base_pma is not None
    z = np.array([float(ds.ImagePositionPatient[2]) for ds in datasets])
    if variant == "5 mm slices":
        chosen = datasets[::5]
    elif variant == "top 40 mm removed":
        # Apices out of view; the lower thorax is cropped too (only to keep the test fast: the
        # lowest rib and L1 are not in view either way).
        keep = (z.max() - z >= 40.0) & (z.max() - z <= 175.0)
        chosen = [ds for ds, k in zip(datasets, keep, strict=True) if k]
    else:
        # The upper thorax only (apices to T7), to keep the test fast.
        rng = np.random.default_rng(15)
        chosen = []
        for ds in datasets[130:]:
            noisy = copy.deepcopy(ds)
            raw = noisy.pixel_array.astype(np.float64)
            raw += rng.normal(0.0, 15.0, raw.shape) / float(noisy.RescaleSlope)
            noisy.PixelData = np.clip(np.round(raw), 0, 65535).astype(np.uint16).tobytes()
            chosen.append(noisy)
    result = _run(chosen)
    t4_z, pma = _t4_z_and_pma(result["summary"])
    if t4_z is None:
        # Honest refusal: no level named, and the report says so.
        levels = result["summary"]["levels"]
        assert levels["t4_slice"] is None
        assert any("no thoracic level named" in e for e in levels["evidence"])
        assert any(w.startswith("PMA not measured") for w in result["warnings"])
        assert variant == "top 40 mm removed"  # the other variants keep the apex anchor
        return
    assert abs(t4_z - base_z) <= ONE_VERTEBRA_MM, (t4_z, base_z)
    assert pma == pytest.approx(base_pma, rel=0.10)
