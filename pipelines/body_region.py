"""Guessing the body region of an image from its pixels, for routing when the headers say nothing.

Routing (:mod:`node.routing`) decides from DICOM headers first. When Body Part Examined and the
descriptions are missing or unknown, a routing rule may ask for the *pixel region*: these
functions look at the image content and say which of ``"head"``, ``"chest"``, ``"abdomen"``,
``"pelvis"`` it shows, or ``"unknown"``.

The heuristics are deliberately simple and explainable; they are not a trained classifier and
are not validated on clinical data:

* **CT** (:func:`guess_ct_region`), per sampled axial slice of a Hounsfield-unit volume:

  - *head*: a closed ring of bone (> 300 HU) that encloses at least 20 cm² of tissue, mostly
    of brain density (15..60 HU) and almost free of fat (-190..-30 HU), covering at least 40 %
    of the body cross-section;
  - *chest*: air (< -400 HU) inside the body in two large regions, one on each side of the
    midline, each at least 4 % of the body cross-section and spanning at least 25 % of the body's
    antero-posterior extent (lungs; bowel gas is smaller and not bilateral in this way);
  - *pelvis*: no lungs, and bone (> 200 HU) in both lateral thirds of the body amounting to at
    least 1.5 % of the cross-section, with one bone plate of at least 2.5 cm² on each side (iliac
    wings; the lower ribs' small cross-sections do not count);
  - *abdomen*: a trunk-sized body (>= 200 cm²) without lungs or skull, with fat (>= 3 %) and
    soft tissue (>= 30 %), little bone (< 15 %), and not two legs side by side.

  A region is reported when at least 20 % of the sampled slices that contain a body show it;
  a volume may span several regions (a chest CT usually includes the upper abdomen).
* **Radiographs** (:func:`guess_radiograph_region`): two large dark fields (the lungs) that do
  not touch the image border, one left and one right of the midline, overlapping vertically,
  with a brighter column (the mediastinum) between them -> ``"chest"``; anything else ->
  ``"unknown"``. A lateral chest view, a white-out lung (e.g. stage IV RDS), a strongly rotated
  or cropped film or a babygram whose lungs merge with the background is not recognised.

Limits: thresholds were chosen on synthetic phantoms and on the two real images of pydicom-data
(an upper-abdominal CT slice and an adult PA chest radiograph); they are not tuned on clinical
series. Contrast, metal, very small children and unusual fields of view can fool them. Routing
uses them only as a fallback after the header rules, and records the reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np
from scipy import ndimage

from pipelines.morphology import FACE, largest_component

if TYPE_CHECKING:
    from pydicom.dataset import Dataset

    from pipelines.volume import CTVolume

logger = logging.getLogger(__name__)

#: Region names, in cranio-caudal order.
REGIONS = ("head", "chest", "abdomen", "pelvis", "unknown")

# --- CT thresholds (Hounsfield units; see module docstring) -------------------------------------
BODY_MIN_HU = -300.0
AIR_MAX_HU = -400.0
SKULL_MIN_HU = 300.0
BONE_MIN_HU = 200.0
BRAIN_HU = (15.0, 60.0)
FAT_HU = (-190.0, -30.0)
SOFT_TISSUE_HU = (-29.0, 150.0)

#: An iliac wing is one bone plate: on each side the largest bone component must be at least
#: this big (cm²). Rib cross-sections at the lower ribs are about 1-2 cm² (measured on a real
#: upper-abdominal CT at T11/T12), so ribs in both lateral thirds do not make a pelvis.
ILIAC_MIN_CM2 = 2.5
#: Minimum fraction of the sampled body slices for a region to be reported.
MIN_REGION_SLICE_FRACTION = 0.2
#: At most this many slices are classified (evenly spaced), to keep routing fast.
MAX_SAMPLED_SLICES = 48
#: Target in-plane pixel size (mm) after subsampling.
TARGET_PIXEL_MM = 2.0


@dataclass
class RegionGuess:
    """What the pixel classifier found.

    Attributes
    ----------
    regions: list[str]
        Subset of ``"head"``, ``"chest"``, ``"abdomen"``, ``"pelvis"``, in cranio-caudal order,
        or ``["unknown"]`` when nothing was recognised.
    reason: str
        One sentence saying what was seen, for the routing log.
    evidence: dict[str, float]
        Numbers behind the guess (fractions of slices per region, areas in cm², ...).
    """

    regions: list[str]
    reason: str
    evidence: dict[str, float] = field(default_factory=dict)


def _largest_bone_cm2(bone: np.ndarray, cm2: float) -> float:
    """Area (cm²) of the largest connected component of a ``(rows, columns)`` bone mask."""
    labels, count = ndimage.label(bone)
    if count == 0:
        return 0.0
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    return float(sizes.max() * cm2)


def _classify_ct_slice(
    hu: np.ndarray, pixel_area_mm2: float, stats: dict[str, float]
) -> str | None:
    """Label one axial slice ``(rows, columns)`` in HU: a region name, ``"unknown"`` or ``None``
    when the slice holds no body. Updates ``stats`` with running maxima of the measurements."""
    cm2 = pixel_area_mm2 / 100.0
    candidates = hu > BODY_MIN_HU
    labels, count = ndimage.label(candidates)
    if count == 0:
        return None
    sizes = np.bincount(labels.ravel())
    sizes[0] = 0
    order = np.argsort(sizes)[::-1]
    body = ndimage.binary_fill_holes(labels == order[0])
    body_pixels = int(body.sum())
    body_area_cm2 = body_pixels * cm2
    if body_area_cm2 < 20.0:
        return None
    stats["max_body_area_cm2"] = max(stats.get("max_body_area_cm2", 0.0), body_area_cm2)
    two_legs = count >= 2 and sizes[order[1]] >= 0.5 * sizes[order[0]]

    # Head: a closed skull ring enclosing brain-density tissue without fat.
    skull = ndimage.binary_closing(body & (hu > SKULL_MIN_HU), iterations=2)
    enclosed = ndimage.binary_fill_holes(skull) & ~skull
    if enclosed.any():
        inside = largest_component(enclosed, FACE)
        inside_area_cm2 = inside.sum() * cm2
        values = hu[inside]
        brain_fraction = float(np.mean((values >= BRAIN_HU[0]) & (values <= BRAIN_HU[1])))
        fat_fraction = float(np.mean((values >= FAT_HU[0]) & (values <= FAT_HU[1])))
        if (
            inside_area_cm2 >= 20.0
            and brain_fraction >= 0.6
            and fat_fraction < 0.05
            and inside.sum() >= 0.4 * body_pixels
        ):
            return "head"

    # Chest: two large air regions inside the body, one on each side of the midline.
    rows, columns = np.nonzero(body)
    midline = columns.mean()
    body_ap_extent = rows.max() - rows.min() + 1
    air = body & (hu < AIR_MAX_HU)
    air_labels, _ = ndimage.label(air)
    side_area = {"right": 0, "left": 0}
    for index, region in enumerate(ndimage.find_objects(air_labels), start=1):
        if region is None:
            continue
        component = air_labels[region] == index
        area = int(component.sum())
        if area * cm2 < 2.0:
            continue
        ap_extent = region[0].stop - region[0].start
        if ap_extent < 0.25 * body_ap_extent:
            continue
        centroid_column = np.nonzero(component)[1].mean() + region[1].start
        side_area["left" if centroid_column > midline else "right"] += area
    for side, area in side_area.items():
        key = f"max_{side}_air_fraction"
        stats[key] = max(stats.get(key, 0.0), area / body_pixels)
    if min(side_area.values()) >= 0.04 * body_pixels:
        return "chest"
    if max(side_area.values()) >= 0.04 * body_pixels:
        # One large air region only: a single lung (pneumonectomy, collapse, effusion) or a
        # large gas-filled bowel loop. Neither chest nor abdomen can be said safely.
        return "unknown"

    values = hu[body]
    bone_fraction = float(np.mean(values > BONE_MIN_HU))
    # Pelvis: bone in both lateral thirds of the body (iliac wings).
    left_edge, right_edge = columns.min(), columns.max()
    third = (right_edge - left_edge + 1) / 3.0
    bone = body & (hu > BONE_MIN_HU)
    bone_columns = np.nonzero(bone)[1]
    lateral_low = int(np.sum(bone_columns < left_edge + third))
    lateral_high = int(np.sum(bone_columns > right_edge - third))
    if (
        not two_legs
        and body_area_cm2 >= 200.0
        and lateral_low + lateral_high >= 0.015 * body_pixels
        and min(lateral_low, lateral_high) >= 0.004 * body_pixels
        and _largest_bone_cm2(bone & (np.arange(hu.shape[1]) < left_edge + third)[None, :], cm2)
        >= ILIAC_MIN_CM2
        and _largest_bone_cm2(bone & (np.arange(hu.shape[1]) > right_edge - third)[None, :], cm2)
        >= ILIAC_MIN_CM2
    ):
        return "pelvis"

    fat_fraction = float(np.mean((values >= FAT_HU[0]) & (values <= FAT_HU[1])))
    soft_fraction = float(np.mean((values >= SOFT_TISSUE_HU[0]) & (values <= SOFT_TISSUE_HU[1])))
    if (
        not two_legs
        and body_area_cm2 >= 200.0
        and fat_fraction >= 0.03
        and soft_fraction >= 0.3
        and bone_fraction < 0.15
    ):
        return "abdomen"
    return "unknown"


_REGION_EXPLANATION = {
    "head": "a bone ring (> 300 HU) enclosing brain-density tissue (15..60 HU)",
    "chest": "two large air-filled regions (< -400 HU) left and right inside the body (lungs)",
    "abdomen": "a soft-tissue trunk with fat and organs and no lungs",
    "pelvis": "bone in both lateral thirds of the body (iliac wings) and no lungs",
}


def guess_ct_region(volume: CTVolume) -> RegionGuess:
    """Guess which body regions a CT volume shows, from its Hounsfield units.

    Parameters
    ----------
    volume:
        The CT series as loaded by :func:`pipelines.volume.load_ct_volume`; ``volume.hu`` is
        ``(slices, rows, columns)`` float32 HU in canonical ``"HPL"`` orientation, so axis 0 is
        the axial slice axis whatever the acquisition plane.

    Returns
    -------
    RegionGuess
        Regions covering at least 20 % of the sampled body slices (cranio-caudal order), or
        ``["unknown"]``; ``evidence`` holds ``sampled_slices``, ``body_slices``,
        ``<region>_fraction`` for every region (fraction of body slices), ``max_body_area_cm2``
        and ``max_right_air_fraction`` / ``max_left_air_fraction`` (largest lung-like air area
        on the patient's right / left as a fraction of the body cross-section, over slices).

    Notes
    -----
    Thresholds are heuristics documented in the module docstring (HU bands of bone, air, fat
    and brain tissue as in standard CT windows); they are not validated on clinical data.
    """
    hu = volume.hu
    _, row_mm, column_mm = volume.spacing_mm
    row_step = max(1, int(TARGET_PIXEL_MM // row_mm)) if row_mm > 0 else 1
    column_step = max(1, int(TARGET_PIXEL_MM // column_mm)) if column_mm > 0 else 1
    pixel_area_mm2 = row_mm * row_step * column_mm * column_step
    slice_indices = np.unique(
        np.linspace(0, hu.shape[0] - 1, min(hu.shape[0], MAX_SAMPLED_SLICES)).round().astype(int)
    )
    counts = {region: 0 for region in REGIONS}
    body_slices = 0
    stats: dict[str, float] = {}
    for k in slice_indices:
        label = _classify_ct_slice(hu[k, ::row_step, ::column_step], pixel_area_mm2, stats)
        if label is None:
            continue
        body_slices += 1
        counts[label] += 1
    evidence: dict[str, float] = {
        "sampled_slices": float(len(slice_indices)),
        "body_slices": float(body_slices),
    }
    evidence.update(stats)
    for region in REGIONS:
        evidence[f"{region}_fraction"] = counts[region] / body_slices if body_slices else 0.0
    if body_slices == 0:
        return RegionGuess(["unknown"], "CT pixels: no body found in any sampled slice", evidence)
    regions = [
        region
        for region in REGIONS[:-1]
        if counts[region] and counts[region] >= MIN_REGION_SLICE_FRACTION * body_slices
    ]
    if not regions:
        return RegionGuess(
            ["unknown"],
            f"CT pixels: none of {body_slices} body slice(s) looked like head, chest, abdomen "
            "or pelvis",
            evidence,
        )
    parts = [
        f"{region} in {counts[region]} of {body_slices} slice(s) ({_REGION_EXPLANATION[region]})"
        for region in regions
    ]
    return RegionGuess(regions, "CT pixels: " + "; ".join(parts), evidence)


#: Longest side (pixels) to which a radiograph is reduced before analysis.
RADIOGRAPH_ANALYSIS_SIZE = 256


def guess_radiograph_region(image: np.ndarray) -> RegionGuess:
    """Guess whether a projection radiograph is a frontal chest view.

    Parameters
    ----------
    image:
        ``(rows, columns)`` float array normalised to 0..1, higher = brighter (bone white, air
        dark), e.g. from :func:`load_radiograph` (Modality LUT, VOI LUT and MONOCHROME1
        inversion applied).

    Returns
    -------
    RegionGuess
        ``["chest"]`` when two large dark lung fields lie left and right of a brighter
        mediastinum, else ``["unknown"]``. ``evidence`` holds the lung field areas as fractions
        of the image (``right_field_fraction``, ``left_field_fraction``, image left/right) and
        ``mediastinum_contrast`` (mean brightness between the fields minus the mean of the
        fields).

    Raises
    ------
    ValueError
        If ``image`` is not two-dimensional.

    Notes
    -----
    An honest heuristic, not a classifier: Otsu threshold of the central image, morphological
    opening, dark components not touching the border. Lateral views, white-out lungs, rotated
    or tightly cropped films are reported as ``"unknown"``.
    """
    from skimage.filters import threshold_otsu
    from skimage.transform import resize

    if image.ndim != 2:
        raise ValueError(f"expected a 2D radiograph, got an array of shape {image.shape}")
    scale = RADIOGRAPH_ANALYSIS_SIZE / max(image.shape)
    shape = (max(8, round(image.shape[0] * scale)), max(8, round(image.shape[1] * scale)))
    small = resize(image.astype(np.float32), shape, anti_aliasing=True)
    height, width = small.shape
    margin_r, margin_c = height // 10, width // 10
    centre = small[margin_r : height - margin_r, margin_c : width - margin_c]
    evidence: dict[str, float] = {}
    if np.ptp(centre) <= 1e-6:
        return RegionGuess(["unknown"], "radiograph pixels: the image is uniform", evidence)
    threshold = float(threshold_otsu(centre))
    dark = ndimage.binary_opening(small < threshold, structure=np.ones((7, 7), dtype=bool))
    labels, _ = ndimage.label(dark)
    fields = []
    for index, region in enumerate(ndimage.find_objects(labels), start=1):
        if region is None:
            continue
        touches_border = (
            region[0].start == 0
            or region[1].start == 0
            or region[0].stop == height
            or region[1].stop == width
        )
        component = labels == index
        area = int(component.sum())
        if touches_border or area < 0.04 * height * width:
            continue
        centroid_column = float(np.nonzero(component)[1].mean())
        fields.append((area, centroid_column, region, float(small[component].mean())))
    image_left = [f for f in fields if f[1] < width / 2]
    image_right = [f for f in fields if f[1] >= width / 2]
    if not image_left or not image_right:
        return RegionGuess(
            ["unknown"],
            f"radiograph pixels: no pair of large dark fields left and right of the midline "
            f"({len(fields)} large enclosed dark field(s) found)",
            evidence,
        )
    first = max(image_left, key=lambda f: f[0])
    second = max(image_right, key=lambda f: f[0])
    evidence["image_left_field_fraction"] = first[0] / (height * width)
    evidence["image_right_field_fraction"] = second[0] / (height * width)
    rows_a, rows_b = first[2][0], second[2][0]
    overlap = min(rows_a.stop, rows_b.stop) - max(rows_a.start, rows_b.start)
    shorter = min(rows_a.stop - rows_a.start, rows_b.stop - rows_b.start)
    evidence["vertical_overlap"] = overlap / shorter if shorter else 0.0
    gap_start, gap_stop = first[2][1].stop, second[2][1].start
    if overlap <= 0.5 * shorter or gap_stop <= gap_start:
        return RegionGuess(
            ["unknown"],
            "radiograph pixels: the two dark fields do not lie side by side",
            evidence,
        )
    between = small[
        max(rows_a.start, rows_b.start) : min(rows_a.stop, rows_b.stop), gap_start:gap_stop
    ]
    contrast = float(between.mean() - (first[3] + second[3]) / 2.0)
    evidence["mediastinum_contrast"] = contrast
    if contrast < 0.1:
        return RegionGuess(
            ["unknown"],
            f"radiograph pixels: two dark fields but no brighter band between them "
            f"(contrast {contrast:.2f} < 0.10)",
            evidence,
        )
    return RegionGuess(
        ["chest"],
        "radiograph pixels: two large dark fields (lungs, "
        f"{100 * evidence['image_left_field_fraction']:.0f} % and "
        f"{100 * evidence['image_right_field_fraction']:.0f} % of the image) left and right of "
        f"a brighter mediastinum (contrast {contrast:.2f})",
        evidence,
    )


def load_radiograph(ds: Dataset) -> np.ndarray:
    """Decode a projection radiograph to a display-oriented 0..1 image.

    Applies the Modality LUT, then the VOI LUT or window (``pydicom.pixels.apply_voi_lut``,
    PS3.3 C.11.2), rescales to 0..1 and inverts MONOCHROME1 so that higher is always brighter
    (PS3.3 C.7.6.3.1.2). A later module owns full radiograph preprocessing.

    Parameters
    ----------
    ds:
        A single-frame grayscale CR/DX image with Pixel Data.

    Returns
    -------
    numpy.ndarray
        ``(rows, columns)`` float32 in 0..1, higher = brighter.

    Raises
    ------
    InvalidInputError
        If the pixel data cannot be decoded or the image is not single-frame grayscale.
    """
    from pydicom.pixels.processing import apply_modality_lut, apply_voi_lut

    from pipelines.errors import InvalidInputError

    photometric = str(ds.get("PhotometricInterpretation", ""))
    if photometric not in ("MONOCHROME1", "MONOCHROME2"):
        raise InvalidInputError(
            f"expected a grayscale radiograph, got Photometric Interpretation {photometric!r}"
        )
    try:
        pixels = ds.pixel_array
    except Exception as exc:  # pydicom raises many types for undecodable data
        raise InvalidInputError(
            f"cannot decode the radiograph's pixel data ({exc}); a decoder may be missing"
        ) from exc
    if pixels.ndim != 2:
        raise InvalidInputError(
            f"expected a single-frame radiograph, got pixel array of shape {pixels.shape}"
        )
    values = apply_voi_lut(apply_modality_lut(pixels, ds), ds).astype(np.float32)
    low, high = float(values.min()), float(values.max())
    image = (values - low) / (high - low) if high > low else np.zeros_like(values)
    if photometric == "MONOCHROME1":
        image = 1.0 - image
    return image.astype(np.float32)


def guess_series_region(datasets: list[Dataset]) -> RegionGuess:
    """Guess the region of one series with pixel data: CT volumes or a CR/DX radiograph.

    Convenience for the routing callback: ``lambda: guess_series_region(datasets)``.

    Parameters
    ----------
    datasets:
        The instances of one series, with Pixel Data.

    Returns
    -------
    RegionGuess
        ``["unknown"]`` with a reason for modalities other than CT, CR and DX.

    Raises
    ------
    InvalidInputError
        If the pixels cannot be loaded (see :func:`pipelines.volume.load_ct_volume` and
        :func:`load_radiograph`).
    """
    modalities = sorted({str(ds.get("Modality", "")) for ds in datasets})
    if modalities == ["CT"]:
        from pipelines.volume import load_ct_volume

        return guess_ct_region(load_ct_volume(datasets))
    if modalities in (["CR"], ["DX"]) and datasets:
        return guess_radiograph_region(load_radiograph(datasets[0]))
    return RegionGuess(
        ["unknown"], f"no pixel classifier for Modality {'/'.join(modalities) or 'missing'}", {}
    )
