"""brain-gwr on real head CT (Debian invesalius-examples, Cranium.inv3; see the corpus README).

The same head is in the corpus twice: 98 axial slices of 2.5 mm and 108 coronal slices of 1.5 mm
(the loader reorients the coronal series). Its frontal pole lies outside the field of view.
Assertions are anatomy any radiologist would agree on (caudate medial to putamen, left
structures on the patient's left, landmarks inside the brain), agreement of the two
reconstructions, and stability under acquisition variants derived from the axial series (5 mm
slices, noise, in-plane rotation, slices removed): each variant gives the same GWR within 0.03 or
an honest refusal with a reason. A real abdominal CT must be refused.
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid
from scipy import ndimage

from pipelines.brain_atlas import (
    LABEL_CAUDATE_LEFT,
    LABEL_CAUDATE_RIGHT,
    LABEL_CORPUS_CALLOSUM,
    LABEL_PLIC_LEFT,
    LABEL_PLIC_RIGHT,
    LABEL_PUTAMEN_LEFT,
    LABEL_PUTAMEN_RIGHT,
)
from pipelines.brain_gwr import brain_mask, run_from_datasets
from pipelines.errors import PipelineError, UnsupportedInputError
from pipelines.volume import load_ct_volume, read_instances
from realdata_corpus import case_path, dicom_files, run_case

pytestmark = pytest.mark.slow

#: Physiological range of GWR_BG on non-contrast head CT: controls about 1.3, comatose
#: post-arrest patients down to about 1.1 (clinical.md §4.2: Torbey 2000; Choi 2008; Metter
#: 2011). A value outside 1.0-1.6 means misplaced landmarks or a non-CT intensity scale.
GWR_RANGE = (1.0, 1.6)
#: Two reconstructions or acquisition variants of one head: same GWR within this (issue 12).
GWR_AGREEMENT = 0.03


def _lps_centroid(affine: np.ndarray, mask: np.ndarray) -> np.ndarray:
    index = np.argwhere(mask).mean(axis=0)
    return np.asarray(affine[:3, :3] @ index + affine[:3, 3])


@pytest.fixture(scope="module")
def cranium(tmp_path_factory: pytest.TempPathFactory) -> dict[str, object]:
    out: dict[str, object] = {}
    for orientation in ("axial", "coronal"):
        files = dicom_files(case_path(f"head-ct-cranium-{orientation}"))
        outcome = run_case("brain-gwr", files, tmp_path_factory.mktemp(orientation))
        datasets = read_instances(files).datasets
        volume = load_ct_volume(datasets)
        result = run_from_datasets(datasets, {})
        out[orientation] = (outcome, volume, result)
    return out


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_outputs_written_and_valid(cranium: dict[str, object], orientation: str) -> None:
    outcome, _, _ = cranium[orientation]  # type: ignore[misc]
    assert outcome.ok, outcome.error
    assert {o.kind.upper() for o in outcome.outputs} >= {"SEG", "SR", "SC"}
    assert outcome.summary["gwr_measurable"] is True
    low, high = GWR_RANGE
    assert low <= outcome.summary["gwr_bg"] <= high


@pytest.mark.xfail(
    strict=False,
    reason="known gap (issue 12): axial 1.048 vs coronal 1.015 on this head (0.033); the "
           "landmarks are placed slightly differently on the two reconstructions",
)
def test_two_reconstructions_of_one_head_agree(cranium: dict[str, object]) -> None:
    axial = cranium["axial"][0].summary["gwr_bg"]  # type: ignore[index]
    coronal = cranium["coronal"][0].summary["gwr_bg"]  # type: ignore[index]
    assert abs(axial - coronal) <= GWR_AGREEMENT, (axial, coronal)


@pytest.mark.parametrize("orientation", ["axial", "coronal"])
def test_landmark_anatomy(cranium: dict[str, object], orientation: str) -> None:
    _, volume, result = cranium[orientation]  # type: ignore[misc]
    labels = result.label_map
    # The label map is written on the source frames; bring it to the canonical grid.
    canonical = volume.source_volume.with_array(
        _frames_to_source_volume(volume, labels)).match_geometry(volume.volume).array
    affine = np.asarray(volume.volume.affine)
    centroid = {k: _lps_centroid(affine, canonical == k) for k in (
        LABEL_CAUDATE_RIGHT, LABEL_CAUDATE_LEFT, LABEL_PUTAMEN_RIGHT, LABEL_PUTAMEN_LEFT,
        LABEL_PLIC_RIGHT, LABEL_PLIC_LEFT, LABEL_CORPUS_CALLOSUM)}
    # LPS: +x is the patient's left.
    for right, left in ((LABEL_CAUDATE_RIGHT, LABEL_CAUDATE_LEFT),
                        (LABEL_PUTAMEN_RIGHT, LABEL_PUTAMEN_LEFT),
                        (LABEL_PLIC_RIGHT, LABEL_PLIC_LEFT)):
        assert centroid[left][0] > centroid[right][0]
    midline_x = centroid[LABEL_CORPUS_CALLOSUM][0]
    for caudate, putamen in ((LABEL_CAUDATE_RIGHT, LABEL_PUTAMEN_RIGHT),
                             (LABEL_CAUDATE_LEFT, LABEL_PUTAMEN_LEFT)):
        assert abs(centroid[caudate][0] - midline_x) < abs(centroid[putamen][0] - midline_x)
    # Every landmark lies inside the brain.
    brain = brain_mask(volume.hu, volume.spacing_mm)
    labelled = canonical > 0
    assert np.count_nonzero(labelled & brain) >= 0.98 * np.count_nonzero(labelled)


def _frames_to_source_volume(volume: object, frames: np.ndarray) -> np.ndarray:
    """Inverse of ``CTVolume.to_source_frames`` for complete, orthogonal series."""
    order = volume.frame_of_source_slice  # type: ignore[attr-defined]
    return np.stack([frames[i] for i in order])


# ----------------------------------------------------------------------------- variants


def _stored(ds: Dataset, hu: np.ndarray) -> Dataset:
    out = copy.deepcopy(ds)
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    dtype = ds.pixel_array.dtype
    info = np.iinfo(dtype)
    raw = np.clip(np.round((hu - intercept) / slope), info.min, info.max).astype(dtype)
    out.PixelData = raw.tobytes()
    out.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    return out


def _hu(ds: Dataset) -> np.ndarray:
    slope = float(ds.get("RescaleSlope", 1) or 1)
    intercept = float(ds.get("RescaleIntercept", 0) or 0)
    return ds.pixel_array.astype(np.float64) * slope + intercept


def _renamed(datasets: list[Dataset]) -> list[Dataset]:
    series = generate_uid()
    out = []
    for ds in datasets:
        ds = copy.deepcopy(ds)
        ds.SeriesInstanceUID = series
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        out.append(ds)
    return out


def _by_height(datasets: list[Dataset]) -> list[Dataset]:
    return sorted(datasets, key=lambda d: float(d.ImagePositionPatient[2]))


def _thick(datasets: list[Dataset]) -> list[Dataset]:
    out = [copy.deepcopy(d) for d in _by_height(datasets)[::2]]
    for d in out:
        d.SliceThickness = 5.0
    return out


def _noisy(datasets: list[Dataset]) -> list[Dataset]:
    rng = np.random.default_rng(12)
    return [_stored(d, _hu(d) + rng.normal(0.0, 10.0, d.pixel_array.shape)) for d in datasets]


def _rotated(datasets: list[Dataset]) -> list[Dataset]:
    # Rotate the pixel data by 10 degrees in-plane (the patient lies rotated in the holder).
    return [_stored(d, ndimage.rotate(_hu(d), 10.0, reshape=False, order=1, cval=-1024.0))
            for d in datasets]


def _top_removed(datasets: list[Dataset]) -> list[Dataset]:
    return _by_height(datasets)[:-12]


def _bottom_removed(datasets: list[Dataset]) -> list[Dataset]:
    return _by_height(datasets)[20:]


VARIANTS: dict[str, Callable[[list[Dataset]], list[Dataset]]] = {
    "5 mm slices": _thick,
    "noise 10 HU": _noisy,
    "rotated 10 deg": _rotated,
    "top 30 mm removed": _top_removed,
    "bottom 50 mm removed": _bottom_removed,
}


@pytest.fixture(scope="module")
def axial_datasets() -> list[Dataset]:
    return [pydicom.dcmread(f) for f in dicom_files(case_path("head-ct-cranium-axial"))]


@pytest.mark.parametrize("variant", list(VARIANTS))
def test_acquisition_variant_is_stable_or_refused(
    cranium: dict[str, object], axial_datasets: list[Dataset], variant: str
) -> None:
    baseline = cranium["axial"][0].summary["gwr_bg"]  # type: ignore[index]
    datasets = _renamed(VARIANTS[variant](axial_datasets))
    try:
        result = run_from_datasets(datasets, {})
    except (UnsupportedInputError, PipelineError) as exc:
        # An honest refusal names its reason.
        assert len(str(exc)) > 40
        return
    s = result.summary
    if not s["gwr_measurable"]:
        assert s["gwr_reason"]
        assert s["landmarks_missing"]
        return
    assert abs(s["gwr_bg"] - baseline) <= GWR_AGREEMENT, (variant, s["gwr_bg"], baseline)


def test_abdominal_ct_is_refused() -> None:
    files = dicom_files(case_path("abdomen-ct-upper-siemens"))
    datasets = read_instances(files).datasets
    # The series records contrast, which alone would refuse it; switch that off so that the
    # head checks (brain enclosed by a skull, extent, registration quality) must refuse it.
    with pytest.raises((UnsupportedInputError, PipelineError)) as info:
        run_from_datasets(datasets, {"reject_contrast": False})
    assert "head" in str(info.value)
