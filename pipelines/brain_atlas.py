"""The shipped brain atlas of the ``brain-gwr`` protocol (template T1 + landmark labels, 2 mm).

The asset ``models/atlases/mni_colin27_gwr_2mm.npz`` is built once, offline, by
``training/build_brain_atlas.py`` from Debian's ``mricron-data`` (Colin27 T1 template, AAL and
JHU white-matter labels on the MNI grid); see ``models/atlases/README.md`` for origin and
licences. Nothing is downloaded at run time and mricron-data is not needed at run time.

Arrays are ``(z, y, x)`` on a 2 mm grid in LPS patient coordinates with identity direction
(x to the patient's left, y posterior, z head), as SimpleITK orders them.
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import SimpleITK as sitk

from pipelines.errors import PipelineError

logger = logging.getLogger(__name__)

#: Default location of the asset (inside the repository / installed tree).
ATLAS_PATH = Path(__file__).resolve().parents[1] / "models" / "atlases" / "mni_colin27_gwr_2mm.npz"

#: Landmark numbering of the atlas and of the ``brain-gwr`` label map.
LABEL_CAUDATE_RIGHT = 1
LABEL_CAUDATE_LEFT = 2
LABEL_PUTAMEN_RIGHT = 3
LABEL_PUTAMEN_LEFT = 4
LABEL_PLIC_RIGHT = 5
LABEL_PLIC_LEFT = 6
LABEL_CORPUS_CALLOSUM = 7
LANDMARK_LABELS: dict[int, str] = {
    LABEL_CAUDATE_RIGHT: "caudate nucleus, right",
    LABEL_CAUDATE_LEFT: "caudate nucleus, left",
    LABEL_PUTAMEN_RIGHT: "putamen, right",
    LABEL_PUTAMEN_LEFT: "putamen, left",
    LABEL_PLIC_RIGHT: "posterior limb of internal capsule, right",
    LABEL_PLIC_LEFT: "posterior limb of internal capsule, left",
    LABEL_CORPUS_CALLOSUM: "corpus callosum (genu, body, splenium)",
}

#: Tissue classes of the atlas's ``tissue`` map (used by the digital phantom).
TISSUE_CSF = 1
TISSUE_GRAY_MATTER = 2
TISSUE_WHITE_MATTER = 3


@dataclass(frozen=True)
class BrainAtlas:
    """The atlas arrays and their geometry.

    Attributes
    ----------
    template_t1:
        ``(z, y, x)`` uint8 skull-stripped Colin27 T1.
    brain_mask:
        ``(z, y, x)`` bool brain mask.
    tissue:
        ``(z, y, x)`` uint8 tissue classes (:data:`TISSUE_CSF`, ...; 0 outside the brain).
    landmarks:
        ``(z, y, x)`` uint8 landmark labels (:data:`LANDMARK_LABELS`).
    origin_lps_mm:
        Physical LPS position of voxel (0, 0, 0), mm.
    spacing_mm:
        Voxel spacing (x, y, z), mm.
    source:
        Where the asset came from.
    """

    template_t1: np.ndarray
    brain_mask: np.ndarray
    tissue: np.ndarray
    landmarks: np.ndarray
    origin_lps_mm: tuple[float, float, float]
    spacing_mm: tuple[float, float, float]
    source: str

    def image(self, array: np.ndarray, pixel_type: int = sitk.sitkFloat32) -> sitk.Image:
        """A SimpleITK image of ``array`` (one of the ``(z, y, x)`` arrays) on the atlas grid."""
        img = sitk.GetImageFromArray(np.ascontiguousarray(array))
        img = sitk.Cast(img, pixel_type)
        img.SetOrigin(self.origin_lps_mm)
        img.SetSpacing(self.spacing_mm)
        img.SetDirection((1.0, 0.0, 0.0, 0.0, 1.0, 0.0, 0.0, 0.0, 1.0))
        return img

    @property
    def voxel_volume_mm3(self) -> float:
        """Volume of one atlas voxel, mm³."""
        return float(np.prod(self.spacing_mm))


@lru_cache(maxsize=2)
def load_atlas(path: str | None = None) -> BrainAtlas:
    """Load the shipped atlas asset.

    Parameters
    ----------
    path:
        ``.npz`` file; default :data:`ATLAS_PATH`.

    Returns
    -------
    BrainAtlas

    Raises
    ------
    PipelineError
        If the asset is missing or incomplete (rebuild it with ``training/build_brain_atlas.py``).
    """
    file = Path(path) if path else ATLAS_PATH
    if not file.is_file():
        raise PipelineError(
            f"brain atlas asset {file} not found; it ships with ainode under models/atlases/ "
            "(rebuild it with 'python -m training.build_brain_atlas' on a machine with the "
            "Debian package mricron-data)"
        )
    try:
        with np.load(file, allow_pickle=False) as data:
            names = json.loads(str(data["label_names"]))
            atlas = BrainAtlas(
                template_t1=np.asarray(data["template_t1"]),
                brain_mask=np.asarray(data["brain_mask"]).astype(bool),
                tissue=np.asarray(data["tissue"]),
                landmarks=np.asarray(data["landmarks"]),
                origin_lps_mm=tuple(float(v) for v in data["origin_lps_mm"]),  # type: ignore[arg-type]
                spacing_mm=tuple(float(v) for v in data["spacing_mm"]),  # type: ignore[arg-type]
                source=str(data["source"]),
            )
    except (KeyError, ValueError, OSError) as exc:
        raise PipelineError(
            f"brain atlas asset {file} is incomplete or unreadable ({exc}); rebuild it with "
            "'python -m training.build_brain_atlas'"
        ) from exc
    if {int(k) for k in names} != set(LANDMARK_LABELS):
        raise PipelineError(
            f"brain atlas asset {file} has labels {sorted(names)}, expected "
            f"{sorted(LANDMARK_LABELS)}; rebuild it with 'python -m training.build_brain_atlas'"
        )
    logger.debug("loaded brain atlas %s, shape %s", file, atlas.template_t1.shape)
    return atlas
