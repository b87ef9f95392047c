"""Model cards: what a model directory declares about its networks, validated by a JSON schema.

A model directory holds ``card.json`` and one weights file (safetensors) per network. The card is
plain data: nothing in a model directory is ever imported or executed. The architecture is named
from a fixed list of MONAI classes (:data:`models.architectures.ARCHITECTURES`) and built with the
keyword arguments in the card, which may only be numbers, strings, booleans or lists of them.

A *model* is what the node passes to one protocol's pipeline: one or more networks with a role
each (e.g. the L3 model has a ``"tissue"`` slice segmenter and optionally a ``"level"`` locator;
the neonatal RDS model a ``"lung"`` segmenter and a ``"classifier"``).

Example (abridged)::

    {"schema_version": 1, "name": "ainode-l3-phantom", "version": "0.1.0",
     "protocol": "l3-body-composition", "validation_status": "phantom-only",
     "networks": [{"role": "tissue", "weights": "tissue.safetensors", "sha256": "...",
                   "architecture": {"name": "BasicUNet", "args": {"spatial_dims": 2, ...}},
                   "input": {"spatial_dims": 2, "pixel_spacing_mm": [2.0, 2.0],
                             "roi_size": [128, 128], "intensity_window_hu": [-250, 250]},
                   "labels": [{"value": 1, "name": "SMA", "code": {...}}, ...]}], ...}
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jsonschema

from ainode_core.errors import ModelError
from pipelines.types import ValidationStatus

CARD_FILE = "card.json"
SCHEMA_VERSION = 1

#: MONAI network classes a card may name (kept in step with models.architectures.ARCHITECTURES).
ARCHITECTURE_NAMES = (
    "BasicUNet", "UNet", "AttentionUnet", "FlexibleUNet", "EfficientNetBN", "DynUNet",
)

_SCALAR = {"type": ["number", "string", "boolean", "null"]}
_ARG_VALUE = {
    "anyOf": [
        _SCALAR,
        {"type": "array", "items": {"anyOf": [_SCALAR, {"type": "array", "items": _SCALAR}]}},
    ]
}
_CODE = {
    "type": "object",
    "required": ["value", "scheme", "meaning"],
    "additionalProperties": False,
    "properties": {
        "value": {"type": "string", "minLength": 1},
        "scheme": {"type": "string", "minLength": 1},
        "meaning": {"type": "string", "minLength": 1},
    },
}

#: JSON schema (draft 2020-12) of ``card.json``.
CARD_SCHEMA: dict[str, Any] = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "title": "ainode model card",
    "type": "object",
    "additionalProperties": False,
    "required": [
        "schema_version", "name", "version", "protocol", "task", "validation_status",
        "intended_use", "training_data", "evaluation", "networks",
    ],
    "properties": {
        "schema_version": {"const": SCHEMA_VERSION},
        "name": {"type": "string", "pattern": "^[a-z0-9][a-z0-9._-]{0,63}$"},
        "version": {"type": "string", "pattern": "^[0-9]+\\.[0-9]+\\.[0-9]+([.+-][A-Za-z0-9.]+)?$"},
        "protocol": {"type": "string", "minLength": 1},
        "task": {"type": "string", "minLength": 1},
        "description": {"type": "string"},
        "source": {"type": "string"},
        "license": {"type": "string"},
        "created": {"type": "string"},
        "validation_status": {"enum": [s.value for s in ValidationStatus if s.value != "reference-method"]},
        "intended_use": {"type": "string", "minLength": 1},
        "training_data": {
            "type": "object",
            "required": ["description"],
            "properties": {
                "description": {"type": "string", "minLength": 1},
                "cases": {"type": "integer", "minimum": 0},
                "split": {"type": "object"},
                "seed": {"type": "integer"},
            },
        },
        "training": {"type": "object"},
        "evaluation": {
            "type": "object",
            "required": ["set", "metrics"],
            "properties": {
                "set": {"type": "string", "minLength": 1},
                "cases": {"type": "integer", "minimum": 0},
                "metrics": {"type": "object", "additionalProperties": {"type": ["number", "null"]}},
                "primary_metric": {"type": "string"},
            },
        },
        "networks": {
            "type": "array",
            "minItems": 1,
            "items": {
                "type": "object",
                "additionalProperties": False,
                "required": ["role", "weights", "sha256", "architecture", "input", "labels"],
                "properties": {
                    "role": {"type": "string", "pattern": "^[a-z][a-z0-9_-]{0,31}$"},
                    # A bare file name inside the model directory: no path, no other format.
                    "weights": {"type": "string", "pattern": "^[A-Za-z0-9][A-Za-z0-9._-]{0,100}\\.safetensors$"},
                    "sha256": {"type": "string", "pattern": "^[0-9a-f]{64}$"},
                    "architecture": {
                        "type": "object",
                        "additionalProperties": False,
                        "required": ["name", "args"],
                        "properties": {
                            "name": {"enum": list(ARCHITECTURE_NAMES)},
                            "args": {"type": "object", "additionalProperties": _ARG_VALUE},
                        },
                    },
                    "input": {
                        "type": "object",
                        "required": ["spatial_dims", "intensity_window_hu"],
                        "properties": {
                            "spatial_dims": {"enum": [2, 3]},
                            "channels": {"type": "array", "items": {"type": "string"}},
                            "pixel_spacing_mm": {"type": "array", "items": {"type": "number", "exclusiveMinimum": 0}, "minItems": 2, "maxItems": 3},
                            "roi_size": {"type": "array", "items": {"type": "integer", "minimum": 1}, "minItems": 2, "maxItems": 3},
                            "intensity_window_hu": {"type": "array", "items": {"type": "number"}, "minItems": 2, "maxItems": 2},
                        },
                    },
                    "labels": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "additionalProperties": False,
                            "required": ["value", "name"],
                            "properties": {
                                "value": {"type": "integer", "minimum": 0, "maximum": 255},
                                "name": {"type": "string", "minLength": 1},
                                "code": _CODE,
                            },
                        },
                    },
                    "postprocessing": {"type": "array", "items": {"type": "string"}},
                },
            },
        },
    },
}


@dataclass(frozen=True)
class NetworkSpec:
    """One network of a model (one weights file).

    Attributes
    ----------
    role:
        What the network does in the protocol, e.g. ``"tissue"``, ``"level"``, ``"lung"``.
    weights:
        File name of the safetensors weights inside the model directory.
    sha256:
        Hex sha256 of the weights file; a mismatch refuses the model.
    architecture, args:
        MONAI class name and its keyword arguments.
    input:
        ``spatial_dims``, ``pixel_spacing_mm`` (grid the network runs on), ``roi_size``
        (sliding-window patch), ``intensity_window_hu`` (clipped and scaled to 0..1), ``channels``.
    labels:
        ``{"value", "name", "code"}`` per output class (value = label in the protocol's numbering).
    postprocessing:
        Human-readable post-processing steps.
    """

    role: str
    weights: str
    sha256: str
    architecture: str
    args: dict[str, Any]
    input: dict[str, Any]
    labels: list[dict[str, Any]]
    postprocessing: list[str] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        """The card's JSON form of this network."""
        data: dict[str, Any] = {
            "role": self.role, "weights": self.weights, "sha256": self.sha256,
            "architecture": {"name": self.architecture, "args": self.args},
            "input": self.input, "labels": self.labels,
        }
        if self.postprocessing:
            data["postprocessing"] = self.postprocessing
        return data


@dataclass(frozen=True)
class ModelCard:
    """A validated model card (see :data:`CARD_SCHEMA` for the fields)."""

    name: str
    version: str
    protocol: str
    task: str
    validation_status: ValidationStatus
    intended_use: str
    training_data: dict[str, Any]
    evaluation: dict[str, Any]
    networks: list[NetworkSpec]
    description: str = ""
    source: str = ""
    license: str = ""
    created: str = ""
    training: dict[str, Any] = field(default_factory=dict)

    def network(self, role: str) -> NetworkSpec | None:
        """The network with ``role``, or ``None``."""
        return next((n for n in self.networks if n.role == role), None)

    @property
    def primary_metric(self) -> float | None:
        """Value of the evaluation's primary metric (used to rank models of equal status)."""
        key = self.evaluation.get("primary_metric")
        value = self.evaluation.get("metrics", {}).get(key) if key else None
        return float(value) if value is not None else None

    @property
    def measured_on(self) -> str:
        """What the evaluation metrics were measured on, in words a listing can show beside them.

        Phantom evaluations say so plainly ("digital phantoms: 4 held-out cases, not patient
        images"): a Dice of 0.9 on a phantom says nothing about patient scans. Otherwise the
        evaluation set's name (its text up to the first comma or parenthesis) with its size.
        """
        text = str(self.evaluation.get("set", "")).strip()
        cases = self.evaluation.get("cases")
        size = f"{cases} case{'s' if cases != 1 else ''}" if isinstance(cases, int) else "size not stated"
        lowered = text.lower()
        if (self.validation_status is ValidationStatus.PHANTOM_ONLY or "phantom" in lowered
                or "synthetic" in lowered):
            return f"digital phantoms: {size}, not patient images"
        if not text or lowered == "pending":
            return "not evaluated"
        name = re.split(r"[,(]", text, maxsplit=1)[0].strip() or text
        return f"{name} ({size})"

    def to_dict(self) -> dict[str, Any]:
        """The card as JSON-ready data (validates against :data:`CARD_SCHEMA`)."""
        data: dict[str, Any] = {
            "schema_version": SCHEMA_VERSION,
            "name": self.name,
            "version": self.version,
            "protocol": self.protocol,
            "task": self.task,
            "validation_status": self.validation_status.value,
            "intended_use": self.intended_use,
            "training_data": self.training_data,
            "evaluation": self.evaluation,
            "networks": [n.to_dict() for n in self.networks],
        }
        for key in ("description", "source", "license", "created"):
            if getattr(self, key):
                data[key] = getattr(self, key)
        if self.training:
            data["training"] = self.training
        return data

    @classmethod
    def from_dict(cls, data: Any, where: str = "model card") -> ModelCard:
        """Validate ``data`` against the schema and build the card.

        Raises
        ------
        ModelError
            If the card fails the schema; the message names the field and the rule broken.
        """
        validate_card_data(data, where)
        return cls(
            name=data["name"],
            version=data["version"],
            protocol=data["protocol"],
            task=data["task"],
            validation_status=ValidationStatus(data["validation_status"]),
            intended_use=data["intended_use"],
            training_data=dict(data["training_data"]),
            evaluation=dict(data["evaluation"]),
            networks=[
                NetworkSpec(
                    role=n["role"], weights=n["weights"], sha256=n["sha256"],
                    architecture=n["architecture"]["name"], args=dict(n["architecture"]["args"]),
                    input=dict(n["input"]), labels=[dict(x) for x in n["labels"]],
                    postprocessing=list(n.get("postprocessing", [])),
                )
                for n in data["networks"]
            ],
            description=data.get("description", ""),
            source=data.get("source", ""),
            license=data.get("license", ""),
            created=data.get("created", ""),
            training=dict(data.get("training", {})),
        )

    def write(self, model_dir: str | Path) -> Path:
        """Write ``card.json`` into ``model_dir`` (validated first)."""
        data = self.to_dict()
        validate_card_data(data, f"card of {self.name}")
        path = Path(model_dir) / CARD_FILE
        path.write_text(json.dumps(data, indent=2) + "\n")
        return path


def validate_card_data(data: Any, where: str = "model card") -> None:
    """Check card data against :data:`CARD_SCHEMA` and the rules a schema cannot express.

    Raises
    ------
    ModelError
        With every problem found: the JSON path, the rule and what to fix.
    """
    validator = jsonschema.Draft202012Validator(CARD_SCHEMA)
    errors = sorted(validator.iter_errors(data), key=lambda e: list(e.absolute_path))
    problems = [
        f"{'/'.join(str(p) for p in e.absolute_path) or '(top level)'}: {e.message}" for e in errors
    ]
    if not problems:
        roles = [n["role"] for n in data["networks"]]
        if len(set(roles)) != len(roles):
            problems.append(f"networks: roles must be unique, got {roles}")
        files = [n["weights"] for n in data["networks"]]
        if len(set(files)) != len(files):
            problems.append(f"networks: weights files must be distinct, got {files}")
    if problems:
        raise ModelError(
            f"{where} fails the model-card schema: " + "; ".join(problems[:8])
            + (f" (and {len(problems) - 8} more)" if len(problems) > 8 else "")
            + ". Fix card.json (schema: models.cards.CARD_SCHEMA, docs/models.md)"
        )


def read_card(model_dir: str | Path) -> ModelCard:
    """Read and validate ``card.json`` of a model directory.

    Raises
    ------
    ModelError
        If the card is missing, not JSON, or fails the schema.
    """
    path = Path(model_dir) / CARD_FILE
    if not path.is_file():
        raise ModelError(f"{model_dir} has no {CARD_FILE}; a model directory needs its model card")
    try:
        data = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ModelError(f"{path} is not valid JSON ({exc}); fix or reinstall the model") from exc
    return ModelCard.from_dict(data, where=str(path))
