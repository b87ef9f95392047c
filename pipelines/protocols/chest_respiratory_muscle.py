"""``chest-respiratory-muscle``: respiratory and thoracic skeletal muscle on chest CT (the spec).

The method is :mod:`pipelines.chest_respiratory_muscle`; the page is
``docs/pipelines/chest-respiratory-muscle.md``.
"""

from __future__ import annotations

from typing import Any

from pipelines.measurement_tables.chest_respiratory_muscle import MEASUREMENTS
from pipelines.parameters.chest_respiratory_muscle import ChestParameters
from pipelines.protocol import PatientContext, ProtocolSpec
from pipelines.protocols import rules_from_yaml
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

NAME = "chest-respiratory-muscle"

__all__ = ["NAME", "SPEC", "ChestParameters", "run"]


def run(volume: Any, params: ChestParameters, context: PatientContext,
        model: LearnedModel | None) -> PipelineResult:
    """Run :func:`pipelines.chest_respiratory_muscle.run_chest_respiratory_muscle`."""
    from pipelines.chest_respiratory_muscle import run_chest_respiratory_muscle

    return run_chest_respiratory_muscle(volume, params, model=model, context=context)


# The measurement table lives in pipelines.measurement_tables (the method reads it too).

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
