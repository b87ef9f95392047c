"""The protocol plug-in interface: what a protocol declares about itself.

A protocol (shipped in ``pipelines/protocols/`` or installed by a site as its own package) is one
:class:`ProtocolSpec`, published under the Python entry-point group ``ainode.protocols``
(:mod:`pipelines.registry` discovers them). The core (routing, runner, outputs, dashboard, CLI,
training and evaluation commands) knows protocols only through these specs.

This module imports only the standard library, pydantic, :mod:`ainode_core` and
:mod:`pipelines.types`; header reading for :meth:`PatientContext.from_headers` is imported
lazily. Writing a plug-in: ``docs/plugins.md``.
"""

from __future__ import annotations

import importlib
import math
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal

from pydantic import BaseModel

from ainode_core.errors import ConfigError
from pipelines.types import CodedTerm, LearnedModel, PipelineResult

#: Stages of a protocol's default routing rules, in the order the node tries them (see
#: :func:`node.routing.default_rules`): ``override`` before the core's generic ignore rules
#: (secondary captures, dose screens, localizers, reformats), ``exclude`` for protocol-specific
#: refusals (e.g. head CT with contrast), ``metadata`` for routing by headers, ``pixel`` for
#: routing by ``pixel_region``.
RULE_STAGES: tuple[str, ...] = ("override", "exclude", "metadata", "pixel")

_AGE_RE = re.compile(r"^\s*(\d{1,3})\s*([DWMY])\s*$", re.IGNORECASE)
_AGE_UNIT_YEARS = {"D": 1.0 / 365.25, "W": 7.0 / 365.25, "M": 1.0 / 12.0, "Y": 1.0}


@dataclass(frozen=True)
class PatientContext:
    """Patient and acquisition facts of one series, read by the core from the source headers.

    Methods use these instead of reading DICOM headers themselves. Every value is ``None`` when
    the headers lack it or hold an unusable value (the one rule of
    :func:`pipelines.headers.positive_number`: missing, unparsable, zero, negative or infinite
    numbers count as absent).

    Attributes
    ----------
    height_m:
        Patient's Size (0010,1020), metres.
    weight_kg:
        Patient's Weight (0010,1030), kilograms.
    sex:
        Patient's Sex (0010,0040): ``"M"``, ``"F"`` or ``"O"``.
    age_years:
        Patient's Age (0010,1010), AS ``nnnD/W/M/Y``, in years.
    kvp:
        KVP (0018,0060), kilovolts (peak).
    kernel:
        Convolution Kernel (0018,1210), multiple values joined by ``\\``.
    contrast:
        Whether a Contrast/Bolus Agent (0018,0010) or its sequence is recorded
        (:func:`pipelines.acquisition.contrast_recorded`); ``None`` without headers.
    slice_thickness_mm:
        Slice Thickness (0018,0050) as acquired, millimetres (the reconstructed thickness, not
        the slice step of the volume).
    """

    height_m: float | None = None
    weight_kg: float | None = None
    sex: str | None = None
    age_years: float | None = None
    kvp: float | None = None
    kernel: str | None = None
    contrast: bool | None = None
    slice_thickness_mm: float | None = None

    @classmethod
    def from_headers(cls, datasets: Iterable[Any]) -> PatientContext:
        """Read the context from the headers of one series (pydicom datasets).

        Each value is taken from the first instance that has a usable one; ``contrast`` is true
        when any instance records a contrast agent.

        Parameters
        ----------
        datasets:
            The instances of one series (pixel data not needed).

        Returns
        -------
        PatientContext
        """
        from pipelines.acquisition import contrast_recorded
        from pipelines.headers import positive_number

        items = list(datasets)
        if not items:
            return cls()

        def first(read: Callable[[Any], Any]) -> Any:
            for ds in items:
                value = read(ds)
                if value is not None:
                    return value
            return None

        def sex(ds: Any) -> str | None:
            value = str(ds.get("PatientSex", "") or "").strip().upper()
            return value if value in ("M", "F", "O") else None

        def age(ds: Any) -> float | None:
            match = _AGE_RE.match(str(ds.get("PatientAge", "") or ""))
            if not match:
                return None
            return int(match.group(1)) * _AGE_UNIT_YEARS[match.group(2).upper()]

        def kernel(ds: Any) -> str | None:
            value = ds.get("ConvolutionKernel")
            if value is None:
                return None
            if isinstance(value, str):
                text = value.strip()
            else:
                text = "\\".join(str(v).strip() for v in value)
            return text or None

        def number(keyword: str) -> Callable[[Any], float | None]:
            def read(ds: Any) -> float | None:
                value = positive_number(ds.get(keyword))
                return value if value is None or math.isfinite(value) else None

            return read

        return cls(
            height_m=first(number("PatientSize")),
            weight_kg=first(number("PatientWeight")),
            sex=first(sex),
            age_years=first(age),
            kvp=first(number("KVP")),
            kernel=first(kernel),
            contrast=any(contrast_recorded(ds) for ds in items),
            slice_thickness_mm=first(number("SliceThickness")),
        )


@dataclass(frozen=True)
class MeasurementRow:
    """One row of a protocol's declarative measurement table.

    Attributes
    ----------
    key:
        Summary key, e.g. ``"sma_cm2"``.
    label:
        Human name, e.g. ``"Skeletal muscle area (SMA)"``.
    unit:
        Human unit, e.g. ``"cm²"``, ``"HU"``, ``"cm²/m²"``; ``""`` for ratios and counts.
    decimals:
        Precision shown to people.
    short:
        Short name on the key image (ASCII), e.g. ``"SMA"``; ``""``: the label
        (:mod:`pipelines.measurement_text`).
    """

    key: str
    label: str
    unit: str
    decimals: int
    short: str = ""


