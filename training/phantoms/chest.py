"""Digital chest CT phantom for the chest respiratory-muscle protocol, with exact ground truth.

Built directly on the voxel grid in ainode's canonical ``"HPL"`` orientation (axis 0 slices
feet→head, axis 1 rows anterior→posterior, axis 2 columns patient right→left, see
:mod:`pipelines.volume`). Every voxel gets one tissue (no partial-volume blur), so ground-truth
volumes are exact voxel counts; Gaussian noise is added and rounded to whole Hounsfield units, so
the realised ground truth is what a reader of the written series sees.

Anatomy (simplified, in mm in a body frame: ``y`` posterior, ``x`` patient left, ``z`` cranial):

* body outline (ellipse 330 x 240 mm), 2 mm skin (+30 HU), subcutaneous fat (-100 HU);
* vertebrae C7 (partial, no ribs), T1..T12 (22 mm bodies, 7 mm discs) and L1..L2 (27 mm bodies,
  10 mm discs): cortical shell +700 HU, cancellous +250 HU, posterior arch, spinous and
  transverse processes around the spinal canal (+20 HU), discs +80 HU;
* twelve pairs of ribs (flat bars 8 mm thick and 8 mm high, +700 HU), one pair at the middle of
  each thoracic vertebra: a neck from the transverse process (3 mm gap, so a rib is a bone of its
  own in the slice) to the rib angle, then a shaft along an elliptical cage that drops
  :data:`RIB_DROP_MM` caudally towards the sternum (+700 HU, T2..T9 levels);
* **intercostal muscle** (+30 HU): the cage shell (the ribs' radial extent) between two adjacent
  ribs, lateral to the paravertebral region (``|x| < 60 mm`` posterior to the vertebral-body
  centre) and beside the sternum;
* two lungs (-850 HU) inside the cage, apices at the top of T1, bases shaped as domes (right dome
  higher), and the **diaphragm** (+42 HU): a :data:`DIAPHRAGM_THICKNESS_MM` sheet directly below
  the lung bases, over the liver (+60 HU, right) and the stomach/spleen (+45 HU, left);
* heart (+40 HU) between the lungs, mediastinal fat (-100 HU);
* **pectoralis** (major + minor as one lens, +48 HU) on the anterior chest wall from T2 to T7,
  superficial to the ribs; **serratus anterior** on the lateral wall (T3..T9); a posterolateral
  **latissimus dorsi** layer (T6..L1); **sternocleidomastoid / scalenes** at the neck base
  (C7 down to 10 mm below the lung apices) — "other" muscle, +44 HU;
* **erector spinae** (+36 HU) in the gutter beside the spinous processes, on the transverse
  processes and laminae (no fat between; the lungs end in front of it), at all levels, with
  fatty infiltration: about a fifth of its voxels, in a marbled 3-D pattern, at
  +10 HU (:data:`ERECTOR_FATTY_HU`), so its low-attenuation fraction (-29..+29 HU) is well above
  that of the other classes;
* **left/right differ**: the right pectoralis is thicker and the right erector spinae larger than
  the left (each about 10 % more volume, :data:`RIGHT_LARGER`), the right diaphragm dome is
  higher; a left/right swap therefore changes the volumes by more than the test tolerances;
* Gaussian noise (default SD 10 HU).

The class attenuations differ on purpose (pectoralis 48, other muscle 44, diaphragm 42, erector
spinae 36 with fatty spots at 10, intercostal 30 HU): a class mix-up shows in the mean HU.

The whole anatomy can be rotated about the cranio-caudal axis and shifted in-plane
(``rotation_deg``, ``shift_mm``): the labels rotate with it (they are computed in the body frame).

This is a software test object: results on it show that code computes what it claims, not that
it is clinically valid.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from training.phantoms.abdomen import write_phantom_series as _write_abdomen_series

#: Ground-truth labels of :attr:`ChestPhantom.labels` (same numbering as
#: :data:`pipelines.chest_respiratory_muscle.LABELS`).
LABEL_PECTORALIS_RIGHT = 1
LABEL_PECTORALIS_LEFT = 2
LABEL_ERECTOR_SPINAE_RIGHT = 3
LABEL_ERECTOR_SPINAE_LEFT = 4
LABEL_INTERCOSTAL_RIGHT = 5
LABEL_INTERCOSTAL_LEFT = 6
LABEL_DIAPHRAGM_RIGHT = 7
LABEL_DIAPHRAGM_LEFT = 8
LABEL_OTHER_MUSCLE = 9

#: Vertebra names of :attr:`ChestPhantom.vertebra_slices`, caudal to cranial.
VERTEBRA_NAMES: tuple[str, ...] = (
    "L2", "L1", "T12", "T11", "T10", "T9", "T8", "T7", "T6", "T5", "T4", "T3", "T2", "T1", "C7",
)

#: Nominal Hounsfield units of the phantom tissues (before noise).
TISSUE_HU: dict[str, float] = {
    "air": -1000.0,
    "skin": 30.0,
    "fat": -100.0,
    "muscle": 44.0,
    "pectoralis": 48.0,
    "erector_spinae": 36.0,
    "erector_spinae_fatty": 10.0,
    "intercostal": 30.0,
    "diaphragm": 42.0,
    "lung": -850.0,
    "heart": 40.0,
    "liver": 60.0,
    "stomach_spleen": 45.0,
    "cortical_bone": 700.0,
    "cancellous_bone": 250.0,
    "disc": 80.0,
    "canal": 20.0,
}

#: HU of the fatty-infiltrated spots of the erector spinae (within the -29..150 HU muscle band).
ERECTOR_FATTY_HU = TISSUE_HU["erector_spinae_fatty"]
#: The right pectoralis and erector spinae have about this factor more volume than the left.
RIGHT_LARGER = 1.10

#: Caudal drop of each rib from its neck to its anterior end, mm.
RIB_DROP_MM = 60.0
#: Thickness of the diaphragm sheet below the lung bases, mm.
DIAPHRAGM_THICKNESS_MM = 5.0
#: Half-width of the paravertebral region (no intercostal muscle there), mm.
PARAVERTEBRAL_HALF_WIDTH_MM = 60.0

_VB_CY = 30.0  # vertebral-body centre, mm posterior of the body centre
_CAGE = (-5.0, 80.0, 132.0)  # rib path ellipse: centre y, radius y, radius x (mm)
_RIB_HALF_MM = 4.0  # radial half-thickness and half-height of a rib
_FATTY_LEVEL = 0.45  # marble pattern above this is fatty (about a fifth of the erector spinae)


@dataclass
class ChestPhantom:
    """A chest CT phantom in canonical ``"HPL"`` orientation with its exact ground truth.

    Attributes
    ----------
    hu: numpy.ndarray
        ``(slices, rows, columns)`` ``float32`` Hounsfield units with noise, whole numbers.
    labels: numpy.ndarray
        ``(slices, rows, columns)`` ``uint8`` muscle labels (``LABEL_*``; 0 = not muscle).
        :data:`LABEL_OTHER_MUSCLE` holds serratus, latissimus and the neck muscles.
    lungs: numpy.ndarray
        ``(slices, rows, columns)`` bool lung mask.
    spacing_mm: tuple[float, float, float]
        (slice, row, column) spacing in mm.
    vertebra_slices: dict[str, tuple[int, int]]
        Vertebra name -> (first, last) slice whose centre lies in its body (inclusive).
    mid_slice: dict[str, int]
        Vertebra name -> slice nearest to the middle of its body.
    lung_slab: tuple[int, int]
        First and last slice holding lung.
    patient_size_m, patient_weight_kg, patient_sex, seed, kvp, contrast_agent:
        Header values and the random seed (noise, UIDs, file names).
    """

    hu: np.ndarray
    labels: np.ndarray
    lungs: np.ndarray
    spacing_mm: tuple[float, float, float]
    vertebra_slices: dict[str, tuple[int, int]]
    mid_slice: dict[str, int]
    lung_slab: tuple[int, int]
    patient_size_m: float | None
    patient_weight_kg: float | None
    patient_sex: str | None
    seed: int
    kvp: float = 120.0
    contrast_agent: str | None = None
    extra: dict[str, object] = field(default_factory=dict)


def _spine_layout() -> tuple[dict[str, tuple[float, float]], float]:
    """Vertebral bodies (z0, z1) in mm from the bottom of L2, and the total length."""
    parts: list[tuple[str, float]] = [("L2", 27.0), ("disc", 10.0), ("L1", 27.0), ("disc", 10.0)]
    for i in range(12, 0, -1):
        parts += [(f"T{i}", 22.0), ("disc", 7.0)]
    parts += [("C7", 14.0)]
    z = 4.0  # a few mm below L2
    levels: dict[str, tuple[float, float]] = {}
    for name, size in parts:
        if name != "disc":
            levels[name] = (z, z + size)
        z += size
    return levels, z


#: Cranio-caudal length of the phantom (L2 to C7), mm: ``n_slices = ceil(length / thickness)``.
PHANTOM_LENGTH_MM: float = _spine_layout()[1]


def _ellipse(yy: np.ndarray, xx: np.ndarray, cy: float, cx: float, ry: float, rx: float,
             ) -> np.ndarray:
    return ((yy - cy) / ry) ** 2 + ((xx - cx) / rx) ** 2 <= 1.0


def make_chest_phantom(
    rows: int = 256,
    columns: int = 256,
    pixel_spacing_mm: float = 1.5,
    slice_thickness_mm: float = 5.0,
    seed: int = 0,
    noise_hu: float = 10.0,
    rotation_deg: float = 0.0,
    shift_mm: tuple[float, float] = (0.0, 0.0),
    patient_size_m: float | None = 1.70,
    patient_sex: str | None = "M",
    patient_weight_kg: float | None = 70.0,
) -> ChestPhantom:
    """Build a chest CT phantom from L2 to C7 with exact labels.

    Parameters
    ----------
    rows, columns:
        Matrix size; the field of view ``min(rows, columns) * pixel_spacing_mm`` must be at least
        350 mm (the body is 330 x 240 mm, plus the shift).
    pixel_spacing_mm:
        In-plane pixel spacing (square pixels), mm.
    slice_thickness_mm:
        Slice spacing, mm; at most 6.5 mm so that every 7 mm thoracic disc is sampled.
    seed:
        Seed of the noise and of the UIDs and file names of the written series.
    noise_hu:
        Standard deviation of the Gaussian noise, HU (then rounded to whole HU).
    rotation_deg:
        Rotation of the anatomy about the cranio-caudal axis, degrees; positive turns the
        patient's left side anteriorly.
    shift_mm:
        In-plane shift (posterior, left) of the anatomy, mm.
    patient_size_m, patient_sex, patient_weight_kg:
        Header values; ``None`` leaves the element out.

    Returns
    -------
    ChestPhantom

    Raises
    ------
    ValueError
        If the field of view is too small or the slices too thick.
    """
    fov_mm = min(rows, columns) * pixel_spacing_mm
    if fov_mm < 350.0 + 2.0 * max(abs(shift_mm[0]), abs(shift_mm[1])):
        raise ValueError(f"field of view {fov_mm:.0f} mm is too small for the 330 x 240 mm body")
    if slice_thickness_mm > 6.5:
        raise ValueError(
            f"slice thickness {slice_thickness_mm} mm: thoracic discs (7 mm) would be missed; "
            "use 6.5 mm or less"
        )
    levels, length_mm = _spine_layout()
    n_slices = int(np.ceil(length_mm / slice_thickness_mm))
    z_centres = (np.arange(n_slices) + 0.5) * slice_thickness_mm
    rng = np.random.default_rng(seed)
    ps = float(pixel_spacing_mm)
    gy, gx = np.meshgrid(
        (np.arange(rows) - (rows - 1) / 2.0) * ps,
        (np.arange(columns) - (columns - 1) / 2.0) * ps,
        indexing="ij",
    )
    theta = np.deg2rad(rotation_deg)
    dy, dx = gy - shift_mm[0], gx - shift_mm[1]
    # Body frame coordinates of each pixel (inverse rotation).
    yy = np.cos(theta) * dy + np.sin(theta) * dx
    xx = -np.sin(theta) * dy + np.cos(theta) * dx
    ax = np.abs(xx)

    # Fixed in-plane geometry (body frame).
    body = _ellipse(yy, xx, 0.0, 0.0, 120.0, 165.0)
    inner_skin = _ellipse(yy, xx, 0.0, 0.0, 118.0, 163.0)
    cy0, ry0, rx0 = _CAGE
    rho = np.sqrt(((yy - cy0) / ry0) ** 2 + (xx / rx0) ** 2)
    # Radial offset from the rib path, mm (first-order: along the local radius).
    local_r = np.sqrt((yy - cy0) ** 2 + xx**2)
    radial_mm = (rho - 1.0) * local_r / np.maximum(rho, 1e-6)
    shell = np.abs(radial_mm) < _RIB_HALF_MM
    outside_shell = radial_mm >= _RIB_HALF_MM
    cage_inner = radial_mm <= -_RIB_HALF_MM
    paravertebral = (ax < PARAVERTEBRAL_HALF_WIDTH_MM) & (yy > _VB_CY)
    sternum_zone = (ax < 17.0) & (yy < cy0)
    # Angle along the cage from posterior (0) to anterior (pi), per side.
    phi = np.arctan2(ax / rx0, (yy - cy0) / ry0)  # 0 posterior, pi anterior
    phi_neck = np.arctan2(PARAVERTEBRAL_HALF_WIDTH_MM / rx0,
                          np.sqrt(max(0.0, 1 - (PARAVERTEBRAL_HALF_WIDTH_MM / rx0) ** 2)))
    phi_end = np.arctan2(17.0 / rx0, -np.sqrt(1 - (17.0 / rx0) ** 2))
    drop = RIB_DROP_MM * np.clip((phi - phi_neck) / (phi_end - phi_neck), 0.0, 1.0)
    shaft_zone = shell & ~paravertebral & ~sternum_zone
    # Rib necks: from the transverse process tip (|x| = 38) to the cage at |x| = 60.
    y_cage_at_60 = cy0 + ry0 * np.sqrt(1 - (PARAVERTEBRAL_HALF_WIDTH_MM / rx0) ** 2)
    neck_y = (_VB_CY + 24.0) + (y_cage_at_60 - (_VB_CY + 24.0)) * (ax - 38.0) / 22.0
    neck_zone = (ax >= 38.0) & (ax <= PARAVERTEBRAL_HALF_WIDTH_MM + 1.0) & \
        (np.abs(yy - neck_y) < _RIB_HALF_MM)

    lung_centres = ((-5.0, -62.0), (-5.0, 62.0))
    lung_cross = [
        _ellipse(yy, xx, cy, cx, 72.0, 58.0) & cage_inner & ~((ax < 30.0) & (yy > 0.0))
        & ~sternum_zone & ~(paravertebral & (yy > _VB_CY + 15.0))
        for cy, cx in lung_centres
    ]
    heart = _ellipse(yy, xx, -30.0, 15.0, 42.0, 48.0) & cage_inner & ~lung_cross[0] & \
        ~lung_cross[1]

    t1_top = levels["T1"][1]
    z_apex = t1_top
    z_full = levels["T4"][0]
    # Dome bases: right dome top at mid-T10, left 12 mm lower; recesses down to mid-T12.
    dome_top = {0: 0.5 * sum(levels["T10"]), 1: 0.5 * sum(levels["T10"]) - 12.0}
    recess = 0.5 * sum(levels["T12"])
    z_base = []
    for side, (cy, cx) in enumerate(lung_centres):
        r2 = ((yy - cy) / 72.0) ** 2 + ((xx - cx) / 58.0) ** 2
        z_base.append(dome_top[side] - (dome_top[side] - recess) * np.clip(r2, 0, 1))

    # Angle about the cage centre from the anterior direction, degrees.
    from_anterior_deg = np.rad2deg(np.arctan2(ax, -(yy - cy0)))
    pec_outer = _ellipse(yy, xx, cy0, 0.0, ry0 + _RIB_HALF_MM + 15.0, rx0 + _RIB_HALF_MM + 15.0)
    # The right pectoralis is thicker (about RIGHT_LARGER times the left's volume).
    pec_outer_right = _ellipse(yy, xx, cy0, 0.0, ry0 + _RIB_HALF_MM + 16.5,
                               rx0 + _RIB_HALF_MM + 16.5)
    pec_outer = np.where(xx > 0, pec_outer, pec_outer_right)
    pectoralis = outside_shell & pec_outer & (from_anterior_deg < 58.0) & (ax > 18.0)
    serratus = outside_shell & _ellipse(yy, xx, cy0, 0.0, ry0 + 12.0, rx0 + 12.0) & \
        (from_anterior_deg > 72.0) & (from_anterior_deg < 110.0)
    latissimus = _ellipse(yy, xx, 0.0, 0.0, 115.0, 160.0) & ~_ellipse(yy, xx, 0.0, 0.0, 108.0, 153.0) & (yy > 25.0) & \
        (ax > 75.0) & (ax < 150.0)
    # Right erector spinae: RIGHT_LARGER times the volume of the left; the 1.5 % on the radii
    # makes up for the clipping at the transverse processes and rib necks below.
    grow = float(np.sqrt(RIGHT_LARGER)) * 1.015
    # Erector spinae: in the gutter, on the transverse processes (y = 54 +- 3 mm) and laminae.
    erector = _ellipse(yy, xx, 74.0, -32.0, 24.0 * grow, 24.0 * grow) | \
        _ellipse(yy, xx, 74.0, 32.0, 24.0, 24.0)
    # Dorsal to the transverse processes and, lateral to their tips, to the rib necks.
    erector &= (yy >= _VB_CY + 27.0) & ((ax < 38.0) | (yy >= neck_y + _RIB_HALF_MM))
    scm = _ellipse(yy, xx, -100.0, -45.0, 8.0, 14.0) | _ellipse(yy, xx, -100.0, 45.0, 8.0, 14.0)
    scalene = _ellipse(yy, xx, 5.0, -48.0, 9.0, 9.0) | _ellipse(yy, xx, 5.0, 48.0, 9.0, 9.0)
    left = xx > 0

    # Vertebra in-plane shapes.
    vb = _ellipse(yy, xx, _VB_CY, 0.0, 15.0, 20.0)
    vb_inner = _ellipse(yy, xx, _VB_CY, 0.0, 12.5, 17.5)
    canal_cy = _VB_CY + 15.0 + 9.0
    canal = _ellipse(yy, xx, canal_cy, 0.0, 8.0, 9.0)
    ring = _ellipse(yy, xx, canal_cy, 0.0, 12.0, 13.0)
    spinous = (ax <= 3.5) & (yy >= canal_cy) & (yy <= canal_cy + 30.0)
    transverse = (np.abs(yy - (_VB_CY + 24.0)) <= 3.0) & (ax <= 35.0)
    posterior = (ring | spinous | transverse) & ~canal
    sternum = (ax < 16.0) & (yy > -cy0 - 97.0) & (yy < -cy0 - 83.0) & body

    hu0 = np.empty((n_slices, rows, columns), dtype=np.float32)
    labels = np.zeros((n_slices, rows, columns), dtype=np.uint8)
    lungs = np.zeros((n_slices, rows, columns), dtype=bool)
    side_label = {
        "pec": (LABEL_PECTORALIS_RIGHT, LABEL_PECTORALIS_LEFT),
        "es": (LABEL_ERECTOR_SPINAE_RIGHT, LABEL_ERECTOR_SPINAE_LEFT),
        "ic": (LABEL_INTERCOSTAL_RIGHT, LABEL_INTERCOSTAL_LEFT),
        "dia": (LABEL_DIAPHRAGM_RIGHT, LABEL_DIAPHRAGM_LEFT),
    }

    def put(sl_hu: np.ndarray, sl_lab: np.ndarray, mask: np.ndarray, value: float,
            kind: str | None) -> None:
        sl_hu[mask] = value
        if kind is None:
            sl_lab[mask] = 0
        elif kind == "other":
            sl_lab[mask] = LABEL_OTHER_MUSCLE
        else:
            right, left_label = side_label[kind]
            sl_lab[mask & ~left] = right
            sl_lab[mask & left] = left_label

    thoracic = [f"T{i}" for i in range(1, 13)]
    rib_z0 = {name: 0.5 * sum(levels[name]) for name in thoracic}
    top_rib, bottom_rib = rib_z0["T1"], rib_z0["T12"]
    for k, z in enumerate(z_centres):
        h, lab = hu0[k], labels[k]
        h.fill(TISSUE_HU["air"])
        put(h, lab, body, TISSUE_HU["skin"], None)
        put(h, lab, inner_skin, TISSUE_HU["fat"], None)
        # Abdominal organs below the domes, heart above.
        below_dome = inner_skin & cage_inner & (z < max(dome_top.values()) + 2.0) & \
            ~(paravertebral & (yy > _VB_CY + 15.0))
        if z < recess + 40.0:
            put(h, lab, below_dome & (xx <= 10.0), TISSUE_HU["liver"], None)
            put(h, lab, below_dome & (xx > 10.0), TISSUE_HU["stomach_spleen"], None)
        if levels["T10"][0] < z < levels["T3"][1]:
            put(h, lab, heart, TISSUE_HU["heart"], None)
        # Lungs.
        scale = 1.0 if z <= z_full else np.sqrt(max(0.0, 1.0 - ((z - z_full) / (z_apex - z_full)) ** 2))
        lung_k = np.zeros_like(body)
        if z < z_apex:
            for side, (cy, cx) in enumerate(lung_centres):
                cross = lung_cross[side]
                if scale < 1.0:
                    cross = cross & _ellipse(yy, xx, cy, cx, 72.0 * scale, 58.0 * scale)
                lung_k |= cross & (z >= z_base[side])
        put(h, lab, lung_k, TISSUE_HU["lung"], None)
        lungs[k] = lung_k
        # Diaphragm: the sheet directly below the lung bases.
        dia = np.zeros_like(body)
        for side in (0, 1):
            dia |= lung_cross[side] & (z < z_base[side]) & (z >= z_base[side] - DIAPHRAGM_THICKNESS_MM)
        put(h, lab, dia & ~lung_k, TISSUE_HU["diaphragm"], "dia")
        # Chest-wall muscles.
        if levels["T7"][0] <= z <= levels["T2"][1]:
            put(h, lab, pectoralis & inner_skin, TISSUE_HU["pectoralis"], "pec")
        if levels["T9"][0] <= z <= levels["T3"][1]:
            put(h, lab, serratus & inner_skin, TISSUE_HU["muscle"], "other")
        if levels["L1"][0] <= z <= levels["T6"][1]:
            put(h, lab, latissimus, TISSUE_HU["muscle"], "other")
        put(h, lab, erector & inner_skin & ~lung_k, TISSUE_HU["erector_spinae"], "es")
        # Fatty infiltration: marbled spots whose pattern shifts from slice to slice.
        marble = np.sin(2 * np.pi * yy / 9.0 + z / 7.0) * np.sin(2 * np.pi * xx / 11.0 - z / 5.0)
        h[erector & inner_skin & ~lung_k & (marble > _FATTY_LEVEL)] = \
            TISSUE_HU["erector_spinae_fatty"]
        if z >= z_apex - 10.0:
            put(h, lab, scm & inner_skin, TISSUE_HU["muscle"], "other")
        if z >= z_apex:
            put(h, lab, scalene & inner_skin, TISSUE_HU["muscle"], "other")
        # Intercostal muscle: shell between the first and last rib at this angle.
        z_rib_here = z + drop  # the z a rib would need at its neck to pass here
        between = (z_rib_here <= top_rib + _RIB_HALF_MM) & (z_rib_here >= bottom_rib - _RIB_HALF_MM)
        put(h, lab, shaft_zone & between, TISSUE_HU["intercostal"], "ic")
        # Ribs (flat bars): shaft and neck.
        rib = np.zeros_like(body)
        for name in thoracic:
            z0 = rib_z0[name]
            rib |= shaft_zone & (np.abs(z_rib_here - z0) < _RIB_HALF_MM)
            if abs(z - z0) < _RIB_HALF_MM:
                rib |= neck_zone
        put(h, lab, rib, TISSUE_HU["cortical_bone"], None)
        if levels["T9"][0] <= z <= levels["T1"][0]:
            put(h, lab, sternum, TISSUE_HU["cortical_bone"], None)
        # Spine.
        level = next((n for n, (z0, z1) in levels.items() if z0 <= z < z1), None)
        if level is None:
            put(h, lab, vb, TISSUE_HU["disc"], None)
        else:
            put(h, lab, vb | posterior, TISSUE_HU["cortical_bone"], None)
            put(h, lab, vb_inner, TISSUE_HU["cancellous_bone"], None)
        put(h, lab, canal, TISSUE_HU["canal"], None)

    hu = rng.standard_normal(size=hu0.shape, dtype=np.float32)
    hu *= np.float32(noise_hu)
    hu += hu0
    del hu0
    np.round(hu, out=hu)
    np.clip(hu, -1024.0, 3071.0, out=hu)

    vertebra_slices: dict[str, tuple[int, int]] = {}
    mid_slice: dict[str, int] = {}
    for name, (z0, z1) in levels.items():
        inside = np.flatnonzero((z_centres >= z0) & (z_centres < z1))
        if len(inside):
            vertebra_slices[name] = (int(inside[0]), int(inside[-1]))
        mid_slice[name] = int(np.argmin(np.abs(z_centres - 0.5 * (z0 + z1))))
    lung_any = np.flatnonzero(lungs.reshape(n_slices, -1).any(axis=1))
    return ChestPhantom(
        hu=hu,
        labels=labels,
        lungs=lungs,
        spacing_mm=(float(slice_thickness_mm), ps, ps),
        vertebra_slices=vertebra_slices,
        mid_slice=mid_slice,
        lung_slab=(int(lung_any[0]), int(lung_any[-1])),
        patient_size_m=patient_size_m,
        patient_weight_kg=patient_weight_kg,
        patient_sex=patient_sex,
        seed=seed,
        extra={"rotation_deg": rotation_deg, "shift_mm": shift_mm},
    )


def write_chest_series(
    phantom: ChestPhantom,
    out_dir: str | os.PathLike[str],
    *,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
    **kwargs: object,
) -> list[Path]:
    """Write the phantom as a DICOM CT series (one file per slice).

    Uses :func:`training.phantoms.abdomen.write_phantom_series` (same geometry handling:
    ``patient_position``, ``image_orientation``, ``shuffle``, ``slice_indices``, ``modality``)
    with the chest header values: Body Part Examined ``CHEST``, Study/Series Description,
    Patient's Name and Image Type.

    Parameters
    ----------
    phantom:
        The phantom.
    out_dir:
        Directory (created if missing).
    image_type:
        Image Type (0008,0008), e.g. ``("ORIGINAL", "PRIMARY", "LOCALIZER")`` to test rejection.
    **kwargs:
        Passed to :func:`training.phantoms.abdomen.write_phantom_series`.

    Returns
    -------
    list[pathlib.Path]
        The written files.
    """
    header: dict[str, object] = {
        "body_part_examined": "CHEST",
        "study_description": "Digital chest phantom",
        "series_description": "Chest phantom axial",
        "patient_name": "PHANTOM^CHEST",
    }
    header.update(kwargs)
    return _write_abdomen_series(  # type: ignore[arg-type]
        phantom, out_dir, image_type=tuple(image_type), **header  # type: ignore[arg-type]
    )


__all__ = [
    "DIAPHRAGM_THICKNESS_MM",
    "ERECTOR_FATTY_HU",
    "LABEL_DIAPHRAGM_LEFT",
    "LABEL_DIAPHRAGM_RIGHT",
    "LABEL_ERECTOR_SPINAE_LEFT",
    "LABEL_ERECTOR_SPINAE_RIGHT",
    "LABEL_INTERCOSTAL_LEFT",
    "LABEL_INTERCOSTAL_RIGHT",
    "LABEL_OTHER_MUSCLE",
    "LABEL_PECTORALIS_LEFT",
    "LABEL_PECTORALIS_RIGHT",
    "PARAVERTEBRAL_HALF_WIDTH_MM",
    "PHANTOM_LENGTH_MM",
    "RIB_DROP_MM",
    "RIGHT_LARGER",
    "TISSUE_HU",
    "VERTEBRA_NAMES",
    "ChestPhantom",
    "make_chest_phantom",
    "write_chest_series",
]
