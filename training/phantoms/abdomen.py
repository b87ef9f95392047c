"""Digital phantom of the abdomen for the L3 body-composition protocol, with exact ground truth.

The phantom is built directly on the voxel grid in ainode's canonical ``"HPL"`` orientation (see
:mod:`pipelines.volume`): axis 0 = slices from feet to head, axis 1 = rows from anterior to
posterior, axis 2 = columns from the patient's right to left. Every voxel gets exactly one tissue
(no partial-volume blur), so the ground-truth areas are exact pixel counts, and Gaussian noise is
added and rounded to whole Hounsfield units (what a DICOM file stores) so the "realised" ground
truth is exactly what a reader of the written series sees.

Anatomy (simplified, in mm around the body centre):

* body outline (ellipse), 2 mm skin (+30 HU), subcutaneous fat (SAT, -100 HU);
* an abdominal-wall muscle ring (+40 HU) joined posteriorly by two paraspinal muscles, and two
  psoas muscles beside the vertebral bodies; small fat islands inside the muscles (IMAT, -80 HU);
* the abdominal cavity filled with visceral fat (VAT, -100 HU) holding kidneys (+55 HU), bowel
  loops (+40 HU wall, gas -1000 HU) and, cranially, the liver (+60 HU); every organ is separated
  from the muscles by at least a few millimetres of fat, as it usually is at L3;
* a spine of vertebral bodies (cortical shell +700 HU, cancellous +250 HU) with posterior elements
  (pedicles, laminae, spinous and transverse processes) around a spinal canal (+20 HU),
  intervertebral discs (+80 HU), vertebrae T10..L5 and the sacrum (wide alae);
* one pair of ribs (+700 HU) on each of T10, T11 and T12, starting at the vertebral body and
  sloping caudally as they run round the trunk, so the last rib-bearing vertebra is T12.

Anatomy varies independently of the pipelines' defaults: body size (``body_scale``,
``sat_thickness_mm``: thin to obese), a curved column (``lordosis_mm``, ``scoliosis_mm``),
osteopenic bone (``cortical_bone_hu``, ``cancellous_bone_hu``), transitional anatomy (11 or
13 rib pairs through ``rib_bearing``) and arms lying against the trunk (``arms_down``).

HU values sit in the middle of the bands of :mod:`pipelines.l3_body_composition` (muscle
-29..150, SAT/IMAT -190..-30, VAT -150..-50), several noise SDs from any band edge.

This is a software test object. Results on it show that the code computes what it claims, not
that it is clinically valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path

import numpy as np
from pydicom.dataset import Dataset
from pydicom.uid import generate_uid
from scipy import ndimage

from training.phantoms._dicom import RESCALE_INTERCEPT_HU, new_ct_instance, set_ct_pixels

#: Ground-truth tissue labels of :attr:`AbdomenPhantom.labels`.
LABEL_BACKGROUND = 0
LABEL_SMA = 1
LABEL_SAT = 2
LABEL_VAT = 3
LABEL_IMAT = 4

#: Vertebra labels of :attr:`AbdomenPhantom.vertebra_labels` (value = index + 1).
VERTEBRA_NAMES: tuple[str, ...] = ("T10", "T11", "T12", "L1", "L2", "L3", "L4", "L5", "S")

#: Nominal Hounsfield units of the phantom tissues (before noise).
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "skin": 30.0,
    "sat": -100.0,
    "muscle": 40.0,
    "imat": -80.0,
    "vat": -100.0,
    "kidney": 55.0,
    "liver": 60.0,
    "bowel_wall": 40.0,
    "gas": -1000.0,
    "cortical_bone": 700.0,
    "cancellous_bone": 250.0,
    "disc": 80.0,
    "canal": 20.0,
}

_RESCALE_INTERCEPT = RESCALE_INTERCEPT_HU

#: Radius of an arm drawn with ``arms_down``, mm.
ARM_RADIUS_MM = 45.0


@dataclass
class AbdomenPhantom:
    """A CT phantom in canonical ``"HPL"`` orientation with its exact ground truth.

    Attributes
    ----------
    hu: numpy.ndarray
        ``(slices, rows, columns)`` ``float32`` Hounsfield units with noise, whole numbers.
    hu_noise_free: numpy.ndarray
        Same shape, before noise.
    labels: numpy.ndarray
        ``(slices, rows, columns)`` ``uint8``: 0 background/other, 1 SMA, 2 SAT, 3 VAT, 4 IMAT.
    vertebra_labels: numpy.ndarray
        ``(slices, rows, columns)`` ``uint8``: 0 none, ``i + 1`` = :data:`VERTEBRA_NAMES` ``[i]``
        (bone of the vertebral body and posterior elements; discs are 0).
    spacing_mm: tuple[float, float, float]
        (slice, row, column) spacing in mm.
    mid_l3_slice: int
        Index of the slice nearest to the midpoint of the L3 vertebral body.
    vertebra_slices: dict[str, tuple[int, int]]
        Vertebra name -> (first, last) slice index whose centre lies in its body (inclusive).
    truth_l3: dict[str, float]
        Ground truth on ``mid_l3_slice``: ``sma_cm2``, ``sat_area_cm2``, ``vat_area_cm2``,
        ``imat_area_cm2``, ``muscle_mean_hu_nominal`` (before noise), ``muscle_mean_hu`` and
        ``muscle_sd_hu`` (as realised with noise), ``sat_mean_hu``, ``vat_mean_hu`` (realised).
    patient_size_m, patient_weight_kg, patient_sex:
        Written into Patient's Size, Patient's Weight and Patient's Sex.
    seed: int
        Random seed (noise, UIDs and file names derive from it).
    """

    hu: np.ndarray
    hu_noise_free: np.ndarray
    labels: np.ndarray
    vertebra_labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    mid_l3_slice: int
    vertebra_slices: dict[str, tuple[int, int]]
    truth_l3: dict[str, float]
    patient_size_m: float | None
    patient_weight_kg: float | None
    patient_sex: str | None
    seed: int
    contrast_agent: str | None = None
    kvp: float = 120.0
    extra: dict[str, object] = field(default_factory=dict)


@dataclass(frozen=True)
class _Level:
    name: str
    z0_mm: float  # inferior end of the body
    z1_mm: float  # superior end of the body

    @property
    def mid_mm(self) -> float:
        return 0.5 * (self.z0_mm + self.z1_mm)


def _spine_layout(length_mm: float) -> tuple[list[_Level], float]:
    """Vertebral bodies from caudal to cranial, scaled to fill ``length_mm``.

    Natural sizes (mm): sacrum 50, lumbar bodies 27 with 10 mm discs, thoracic bodies 22 with
    7 mm discs (round numbers of adult anatomy).
    """
    parts: list[tuple[str, float, bool]] = [("S", 50.0, False)]
    for name in ("L5", "L4", "L3", "L2", "L1"):
        parts += [("disc", 10.0, True), (name, 27.0, False)]
    for name in ("T12", "T11", "T10"):
        parts += [("disc", 7.0, True), (name, 22.0, False)]
    natural = sum(p[1] for p in parts)
    scale = length_mm / natural
    levels: list[_Level] = []
    z = 0.0
    for name, size, is_disc in parts:
        size *= scale
        if not is_disc:
            levels.append(_Level(name, z, z + size))
        z += size
    return levels, scale


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
             ) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def make_abdomen_phantom(
    n_slices: int = 60,
    rows: int = 256,
    columns: int = 256,
    pixel_spacing_mm: float = 1.5,
    slice_thickness_mm: float = 5.0,
    seed: int = 0,
    noise_hu: float = 10.0,
    patient_size_m: float | None = 1.75,
    patient_sex: str | None = "M",
    patient_weight_kg: float | None = 80.0,
    contrast_agent: str | None = None,
    sat_thickness_mm: float = 22.0,
    muscle_wall_thickness_mm: float = 12.0,
    n_imat_islands: int = 6,
    body_scale: float = 1.0,
    lordosis_mm: float = 0.0,
    scoliosis_mm: float = 0.0,
    cortical_bone_hu: float = TISSUE_HU["cortical_bone"],
    cancellous_bone_hu: float = TISSUE_HU["cancellous_bone"],
    rib_bearing: tuple[str, ...] = ("T10", "T11", "T12"),
    arms_down: bool = False,
) -> AbdomenPhantom:
    """Build an abdominal CT phantom from T10 to the sacrum with exact ground truth.

    Parameters
    ----------
    n_slices:
        Number of axial slices; the spine T10..sacrum is scaled to fill ``n_slices *
        slice_thickness_mm``.
    rows, columns:
        Matrix size.
    pixel_spacing_mm:
        In-plane pixel spacing (square pixels), mm. The field of view ``rows * pixel_spacing_mm``
        must be at least 330 mm (the body is 300 x 230 mm).
    slice_thickness_mm:
        Slice thickness = spacing between slice centres, mm.
    seed:
        Seed of the noise, IMAT island positions, UIDs and file names.
    noise_hu:
        Standard deviation of the added Gaussian noise, HU (rounded to whole HU afterwards).
    patient_size_m, patient_sex, patient_weight_kg:
        Header values (Patient's Size in metres, Patient's Sex ``"M"``/``"F"``, Patient's Weight
        in kg); ``None`` leaves the element out.
    contrast_agent:
        Contrast/Bolus Agent to write, or ``None`` (unenhanced).
    sat_thickness_mm, muscle_wall_thickness_mm:
        Thickness of the subcutaneous fat and of the abdominal-wall muscle ring (anterior and
        lateral), mm.
    n_imat_islands:
        Number of intramuscular fat islands (radius 3 pixels) per slice: up to six in the
        paraspinal and psoas muscles, more in the abdominal wall; an island is drawn only where
        it lies wholly inside muscle with a 2-pixel margin.
    body_scale:
        Scale of the body outline (300 x 230 mm at 1): e.g. 0.85 with a thin ``sat_thickness_mm``
        for a thin patient, 1.3 with a thick one for an obese patient. The field of view must
        hold the body plus 30 mm.
    lordosis_mm:
        Anterior displacement of the lumbar spine at its apex (L3), mm: the column (vertebrae,
        canal, psoas and paraspinal muscles, rib necks) follows a curve that is 0 at the sacrum
        and at T12 (an S-shaped sagittal profile; 0 = straight).
    scoliosis_mm:
        Lateral displacement (towards the patient's left when positive) at mid-column, mm.
    cortical_bone_hu, cancellous_bone_hu:
        Bone attenuation, HU (defaults: normal adult bone; e.g. 350 and 100 for osteopenic bone).
    rib_bearing:
        Vertebrae carrying a rib pair, among T10..L1: ``("T10", "T11")`` draws 11 pairs (no
        T12 ribs), ``("T10", "T11", "T12", "L1")`` 13 pairs (a lumbar rib), the default 12.
    arms_down:
        Draw both arms at the sides of the trunk, touching its skin (radius
        :data:`ARM_RADIUS_MM`, with a humerus); they are not part of any truth label.

    Returns
    -------
    AbdomenPhantom
        Volume, labels and ground truth.

    Raises
    ------
    ValueError
        If the field of view is too small or the slices too thick for the discs (a disc must be
        at least one slice thick so that it is sampled).
    """
    fov_mm = min(rows, columns) * pixel_spacing_mm
    width_mm = 300.0 * body_scale + (4.0 * ARM_RADIUS_MM if arms_down else 0.0)
    if fov_mm < width_mm + 30.0:
        raise ValueError(
            f"field of view {fov_mm:.0f} mm is too small for the {width_mm:.0f} x "
            f"{230 * body_scale:.0f} mm body; use more pixels or a larger pixel spacing"
        )
    length_mm = n_slices * slice_thickness_mm
    levels, scale = _spine_layout(length_mm)
    if 7.0 * scale < slice_thickness_mm * 1.05:
        raise ValueError(
            f"{n_slices} slices of {slice_thickness_mm} mm give {length_mm:.0f} mm for T10..sacrum; "
            "thoracic discs would be thinner than a slice. Use more or thinner slices "
            f"(at least {int(np.ceil(322.0 * slice_thickness_mm * 1.05 / 7.0 / slice_thickness_mm))})"
        )
    rng = np.random.default_rng(seed)
    ps = pixel_spacing_mm
    yy, xx = np.meshgrid(
        (np.arange(rows) - (rows - 1) / 2.0) * ps,
        (np.arange(columns) - (columns - 1) / 2.0) * ps,
        indexing="ij",
    )  # mm; y posterior positive, x patient-left positive

    hu0 = np.full((n_slices, rows, columns), TISSUE_HU["air"], dtype=np.float32)
    labels = np.zeros((n_slices, rows, columns), dtype=np.uint8)
    vlabels = np.zeros((n_slices, rows, columns), dtype=np.uint8)
    z_centres = (np.arange(n_slices) + 0.5) * slice_thickness_mm
    by_name = {lv.name: lv for lv in levels}

    # Ribs: pairs on T10-T12 as 3-D polylines; sampled densely.
    def column_offset(z_mm: float) -> tuple[float, float]:
        """(dy, dx) of the column at height z: lordosis (anterior, negative y) in the lumbar
        spine, scoliosis (lateral) over the whole length."""
        lo, hi = by_name["S"].z1_mm, by_name["T12"].z0_mm
        t = np.clip((z_mm - lo) / max(hi - lo, 1.0), 0.0, 1.0)
        dy = -lordosis_mm * float(np.sin(np.pi * t))
        dx = scoliosis_mm * float(np.sin(np.pi * np.clip(z_mm / max(length_mm, 1.0), 0, 1)))
        return dy, dx

    rib_points = _rib_points(levels, sat_thickness_mm, muscle_wall_thickness_mm, body_scale,
                             rib_bearing, column_offset)
    rib_radius_mm = 4.0

    # IMAT islands: fixed positions (mm) inside the paraspinal and psoas muscles and the wall.
    islands = _imat_island_centres(rng, n_imat_islands, sat_thickness_mm, muscle_wall_thickness_mm)

    vb_cy = 45.0  # vertebral body centre, mm posterior of the body centre
    for k, z in enumerate(z_centres):
        slice_hu = hu0[k]
        slice_lab = labels[k]
        # Smooth, small change of body size along z.
        f = (1.0 + 0.03 * np.sin(z / 90.0)) * body_scale
        body_rx, body_ry = 150.0 * f, 115.0 * f
        dy, dx = column_offset(float(z))
        sy, sx = yy - dy, xx - dx  # coordinates that follow the column
        body = _ellipse(yy, xx, 0.0, 0.0, body_ry, body_rx)
        inner_skin = _ellipse(yy, xx, 0.0, 0.0, body_ry - 2.0, body_rx - 2.0)
        wall_rx = body_rx - 2.0 - sat_thickness_mm
        wall_ry = body_ry - 2.0 - sat_thickness_mm
        fascia = _ellipse(yy, xx, 0.0, 0.0, wall_ry, wall_rx)
        cavity_rx = wall_rx - muscle_wall_thickness_mm
        cavity_ry = wall_ry - muscle_wall_thickness_mm
        cavity = _ellipse(yy, xx, 0.0, 0.0, cavity_ry, cavity_rx)
        # Paraspinal muscles: posterior, either side of the spinous process, joined to the ring.
        paraspinal = (
            _ellipse(sy, sx, 78.0, -32.0, 22.0, 26.0) | _ellipse(sy, sx, 78.0, 32.0, 22.0, 26.0)
        ) & fascia
        # Psoas grows caudally (larger at L4-L5), absent above L1.
        l1_top = by_name["L1"].z1_mm
        s_top = by_name["S"].z1_mm
        psoas_size = np.clip((l1_top - z) / max(l1_top - s_top, 1.0), 0.0, 1.0)
        psoas = np.zeros_like(body)
        if psoas_size > 0.05:
            prx, pry = 8.0 + 10.0 * psoas_size, 9.0 + 8.0 * psoas_size
            pcx = 24.0 + prx - 1.0
            psoas = _ellipse(sy, sx, vb_cy - 4.0, -pcx, pry, prx) | _ellipse(
                sy, sx, vb_cy - 4.0, pcx, pry, prx
            )
        muscle = (fascia & ~cavity) | paraspinal | psoas

        if arms_down:
            # Arms at the sides, touching the trunk's skin (flush, as on PET/CT): skin, 8 mm of
            # fat, muscle and a humerus; not part of the trunk's compartments (label 0).
            for side in (-1.0, 1.0):
                ax = side * (body_rx + ARM_RADIUS_MM - 2.0)
                arm = _ellipse(yy, xx, 0.0, ax, ARM_RADIUS_MM, ARM_RADIUS_MM) & ~body
                arm_fat = _ellipse(yy, xx, 0.0, ax, ARM_RADIUS_MM - 2.0, ARM_RADIUS_MM - 2.0) & arm
                arm_muscle = _ellipse(yy, xx, 0.0, ax, ARM_RADIUS_MM - 10.0,
                                      ARM_RADIUS_MM - 10.0) & arm
                humerus = _ellipse(yy, xx, 0.0, ax, 11.0, 11.0)
                marrow = _ellipse(yy, xx, 0.0, ax, 7.0, 7.0)
                slice_hu[arm] = TISSUE_HU["skin"]
                slice_hu[arm_fat] = TISSUE_HU["sat"]
                slice_hu[arm_muscle] = TISSUE_HU["muscle"]
                slice_hu[humerus] = cortical_bone_hu
                slice_hu[marrow] = TISSUE_HU["sat"]
        slice_hu[body] = TISSUE_HU["skin"]
        slice_hu[inner_skin] = TISSUE_HU["sat"]
        slice_lab[inner_skin] = LABEL_SAT
        slice_hu[fascia] = TISSUE_HU["vat"]
        slice_lab[fascia] = LABEL_VAT
        slice_hu[muscle] = TISSUE_HU["muscle"]
        slice_lab[muscle] = LABEL_SMA

        # Organs inside the cavity, kept >= 4 mm from the muscles.
        keep_clear = ndimage.binary_dilation(muscle, iterations=max(1, int(np.ceil(4.0 / ps))))
        organs: list[tuple[np.ndarray, float]] = []
        kid_lo, kid_hi = by_name["L3"].z0_mm - 5.0, by_name["T12"].z1_mm
        if kid_lo <= z <= kid_hi:
            kry = 22.0 * np.sqrt(max(0.05, 1.0 - ((z - 0.5 * (kid_lo + kid_hi)) /
                                                     (0.55 * (kid_hi - kid_lo))) ** 2))
            kidneys = _ellipse(sy, sx, 25.0, -72.0, kry, 18.0) | _ellipse(sy, sx, 25.0, 72.0,
                                                                          kry, 18.0)
            organs.append((kidneys, TISSUE_HU["kidney"]))
        if z >= by_name["L2"].z1_mm:
            liver = _ellipse(yy, xx, -15.0, -50.0, 55.0, 55.0) & (xx < 10.0)
            organs.append((liver, TISSUE_HU["liver"]))
        bowel_wall = np.zeros_like(body)
        bowel_gas = np.zeros_like(body)
        for (by, bx, r) in ((-55.0, -20.0, 16.0), (-45.0, 35.0, 13.0), (-5.0, 60.0, 12.0),
                            (-75.0, 15.0, 10.0)):
            loop = _ellipse(yy, xx, by, bx, r, r)
            bowel_wall |= loop
            bowel_gas |= _ellipse(yy, xx, by, bx, r - 4.0, r - 4.0)
        organs.append((bowel_wall, TISSUE_HU["bowel_wall"]))
        for mask, value in organs:
            mask = mask & cavity & ~keep_clear
            slice_hu[mask] = value
            slice_lab[mask] = LABEL_BACKGROUND
        gas = bowel_gas & cavity & ~keep_clear
        slice_hu[gas] = TISSUE_HU["gas"]
        slice_lab[gas] = LABEL_BACKGROUND

        # Spine.
        level = next((lv for lv in levels if lv.z0_mm <= z < lv.z1_mm), None)
        vb_rx, vb_ry = 24.0, 16.0
        if level is not None and level.name == "S":
            # Sacrum: wide, with alae, posterior surface at the canal.
            vb_region = _ellipse(sy, sx, vb_cy + 2.0, 0.0, 20.0, 55.0)
            vb_inner = _ellipse(sy, sx, vb_cy + 2.0, 0.0, 17.0, 52.0)
        else:
            vb_region = _ellipse(sy, sx, vb_cy, 0.0, vb_ry, vb_rx)
            vb_inner = _ellipse(sy, sx, vb_cy, 0.0, vb_ry - 2.5, vb_rx - 2.5)
        canal = _ellipse(sy, sx, vb_cy + vb_ry + 9.0, 0.0, 8.0, 10.0)
        if level is None:
            slice_hu[vb_region] = TISSUE_HU["disc"]
            slice_lab[vb_region] = LABEL_BACKGROUND
            slice_hu[canal] = TISSUE_HU["canal"]
            slice_lab[canal] = LABEL_BACKGROUND
        else:
            # Posterior elements: ring around the canal, spinous and transverse processes.
            ring = _ellipse(sy, sx, vb_cy + vb_ry + 9.0, 0.0, 12.0, 14.0)
            spinous = (
                (np.abs(sx) <= 3.5) & (sy >= vb_cy + vb_ry + 15.0) & (sy <= vb_cy + vb_ry + 28.0)
            )
            transverse = (np.abs(sy - (vb_cy + vb_ry + 6.0)) <= 3.0) & (np.abs(sx) <= 38.0)
            posterior = (ring | spinous | transverse) & ~canal
            bone = vb_region | posterior
            slice_hu[bone] = cortical_bone_hu
            slice_hu[vb_inner] = cancellous_bone_hu
            slice_lab[bone] = LABEL_BACKGROUND
            slice_hu[canal] = TISSUE_HU["canal"]
            slice_lab[canal] = LABEL_BACKGROUND
            vlabels[k][bone] = VERTEBRA_NAMES.index(level.name) + 1

        # Ribs.
        near = rib_points[np.abs(rib_points[:, 2] - z) <= rib_radius_mm]
        if len(near):
            rib = np.zeros_like(body)
            for py, px, pz in near:
                r_in_plane = np.sqrt(rib_radius_mm**2 - (pz - z) ** 2)
                rib |= _ellipse(yy, xx, py, px, r_in_plane, r_in_plane)
            rib &= inner_skin
            slice_hu[rib] = cortical_bone_hu
            slice_lab[rib] = LABEL_BACKGROUND

        # IMAT islands: only where the whole island (+1 pixel) lies in muscle.
        eroded_muscle = ndimage.binary_erosion(slice_lab == LABEL_SMA, iterations=2)
        for cy, cx in islands:
            island = _ellipse(yy, xx, cy, cx, 3.0 * ps, 3.0 * ps)
            if island.any() and np.all(eroded_muscle[island]):
                slice_hu[island] = TISSUE_HU["imat"]
                slice_lab[island] = LABEL_IMAT

    hu = rng.standard_normal(size=hu0.shape, dtype=np.float32)
    hu *= np.float32(noise_hu)
    hu += hu0
    np.round(hu, out=hu)
    np.clip(hu, -1024.0, 3071.0, out=hu)

    vertebra_slices: dict[str, tuple[int, int]] = {}
    for lv in levels:
        inside = np.flatnonzero((z_centres >= lv.z0_mm) & (z_centres < lv.z1_mm))
        if len(inside):
            vertebra_slices[lv.name] = (int(inside[0]), int(inside[-1]))
    mid_l3 = int(np.argmin(np.abs(z_centres - by_name["L3"].mid_mm)))
    truth = _truth_on_slice(hu[mid_l3], hu0[mid_l3], labels[mid_l3], ps)
    extra: dict[str, object] = {
        "body_scale": body_scale, "lordosis_mm": lordosis_mm, "scoliosis_mm": scoliosis_mm,
        "cortical_bone_hu": cortical_bone_hu, "cancellous_bone_hu": cancellous_bone_hu,
        "rib_bearing": tuple(rib_bearing), "sat_thickness_mm": sat_thickness_mm,
        "arms_down": arms_down,
    }
    return AbdomenPhantom(
        hu=hu,
        hu_noise_free=hu0,
        labels=labels,
        vertebra_labels=vlabels,
        spacing_mm=(float(slice_thickness_mm), float(ps), float(ps)),
        mid_l3_slice=mid_l3,
        vertebra_slices=vertebra_slices,
        truth_l3=truth,
        patient_size_m=patient_size_m,
        patient_weight_kg=patient_weight_kg,
        patient_sex=patient_sex,
        seed=seed,
        contrast_agent=contrast_agent,
        extra=extra,
    )


def _truth_on_slice(hu: np.ndarray, hu0: np.ndarray, labels: np.ndarray, ps: float,
                    ) -> dict[str, float]:
    pixel_cm2 = ps * ps / 100.0
    muscle = labels == LABEL_SMA
    return {
        "sma_cm2": float(muscle.sum() * pixel_cm2),
        "sat_area_cm2": float((labels == LABEL_SAT).sum() * pixel_cm2),
        "vat_area_cm2": float((labels == LABEL_VAT).sum() * pixel_cm2),
        "imat_area_cm2": float((labels == LABEL_IMAT).sum() * pixel_cm2),
        "muscle_mean_hu_nominal": float(hu0[muscle].mean()),
        "muscle_mean_hu": float(hu[muscle].mean()),
        "muscle_sd_hu": float(hu[muscle].std(ddof=1)),
        "sat_mean_hu": float(hu[labels == LABEL_SAT].mean()),
        "vat_mean_hu": float(hu[labels == LABEL_VAT].mean()),
    }


def _rib_points(
    levels: list[_Level],
    sat_mm: float,
    wall_mm: float,
    body_scale: float = 1.0,
    rib_bearing: tuple[str, ...] = ("T10", "T11", "T12"),
    column_offset: object = None,
) -> np.ndarray:
    """Sample points (y, x, z) in mm along the ribs of the ``rib_bearing`` vertebrae (both
    sides); the necks follow the column (``column_offset(z) -> (dy, dx)``)."""
    points: list[np.ndarray] = []
    ry = 115.0 * body_scale - 2.0 - sat_mm - wall_mm * 0.5
    rx = 150.0 * body_scale - 2.0 - sat_mm - wall_mm * 0.5
    for lv in levels:
        if lv.name not in rib_bearing:
            continue
        z_mid = lv.mid_mm
        dy, dx = column_offset(z_mid) if callable(column_offset) else (0.0, 0.0)
        for side in (-1.0, 1.0):
            # Neck: from beside the vertebral body (2 mm gap) out past the transverse process.
            t = np.linspace(0.0, 1.0, 40)
            neck_y = 52.0 + dy + 20.0 * t
            neck_x = dx + side * (31.0 + 40.0 * t)
            neck = np.stack([neck_y, neck_x, np.full_like(t, z_mid)], axis=1)
            # Shaft: along an ellipse inside the wall, from posterolateral to anterolateral,
            # dropping 35 mm.
            theta0 = np.arcsin(min(0.99, abs(neck_x[-1]) / rx))
            theta = np.linspace(theta0, np.deg2rad(130.0), 200)
            shaft_y = ry * np.cos(theta)
            shaft_x = side * rx * np.sin(theta)
            drop = 35.0 * (theta - theta0) / (theta[-1] - theta0)
            shaft = np.stack([shaft_y, shaft_x, z_mid - drop], axis=1)
            # Join the neck end to the shaft start.
            join_t = np.linspace(0.0, 1.0, 30)[:, None]
            join = (1 - join_t) * neck[-1] + join_t * shaft[0]
            points += [neck, join, shaft]
    return np.concatenate(points, axis=0)


def _imat_island_centres(rng: np.random.Generator, n: int, sat_mm: float, wall_mm: float,
                         ) -> list[tuple[float, float]]:
    """Candidate centres (y, x) in mm for IMAT islands inside the muscles."""
    candidates = [  # paraspinal (behind the transverse processes) and psoas
        (78.0, -30.0), (79.0, 44.0), (80.0, -46.0), (77.0, 24.0), (41.0, -38.0), (41.0, 38.0),
    ]
    wall_r_y = 115.0 - 2.0 - sat_mm - wall_mm / 2.0
    wall_r_x = 150.0 - 2.0 - sat_mm - wall_mm / 2.0
    order = [int(i) for i in rng.permutation(len(candidates))]
    chosen = [candidates[i] for i in order[: max(0, n)]]
    for angle in rng.uniform(0.3, np.pi - 0.3, size=max(0, n - len(chosen))):
        side = rng.choice([-1.0, 1.0])
        chosen.append((-wall_r_y * np.cos(angle) * 0.98, side * wall_r_x * np.sin(angle)))
    return chosen


def write_phantom_series(
    phantom: AbdomenPhantom,
    out_dir: str | os.PathLike[str],
    *,
    patient_position: str = "HFS",
    shuffle: bool = True,
    orientation: str = "axial",
    image_orientation: tuple[float, float, float, float, float, float] | None = None,
    slice_indices: list[int] | range | None = None,
    modality: str = "CT",
    body_part_examined: str = "ABDOMEN",
    study_description: str = "Digital abdomen phantom",
    series_description: str = "Abdomen phantom axial",
    image_type: tuple[str, ...] | list[str] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    patient_name: str = "PHANTOM^ABDOMEN",
) -> list[Path]:
    """Write the phantom as a DICOM CT Image Storage series, one file per slice.

    Parameters
    ----------
    phantom:
        The phantom.
    out_dir:
        Directory to write into (created if missing).
    patient_position:
        Patient Position (0018,5100), e.g. ``"HFS"``, ``"FFS"``, ``"HFP"``, ``"FFP"``.
    shuffle:
        Write the files in random order with random names, so that nothing can rely on file
        order or names.
    orientation:
        Only ``"axial"`` is supported.
    image_orientation:
        Image Orientation (Patient) (PS3.3 C.7.6.2.1.1). Its row and column direction cosines must
        each be ±x or ±y of the patient (LPS); the pixel matrix is flipped/transposed to match, so
        the anatomy in patient space is the same whatever is chosen. Default: ``[1,0,0,0,1,0]``
        for supine and ``[-1,0,0,0,-1,0]`` for prone positions.
    slice_indices:
        Canonical slices to write (default: all).
    modality:
        Modality (0008,0060); other than ``"CT"`` only to test error handling.
    body_part_examined:
        Body Part Examined (0018,0015), e.g. ``"CHEST"`` for another phantom written this way.
    study_description, series_description:
        Study Description (0008,1030) and Series Description (0008,103E).
    image_type:
        Image Type (0008,0008), e.g. ``("ORIGINAL", "PRIMARY", "LOCALIZER")`` to test rejection.
    patient_name:
        Patient's Name (0010,0010) of the phantom.

    Returns
    -------
    list[pathlib.Path]
        The written files, in writing order.

    Raises
    ------
    ValueError
        If ``orientation`` or ``image_orientation`` is not supported.
    """
    if orientation != "axial":
        raise ValueError(f"orientation {orientation!r} is not supported; use 'axial'")
    prone = patient_position.upper().endswith("P")
    iop = np.asarray(
        image_orientation
        if image_orientation is not None
        else ((-1, 0, 0, 0, -1, 0) if prone else (1, 0, 0, 0, 1, 0)),
        dtype=float,
    )
    row_dir, col_dir = iop[:3], iop[3:]
    valid_axes = {(1, 0, 0), (-1, 0, 0), (0, 1, 0), (0, -1, 0)}
    if tuple(row_dir.astype(int)) not in valid_axes or tuple(col_dir.astype(int)) not in valid_axes \
            or abs(float(np.dot(row_dir, col_dir))) > 1e-6:
        raise ValueError(
            f"Image Orientation (Patient) {iop.tolist()} is not an axial orientation with "
            "axis-aligned rows and columns"
        )
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(phantom.seed + 7919)
    n_slices, rows, columns = phantom.hu.shape
    thickness, ps, _ = phantom.spacing_mm
    indices = list(range(n_slices)) if slice_indices is None else list(slice_indices)
    order = list(rng.permutation(indices)) if shuffle else indices

    entropy = [str(phantom.seed), "ainode-abdomen-phantom", patient_position, str(iop.tolist())]
    study_uid = generate_uid(entropy_srcs=entropy + ["study"])
    series_uid = generate_uid(entropy_srcs=entropy + ["series"])
    frame_uid = generate_uid(entropy_srcs=entropy + ["frame"])
    now = datetime(2024, 1, 1, 12, 0, 0)

    # Canonical pixel (r, c) lies at x = x0 + c * ps (left), y = y0 + r * ps (posterior).
    x0 = -(columns - 1) / 2.0 * ps
    y0 = -(rows - 1) / 2.0 * ps
    paths: list[Path] = []
    for k in order:
        canon = phantom.hu[k]
        # Matrix of the written image: pixel (i, j) lies at IPP + j*ps*row_dir + i*ps*col_dir.
        transposed = abs(row_dir[1]) == 1  # rows of the image run along x
        image = canon.T if transposed else canon
        # Along x: the axis with x-direction; flip if its cosine is negative.
        x_axis = 0 if transposed else 1
        y_axis = 1 - x_axis
        x_cos = col_dir[0] if x_axis == 0 else row_dir[0]
        y_cos = col_dir[1] if y_axis == 0 else row_dir[1]
        if x_cos < 0:
            image = np.flip(image, axis=x_axis)
        if y_cos < 0:
            image = np.flip(image, axis=y_axis)
        x_first = x0 if x_cos > 0 else x0 + (columns - 1) * ps
        y_first = y0 if y_cos > 0 else y0 + (rows - 1) * ps
        z = (k + 0.5) * thickness - 200.0
        stored = np.clip(np.round(image - _RESCALE_INTERCEPT), 0, 4095).astype(np.uint16)
        ds = _ct_dataset(
            phantom, stored, iop, (x_first, y_first, z), k, study_uid, series_uid, frame_uid,
            entropy, patient_position, now, modality,
        )
        ds.ImageType = list(image_type)
        ds.BodyPartExamined = body_part_examined
        ds.StudyDescription = study_description
        ds.SeriesDescription = series_description
        ds.PatientName = patient_name
        name = f"{rng.integers(0, 2**63):016x}.dcm" if shuffle else f"IM{k:04d}.dcm"
        path = out / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ct_dataset(
    phantom: AbdomenPhantom,
    stored: np.ndarray,
    iop: np.ndarray,
    ipp: tuple[float, float, float],
    k: int,
    study_uid: str,
    series_uid: str,
    frame_uid: str,
    entropy: list[str],
    patient_position: str,
    now: datetime,
    modality: str,
) -> Dataset:
    thickness, ps, _ = phantom.spacing_mm
    ds = new_ct_instance(entropy, k, ["ORIGINAL", "PRIMARY", "AXIAL"], now, "PHANTOM1", modality)
    ds.StudyDescription = "Digital abdomen phantom"
    ds.SeriesDescription = "Abdomen phantom axial"
    ds.PatientName = "PHANTOM^ABDOMEN"
    ds.PatientID = f"PHANTOM-{phantom.seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = phantom.patient_sex or ""
    if phantom.patient_size_m is not None:
        ds.PatientSize = f"{phantom.patient_size_m:.2f}"
    if phantom.patient_weight_kg is not None:
        ds.PatientWeight = f"{phantom.patient_weight_kg:.1f}"
    ds.BodyPartExamined = "ABDOMEN"
    ds.SliceThickness = f"{thickness:g}"
    ds.KVP = f"{phantom.kvp:g}"
    ds.PatientPosition = patient_position
    if phantom.contrast_agent:
        ds.ContrastBolusAgent = phantom.contrast_agent
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 1
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in ipp]
    ds.ImageOrientationPatient = [f"{v:g}" for v in iop]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{ipp[2]:.4f}"
    set_ct_pixels(ds, stored, ps, 40, 400)
    return ds


__all__ = [
    "LABEL_BACKGROUND",
    "LABEL_IMAT",
    "LABEL_SAT",
    "LABEL_SMA",
    "LABEL_VAT",
    "TISSUE_HU",
    "VERTEBRA_NAMES",
    "AbdomenPhantom",
    "make_abdomen_phantom",
    "write_phantom_series",
]
