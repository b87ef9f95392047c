"""``chest-respiratory-muscle``: respiratory and thoracic skeletal muscle on chest CT (the spec).

The method is :mod:`pipelines.chest_respiratory_muscle`; the page is
``docs/pipelines/chest-respiratory-muscle.md``.
"""

from __future__ import annotations

from typing import Any

from pipelines.parameters.chest_respiratory_muscle import ChestParameters
from pipelines.protocol import MeasurementRow, PatientContext, ProtocolSpec
from pipelines.protocols import rules_from_yaml
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

NAME = "chest-respiratory-muscle"

__all__ = ["NAME", "SPEC", "ChestParameters", "run"]


def run(volume: Any, params: ChestParameters, context: PatientContext,
        model: LearnedModel | None) -> PipelineResult:
    """Run :func:`pipelines.chest_respiratory_muscle.run_chest_respiratory_muscle`."""
    from pipelines.chest_respiratory_muscle import run_chest_respiratory_muscle

    return run_chest_respiratory_muscle(volume, params, model=model, context=context)


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
            MeasurementRow(f"{key}_volume_cm3", f"{label}: volume", "cm³", 1),
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
    for key, label in (("pma_t4", "Pectoralis muscle area at mid-T4 (PMA)"),
                       ("esma_t12", "Erector spinae muscle area at mid-T12 (ESMA)")):
        rows += [
            MeasurementRow(f"{key}_cm2", label, "cm²", 1),
            MeasurementRow(f"{key}_mean_hu", f"{label}: mean attenuation", "HU", 1),
        ]
        for side in ("right", "left"):
            rows += [
                MeasurementRow(f"{key}_{side}_cm2", f"{label}, {side}", "cm²", 1),
                MeasurementRow(f"{key}_{side}_mean_hu", f"{label}, {side}: mean attenuation",
                               "HU", 1),
            ]
    return tuple(rows)


MEASUREMENTS = (
    MeasurementRow("total_respiratory_muscle_cm3", "Respiratory muscle volume", "cm³", 1),
    MeasurementRow("total_thoracic_muscle_cm3", "Thoracic skeletal muscle volume", "cm³", 1),
    MeasurementRow("total_thoracic_muscle_cm2", "Thoracic skeletal muscle area", "cm²", 1),
    MeasurementRow(
        "respiratory_muscle_index_cm3_per_m2", "Respiratory muscle volume / height²", "cm³/m²", 1
    ),
    MeasurementRow("height_m", "Patient height", "m", 2),
    MeasurementRow("kvp", "Tube voltage", "kV", 0),
    MeasurementRow("slice_thickness_mm", "Slice thickness", "mm", 2),
    MeasurementRow("measured_slab_length_mm", "Measured slab length", "mm", 0),
    *_class_rows(),
    *_slice_rows(),
)

_RULES = r"""
- name: chest-ct-by-body-part
  stage: metadata
  order: 11
  protocol: chest-respiratory-muscle
  description: chest CT (Body Part Examined CHEST, THORAX or LUNG)
  match:
    modality: [CT]
    body_part_examined: '^\s*(CHEST|THORAX|LUNGS?|THX)\s*$'
- name: chest-ct-by-description
  stage: metadata
  order: 22
  protocol: chest-respiratory-muscle
  description: chest CT named in Study/Series Description or Protocol Name
  match:
    modality: [CT]
    any_description: '\b(chest|thorax|thx|lungs?|pulmonary|hrct|ldct)\b|\bct ?thx|\bthoracic\b(?!\s*spine)'
- name: pixel-chest-ct
  stage: pixel
  order: 12
  protocol: chest-respiratory-muscle
  description: axial CT without a usable Body Part; the pixels show two lungs
  match:
    modality: [CT]
    orientation: [axial]
    body_part_examined: '^\s*(|UNKNOWN|OTHER|NONE|ANY|BODY|WHOLE[ _-]?BODY|PARTIAL[ _-]?BODY|TRUNK|TORSO)\s*$'
    pixel_region: [chest]
"""

SPEC = ProtocolSpec(
    name=NAME,
    title="Chest CT respiratory muscles",
    version="0.2.0",
    input_kind="ct-volume",
    modalities=("CT",),
    procedure_code=CodedTerm("77477000", "SCT", "Computed tomography"),
    parameters=ChestParameters,
    run=run,
    measurements=MEASUREMENTS,
    default_rules=rules_from_yaml(_RULES),
    networks="models.architectures:chest_networks",
    adapter="models.inference:_chest_adapter",
    trainer="training.train_chest:train",
    evaluator="training.train_chest:evaluate_chest",
    phantom_case="training.train_chest:chest_phantom_case",
    user_cases="training.train:_load_user_cases",
    benchmark="benchmarks/chest_respiratory_muscle.py",
    settings_key="chest",  # the section's key since version 0.1
    settings_fields=("include_diaphragm",),
    # Thin soft-tissue axial CT covering the thorax from T4 to T12 (docs/routing.md).
    series_preferences={
        "orientation": ["axial"],
        "slice_thickness_mm": (0.5, 3.0),
        "min_coverage_mm": 150.0,
    },
    docs="docs/pipelines/chest-respiratory-muscle.md",
)
