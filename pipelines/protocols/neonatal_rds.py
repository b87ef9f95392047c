"""``neonatal-rds``: lung fields and RDS signs on a neonatal chest radiograph (the spec).

The method is :mod:`pipelines.neonatal_rds`; the page is ``docs/pipelines/neonatal-rds.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


from ainode_core.errors import InvalidSeriesError
from pipelines.measurement_tables.neonatal_rds import MEASUREMENTS
from pipelines.parameters.neonatal_rds import NeonatalRDSParameters
from pipelines.protocol import PatientContext, ProtocolSpec
from pipelines.protocols import rules_from_yaml
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

NAME = "neonatal-rds"

__all__ = ["NAME", "SPEC", "NeonatalRDSParameters", "load_images", "run"]


def load_images(datasets: Sequence[Any]) -> list[Any]:
    """The series' images ordered by Instance Number: the method measures the first frontal
    one it can (lateral views are skipped with a warning).

    Raises
    ------
    InvalidSeriesError
        Empty series.
    """
    if not datasets:
        raise InvalidSeriesError("the series holds no images; nothing to measure")
    return list(datasets)


def run(images: list[Any], params: NeonatalRDSParameters, context: PatientContext,
        model: LearnedModel | None) -> PipelineResult:
    """Run :func:`pipelines.neonatal_rds.run_from_datasets` (first measurable frontal image)."""
    from pipelines.neonatal_rds import run_from_datasets

    return run_from_datasets(images, params.model_dump(), model, context=context)


# The measurement table lives in pipelines.measurement_tables (the method reads it too).

_RULES = r"""
- name: chest-radiograph-secondary-capture
  stage: override
  order: 10
  protocol: neonatal-rds
  description: a chest radiograph kept as Secondary Capture (Modality CR/DX, Body Part CHEST, View Position PA or AP), as converted or public archives hold them; measured as a radiograph without an exposure index
  match:
    sop_class_uid:
      - 1.2.840.10008.5.1.4.1.1.7      # Secondary Capture Image Storage
    modality: [CR, DX]
    body_part_examined: '^\s*(CHEST|THORAX|LUNGS?|THX)\s*$'
    view_position: [PA, AP]
- name: chest-radiograph-by-body-part
  stage: metadata
  order: 30
  protocol: neonatal-rds
  description: frontal chest radiograph (CR/DX, Body Part CHEST, View Position PA or AP). Patient age is not checked; add max_patient_age_days to restrict to neonates
  match:
    modality: [CR, DX]
    body_part_examined: '^\s*(CHEST|THORAX|LUNGS?|THX)\s*$'
    view_position: [PA, AP]
- name: chest-radiograph-by-description
  stage: metadata
  order: 31
  protocol: neonatal-rds
  description: frontal chest radiograph named in the descriptions (CR/DX, View Position PA or AP)
  match:
    modality: [CR, DX]
    any_description: '\b(chest|thorax|thx|lungs?|babygram)\b'
    view_position: [PA, AP]
- name: pixel-chest-radiograph
  stage: pixel
  order: 14
  protocol: neonatal-rds
  description: CR/DX without a usable Body Part; the pixels show two lung fields beside a mediastinum
  match:
    modality: [CR, DX]
    body_part_examined: '^\s*(|UNKNOWN|OTHER|NONE|ANY|BODY|WHOLE[ _-]?BODY|PARTIAL[ _-]?BODY|TRUNK|TORSO)\s*$'
    view_position: [PA, AP, '']
    pixel_region: [chest]
"""

SPEC = ProtocolSpec(
    name=NAME,
    title="Neonatal RDS on chest radiograph",
    version="0.2.0",
    input_kind="radiograph",
    modalities=("CR", "DX"),
    # In pydicom 3.0.2's PS3.16 tables (CID 10005); no chest-specific radiography code is.
    procedure_code=CodedTerm("168537006", "SCT", "Plain radiography"),
    parameters=NeonatalRDSParameters,
    run=run,
    measurements=MEASUREMENTS,
    default_rules=rules_from_yaml(_RULES),
    networks="models.architectures:rds_networks",
    adapter="models.inference:_rds_adapter",
    trainer="training.train_rds:train",
    evaluator="training.train_rds:evaluate_rds",
    phantom_case="training.train_rds:phantom_radiograph_case",
    user_cases="training.train_rds:user_radiograph_cases",
    benchmark="benchmarks/neonatal_rds.py",
    settings_fields=("assumed_pixel_spacing_mm",),
    # The frontal (AP/PA) For-Presentation image; kernels do not apply to radiographs.
    series_preferences={
        "presentation_intent": "FOR PRESENTATION",
        "view_position": ["AP", "PA"],
        "preferred_kernel": None,
        "avoided_kernel": None,
    },
    docs="docs/pipelines/neonatal-rds.md",
    load="pipelines.protocols.neonatal_rds:load_images",
)
