"""Build the small brain atlas asset shipped in ``models/atlases/`` from Debian's mricron-data.

Run once (offline) by a developer; the node never needs mricron-data at run time::

    python -m training.build_brain_atlas [--templates /usr/share/mricron/templates] \
        [--out models/atlases/mni_colin27_gwr_2mm.npz]

Inputs (all on the same 1 mm MNI grid, as shipped by mricron-data):

* ``ch2bet.nii.gz`` — Colin27 ("ch2") T1 template, skull-stripped (Holmes et al., J Comput Assist
  Tomogr 1998;22:324-333).
* ``aal.nii.gz`` + ``aal.nii.txt`` — AAL labels (Tzourio-Mazoyer et al., NeuroImage
  2002;15:273-289): Caudate_L 71, Caudate_R 72, Putamen_L 73, Putamen_R 74.
* ``JHU-WhiteMatter-labels-1mm.nii.gz`` + ``.txt`` — JHU ICBM-DTI-81 white-matter labels
  (Mori et al., NeuroImage 2008;40:570-582): genu 3, body 4, splenium 5 of the corpus callosum,
  posterior limb of the internal capsule R 19 / L 20.

Left and right: in mricron-data's copy of the JHU labels every ``_R`` region lies at MNI x < 0
(the left hemisphere, given its header: srow_x = +1, -91, "FSL3.3"), whereas AAL's ``_R``
regions lie at MNI x > 0 as they should (MNI x > 0 is the right hemisphere). The header and the
label names of that copy disagree, so the side of the PLIC is taken from its position, not its
name: labels 19 and 20 are merged and split at the midsagittal plane (MNI x = 0), x > 0 right.
The build checks that AAL's Caudate_R lies at x > 0.

Output: one compressed ``.npz`` (well under 1 MB) on a 2 mm grid in LPS patient coordinates
(identity direction), cropped to the brain with a margin:

* ``template_t1`` ``(z, y, x)`` uint8 — the skull-stripped T1, linear interpolation;
* ``brain_mask`` ``(z, y, x)`` uint8 — 1 inside the brain;
* ``tissue`` ``(z, y, x)`` uint8 — 1 CSF, 2 gray matter, 3 white matter (three-class Otsu of the
  T1 inside the brain; used by the digital head phantom, not by the pipeline);
* ``landmarks`` ``(z, y, x)`` uint8 — the numbering of :data:`pipelines.brain_atlas.LANDMARK_LABELS`
  (nearest neighbour);
* ``origin_lps_mm``, ``spacing_mm`` (x, y, z), ``source`` (text), ``label_names`` (text).
"""

from __future__ import annotations

import argparse
import hashlib
import json
from pathlib import Path

import numpy as np
import SimpleITK as sitk

DEFAULT_TEMPLATES = Path("/usr/share/mricron/templates")
DEFAULT_OUT = Path(__file__).resolve().parents[1] / "models" / "atlases" / "mni_colin27_gwr_2mm.npz"
SPACING_MM = 2.0
MARGIN_MM = 6.0

#: (asset label, source file, source label value) — asset numbering as in pipelines.brain_atlas.
LANDMARK_SOURCES: list[tuple[int, str, int]] = [
    (1, "aal.nii.gz", 72),  # Caudate_R
    (2, "aal.nii.gz", 71),  # Caudate_L
    (3, "aal.nii.gz", 74),  # Putamen_R
    (4, "aal.nii.gz", 73),  # Putamen_L
    # PLIC: labels 19 (_R) and 20 (_L) are merged and split by hemisphere, see _split_by_side.
    (5, "JHU-WhiteMatter-labels-1mm.nii.gz", 19),
    (5, "JHU-WhiteMatter-labels-1mm.nii.gz", 20),
    (7, "JHU-WhiteMatter-labels-1mm.nii.gz", 3),  # Genu_of_corpus_callosum
    (7, "JHU-WhiteMatter-labels-1mm.nii.gz", 4),  # Body_of_corpus_callosum
    (7, "JHU-WhiteMatter-labels-1mm.nii.gz", 5),  # Splenium_of_corpus_callosum
]
LABEL_NAMES = {
    1: "caudate nucleus, right", 2: "caudate nucleus, left", 3: "putamen, right",
    4: "putamen, left", 5: "posterior limb of internal capsule, right",
    6: "posterior limb of internal capsule, left", 7: "corpus callosum (genu, body, splenium)",
}


def _check_label_names(templates: Path) -> None:
    """Fail loudly if the label text files do not say what the numbers above assume."""
    aal = (templates / "aal.nii.txt").read_text().split("\n")
    expected_aal = {71: "Caudate_L", 72: "Caudate_R", 73: "Putamen_L", 74: "Putamen_R"}
    names = {int(line.split()[0]): line.split()[1] for line in aal if line.strip()}
    jhu = (templates / "JHU-WhiteMatter-labels-1mm.nii.txt").read_text().split("\n")
    jhu_names = {int(line.split()[0]): line.split()[1] for line in jhu if line.strip()}
    expected_jhu = {3: "Genu_of_corpus_callosum", 4: "Body_of_corpus_callosum",
                    5: "Splenium_of_corpus_callosum",
                    19: "Posterior_limb_of_internal_capsule_R",
                    20: "Posterior_limb_of_internal_capsule_L"}
    for table, expected in ((names, expected_aal), (jhu_names, expected_jhu)):
        for value, name in expected.items():
            if table.get(value) != name:
                raise SystemExit(f"label {value} is {table.get(value)!r}, expected {name!r}")


