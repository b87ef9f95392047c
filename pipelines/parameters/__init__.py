"""Typed protocol parameters: one pydantic base class and the one place that reports errors.

Every protocol's parameters are a frozen pydantic model derived from
:class:`ProtocolParameters` (``extra="forbid"``), with bounds as ``Field`` constraints: the
single source of names, types and bounds, for the node's YAML as for code. Types are checked
so that a mistake is refused, never silently converted:

- numbers (:data:`Number`, :data:`Integer`) accept numbers, and text that reads as a number (the
  values of environment variables are text); other text (``{"skin_mm": "abc"}``) and booleans
  are refused; an :data:`Integer` also refuses fractions;
- booleans (:data:`Flag`) accept ``true``/``false`` and the text ``"true"``/``"false"`` (any
  case) only: ``"no"``, ``"yes"``, ``"off"``, ``0`` and ``1`` are refused rather than read as
  truthy or falsy (``{"include_diaphragm": "no"}`` is an error naming the parameter);
- pairs (:data:`Pair`, :data:`HUBand`) accept a YAML list of two numbers.

:func:`parameters_from_mapping` turns a plain mapping (``Settings.protocol_params``) into an
instance and reports every problem as :class:`~ainode_core.errors.ConfigError` naming the
protocol and the parameter.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Annotated, Any, ClassVar, TypeVar

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from ainode_core.errors import ConfigError, PipelineError

T = TypeVar("T", bound=BaseModel)

def _number(value: Any) -> Any:
    if isinstance(value, bool):
        raise ValueError("expected a number, got a boolean")
    if isinstance(value, (int, float)):
        return float(value)
    if isinstance(value, str):
        try:
            number = float(value.strip())
        except ValueError:
            raise ValueError(f"expected a number, got the text {value!r}") from None
        if math.isnan(number):
            raise ValueError("expected a number, got NaN")
        return number
    raise ValueError(f"expected a number, got {type(value).__name__}")


def _integer(value: Any) -> Any:
    number = _number(value)
    if not float(number).is_integer():
        raise ValueError(f"expected a whole number, got {value!r}")
    return int(number)


def _flag(value: Any) -> Any:
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.strip().lower() in ("true", "false"):
        return value.strip().lower() == "true"
    raise ValueError(f"expected true or false, got {value!r}")


#: A number parameter (see the module docstring for what is accepted).
Number = Annotated[float, BeforeValidator(_number)]
#: A whole-number parameter.
Integer = Annotated[int, BeforeValidator(_integer)]
#: A boolean parameter: ``true``/``false`` only.
Flag = Annotated[bool, BeforeValidator(_flag)]
#: A Hounsfield-unit value as a parameter (within the 12-bit CT range and its extensions).
HU = Annotated[Number, Field(ge=-2048.0, le=8191.0)]
#: A (lower, upper) pair of numbers; a YAML list of two numbers is accepted.
Pair = tuple[Number, Number]
#: A (lower, upper) Hounsfield-unit band.
HUBand = tuple[HU, HU]


def check_ordered(model: BaseModel, names: tuple[str, ...], protocol: str) -> None:
    """Refuse pairs of ``model`` whose lower value is not below the upper one.

    Raises
    ------
    ConfigError
        ``"<protocol> <name> = (low, high): lower must be < upper"``.
    """
    for name in names:
        lower, upper = getattr(model, name)
        if not float(lower) < float(upper):
            raise ConfigError(f"{protocol} {name} = {getattr(model, name)}: lower must be < upper")


class ProtocolParameters(BaseModel):
    """Base of every protocol's parameter model (frozen, unknown names refused).

    Subclasses set :attr:`protocol` (the protocol name, for messages) and declare their fields
    with ``Field(ge=..., le=..., description=...)``.
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    #: Protocol name, for messages.
    protocol: ClassVar[str] = "protocol"

    @classmethod
    def from_mapping(cls: type[T], params: Mapping[str, Any] | None) -> T:
        """Build from the node's settings mapping (see :func:`parameters_from_mapping`).

        Raises
        ------
        ConfigError
            Unknown names, wrong types or values out of range, naming the parameter.
        """
        return parameters_from_mapping(cls, params, getattr(cls, "protocol", cls.__name__))


def _describe(error: Mapping[str, Any]) -> str:
    location = ".".join(str(p) for p in error.get("loc", ()) if p != "__root__")
    message = str(error.get("msg", "invalid value"))
    if message.startswith("Value error, "):
        message = message[len("Value error, ") :]
    if error.get("type") == "missing":
        return f"{location}: required"
    if "input" in error and error.get("type") != "value_error" and "." not in location:
        return f"{location}: {message} (got {error['input']!r})" if location else message
    return f"{location}: {message}" if location else message


def parameters_from_mapping(
    cls: type[T],
    params: Mapping[str, Any] | None,
    protocol: str,
    pairs: tuple[str, ...] = (),
) -> T:
    """An instance of parameter model ``cls`` from ``params``.

    Parameters
    ----------
    cls:
        The protocol's parameter model (a :class:`ProtocolParameters` subclass).
    params:
        Names and values (``None`` or empty: the defaults).
    protocol:
        Protocol name, for the messages.
    pairs:
        Accepted for compatibility; pairs are declared by the model's field types.

    Returns
    -------
    T

    Raises
    ------
    ConfigError
        For names that are not fields of ``cls`` (the message lists the known ones), values of
        the wrong type (e.g. a string in a number field, ``"no"`` in a boolean field) and values
        out of range; the message names the protocol and each offending parameter.
    """
    del pairs
    values = dict(params or {})
    known = sorted(cls.model_fields)
    unknown = sorted(set(values) - set(known))
    if unknown:
        raise ConfigError(
            f"unknown {protocol} parameter(s) {unknown}; known: {', '.join(known)}"
        )
    try:
        return cls.model_validate(values)
    except ValidationError as exc:
        problems = "; ".join(_describe(error) for error in exc.errors())
        raise ConfigError(f"invalid {protocol} parameter {problems}") from exc
    except PipelineError as exc:
        raise ConfigError(f"invalid {protocol} parameters: {exc}") from exc


__all__ = ["HU", "Flag", "HUBand", "Integer", "Number", "Pair", "ProtocolParameters", "check_ordered", "parameters_from_mapping"]
