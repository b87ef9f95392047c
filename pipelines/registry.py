"""The protocols ainode knows: every :class:`~pipelines.protocol.ProtocolSpec` published under
the entry-point group ``ainode.protocols``.

The four shipped protocols register there like any site's plug-in (root ``pyproject.toml``,
``[project.entry-points."ainode.protocols"]``). A plug-in that fails to load (import error, not
a ``ProtocolSpec``, a name that differs from its entry point's, a name already taken) is skipped
with an ERROR log naming the entry point; the node keeps serving the others and
``ainode check-config`` reports it (:func:`load_errors`).

Public API: :func:`protocols`, :func:`get_protocol`, :func:`check_parameters`,
:func:`validate_parameters`, :func:`run_protocol`, :func:`load_image`.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator, Mapping, Sequence
from importlib.metadata import EntryPoint, entry_points
from typing import Any

from pydantic import BaseModel

from ainode_core.errors import ConfigError, InvalidInputError, UnsupportedInputError
from pipelines.parameters import parameters_from_mapping
from pipelines.protocol import RULE_STAGES, PatientContext, ProtocolSpec, load_object
from pipelines.types import LearnedModel, PipelineResult

logger = logging.getLogger(__name__)

#: Entry-point group of protocol plug-ins.
ENTRY_POINT_GROUP = "ainode.protocols"

_lock = threading.Lock()
_protocols: dict[str, ProtocolSpec] | None = None
_errors: dict[str, str] = {}


def _check_spec(entry: EntryPoint, spec: object, found: Mapping[str, ProtocolSpec]) -> str | None:
    """Why ``spec`` cannot be registered, or ``None``."""
    if not isinstance(spec, ProtocolSpec):
        return f"its object is a {type(spec).__name__}, not a pipelines.protocol.ProtocolSpec"
    if spec.name != entry.name:
        return f"its ProtocolSpec is named {spec.name!r}, not {entry.name!r}"
    if spec.name in found:
        return f"protocol {spec.name!r} is already registered by another package"
    if not (isinstance(spec.parameters, type) and issubclass(spec.parameters, BaseModel)):
        return "its parameters are not a pydantic model class"
    for rule in spec.default_rules:
        stage = rule.get("stage")
        if stage not in RULE_STAGES:
            return f"default rule {rule.get('name')!r} has stage {stage!r}; use one of {RULE_STAGES}"
        if rule.get("protocol") not in (None, spec.name):
            return f"default rule {rule.get('name')!r} routes to another protocol"
    return None


def discover(group: str = ENTRY_POINT_GROUP) -> tuple[dict[str, ProtocolSpec], dict[str, str]]:
    """Load every entry point of ``group`` (no caching).

    Returns
    -------
    tuple[dict[str, ProtocolSpec], dict[str, str]]
        The protocols by name, sorted by name; and the entry points that failed to load, by
        ``"name = value"``, with the reason.
    """
    found: dict[str, ProtocolSpec] = {}
    errors: dict[str, str] = {}
    for entry in sorted(entry_points(group=group), key=lambda e: (e.name, e.value)):
        label = f"{entry.name} = {entry.value}"
        try:
            spec = entry.load()
        except Exception as exc:  # a broken plug-in must never stop the node
            reason = f"{type(exc).__name__}: {exc}"
        else:
            reason = _check_spec(entry, spec, found)
        if reason is not None:
            errors[label] = reason
            logger.error(
                "protocol plug-in %r (entry point group %s) skipped: %s", label, group, reason
            )
            continue
        found[spec.name] = spec
    return dict(sorted(found.items())), errors


def _load() -> dict[str, ProtocolSpec]:
    global _protocols
    with _lock:
        if _protocols is None:
            loaded, errors = discover()
            _errors.clear()
            _errors.update(errors)
            _protocols = loaded
        return _protocols


def reload() -> dict[str, ProtocolSpec]:
    """Discover the plug-ins again (after installing one in a running process; tests)."""
    global _protocols
    with _lock:
        _protocols = None
    return _load()


def protocols() -> dict[str, ProtocolSpec]:
    """Every registered protocol by name (sorted by name); discovered once per process."""
    return dict(_load())


def load_errors() -> dict[str, str]:
    """Entry points that failed to load (``"name = value"`` -> reason); empty when all loaded."""
    _load()
    return dict(_errors)


class _ProtocolNames(Mapping[str, ProtocolSpec]):
    """Read-only live view of the registry (``name in PROTOCOLS``, ``sorted(PROTOCOLS)``)."""

    def __getitem__(self, name: str) -> ProtocolSpec:
        return _load()[name]

    def __iter__(self) -> Iterator[str]:
        return iter(_load())

    def __len__(self) -> int:
        return len(_load())

    def __repr__(self) -> str:
        return f"PROTOCOLS({sorted(_load())})"


#: The registered protocols, as a read-only mapping (kept for code written against the earlier
#: module constant); prefer :func:`protocols`.
PROTOCOLS: Mapping[str, ProtocolSpec] = _ProtocolNames()


def get_protocol(name: str) -> ProtocolSpec:
    """The protocol called ``name``.

    Raises
    ------
    UnsupportedInputError
        If no protocol has that name (the message lists the known ones).
    """
    registered = _load()
    try:
        return registered[name]
    except KeyError:
        raise UnsupportedInputError(
            f"unknown protocol {name!r}; known protocols: {', '.join(registered)}"
            + ("" if not _errors else f" (plug-ins that failed to load: {', '.join(_errors)})")
        ) from None


def validate_parameters(name: str, params: Mapping[str, Any] | BaseModel | None) -> BaseModel:
    """Protocol ``name``'s parameter model built from ``params``.

    Parameters
    ----------
    name:
        Protocol name.
    params:
        A mapping of parameter names to values (``None``: the defaults), or an instance of the
        protocol's parameter model (returned as is).

    Returns
    -------
    pydantic.BaseModel
        An instance of ``get_protocol(name).parameters``.

    Raises
    ------
    UnsupportedInputError
        Unknown protocol.
    ConfigError
        Unknown names, wrong types or out-of-range values; the message names the parameter.
    """
    spec = get_protocol(name)
    if isinstance(params, spec.parameters):
        return params
    if isinstance(params, BaseModel):
        raise ConfigError(
            f"{name}: parameters must be a mapping or {spec.parameters.__name__}, got "
            f"{type(params).__name__}"
        )
    return parameters_from_mapping(spec.parameters, params, name)


def check_parameters(name: str, params: Mapping[str, Any] | None) -> None:
    """Check that ``params`` are valid parameters of protocol ``name`` (without running it).

    Raises
    ------
    UnsupportedInputError
        Unknown protocol.
    ConfigError
        Unknown parameter names or invalid values (the message names them and lists the known
        names).
    """
    validate_parameters(name, params)


def spec_object(name: str, attribute: str) -> Any:
    """Import the ``"module:function"`` string ``attribute`` (e.g. ``"trainer"``) of protocol
    ``name``'s spec.

    Raises
    ------
    UnsupportedInputError
        Unknown protocol.
    ConfigError
        The spec has no such entry, or it cannot be imported.
    """
    spec = get_protocol(name)
    reference = getattr(spec, attribute, None)
    if not reference:
        raise ConfigError(f"protocol {name!r} declares no {attribute}")
    return load_object(str(reference), what=f"{attribute} of protocol {name!r}")


def declared_object(name: str, attribute: str) -> Any | None:
    """Like :func:`spec_object`, but ``None`` for an unknown protocol or one that declares no
    such entry (for lookups such as "the adapter of this model's protocol, if any")."""
    registered = _load()
    spec = registered.get(name)
    if spec is None or not getattr(spec, attribute, None):
        return None
    return load_object(str(getattr(spec, attribute)), what=f"{attribute} of protocol {name!r}")


class SpecObjects(Mapping[str, Any]):
    """Read-only mapping protocol name -> the imported ``attribute`` object of its spec, over the
    protocols that declare one (imported on first access, then cached).

    Replaces the per-protocol lookup tables the layers above kept (``ADAPTERS``,
    ``DEFAULT_NETWORKS``, ``EVALUATORS``, ...): they read the specs instead.
    """

    def __init__(self, attribute: str, call: bool = False) -> None:
        self._attribute = attribute
        self._call = call
        self._cache: dict[tuple[str, str], Any] = {}

    def _names(self) -> list[str]:
        return [n for n, spec in _load().items() if getattr(spec, self._attribute, None)]

    def __getitem__(self, name: str) -> Any:
        spec = _load().get(name)
        reference = getattr(spec, self._attribute, None) if spec is not None else None
        if not reference:
            raise KeyError(name)
        key = (name, str(reference))
        if key not in self._cache:
            value = load_object(str(reference), what=f"{self._attribute} of protocol {name!r}")
            self._cache[key] = value() if self._call else value
        return self._cache[key]

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())

    def __len__(self) -> int:
        return len(self._names())

    def __repr__(self) -> str:
        return f"SpecObjects({self._attribute!r}: {self._names()})"


def load_image(spec: ProtocolSpec, datasets: Sequence[Any]) -> Any:
    """The image ``spec.run`` gets, loaded from the datasets of one series.

    ``spec.load`` when given; else a :class:`pipelines.volume.CTVolume` for ``"ct-volume"`` and
    a :class:`pipelines.radiograph.Radiograph` of the first image (lowest Instance Number) for
    ``"radiograph"``.

    Raises
    ------
    InvalidInputError, UnsupportedInputError
        The series cannot be loaded as that kind of image.
    """
    if spec.load:
        return load_object(spec.load, what=f"image loader of protocol {spec.name!r}")(datasets)
    if not datasets:
        raise InvalidInputError(f"{spec.name}: the series holds no images; nothing to measure")
    if spec.input_kind == "ct-volume":
        from pipelines.volume import load_ct_volume

        return load_ct_volume(datasets)
    from pipelines.radiograph import load_projection_radiograph

    ordered = sorted(datasets, key=lambda d: int(d.get("InstanceNumber", 0) or 0))
    return load_projection_radiograph(ordered[0])


def run_protocol(
    name: str,
    datasets: Sequence[Any],
    params: Mapping[str, Any] | BaseModel | None = None,
    model: LearnedModel | None = None,
) -> PipelineResult:
    """Run protocol ``name`` on the datasets of one series.

    Checks the modality, validates ``params`` with the spec's parameter model, loads the image
    (:func:`load_image`), reads the :class:`~pipelines.protocol.PatientContext` from the
    headers, calls ``spec.run`` and fills ``source_datasets`` when the method left it empty.

    Parameters
    ----------
    name:
        Protocol name.
    datasets:
        The series' pydicom datasets with pixel data, any order.
    params:
        Protocol parameters from the settings (e.g. ``{"cutoff_set": "martin-2013"}``) or an
        instance of the spec's parameter model.
    model:
        A trained network for this protocol (loaded by :mod:`models`), or ``None`` for the
        protocol's reference method.

    Returns
    -------
    PipelineResult

    Raises
    ------
    UnsupportedInputError
        Unknown protocol, or input outside what it measures.
    ConfigError
        Invalid parameters.
    InvalidInputError
        Input that cannot be read, or of a modality the protocol does not measure.
    PipelineError
        The method failed on accepted input.
    """
    spec = get_protocol(name)
    modalities = {str(ds.get("Modality", "")) for ds in datasets}
    if not modalities <= set(spec.modalities):
        raise InvalidInputError(
            f"protocol {name!r} measures {'/'.join(spec.modalities)} images, but the series has "
            f"Modality {', '.join(sorted(modalities)) or '(missing)'}; check the routing rules"
        )
    parameters = validate_parameters(name, params)
    image = load_image(spec, datasets)
    context = PatientContext.from_headers(datasets)
    result = spec.run(image, parameters, context, model)
    if not result.source_datasets:
        sources = getattr(image, "datasets", None)
        result.source_datasets = list(sources) if sources else list(datasets)
    return result


__all__ = [
    "ENTRY_POINT_GROUP",
    "PROTOCOLS",
    "SpecObjects",
    "check_parameters",
    "declared_object",
    "discover",
    "get_protocol",
    "load_errors",
    "load_image",
    "protocols",
    "reload",
    "run_protocol",
    "spec_object",
    "validate_parameters",
]
