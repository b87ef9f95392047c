"""Key-image text of a measurement, generated from the protocol's measurement table.

Each measurement's name, unit and precision are written once, in the protocol's table of
:class:`pipelines.protocol.MeasurementRow` (``pipelines/measurement_tables/``); the methods'
key-image builders compose their text lines from those rows and the values of the result's
summary with the functions here, so that the key image, the summary listings and the SR show
one value the same way. The key image is drawn with a plain font, so its units are ASCII
(:func:`ascii_unit`: ``cm²`` -> ``cm2``).

This module imports only the standard library and :mod:`pipelines.protocol`.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipelines.protocol import MeasurementRow

#: Non-ASCII characters of the tables' units and their key-image spelling.
_ASCII = {"²": "2", "³": "3", "µ": "u", "μ": "u", "°": " deg", "·": "."}


def ascii_unit(unit: str) -> str:
    """The unit as written on the key image: ``"cm²/m²"`` -> ``"cm2/m2"``, ``"mm³"`` ->
    ``"mm3"``, ``"°"`` -> ``"deg"``; ASCII units unchanged.

    Parameters
    ----------
    unit:
        Human unit of a :class:`~pipelines.protocol.MeasurementRow`.

    Returns
    -------
    str
    """
    text = "".join(_ASCII.get(ch, ch) for ch in unit).strip()
    return text.encode("ascii", "replace").decode("ascii")


def short_name(row: MeasurementRow) -> str:
    """The row's name on the key image: ``row.short`` when set, else its label."""
    return row.short or row.label


def table_rows(table: Iterable[MeasurementRow]) -> dict[str, MeasurementRow]:
    """The rows of a measurement table by summary key."""
    return {row.key: row for row in table}


def number_text(row: MeasurementRow, value: float | None, *, missing: str = "n/a") -> str:
    """``value`` at the row's precision, without unit (``missing`` for ``None``)."""
    if value is None:
        return missing
    return f"{float(value):.{row.decimals}f}"


def value_text(row: MeasurementRow, value: float | None, *, missing: str = "n/a") -> str:
    """``value`` at the row's precision with its ASCII unit, e.g. ``"123.4 cm2"``; ``"%"``
    follows with a space like any unit (``"12.3 %"``)."""
    if value is None:
        return missing
    unit = ascii_unit(row.unit)
    number = number_text(row, value)
    return f"{number} {unit}" if unit else number


def measurement_text(row: MeasurementRow, value: float | None, *, sep: str = " ",
                     missing: str = "n/a") -> str:
    """Name, value and unit of one measurement, e.g. ``"SMA 123.4 cm2"`` (``sep`` between
    name and value, e.g. ``" = "``)."""
    return f"{short_name(row)}{sep}{value_text(row, value, missing=missing)}"


def measurements_line(table: Iterable[MeasurementRow], values: Mapping[str, Any],
                      keys: Iterable[str], *, joiner: str = ", ", skip_missing: bool = True,
                      sep: str = " ") -> str:
    """One key-image line of several measurements, e.g. ``"SAT 200.1 cm2, VAT 98.7 cm2"``.

    Parameters
    ----------
    table:
        The protocol's measurement table.
    values:
        Summary values by key (``None`` or absent: not measured).
    keys:
        Keys in the order shown.
    joiner:
        Text between measurements.
    skip_missing:
        Leave out measurements without a value (else they show ``n/a``).
    sep:
        Text between a measurement's name and its value.

    Returns
    -------
    str

    Raises
    ------
    KeyError
        A key the table does not name (a protocol's table must name every value it shows).
    """
    rows = table_rows(table)
    parts = []
    for key in keys:
        if key not in rows:
            raise KeyError(f"the measurement table has no row {key!r}")
        value = values.get(key)
        if value is None and skip_missing:
            continue
        parts.append(measurement_text(rows[key], value, sep=sep))
    return joiner.join(parts)


__all__ = [
    "ascii_unit",
    "measurement_text",
    "measurements_line",
    "number_text",
    "short_name",
    "table_rows",
    "value_text",
]
