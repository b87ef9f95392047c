"""Key-image text from the measurement tables (pipelines.measurement_text): units in ASCII,
precision and names from the rows, and the shipped methods' key images showing their values the
way their tables say."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from pipelines import registry
from pipelines.measurement_tables import brain_gwr, chest_respiratory_muscle
from pipelines.measurement_tables import l3_body_composition, neonatal_rds
from pipelines.measurement_text import (
    ascii_unit,
    measurement_text,
    measurements_line,
    number_text,
    short_name,
    table_rows,
    value_text,
)
from pipelines.protocol import MeasurementRow
from pipelines.registry import protocols
from pipelines.volume import read_instances

TABLES = {
    "l3-body-composition": l3_body_composition.MEASUREMENTS,
    "chest-respiratory-muscle": chest_respiratory_muscle.MEASUREMENTS,
    "neonatal-rds": neonatal_rds.MEASUREMENTS,
    "brain-gwr": brain_gwr.MEASUREMENTS,
}


def test_units_are_written_in_ascii_on_the_key_image() -> None:
    assert ascii_unit("cm²") == "cm2"
    assert ascii_unit("cm²/m²") == "cm2/m2"
    assert ascii_unit("mm³") == "mm3"
    assert ascii_unit("°") == "deg"
    assert ascii_unit("HU") == "HU"
    assert ascii_unit("") == ""
    for table in TABLES.values():
        for row in table:
            ascii_unit(row.unit).encode("ascii")  # raises if not ASCII


def test_value_name_and_precision_come_from_the_row() -> None:
    row = MeasurementRow("sma_cm2", "Skeletal muscle area (SMA)", "cm²", 1, short="SMA")
    assert measurement_text(row, 123.456) == "SMA 123.5 cm2"
    assert measurement_text(row, 123.456, sep=" = ") == "SMA = 123.5 cm2"
    assert value_text(row, None) == "n/a"
    assert number_text(MeasurementRow("r", "Ratio", "", 3), 1.23456) == "1.235"
    assert short_name(MeasurementRow("k", "Tube voltage", "kV", 0)) == "Tube voltage"
    table = (row, MeasurementRow("vat", "VAT area", "cm²", 0, short="VAT"))
    assert measurements_line(table, {"sma_cm2": 1.0, "vat": 2.6}, ("sma_cm2", "vat")) == (
        "SMA 1.0 cm2, VAT 3 cm2")
    assert measurements_line(table, {"sma_cm2": 1.0, "vat": None}, ("sma_cm2", "vat")) == (
        "SMA 1.0 cm2")
    assert measurements_line(table, {"sma_cm2": 1.0}, ("sma_cm2", "vat"),
                             skip_missing=False) == "SMA 1.0 cm2, VAT n/a"
    with pytest.raises(KeyError, match="no row 'smi'"):
        measurements_line(table, {"smi": 1.0}, ("smi",))


def test_the_specs_publish_the_tables_the_methods_read() -> None:
    for name, table in TABLES.items():
        assert protocols()[name].measurements is table


def _abdomen(tmp_path: Path) -> list[Any]:
    from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series

    write_phantom_series(make_abdomen_phantom(seed=1), tmp_path)
    return read_instances([tmp_path]).datasets


def _radiograph(tmp_path: Path) -> list[Any]:
    from training.phantoms.chest_radiograph import make_chest_radiograph, phantom_to_dataset

    return [phantom_to_dataset(make_chest_radiograph(seed=1))]


@pytest.mark.parametrize(
    ("protocol", "make", "keys"),
    [
        ("l3-body-composition", _abdomen,
         ("sma_cm2", "muscle_mean_hu", "imat_area_cm2", "sat_area_cm2", "vat_area_cm2")),
        ("neonatal-rds", _radiograph,
         ("right_lung_area_cm2", "left_lung_area_cm2", "left_right_area_ratio",
          "lung_opacity_index")),
    ],
)
def test_key_image_shows_the_summary_values_as_the_table_says(
    protocol: str, make: Any, keys: tuple[str, ...], tmp_path: Path
) -> None:
    result = registry.run_protocol(protocol, make(tmp_path), {})
    assert result.key_image is not None
    text = "\n".join(result.key_image.text_lines)
    rows = table_rows(protocols()[protocol].measurements)
    for key in keys:
        value = result.summary[key]
        assert value is not None, key
        row = rows[key]
        shown = _shown(text, short_name(row), ascii_unit(row.unit))
        assert shown, (key, text)
        # The table's precision and unit; the value is the summary's (which may keep two
        # decimals where the text rounded the unrounded one: within one shown digit).
        assert all(decimals == row.decimals for _, decimals in shown), (key, text)
        assert any(abs(number - value) <= 10.0 ** -row.decimals for number, _ in shown), (
            key, value, text)


def _shown(text: str, name: str, unit: str) -> list[tuple[float, int]]:
    """(number, decimals) of each ``NAME [=] NUMBER [UNIT]`` in ``text``."""
    import re

    pattern = (re.escape(name) + r"\s+(?:=\s+)?(-?\d+)(?:\.(\d+))?"
               + (r"\s+" + re.escape(unit) + r"\b" if unit else r"(?![\d.])"))
    return [(float(f"{whole}.{frac or 0}"), len(frac)) for whole, frac in re.findall(pattern, text)]
