"""The protocol's :class:`~pipelines.protocol.ProtocolSpec`, published as entry point
``l1-trabecular-attenuation = "ainode_l1.spec:SPEC"`` in group ``ainode.protocols``.

Everything the core needs to know about the protocol is here: name, input kind, parameters,
method, measurement table and default routing rules. The core never imports this package by
name; :mod:`pipelines.registry` finds it through the entry point once the package is installed.
"""

from __future__ import annotations

from typing import Any

from ainode_l1.method import MEASUREMENT_TABLE, PROTOCOL_NAME, VERSION, run_l1_trabecular
from ainode_l1.parameters import L1Parameters
from pipelines.protocol import ProtocolSpec
from pipelines.types import CodedTerm

#: Body Part Examined values of CT series that may show L1 (abdomen, chest, spine, trunk, whole
#: body), or none at all; head, neck and limbs never do.
_BODY_PARTS = (
    r"^\s*(|ABDOMEN|ABD|CHEST|THORAX|SPINE|[TL]SPINE|THORACOLUMBAR|TRUNK|WHOLEBODY|WHOLE BODY|"
    r"CHEST_?ABDOMEN|CHESTABDOMEN|ABDOMEN_?PELVIS|ABDOMENPELVIS|CHEST_?ABDOMEN_?PELVIS|CAP)\s*$"
)

#: Words in a Study/Series Description or Protocol Name that ask for bone-density screening.
_SCREENING_WORDS = (
    r"\bL1\b|bone[ _-]?(mineral[ _-]?)?densit|\bBMD\b|osteopor|\bDXA\b|\bDEXA\b|opportunistic"
)

DEFAULT_RULES: tuple[dict[str, Any], ...] = (
    {
        "name": "l1-trabecular-by-description",
        "protocol": PROTOCOL_NAME,
        "stage": "metadata",
        "order": 10,
        "description": (
            "axial CT of the abdomen, chest, spine or whole body whose Study/Series Description or "
            "Protocol Name asks for bone density (L1, BMD, osteoporosis, opportunistic): L1 "
            "trabecular attenuation. Ordinary abdominal and chest CTs are left to the shipped "
            "protocols; see docs/pipelines/l1-trabecular-attenuation.md to route them here"
        ),
        "match": {
            "modality": ["CT"],
            "body_part_examined": _BODY_PARTS,
            "any_description": _SCREENING_WORDS,
            "orientation": ["axial"],
            "image_type_excludes": ["LOCALIZER"],
            "min_instances": 20,
        },
    },
)

SPEC = ProtocolSpec(
    name=PROTOCOL_NAME,
    title="L1 trabecular attenuation (opportunistic osteoporosis screening on CT)",
    version=VERSION,
    input_kind="ct-volume",
    modalities=("CT",),
    # Procedure Reported (TID 1500): the generic CT code of pydicom 3.0.2's PS3.16 tables, as the
    # shipped CT protocols use.
    procedure_code=CodedTerm("77477000", "SCT", "Computed tomography"),
    parameters=L1Parameters,
    run=run_l1_trabecular,
    measurements=MEASUREMENT_TABLE,
    default_rules=DEFAULT_RULES,
    # The core's abdominal phantom (T10 to sacrum, known cancellous HU) is this protocol's
    # phantom case too; a string, imported only by the tools that use it.
    phantom_case="training.datasets:phantom_case",
    # Path in ainode's source tree (the script is not part of the installed package).
    benchmark="examples/ainode-l1-trabecular/benchmarks/l1_trabecular.py",
    docs="docs/pipelines/l1-trabecular-attenuation.md",
)
