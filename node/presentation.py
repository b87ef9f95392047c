"""Measurements as people read them: names, units, precision, and "not measured: reason".

Every place a person reads a job's results (``ainode run``, ``ainode jobs show``, ``ainode demo``,
the dashboard's measurement panel) renders them with :func:`measurement_lines`, from one
description per protocol: the measurement table of its protocol spec
(``pipelines.registry.get_protocol(name).measurements``, rows of ``MeasurementRow(key, label,
unit, decimals)``). A protocol without a table gets every scalar result with a label and unit
derived from the key (``sat_area_cm2`` -> "Sat area", "cm²"). The machine form (``--json``, the
REST API) keeps the stored results unchanged.

Rules, so that no Python value reaches a reader: a number is shown with the row's decimals and
unit; ``True``/``False`` as "yes"/"no"; a missing value (``None``) as "not measured" with the
reason the method stored beside it (``<key>_reason``, or the reason of a shorter key prefix, e.g.
``smi_reason`` for ``smi_cm2_per_m2``); lists as comma-separated values; mappings are not shown
(they are detail for ``--json``).
"""

from __future__ import annotations

import math
import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

NOT_MEASURED = "not measured"
"""Shown instead of a missing value (followed by ": <reason>" when the method gave one)."""

_UNIT_SUFFIXES: tuple[tuple[str, str], ...] = (
    ("_cm2_per_m2", "cm²/m²"),
    ("_kg_per_m2", "kg/m²"),
    ("_cm2", "cm²"),
    ("_cm3", "cm³"),
    ("_mm2", "mm²"),
    ("_mm3", "mm³"),
    ("_ml", "mL"),
    ("_mm", "mm"),
    ("_cm", "cm"),
    ("_m", "m"),
    ("_kg", "kg"),
    ("_hu", "HU"),
    ("_deg", "°"),
    ("_pct", "%"),
    ("_percent", "%"),
    ("_s", "s"),
)
# Keys that are bookkeeping, not measurements: never shown as a line in the fallback form.
_BOOKKEEPING = frozenset(
    {"protocol", "algorithm", "algorithm_version", "validation_status", "disclaimer"}
)


@dataclass(frozen=True)
class MeasurementLine:
    """One line of a human measurement listing.

    Attributes
    ----------
    key : str
        The result's key in the stored (machine) results, for ``--json`` readers and tests.
    label : str
        Human name, e.g. "Skeletal muscle area (SMA)".
    text : str
        The value with its unit ("152.3 cm²"), "yes"/"no", or "not measured: <reason>".
    measured : bool
        False when the value is missing and ``text`` says why.
    """

    key: str
    label: str
    text: str
    measured: bool


def measurement_rows(protocol: str | None) -> tuple[Any, ...]:
    """The measurement table of ``protocol``'s spec, or ``()`` when it has none or is unknown.

    Parameters
    ----------
    protocol : str or None
        Protocol name as in the job database (e.g. ``"l3-body-composition"``).

    Returns
    -------
    tuple
        Rows with ``key``, ``label``, ``unit`` and ``decimals`` (``pipelines.protocol.MeasurementRow``).
    """
    if not protocol:
        return ()
    try:
        from pipelines.registry import get_protocol

        spec = get_protocol(protocol)
    except Exception:  # an unknown or broken plug-in protocol: fall back to the keys
        return ()
    return tuple(getattr(spec, "measurements", ()) or ())


def measurement_lines(
    protocol: str | None, results: Mapping[str, Any] | None
) -> list[MeasurementLine]:
    """Human lines for a job's stored results, in the protocol table's order.

    Parameters
    ----------
    protocol : str or None
        Protocol name; its spec's measurement table decides labels, units, decimals and order.
    results : mapping or None
        The stored results (``PipelineResult.summary`` as JSON).

    Returns
    -------
    list of MeasurementLine
        One line per table row present in ``results`` (a row whose value is missing but has a
        stored reason is shown as "not measured: reason"); without a table, one line per
        scalar or list result except bookkeeping keys (protocol, algorithm, disclaimer).
    """
    if not results:
        return []
    rows = measurement_rows(protocol)
    if rows:
        return _lines_from_table(rows, results)
    return _lines_from_keys(results)


def _lines_from_table(rows: Iterable[Any], results: Mapping[str, Any]) -> list[MeasurementLine]:
    lines = []
    for row in rows:
        found, value = _lookup(results, row.key)
        reason = _reason_for(results, row.key)
        if not found and reason is None:
            continue  # not produced by this run (e.g. a structure of a volume-only table)
        lines.append(_line(row.key, row.label, value, row.unit, int(row.decimals), reason))
    return lines


