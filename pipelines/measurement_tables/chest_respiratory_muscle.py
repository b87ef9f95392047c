"""Measurement table of ``chest-respiratory-muscle``.

Name, unit, precision and key-image short name of every value the method reports (summary keys
and SR measurements). Imported by the spec (:mod:`pipelines.protocols.chest_respiratory_muscle`)
and by the method (:mod:`pipelines.chest_respiratory_muscle`), whose key-image text is generated
from it (:mod:`pipelines.measurement_text`); standard library and :mod:`pipelines.protocol` only.
"""

from __future__ import annotations

from pipelines.protocol import MeasurementRow

#: Segmented classes (summary "classes" key and Measurement key prefix) and their names.
_CLASSES = (
    ("pectoralis_right", "Pectoralis, right"), ("pectoralis_left", "Pectoralis, left"),
    ("erector_spinae_right", "Erector spinae, right"),
    ("erector_spinae_left", "Erector spinae, left"),
    ("intercostal_right", "Intercostal muscles, right"),
    ("intercostal_left", "Intercostal muscles, left"),
    ("diaphragm_right", "Diaphragm, right"), ("diaphragm_left", "Diaphragm, left"),
    ("other_thoracic_muscle", "Other thoracic skeletal muscle"),
)


def _class_rows() -> tuple[MeasurementRow, ...]:
    """Per-class rows (the SR's measurement groups): volume (area on a single slice), mean and
    median HU, low-attenuation percentage."""
    rows = []
    for key, label in _CLASSES:
        rows += [
            MeasurementRow(f"{key}_volume_cm3", f"{label}: volume", "cm³", 0),
            MeasurementRow(f"{key}_area_cm2", f"{label}: area", "cm²", 1),
            MeasurementRow(f"{key}_mean_hu", f"{label}: mean attenuation", "HU", 1),
            MeasurementRow(f"{key}_median_hu", f"{label}: median attenuation", "HU", 1),
            MeasurementRow(f"{key}_low_attenuation_percent",
                           f"{label}: low-attenuation muscle", "%", 1),
        ]
    return tuple(rows)


def _slice_rows() -> tuple[MeasurementRow, ...]:
    """Single-slice measures: pectoralis muscle area at mid-T4, erector spinae at mid-T12."""
    rows = []
    for key, label, short in (
        ("pma_t4", "Pectoralis muscle area at mid-T4 (PMA)", "PMA T4"),
        ("esma_t12", "Erector spinae muscle area at mid-T12 (ESMA)", "ESMA T12"),
    ):
        rows += [
            MeasurementRow(f"{key}_cm2", label, "cm²", 1, short=short),
            MeasurementRow(f"{key}_mean_hu", f"{label}: mean attenuation", "HU", 1),
        ]
        for side in ("right", "left"):
            rows += [
                MeasurementRow(f"{key}_{side}_cm2", f"{label}, {side}", "cm²", 1,
                               short=side[0].upper()),
                MeasurementRow(f"{key}_{side}_mean_hu", f"{label}, {side}: mean attenuation",
                               "HU", 1),
            ]
    return tuple(rows)


MEASUREMENTS = (
    # Volumes in whole cm³ (what the key image has shown since version 0.1).
    MeasurementRow("total_respiratory_muscle_cm3", "Respiratory muscle volume", "cm³", 0,
                   short="Respiratory muscle"),
    MeasurementRow("total_thoracic_muscle_cm3", "Thoracic skeletal muscle volume", "cm³", 0,
                   short="thoracic muscle"),
    MeasurementRow("total_thoracic_muscle_cm2", "Thoracic skeletal muscle area", "cm²", 1),
    MeasurementRow(
        "respiratory_muscle_index_cm3_per_m2", "Respiratory muscle volume / height²", "cm³/m²",
        0, short="index",
    ),
    MeasurementRow("height_m", "Patient height", "m", 2),
    MeasurementRow("kvp", "Tube voltage", "kV", 0),
    MeasurementRow("slice_thickness_mm", "Slice thickness", "mm", 2),
    MeasurementRow("measured_slab_length_mm", "Measured slab length", "mm", 0),
    *_class_rows(),
    *_slice_rows(),
)

__all__ = ["MEASUREMENTS"]
