"""Digital head CT phantom with known gray- and white-matter attenuation (for ``brain-gwr``).

The brain anatomy is taken from the shipped atlas (``pipelines.brain_atlas``): its tissue map
(CSF incl. ventricles, gray matter incl. cortex, white matter, from a three-class Otsu of the
Colin27 T1) and its landmark labels (caudate nucleus, putamen, posterior limb of the internal
capsule, corpus callosum). Placing the phantom's structures like the atlas's makes a Dice score
of the registered labels a fair test of the registration and refinement. Around the brain the
phantom adds analytic shells: subarachnoid CSF (``csf_shell_mm``), skull (``skull_mm``) and
scalp (``scalp_mm``) at fixed Hounsfield units, then Gaussian noise.

Gray matter and the caudate/putamen are set to ``gm_hu``, white matter and the PLIC/corpus
callosum to ``wm_hu``, so every GWR of the basal-ganglia family is exactly
``gm_hu / wm_hu`` before noise (:attr:`HeadPhantom.expected_gwr`).

The head can be rotated (degrees about the patient's x, y, z axes through the brain centre)
and shifted, the slice thickness set, and the gantry tilted (the image planes rotated about
the patient's x axis while the table moves along z, as on a tilted CT gantry). The phantom is
written as a shuffled DICOM CT series with :func:`write_head_series`.

This is a test object, not anatomy: the skull is a shell around the brain mask, the skull
base is not modelled, and the template's anatomy is used for both phantom and atlas.
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
from scipy.spatial.transform import Rotation

from pipelines.brain_atlas import (
    LANDMARK_LABELS,
    TISSUE_CSF,
    TISSUE_GRAY_MATTER,
    TISSUE_WHITE_MATTER,
    BrainAtlas,
    load_atlas,
)
from training.phantoms._dicom import RESCALE_INTERCEPT_HU, new_ct_instance, set_ct_pixels

_SECONDARY_CAPTURE = "1.2.840.10008.5.1.4.1.1.7"
_RESCALE_INTERCEPT = RESCALE_INTERCEPT_HU

# Classes of the head map before HU assignment.
_AIR, _CSF, _GM, _WM, _BONE, _SCALP = 0, 1, 2, 3, 4, 5
_GM_LANDMARKS = (1, 2, 3, 4)
_WM_LANDMARKS = (5, 6, 7)


@dataclass
class HeadPhantom:
    """A head CT phantom and its ground truth.

    Attributes
    ----------
    hu:
        ``(slices, rows, columns)`` float32 HU of the written images, slice ``k`` = Instance
        Number ``k + 1``; rows run along the column direction cosine of Image Orientation
        (Patient) (posterior, tilted by the gantry tilt), columns to the patient's left.
    labels:
        ``(slices, rows, columns)`` uint8 true landmark labels (``pipelines.brain_atlas``
        numbering) on the same frames.
    spacing_mm:
        (table increment between slices, row spacing, column spacing), mm.
    image_orientation:
        Image Orientation (Patient) of every slice.
    positions_lps_mm:
        ``(slices, 3)`` Image Position (Patient) of each slice, mm.
    gm_hu, wm_hu:
        Gray and white matter attenuation before noise, HU.
    rotation_deg, shift_mm:
        Rigid placement of the head (about/along x, y, z of LPS), degrees and mm.
    gantry_tilt_deg:
        Gantry/Detector Tilt written in the headers, degrees.
    seed:
        Random seed of the noise and of the file names.
    contrast_agent:
        Contrast/Bolus Agent to write, or ``None``.
    """

    hu: np.ndarray
    labels: np.ndarray
    spacing_mm: tuple[float, float, float]
    image_orientation: tuple[float, float, float, float, float, float]
    positions_lps_mm: np.ndarray
    gm_hu: float
    wm_hu: float
    rotation_deg: tuple[float, float, float]
    shift_mm: tuple[float, float, float]
    gantry_tilt_deg: float
    seed: int
    contrast_agent: str | None = None
    truth: dict[str, float] = field(default_factory=dict)

    @property
    def expected_gwr(self) -> float:
        """Exact GWR of every basal-ganglia formula: ``gm_hu / wm_hu``."""
        return self.gm_hu / self.wm_hu


def _head_classes(atlas: BrainAtlas, csf_shell_mm: float, skull_mm: float,
                  scalp_mm: float) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Class map and landmark map on a padded atlas grid; returns (classes, labels, origin)."""
    spacing = np.asarray(atlas.spacing_mm)
    pad = int(np.ceil((csf_shell_mm + skull_mm + scalp_mm + 4.0) / spacing.min()))
    brain = np.pad(atlas.brain_mask, pad)
    tissue = np.pad(atlas.tissue, pad)
    landmarks = np.pad(atlas.landmarks, pad)
    # Atlas arrays are (z, y, x); spacing is (x, y, z).
    distance = ndimage.distance_transform_edt(~brain, sampling=spacing[::-1])
    classes = np.full(brain.shape, _AIR, dtype=np.uint8)
    classes[(distance > 0) & (distance <= csf_shell_mm)] = _CSF
    classes[(distance > csf_shell_mm) & (distance <= csf_shell_mm + skull_mm)] = _BONE
    classes[(distance > csf_shell_mm + skull_mm)
            & (distance <= csf_shell_mm + skull_mm + scalp_mm)] = _SCALP
    classes[brain & (tissue == TISSUE_CSF)] = _CSF
    classes[brain & (tissue == TISSUE_GRAY_MATTER)] = _GM
    classes[brain & (tissue == TISSUE_WHITE_MATTER)] = _WM
    classes[brain & (tissue == 0)] = _GM
    classes[np.isin(landmarks, _GM_LANDMARKS)] = _GM
    classes[np.isin(landmarks, _WM_LANDMARKS)] = _WM
    origin = np.asarray(atlas.origin_lps_mm) - pad * spacing
    return classes, landmarks, origin


