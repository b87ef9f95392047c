"""Building a protocol's parameter dataclass from the node's settings mapping.

Every protocol's parameters are a frozen dataclass; the node passes them as a plain mapping
(``Settings.protocol_params``). :func:`parameters_from_mapping` is the one place that refuses
unknown names, turns YAML lists into the (low, high) pairs the dataclasses hold, and reports
invalid values as :class:`~pipelines.errors.ConfigError`.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping
from typing import Any, TypeVar

from pipelines.errors import ConfigError

T = TypeVar("T")


def parameters_from_mapping(
    cls: type[T],
    params: Mapping[str, Any] | None,
    protocol: str,
    pairs: tuple[str, ...] = (),
) -> T:
    """An instance of dataclass ``cls`` from ``params``.

    Parameters
    ----------
    cls:
        The protocol's parameter dataclass.
    params:
        Names and values (``None`` or empty: the defaults).
    protocol:
        Protocol name, for the messages.
    pairs:
        Field names holding a ``(low, high)`` pair of floats (e.g. a Hounsfield-unit band); a
        list from YAML is converted.

    Returns
    -------
    T

    Raises
    ------
    ConfigError
        For names that are not fields of ``cls`` (the message lists the known ones), a pair
        that is not two numbers, or values the dataclass refuses.
    """
    values = dict(params or {})
    known = {f.name for f in dataclasses.fields(cls)}  # type: ignore[arg-type]
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(
            f"unknown {protocol} parameter(s) {unknown}; known: {', '.join(sorted(known))}"
        )
    for name in pairs:
        if name in values:
            value = values[name]
            try:
                low, high = (float(v) for v in value)
            except (TypeError, ValueError):
                raise ConfigError(
                    f"{protocol} parameter {name} must be a pair (low, high), got {value!r}"
                ) from None
            values[name] = (low, high)
    try:
        return cls(**values)
    except TypeError as exc:
        raise ConfigError(f"invalid {protocol} parameters: {exc}") from exc