def _lines_from_keys(results: Mapping[str, Any]) -> list[MeasurementLine]:
    lines = []
    for key, value in results.items():
        if key in _BOOKKEEPING or key.endswith("_reason") or isinstance(value, Mapping):
            continue
        label, unit = label_and_unit(key)
        lines.append(_line(key, label, value, unit, 2, _reason_for(results, key)))
    return lines


def _line(
    key: str, label: str, value: Any, unit: str, decimals: int, reason: str | None
) -> MeasurementLine:
    if value is None or (isinstance(value, float) and math.isnan(value)):
        text = f"{NOT_MEASURED}: {reason}" if reason else NOT_MEASURED
        return MeasurementLine(key, label, text, measured=False)
    text = format_value(value, unit, decimals)
    if isinstance(value, bool) and reason:
        text = f"{text} ({reason})"
    return MeasurementLine(key, label, text, measured=True)


def format_value(value: Any, unit: str = "", decimals: int = 2) -> str:
    """One value as a person reads it.

    Parameters
    ----------
    value : Any
        A JSON value: number, bool, string, list, mapping or ``None``.
    unit : str
        Human unit appended after a space to numbers ("cm²", "HU"; "" for ratios and counts;
        "%" is appended without a space).
    decimals : int
        Digits after the decimal point for non-integer numbers.

    Returns
    -------
    str
        "152.3 cm²", "yes"/"no", "a, b", "–" for ``None``; never a Python repr.
    """
    if value is None:
        return "–"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int):
        number = f"{value:,}".replace(",", " ") if abs(value) >= 10000 else str(value)
    elif isinstance(value, float):
        if math.isnan(value) or math.isinf(value):
            return "–"
        number = f"{value:.{max(decimals, 0)}f}"
    elif isinstance(value, Mapping):
        return "; ".join(f"{_words(str(k))} {format_value(v, unit, decimals)}" for k, v in value.items())
    elif isinstance(value, Sequence) and not isinstance(value, str):
        return ", ".join(format_value(v, "", decimals) for v in value) + (f" {unit}" if unit and value else "")
    else:
        return str(value)
    if not unit:
        return number
    return f"{number}{unit}" if unit in ("%", "°") else f"{number} {unit}"


def label_and_unit(key: str) -> tuple[str, str]:
    """A human label and unit derived from a result key (for protocols without a table).

    ``"sat_area_cm2"`` -> ``("Sat area", "cm²")``; ``"low_smi"`` -> ``("Low smi", "")``.
    """
    unit = ""
    stem = key
    for suffix, human in _UNIT_SUFFIXES:
        if key.endswith(suffix) and len(key) > len(suffix):
            stem, unit = key[: -len(suffix)], human
            break
    return _words(stem).capitalize(), unit


def _words(key: str) -> str:
    return re.sub(r"[_.]+", " ", key).strip()


def _lookup(results: Mapping[str, Any], key: str) -> tuple[bool, Any]:
    """``(found, value)`` of ``key`` in ``results``; dotted keys walk nested mappings."""
    if key in results:
        return True, results[key]
    node: Any = results
    for part in key.split("."):
        if not isinstance(node, Mapping) or part not in node:
            return False, None
        node = node[part]
    return True, node


def _reason_for(results: Mapping[str, Any], key: str) -> str | None:
    """The stored reason of ``key``: ``<key>_reason``, else that of the longest key prefix."""
    parts = key.split("_")
    for end in range(len(parts), 0, -1):
        found, reason = _lookup(results, "_".join(parts[:end]) + "_reason")
        if found and isinstance(reason, str) and reason:
            return reason
    return None


def render_lines(lines: Iterable[MeasurementLine], indent: str = "  ", width: int = 0) -> list[str]:
    """Aligned text lines ``label  value`` for a terminal.

    Parameters
    ----------
    lines : iterable of MeasurementLine
    indent : str
        Prefix of every line.
    width : int
        Label column width; 0 = the longest label.
    """
    lines = list(lines)
    column = width or max((len(line.label) for line in lines), default=0)
    return [f"{indent}{line.label:<{column}}  {line.text}" for line in lines]


def dash(value: Any, decimals: int = 2) -> str:
    """``value`` for a table cell: "–" for ``None`` or "", else :func:`format_value`."""
    if value is None or value == "":
        return "–"
    return format_value(value, decimals=decimals)


__all__ = [
    "NOT_MEASURED",
    "MeasurementLine",
    "dash",
    "format_value",
    "label_and_unit",
    "measurement_lines",
    "measurement_rows",
    "render_lines",
]