def _split_by_side(landmarks: np.ndarray, reference: sitk.Image) -> None:
    """Relabel PLIC voxels (5) on the patient's left (LPS x > 0, MNI x < 0) as 6, in place."""
    x_lps = reference.GetOrigin()[0] + np.arange(landmarks.shape[2]) * reference.GetSpacing()[0]
    left = np.broadcast_to(x_lps > 0, landmarks.shape)
    landmarks[(landmarks == 5) & left] = 6
    # Sanity: AAL caudate right (1) lies at LPS x < 0 (patient right).
    right_caudate_x = x_lps[np.argwhere(landmarks == 1)[:, 2]].mean()
    if right_caudate_x >= 0:
        raise SystemExit(f"AAL Caudate_R centroid at LPS x = {right_caudate_x:.1f} mm (expected < 0)")


def build(templates: Path, out: Path) -> dict[str, object]:
    """Build the asset; return a small description (sizes, sha256)."""
    _check_label_names(templates)
    t1 = sitk.ReadImage(str(templates / "ch2bet.nii.gz"), sitk.sitkFloat32)
    brain_1mm = sitk.GetArrayFromImage(t1) > 0
    # Bounding box of the brain in physical LPS coordinates.
    idx = np.argwhere(brain_1mm)  # (z, y, x) indices
    corners = [
        t1.TransformIndexToPhysicalPoint([int(i[2]), int(i[1]), int(i[0])])
        for i in (idx.min(axis=0), idx.max(axis=0))
    ]
    lo = np.minimum(*[np.asarray(c) for c in corners]) - MARGIN_MM
    hi = np.maximum(*[np.asarray(c) for c in corners]) + MARGIN_MM
    size = [int(np.ceil((h - low) / SPACING_MM)) + 1 for low, h in zip(lo, hi, strict=True)]
    reference = sitk.Image(size, sitk.sitkFloat32)
    reference.SetSpacing([SPACING_MM] * 3)
    reference.SetOrigin([float(v) for v in lo])
    reference.SetDirection([1.0, 0, 0, 0, 1.0, 0, 0, 0, 1.0])
    identity = sitk.Transform()

    template = sitk.GetArrayFromImage(
        sitk.Resample(t1, reference, identity, sitk.sitkLinear, 0.0, sitk.sitkFloat32)
    )
    mask_img = sitk.Cast(t1 > 0, sitk.sitkFloat32)
    brain = sitk.GetArrayFromImage(
        sitk.Resample(mask_img, reference, identity, sitk.sitkLinear, 0.0)
    ) >= 0.5

    from skimage.filters import threshold_multiotsu

    values = sitk.GetArrayFromImage(t1)[brain_1mm]
    csf_gm, gm_wm = threshold_multiotsu(values, classes=3)
    tissue = np.zeros(template.shape, dtype=np.uint8)
    tissue[brain & (template < csf_gm)] = 1
    tissue[brain & (template >= csf_gm) & (template < gm_wm)] = 2
    tissue[brain & (template >= gm_wm)] = 3

    landmarks = np.zeros(template.shape, dtype=np.uint8)
    cache: dict[str, sitk.Image] = {}
    for asset_label, filename, source_value in LANDMARK_SOURCES:
        if filename not in cache:
            cache[filename] = sitk.ReadImage(str(templates / filename), sitk.sitkUInt8)
        labels = cache[filename]
        # Resample the binary region with linear interpolation and keep >= 0.5: smoother and
        # closer in volume to the 1 mm region than nearest neighbour on a 2 mm grid.
        region = sitk.Cast(labels == source_value, sitk.sitkFloat32)
        fraction = sitk.GetArrayFromImage(
            sitk.Resample(region, reference, identity, sitk.sitkLinear, 0.0)
        )
        landmarks[(fraction >= 0.5) & (landmarks == 0)] = asset_label
    _split_by_side(landmarks, reference)

    out.parent.mkdir(parents=True, exist_ok=True)
    np.savez_compressed(
        out,
        template_t1=np.clip(np.round(template), 0, 255).astype(np.uint8),
        brain_mask=brain.astype(np.uint8),
        tissue=tissue,
        landmarks=landmarks,
        origin_lps_mm=np.asarray(lo, dtype=np.float64),
        spacing_mm=np.asarray([SPACING_MM] * 3, dtype=np.float64),
        tissue_thresholds_t1=np.asarray([csf_gm, gm_wm], dtype=np.float64),
        label_names=np.asarray(json.dumps(LABEL_NAMES)),
        source=np.asarray(
            "Derived from Debian mricron-data: ch2bet.nii.gz (Colin27 T1, skull-stripped), "
            "aal.nii.gz (AAL, Tzourio-Mazoyer 2002), JHU-WhiteMatter-labels-1mm.nii.gz (JHU "
            "ICBM-DTI-81, Mori 2008); resampled to 2 mm by training/build_brain_atlas.py"
        ),
    )
    digest = hashlib.sha256(out.read_bytes()).hexdigest()
    volumes = {
        LABEL_NAMES[v]: int((landmarks == v).sum() * SPACING_MM**3) for v in sorted(LABEL_NAMES)
    }
    return {"path": str(out), "bytes": out.stat().st_size, "sha256": digest, "shape": list(template.shape),
            "tissue_thresholds_t1": [float(csf_gm), float(gm_wm)], "landmark_volumes_mm3": volumes}


def main(argv: list[str] | None = None) -> int:
    """Command-line entry point."""
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--templates", type=Path, default=DEFAULT_TEMPLATES)
    parser.add_argument("--out", type=Path, default=DEFAULT_OUT)
    args = parser.parse_args(argv)
    if not (args.templates / "ch2bet.nii.gz").exists():
        raise SystemExit(
            f"{args.templates}: mricron-data templates not found; install the Debian package "
            "mricron-data (apt-get install mricron-data) or pass --templates"
        )
    print(json.dumps(build(args.templates, args.out), indent=2))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
