"""Measurement table of ``neonatal-rds``.

Name, unit, precision and key-image short name of every value the method reports (summary keys
and SR measurements). Imported by the spec (:mod:`pipelines.protocols.neonatal_rds`)
and by the method (:mod:`pipelines.neonatal_rds`), whose key-image text is generated
from it (:mod:`pipelines.measurement_text`); standard library and :mod:`pipelines.protocol` only.
"""

from __future__ import annotations

from pipelines.protocol import MeasurementRow

MEASUREMENTS = (
    MeasurementRow(
        "right_lung_area_cm2", "Right lung field area", "cm²", 1, short="right"
    ),
    MeasurementRow(
        "left_lung_area_cm2", "Left lung field area", "cm²", 1, short="left"
    ),
    MeasurementRow(
        "right_lung_area_percent", "Right lung field area (of the image)", "%", 1, short="right"
    ),
    MeasurementRow(
        "left_lung_area_percent", "Left lung field area (of the image)", "%", 1, short="left"
    ),
    MeasurementRow("right_lung_mean_intensity", "Right lung field mean intensity", "", 3),
    MeasurementRow("left_lung_mean_intensity", "Left lung field mean intensity", "", 3),
    MeasurementRow("total_lung_area_cm2", "Total lung field area", "cm²", 1),
    MeasurementRow(
        "left_right_area_ratio", "Left/right lung field area ratio", "", 2, short="L/R"
    ),
    MeasurementRow(
        "lung_opacity_index", "Lung opacity index (LOI)", "", 3, short="Lung-opacity index"
    ),
    MeasurementRow(
        "rds_probability", "RDS probability (model)", "", 2, short="RDS probability"
    ),
    MeasurementRow(
        "mediastinum_offset_fraction", "Mediastinal offset (fraction of thorax width)", "", 2
    ),
    MeasurementRow("patient_age_days", "Patient's age (from the headers)", "d", 0),
    MeasurementRow("kvp", "Tube voltage", "kV", 0),
)

__all__ = ["MEASUREMENTS"]
