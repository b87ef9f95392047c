"""``brain-gwr``: gray-to-white-matter ratio on post-cardiac-arrest head CT (the spec).

The method is :mod:`pipelines.brain_gwr`; the page is ``docs/pipelines/brain-gwr.md``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any


from ainode_core.errors import InvalidInputError, UnsupportedInputError
from pipelines.measurement_tables.brain_gwr import MEASUREMENTS
from pipelines.parameters.brain_gwr import DEFAULT_GWR_CUTOFF, BrainGWRParameters
from pipelines.protocol import PatientContext, ProtocolSpec
from pipelines.protocols import rules_from_yaml
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

NAME = "brain-gwr"

__all__ = ["DEFAULT_GWR_CUTOFF", "NAME", "SPEC", "BrainGWRParameters", "load_volume", "run"]

def load_volume(datasets: Sequence[Any]) -> Any:
    """The CT volume of the series; a single axial image without Frame of Reference UID (older
    exports) is measured on its own pixel grid.

    Raises
    ------
    InvalidInputError
        Empty or unreadable series.
    UnsupportedInputError
        See :func:`pipelines.volume.load_ct_volume`.
    """
    if not datasets:
        raise InvalidInputError("brain-gwr: the series is empty")
    from pipelines import brain_gwr
    from pipelines.volume import load_ct_volume

    if len(datasets) == 1 and "FrameOfReferenceUID" not in datasets[0]:
        return brain_gwr._single_image_without_frame_of_reference(datasets[0])
    return load_ct_volume(datasets)


def run(volume: Any, params: BrainGWRParameters, context: PatientContext,
        model: LearnedModel | None) -> PipelineResult:
    """Refuse contrast-enhanced series (``reject_contrast``), then run
    :func:`pipelines.brain_gwr.run_brain_gwr`."""
    if params.reject_contrast and context.contrast:
        raise UnsupportedInputError(
            "the series records a contrast agent (Contrast/Bolus Agent); the GWR is defined on "
            "non-contrast head CT: send the non-contrast series"
        )
    from pipelines.brain_gwr import run_brain_gwr

    return run_brain_gwr(volume, params, model, context=context)


# The measurement table lives in pipelines.measurement_tables (the method reads it too).

_HEAD = r"'\b(head|brain|skull|cranial|cranium|cerebral|neuro|sch(ä|ae|a)del|kopf|hirn|cct)\b|\bct ?kopf'"
_RULES = r"""
- name: head-ct-contrast-by-body-part
  stage: exclude
  order: 10
  protocol: null
  description: contrast-enhanced head CT; the gray-white matter ratio needs a non-contrast scan
  match:
    modality: [CT]
    body_part_examined: '^\s*(HEAD|BRAIN|SKULL|CRANIUM)\s*$'
    contrast: true
- name: head-ct-contrast-by-description
  stage: exclude
  order: 11
  protocol: null
  description: contrast-enhanced head CT; the gray-white matter ratio needs a non-contrast scan
  match:
    modality: [CT]
    any_description: HEAD
    contrast: true
- name: head-ct-angio-perfusion-by-description
  stage: exclude
  order: 12
  protocol: null
  description: head CT angiography or perfusion (named in the descriptions); the gray-white matter ratio needs a non-contrast scan
  match:
    modality: [CT]
    any_description: '(?=.*\b(head|brain|cranial|cerebral|neuro|sch(ä|ae|a)del|kopf|hirn|circle of willis|cow)\b).*(angio|\bcta\b|perfusion|\bctp\b)'
- name: head-ct-angio-perfusion-by-body-part
  stage: exclude
  order: 13
  protocol: null
  description: head CT angiography or perfusion (Body Part head, descriptions name angio/CTA/perfusion); the gray-white matter ratio needs a non-contrast scan
  match:
    modality: [CT]
    body_part_examined: '^\s*(HEAD|BRAIN|SKULL|CRANIUM)\s*$'
    any_description: '(angio|\bcta\b|perfusion|\bctp\b)'
- name: head-ct-by-body-part
  stage: metadata
  order: 10
  protocol: brain-gwr
  priority: urgent   # head CT (e.g. after cardiac arrest) before routine batches
  description: non-contrast head CT (Body Part Examined HEAD, BRAIN or SKULL)
  match:
    modality: [CT]
    body_part_examined: '^\s*(HEAD|BRAIN|SKULL|CRANIUM)\s*$'
- name: head-ct-by-description
  stage: metadata
  order: 20
  protocol: brain-gwr
  priority: urgent   # head CT (e.g. after cardiac arrest) before routine batches
  description: head CT named in Study/Series Description or Protocol Name
  match:
    modality: [CT]
    any_description: HEAD
- name: pixel-head-ct-contrast
  stage: pixel
  order: 10
  protocol: null
  description: the pixels show a head, but a contrast agent is tagged; the gray-white matter ratio needs a non-contrast scan
  match:
    modality: [CT]
    orientation: [axial]
    body_part_examined: '^\s*(|UNKNOWN|OTHER|NONE|ANY|BODY|WHOLE[ _-]?BODY|PARTIAL[ _-]?BODY|TRUNK|TORSO)\s*$'
    contrast: true
    pixel_region: [head]
- name: pixel-head-ct
  stage: pixel
  order: 11
  protocol: brain-gwr
  priority: urgent   # head CT (e.g. after cardiac arrest) before routine batches
  description: axial CT without a usable Body Part; the pixels show a skull enclosing brain tissue
  match:
    modality: [CT]
    orientation: [axial]
    body_part_examined: '^\s*(|UNKNOWN|OTHER|NONE|ANY|BODY|WHOLE[ _-]?BODY|PARTIAL[ _-]?BODY|TRUNK|TORSO)\s*$'
    pixel_region: [head]
""".replace("any_description: HEAD", "any_description: " + _HEAD)

SPEC = ProtocolSpec(
    name=NAME,
    title="Post-cardiac-arrest brain CT gray-to-white-matter ratio",
    version="0.1.0",
    input_kind="ct-volume",
    modalities=("CT",),
    procedure_code=CodedTerm("303653007", "SCT", "Computed tomography of head"),
    parameters=BrainGWRParameters,
    run=run,
    measurements=MEASUREMENTS,
    default_rules=rules_from_yaml(_RULES),
    networks="models.architectures:brain_networks",
    adapter="models.inference:_brain_adapter",
    trainer="training.train_brain:train",
    evaluator="training.train_brain:evaluate_brain",
    phantom_case="training.train_brain:head_case",
    user_cases="training.train:_load_user_cases",
    benchmark="benchmarks/brain_gwr.py",
    settings_fields=("gwr_cutoff", "atlas_path"),
    # Thin non-contrast axial head CT covering the basal ganglia and centrum semiovale.
    series_preferences={
        "orientation": ["axial"],
        "slice_thickness_mm": (0.5, 3.0),
        "contrast": False,
        "min_coverage_mm": 80.0,
    },
    docs="docs/pipelines/brain-gwr.md",
    load="pipelines.protocols.brain_gwr:load_volume",
)
