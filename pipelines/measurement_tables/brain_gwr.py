"""Measurement table of ``brain-gwr``.

Name, unit, precision and key-image short name of every value the method reports (summary keys
and SR measurements). Imported by the spec (:mod:`pipelines.protocols.brain_gwr`)
and by the method (:mod:`pipelines.brain_gwr`), whose key-image text is generated
from it (:mod:`pipelines.measurement_text`); standard library and :mod:`pipelines.protocol` only.
"""

from __future__ import annotations

from pipelines.protocol import MeasurementRow

#: GWR landmarks (Measurement key prefix) and their names.
_LANDMARKS = (
    ("caudate_right", "Caudate nucleus, right"), ("caudate_left", "Caudate nucleus, left"),
    ("putamen_right", "Putamen, right"), ("putamen_left", "Putamen, left"),
    ("plic_right", "Posterior limb of internal capsule, right"),
    ("plic_left", "Posterior limb of internal capsule, left"),
    ("corpus_callosum", "Corpus callosum"),
)


def _landmark_rows() -> tuple[MeasurementRow, ...]:
    """Per-landmark rows (the SR's measurement groups)."""
    rows = []
    for key, label in _LANDMARKS:
        rows += [
            MeasurementRow(f"{key}_mean_hu", f"{label}: mean attenuation", "HU", 1),
            MeasurementRow(f"{key}_median_hu", f"{label}: median attenuation", "HU", 1),
            MeasurementRow(f"{key}_sd_hu", f"{label}: attenuation SD", "HU", 1),
            MeasurementRow(f"{key}_voxels", f"{label}: voxels", "", 0),
            MeasurementRow(f"{key}_volume_mm3", f"{label}: volume", "mm³", 0),
            MeasurementRow(f"{key}_core_mean_hu", f"{label}: core mean attenuation", "HU", 1),
            MeasurementRow(f"{key}_core_voxels", f"{label}: core voxels", "", 0),
        ]
    return tuple(rows)


MEASUREMENTS = (
    # The finding people read first (non-numeric row; added by H7 for the human listings).
    MeasurementRow("low_gwr", "Low GWR (below the cut-off)", "", 0),
    MeasurementRow("gwr_bg", "Gray-to-white-matter ratio, basal ganglia (GWR)", "", 3,
                   short="GWR_BG (CN+PU)/(CC+PIC)"),
    MeasurementRow("gwr_bg_right", "GWR, basal ganglia, right", "", 3,
                   short="right"),
    MeasurementRow("gwr_bg_left", "GWR, basal ganglia, left", "", 3,
                   short="left"),
    MeasurementRow("gwr_pu_pic", "GWR putamen / posterior limb of internal capsule", "", 3,
                   short="PU/PIC"),
    MeasurementRow("gwr_cerebrum", "GWR, cerebrum", "", 3),
    MeasurementRow("gwr_average", "GWR, average", "", 3),
    MeasurementRow("gwr_cutoff", "GWR cut-off", "", 2,
                   short="cut-off <"),
    MeasurementRow("erosion_mm", "Erosion of the in-band mask", "mm", 1),
    MeasurementRow("core_erosion_mm", "Core erosion", "mm", 1),
    MeasurementRow("key_slice_index", "Key slice (canonical index)", "", 0),
    MeasurementRow("kvp", "Tube voltage", "kV", 0),
    MeasurementRow("slice_thickness_mm", "Slice thickness", "mm", 2),
    MeasurementRow("gantry_tilt_deg", "Gantry tilt", "°", 1),
    MeasurementRow("registration_brain_dice", "Registration Dice (brain mask)", "", 3),
    MeasurementRow("registration_seconds", "Registration time", "s", 1),
    MeasurementRow("registration_metric", "Registration metric", "", 4),
    MeasurementRow("brain_volume_in_view_cm3", "Brain volume in the field of view", "cm³", 0),
    MeasurementRow("brain_extent_mm", "Brain head-feet extent", "mm", 0),
    MeasurementRow("skull_enclosure", "Skull enclosure of the brain outline", "", 2),
    # Single axial image (no GWR): the brain parenchyma in the parenchymal band.
    MeasurementRow("brain_parenchyma_area_cm2", "Brain parenchyma area (single image)", "cm²", 1),
    MeasurementRow("brain_parenchyma_mean_hu", "Brain parenchyma mean attenuation", "HU", 1,
                   short="mean"),
    MeasurementRow("brain_parenchyma_median_hu", "Brain parenchyma median attenuation", "HU", 1,
                   short="median"),
    MeasurementRow("brain_parenchyma_sd_hu", "Brain parenchyma attenuation SD", "HU", 1),
    *_landmark_rows(),
)

__all__ = ["MEASUREMENTS"]