#: ``run(image, params, context, model) -> PipelineResult``.
ProtocolMethod = Callable[[Any, BaseModel, PatientContext, LearnedModel | None], PipelineResult]


@dataclass(frozen=True)
class ProtocolSpec:
    """Everything ainode knows about one protocol.

    Attributes
    ----------
    name:
        Routing and job name, e.g. ``"l3-body-composition"``.
    title:
        Human-readable title.
    version:
        Protocol (method) version.
    input_kind:
        ``"ct-volume"`` (``run`` gets a :class:`pipelines.volume.CTVolume`) or ``"radiograph"``
        (a :class:`pipelines.radiograph.Radiograph`).
    modalities:
        Modalities the protocol accepts (the core refuses others before loading).
    procedure_code:
        Procedure Reported of the SR (TID 1500).
    parameters:
        The typed parameters: a pydantic model with bounds as ``Field`` constraints and
        ``extra="forbid"``; the single source of names, types and bounds, also for the YAML.
    run:
        The method, ``run(image, params, context, model) -> PipelineResult``; ``params`` an
        instance of ``parameters``, ``model`` a :class:`~pipelines.types.LearnedModel` or
        ``None`` (the reference method).
    measurements:
        The measurement table: one :class:`MeasurementRow` per summary key.
    default_rules:
        Routing rules in the node's YAML rule syntax (``name``, ``protocol``, ``description``,
        ``match``), each with a ``stage`` (one of :data:`RULE_STAGES`) and optionally an
        ``order`` (number, default 100; lower first within a stage). The node merges every
        protocol's rules into its default table.
    networks, adapter, trainer, evaluator, phantom_case, benchmark:
        ``"module:function"`` strings, imported lazily (:func:`load_object`): the networks
        (``-> dict[role, torch.nn.Module]``), the adapter building a ``LearnedModel`` from
        loaded networks and a model card, the trainer (``ainode train NAME``), the evaluator
        (``ainode evaluate NAME``), one phantom case for tests and benchmarks, and the
        benchmark (function or script path).
    docs:
        Documentation page or URL.
    load:
        Optional ``"module:function"`` turning the series' datasets into the image ``run``
        gets, where the default loader of ``input_kind`` does not fit (e.g. a method that
        picks one frontal radiograph of several).
    user_cases:
        Optional ``"module:function"``, ``(data_dir) -> list[Case]``: the labelled cases of a
        site for training and ``ainode evaluate --data``.
    settings_key:
        Key of the protocol's parameter section in the node's settings (YAML and
        ``AINODE_<KEY>__<PARAMETER>`` environment variables); default the name with ``_`` for
        ``-`` (see :meth:`settings_section`).
    settings_fields:
        The parameters a site commonly sets, offered as that section (same types, bounds and
        descriptions as in ``parameters``); every parameter can also be set under the node's
        ``protocol_parameters``. Empty: no section.
    series_preferences:
        Which series of a study the protocol prefers when several route to it (the node's
        :class:`node.selection.SeriesPreferences` keys, e.g. ``orientation``,
        ``slice_thickness_mm``, ``preferred_kernel``, ``min_coverage_mm``); a site overrides
        them under ``series_selection:`` in its YAML. Empty: the node's generic defaults.
    """

    name: str
    title: str
    version: str
    input_kind: Literal["ct-volume", "radiograph"]
    modalities: tuple[str, ...]
    procedure_code: CodedTerm
    parameters: type[BaseModel]
    run: ProtocolMethod
    measurements: tuple[MeasurementRow, ...] = ()
    default_rules: tuple[dict[str, Any], ...] = ()
    networks: str | None = None
    adapter: str | None = None
    trainer: str | None = None
    evaluator: str | None = None
    phantom_case: str | None = None
    benchmark: str | None = None
    docs: str | None = None
    load: str | None = None
    user_cases: str | None = None
    settings_key: str | None = None
    settings_fields: tuple[str, ...] = ()
    series_preferences: dict[str, Any] = field(default_factory=dict, hash=False)

    @property
    def implemented(self) -> bool:
        """Always true: a registered protocol has a method (kept for the dashboard and server,
        which tell "not in this version" apart)."""
        return True

    def settings_section(self) -> str:
        """Key of this protocol's parameter section in the node's settings."""
        return self.settings_key or self.name.replace("-", "_")

    def measurement(self, key: str) -> MeasurementRow | None:
        """The measurement-table row of summary key ``key``, or ``None``."""
        for row in self.measurements:
            if row.key == key:
                return row
        return None


def load_object(reference: str, *, what: str = "object") -> Any:
    """Import ``"package.module:attribute"`` (attribute may be dotted).

    Parameters
    ----------
    reference:
        ``"module:function"`` string from a :class:`ProtocolSpec`.
    what:
        What it is, for the message (e.g. ``"trainer of brain-gwr"``).

    Returns
    -------
    Any
        The attribute.

    Raises
    ------
    ConfigError
        If the string is malformed, the module cannot be imported or lacks the attribute.
    """
    module_name, sep, attribute = reference.partition(":")
    if not sep or not module_name or not attribute:
        raise ConfigError(f"{what}: {reference!r} is not of the form 'module:function'")
    try:
        target: Any = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigError(f"{what}: cannot import {module_name!r} ({exc})") from exc
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise ConfigError(f"{what}: {module_name!r} has no {attribute!r}") from None
    return target


__all__ = [
    "RULE_STAGES",
    "MeasurementRow",
    "PatientContext",
    "ProtocolMethod",
    "ProtocolSpec",
    "load_object",
]