def make_head_phantom(
    *,
    seed: int = 0,
    pixel_spacing_mm: float = 1.5,
    slice_spacing_mm: float = 3.0,
    field_of_view_mm: float = 250.0,
    z_range_mm: tuple[float, float] | None = None,
    rotation_deg: tuple[float, float, float] = (0.0, 0.0, 0.0),
    shift_mm: tuple[float, float, float] = (0.0, 0.0, 0.0),
    table_offset_mm: tuple[float, float, float] = (5.0, 30.0, -160.0),
    gantry_tilt_deg: float = 0.0,
    gm_hu: float = 38.0,
    wm_hu: float = 30.0,
    csf_hu: float = 8.0,
    bone_hu: float = 1100.0,
    scalp_hu: float = 35.0,
    air_hu: float = -1000.0,
    noise_sd_hu: float = 4.0,
    partial_volume_sigma_mm: float = 0.0,
    csf_shell_mm: float = 3.0,
    skull_mm: float = 7.0,
    scalp_mm: float = 5.0,
    contrast_agent: str | None = None,
    atlas: BrainAtlas | None = None,
) -> HeadPhantom:
    """Build a head CT phantom.

    Parameters
    ----------
    seed:
        Noise seed.
    pixel_spacing_mm, slice_spacing_mm:
        In-plane pixel spacing and table increment between slices (= slice thickness), mm.
    field_of_view_mm:
        Square field of view of each image, mm.
    z_range_mm:
        ``(lowest, highest)`` table position relative to the brain centre (before the table
        offset), mm; default covers the whole head (-95 .. +100 mm).
    rotation_deg:
        Head rotation about the patient's x (pitch), y (roll) and z (yaw) axes through the
        brain centre, degrees.
    shift_mm:
        Head translation (x, y, z) in LPS, mm.
    table_offset_mm:
        Offset of the whole scene from the atlas's MNI-like coordinates (as a scanner's
        coordinates differ), mm.
    gantry_tilt_deg:
        Gantry tilt: image planes rotated by this angle about the x axis; slices still advance
        along z. 0 for an orthogonal series.
    gm_hu, wm_hu, csf_hu, bone_hu, scalp_hu, air_hu:
        Attenuation of the classes before noise, HU.
    noise_sd_hu:
        Standard deviation of the added Gaussian noise, HU.
    partial_volume_sigma_mm:
        If > 0, the HU image is smoothed with a Gaussian of this sigma (mm) before noise,
        simulating partial volume at tissue borders (the truth then is no longer exact at
        borders).
    csf_shell_mm, skull_mm, scalp_mm:
        Thickness of the subarachnoid CSF, skull and scalp shells around the brain, mm.
    contrast_agent:
        Contrast/Bolus Agent to write (for rejection tests).
    atlas:
        Atlas to build from (default: the shipped one).

    Returns
    -------
    HeadPhantom
    """
    atlas = atlas or load_atlas()
    classes, landmarks, origin = _head_classes(atlas, csf_shell_mm, skull_mm, scalp_mm)
    spacing_atlas = np.asarray(atlas.spacing_mm)
    centre = np.asarray(
        ndimage.center_of_mass(atlas.brain_mask)[::-1]
    ) * spacing_atlas + np.asarray(atlas.origin_lps_mm)
    rotation = Rotation.from_euler("xyz", rotation_deg, degrees=True).as_matrix()
    offset = np.asarray(table_offset_mm, dtype=float)

    z_low, z_high = z_range_mm if z_range_mm is not None else (-95.0, 100.0)
    n_slices = int(np.floor((z_high - z_low) / slice_spacing_mm)) + 1
    n_pixels = round(field_of_view_mm / pixel_spacing_mm)
    tilt = np.deg2rad(gantry_tilt_deg)
    row_dir = np.array([1.0, 0.0, 0.0])
    col_dir = np.array([0.0, np.cos(tilt), -np.sin(tilt)])
    half = (n_pixels - 1) / 2.0 * pixel_spacing_mm
    positions = np.array([
        centre + offset + np.array([-half, 0.0, z_low + k * slice_spacing_mm]) - half * col_dir
        for k in range(n_slices)
    ])
    # Physical point of every pixel: IPP + c * ps * row_dir + r * ps * col_dir.
    steps = np.arange(n_pixels) * pixel_spacing_mm
    points = (
        positions[:, None, None, :]
        + steps[None, None, :, None] * row_dir
        + steps[None, :, None, None] * col_dir
    ).reshape(-1, 3)
    # Scene point p = R (a - c) + c + shift + offset  =>  a = R^T (p - c - shift - offset) + c.
    atlas_points = (points - centre - np.asarray(shift_mm) - offset) @ rotation + centre
    index_zyx = ((atlas_points - origin) / spacing_atlas)[:, ::-1].T
    shape = (n_slices, n_pixels, n_pixels)
    cls = ndimage.map_coordinates(classes, index_zyx, order=0, cval=_AIR).reshape(shape)
    labels = ndimage.map_coordinates(landmarks, index_zyx, order=0, cval=0).reshape(shape)
    lut = np.array([air_hu, csf_hu, gm_hu, wm_hu, bone_hu, scalp_hu], dtype=np.float32)
    hu = lut[cls]
    if partial_volume_sigma_mm > 0:
        sigma = partial_volume_sigma_mm / np.array([slice_spacing_mm, pixel_spacing_mm,
                                                    pixel_spacing_mm])
        hu = ndimage.gaussian_filter(hu, sigma).astype(np.float32)
    rng = np.random.default_rng(seed)
    hu = (hu + rng.normal(0.0, noise_sd_hu, size=shape)).astype(np.float32)
    truth = {
        "expected_gwr": gm_hu / wm_hu,
        **{f"volume_mm3_{v}": float((labels == v).sum() * slice_spacing_mm * np.cos(tilt)
                                    * pixel_spacing_mm**2) for v in LANDMARK_LABELS},
    }
    iop = (1.0, 0.0, 0.0, 0.0, float(col_dir[1]), float(col_dir[2]))
    return HeadPhantom(
        hu=hu, labels=labels.astype(np.uint8),
        spacing_mm=(slice_spacing_mm, pixel_spacing_mm, pixel_spacing_mm),
        image_orientation=iop, positions_lps_mm=positions, gm_hu=gm_hu, wm_hu=wm_hu,
        rotation_deg=tuple(float(v) for v in rotation_deg),  # type: ignore[arg-type]
        shift_mm=tuple(float(v) for v in shift_mm),  # type: ignore[arg-type]
        gantry_tilt_deg=float(gantry_tilt_deg), seed=seed, contrast_agent=contrast_agent,
        truth=truth,
    )


