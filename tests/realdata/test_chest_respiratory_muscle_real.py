"""Chest respiratory muscles on a real chest CT (LIDC-IDRI-0314; TCIA, CC BY 3.0,
Armato et al., Med Phys 2011).

The case covers the lower neck to the upper abdomen (lung apices in view, thoracic spine from
about T1). Facts asserted are anatomy any reader agrees on, not outputs of our method.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pytest

from realdata_corpus import case_path, dicom_files, run_case

CASE = "chest-ct-lidc-0314"


@pytest.fixture(scope="module")
def outcome(tmp_path_factory: pytest.TempPathFactory) -> Any:
    files = dicom_files(case_path(CASE))
    return run_case("chest-respiratory-muscle", files, tmp_path_factory.mktemp("chest"))


def test_runs_and_outputs_are_valid(outcome: Any) -> None:
    assert outcome.ok, outcome.error


def test_rib_bearing_vertebrae_labelled_t1_down(outcome: Any) -> None:
    levels = outcome.summary["levels"]
    ribbed = levels["rib_bearing_vertebrae"]
    # Ten or more rib pairs are in view on this scan.
    assert len(ribbed) >= 10
    slices = [v["rib_slice"] for v in ribbed]
    assert slices == sorted(slices, reverse=True)  # head to foot
    labels = [v["label"] for v in ribbed if v["label"]]
    assert labels[0] == "T1"  # apex in view: counted from the first rib
    assert labels == [f"T{i + 1}" for i in range(len(labels))]
    assert "T1" in levels["anchor"]


def test_pma_at_t4_and_esma_honest(outcome: Any) -> None:
    s = outcome.summary
    pma = s["pma_t4"]
    assert pma is not None
    assert 5.0 < pma["area_cm2"] < 80.0
    assert pma["area_right_cm2"] > 0 and pma["area_left_cm2"] > 0
    if s["esma_t12"] is None:
        assert any("ESMA" in w and "T12" in w for w in outcome.warnings)
    else:
        assert 10.0 < s["esma_t12"]["area_cm2"] < 100.0


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
def segmentation() -> tuple[np.ndarray, np.ndarray, Any]:
    """Canonical label map and anatomy of the reference segmentation (HPL axes)."""
    from pipelines.chest_respiratory_muscle import segment_reference
    from pipelines.volume import load_ct_volume, read_instances

    volume = load_ct_volume(read_instances(dicom_files(case_path(CASE))).datasets)
    labels, anatomy = segment_reference(volume.hu, volume.spacing_mm)
    return labels, anatomy.lungs, anatomy


def test_classes_where_anatomy_puts_them(segmentation: Any) -> None:
    labels, lungs, anatomy = segmentation
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
