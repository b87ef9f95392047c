"""``l3-body-composition``: body composition at mid-L3 on abdominal CT (the spec).

The method is :mod:`pipelines.l3_body_composition`; the page is
``docs/pipelines/l3-body-composition.md``.
"""

from __future__ import annotations

from typing import Any

from pipelines.measurement_tables.l3_body_composition import MEASUREMENTS
from pipelines.parameters.l3_body_composition import CUTOFF_SET_NAMES, L3Parameters
from pipelines.protocol import PatientContext, ProtocolSpec
from pipelines.protocols import rules_from_yaml
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

NAME = "l3-body-composition"

__all__ = ["CUTOFF_SET_NAMES", "NAME", "SPEC", "L3Parameters", "run"]


def run(volume: Any, params: L3Parameters, context: PatientContext,
        model: LearnedModel | None) -> PipelineResult:
    """Run :func:`pipelines.l3_body_composition.run_l3_body_composition` on ``volume``; the
    volume's loading warnings come first in the result."""
    from pipelines.l3_body_composition import run_l3_body_composition

    result = run_l3_body_composition(volume, params, model=model, context=context)
    result.warnings[:0] = [w for w in volume.warnings if w not in result.warnings]
    return result


# The measurement table lives in pipelines.measurement_tables (the method reads it too).

_RULES = r"""
- name: abdomen-ct-by-body-part
  stage: metadata
  order: 12
  protocol: l3-body-composition
  description: abdominal CT, including chest-abdomen(-pelvis) and organ body parts (liver, pancreas, kidney); L3 lies in the field of view
  match:
    modality: [CT]
    body_part_examined: '^\s*((CHEST|THORAX)[ _-]?)?(ABD|ABDOMEN)([ _-]?(PELVIS))?\s*$|^\s*(PELVIS|ABDPELVIS|CHESTABDPELVIS|CAP|TAP|LIVER|PANCREAS|KIDNEYS?|RENAL|SPLEEN|STOMACH|BOWEL|COLON)\s*$'
- name: abdomen-ct-by-description
  stage: metadata
  order: 21
  protocol: l3-body-composition
  description: abdominal CT named in Study/Series Description or Protocol Name (tried before chest so that chest-abdomen-pelvis goes to body composition)
  match:
    modality: [CT]
    any_description: '\b(abdomen|abdominal|abdo|abd|pelvis|pelvic|becken|liver|leber|hepatic|pancreas|pancreatic|kidneys?|renal|nieren?|a/p|ap|cap|tap|oberbauch|bauch|colonograph\w*|urograph\w*)\b'
- name: pixel-abdomen-ct
  stage: pixel
  order: 13
  protocol: l3-body-composition
  description: axial CT without a usable Body Part; the pixels show an abdomen (soft tissue and fat, no lungs)
  match:
    modality: [CT]
    orientation: [axial]
    body_part_examined: '^\s*(|UNKNOWN|OTHER|NONE|ANY|BODY|WHOLE[ _-]?BODY|PARTIAL[ _-]?BODY|TRUNK|TORSO)\s*$'
    pixel_region: [abdomen]
"""

SPEC = ProtocolSpec(
    name=NAME,
    title="L3 body composition (abdominal CT)",
    version="0.1.0",
    input_kind="ct-volume",
    modalities=("CT",),
    # Procedure Reported (TID 1500): only codes found in pydicom 3.0.2's PS3.16 tables are used;
    # no region-specific CT-of-abdomen code is there, so the generic one.
    procedure_code=CodedTerm("77477000", "SCT", "Computed tomography"),
    parameters=L3Parameters,
    run=run,
    measurements=MEASUREMENTS,
    default_rules=rules_from_yaml(_RULES),
    networks="models.architectures:l3_networks",
    adapter="models.inference:_l3_adapter",
    trainer="training.train:train_l3",
    evaluator="training.evaluate:evaluate_l3",
    phantom_case="training.datasets:phantom_case",
    user_cases="training.train:_load_user_cases",
    benchmark="benchmarks/l3.py",
    settings_key="l3",  # the section's key since version 0.1
    settings_fields=("cutoff_set",),
    # Thin soft-tissue axial CT that covers the lumbar spine around L3 (docs/routing.md).
    series_preferences={
        "orientation": ["axial"],
        "slice_thickness_mm": (0.5, 3.0),
        "min_coverage_mm": 100.0,
    },
    docs="docs/pipelines/l3-body-composition.md",
)