def write_head_series(
    phantom: HeadPhantom,
    out_dir: str | os.PathLike[str],
    *,
    shuffle: bool = True,
    slice_indices: list[int] | range | None = None,
    image_type: tuple[str, ...] = ("ORIGINAL", "PRIMARY", "AXIAL"),
) -> list[Path]:
    """Write the phantom as a CT Image Storage series (one file per slice, HFS).

    Parameters
    ----------
    phantom:
        The phantom.
    out_dir:
        Directory (created if missing).
    shuffle:
        Random write order and random file names.
    slice_indices:
        Slices to write (default all).
    image_type:
        Image Type (0008,0008), e.g. ``("ORIGINAL", "PRIMARY", "LOCALIZER")`` for a rejection
        test.

    Returns
    -------
    list[pathlib.Path]
        The files written.
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(phantom.seed + 104729)
    indices = list(range(phantom.hu.shape[0])) if slice_indices is None else list(slice_indices)
    order = list(rng.permutation(indices)) if shuffle else indices
    entropy = [str(phantom.seed), "ainode-head-phantom", str(phantom.rotation_deg),
               str(phantom.shift_mm), str(phantom.gantry_tilt_deg), str(phantom.spacing_mm),
               str(phantom.contrast_agent), str(image_type)]
    study_uid = generate_uid(entropy_srcs=entropy + ["study"])
    series_uid = generate_uid(entropy_srcs=entropy + ["series"])
    frame_uid = generate_uid(entropy_srcs=entropy + ["frame"])
    now = datetime(2024, 1, 1, 12, 0, 0)
    paths = []
    for k in order:
        stored = np.clip(np.round(phantom.hu[k] - _RESCALE_INTERCEPT), 0, 4095).astype(np.uint16)
        ds = _ct_dataset(phantom, stored, int(k), study_uid, series_uid, frame_uid, entropy,
                         now, image_type)
        name = f"{rng.integers(0, 2**63):016x}.dcm" if shuffle else f"IM{k:04d}.dcm"
        path = out / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def _ct_dataset(phantom: HeadPhantom, stored: np.ndarray, k: int, study_uid: str,
                series_uid: str, frame_uid: str, entropy: list[str], now: datetime,
                image_type: tuple[str, ...]) -> Dataset:
    thickness, ps, _ = phantom.spacing_mm
    ds = new_ct_instance(entropy, k, list(image_type), now, "PHANTOMH", "CT")
    ds.StudyDescription = "Digital head phantom"
    ds.SeriesDescription = "Head phantom axial"
    ds.PatientName = "PHANTOM^HEAD"
    ds.PatientID = f"PHANTOM-HEAD-{phantom.seed}"
    ds.PatientBirthDate = ""
    ds.PatientSex = ""
    ds.BodyPartExamined = "HEAD"
    ds.SliceThickness = f"{thickness:g}"
    ds.KVP = "120"
    ds.GantryDetectorTilt = f"{phantom.gantry_tilt_deg:g}"
    ds.PatientPosition = "HFS"
    if phantom.contrast_agent:
        ds.ContrastBolusAgent = phantom.contrast_agent
    ds.StudyInstanceUID = study_uid
    ds.SeriesInstanceUID = series_uid
    ds.StudyID = "1"
    ds.SeriesNumber = 2
    ds.InstanceNumber = k + 1
    ds.ImagePositionPatient = [f"{v:.4f}" for v in phantom.positions_lps_mm[k]]
    ds.ImageOrientationPatient = [f"{v:.6f}" for v in phantom.image_orientation]
    ds.FrameOfReferenceUID = frame_uid
    ds.PositionReferenceIndicator = ""
    ds.SliceLocation = f"{phantom.positions_lps_mm[k][2]:.4f}"
    set_ct_pixels(ds, stored, ps, 40, 80)
    return ds


__all__ = ["HeadPhantom", "make_head_phantom", "write_head_series"]
