"""Measurement table of ``l3-body-composition``.

Name, unit, precision and key-image short name of every value the method reports (summary keys
and SR measurements). Imported by the spec (:mod:`pipelines.protocols.l3_body_composition`)
and by the method (:mod:`pipelines.l3_body_composition`), whose key-image text is generated
from it (:mod:`pipelines.measurement_text`); standard library and :mod:`pipelines.protocol` only.
"""

from __future__ import annotations

from pipelines.protocol import MeasurementRow

MEASUREMENTS = (
    # Findings people read first (non-numeric rows; added by H7 for the human listings).
    MeasurementRow("level", "Vertebral level", "", 0),
    MeasurementRow("level_verified", "Vertebral level verified", "", 0),
    MeasurementRow("low_smi", "Low SMI (sarcopenia flag)", "", 0),
    MeasurementRow("low_muscle_attenuation", "Low muscle attenuation (myosteatosis flag)", "", 0),
    MeasurementRow("sma_cm2", "Skeletal muscle area (SMA)", "cm²", 1, short="SMA"),
    MeasurementRow("sat_area_cm2", "Subcutaneous adipose tissue area (SAT)", "cm²", 1,
                   short="SAT"),
    MeasurementRow("vat_area_cm2", "Visceral adipose tissue area (VAT)", "cm²", 1, short="VAT"),
    MeasurementRow("imat_area_cm2", "Intermuscular adipose tissue area (IMAT)", "cm²", 1,
                   short="IMAT"),
    MeasurementRow("muscle_mean_hu", "Skeletal muscle mean attenuation", "HU", 1, short="muscle"),
    MeasurementRow("muscle_sd_hu", "Skeletal muscle attenuation SD", "HU", 1),
    MeasurementRow("sat_mean_hu", "SAT mean attenuation", "HU", 1),
    MeasurementRow("vat_mean_hu", "VAT mean attenuation", "HU", 1),
    MeasurementRow("smi_cm2_per_m2", "Skeletal muscle index (SMI)", "cm²/m²", 1, short="SMI"),
    MeasurementRow("height_m", "Patient height", "m", 2),
    MeasurementRow("weight_kg", "Patient weight", "kg", 1),
    MeasurementRow("bmi_kg_per_m2", "Body mass index", "kg/m²", 1),
    MeasurementRow("level_confidence", "L3 level confidence", "", 2),
    MeasurementRow("slice_index", "Measured slice (canonical index)", "", 0),
    MeasurementRow("kvp", "Tube voltage", "kV", 0),
    MeasurementRow("slice_thickness_mm", "Slice thickness", "mm", 2),
)

__all__ = ["MEASUREMENTS"]
