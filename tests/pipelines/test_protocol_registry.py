"""The protocol registry: entry-point discovery, broken plug-ins, typed parameters, measurement
tables (issue 13 items 1-2).

Discovery runs on the real installed metadata (the root pyproject.toml registers the four shipped
protocols under ``ainode.protocols``); a broken plug-in is a real distribution on ``sys.path``
whose entry points fail. The measurement tables are checked against real phantom runs through
:func:`pipelines.registry.run_protocol`.
"""

from __future__ import annotations

import logging
import numbers
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any

import pytest

from ainode_core.errors import ConfigError, UnsupportedInputError
from pipelines import registry
from pipelines.protocol import RULE_STAGES, PatientContext, ProtocolSpec
from pipelines.registry import ENTRY_POINT_GROUP, check_parameters, discover, protocols
from pipelines.volume import read_instances

SHIPPED = {"l3-body-composition", "chest-respiratory-muscle", "neonatal-rds", "brain-gwr"}


# --- discovery -----------------------------------------------------------------------------------


def test_the_four_shipped_protocols_are_entry_points() -> None:
    names = {e.name for e in entry_points(group=ENTRY_POINT_GROUP)}
    assert SHIPPED <= names
    found = protocols()
    assert SHIPPED <= set(found)
    for name in SHIPPED:
        spec = found[name]
        assert isinstance(spec, ProtocolSpec) and spec.name == name
        assert spec.modalities and spec.title and spec.version
        for rule in spec.default_rules:
            assert rule["stage"] in RULE_STAGES
            assert rule["protocol"] in (None, name)


def _broken_distribution(site: Path) -> None:
    """A distribution with three bad plug-ins: one whose module does not exist, one whose object
    is not a ProtocolSpec, and one that claims a name already taken."""
    (site / "ainode_broken_plugin.py").write_text("SPEC = 'not a spec'\n")
    info = site / "ainode_broken_plugin-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(
        "Metadata-Version: 2.1\nName: ainode-broken-plugin\nVersion: 0.1\n"
    )
    (info / "entry_points.txt").write_text(
        f"[{ENTRY_POINT_GROUP}]\n"
        "missing-module = ainode_no_such_module:SPEC\n"
        "not-a-spec = ainode_broken_plugin:SPEC\n"
        "brain-gwr = ainode_broken_plugin:SPEC\n"
    )


def test_a_broken_plugin_is_skipped_with_an_error_naming_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    _broken_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    with caplog.at_level(logging.ERROR, logger="pipelines.registry"):
        found, errors = discover()
    assert SHIPPED <= set(found)  # the others still load
    assert "missing-module" not in found and "not-a-spec" not in found
    assert found["brain-gwr"].title != "not a spec"
    by_name = {label.split(" = ")[0]: reason for label, reason in errors.items()}
    assert "ModuleNotFoundError" in by_name["missing-module"]
    assert "not a pipelines.protocol.ProtocolSpec" in by_name["not-a-spec"]
    logged = [r.getMessage() for r in caplog.records if r.levelno == logging.ERROR]
    assert any("missing-module = ainode_no_such_module:SPEC" in m for m in logged)
    assert any("not-a-spec = ainode_broken_plugin:SPEC" in m for m in logged)


def test_the_registry_reports_plugins_that_failed_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _broken_distribution(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry.reload()
        assert any(label.startswith("not-a-spec") for label in registry.load_errors())
        with pytest.raises(UnsupportedInputError, match="failed to load: .*not-a-spec"):
            registry.get_protocol("not-a-spec")
    finally:
        monkeypatch.undo()
        registry.reload()
    # Uninstalled again: rediscovery forgets it.
    assert not any(label.startswith("not-a-spec") for label in registry.load_errors())


def test_check_config_names_a_plugin_that_failed_to_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    from node.cli import main

    _broken_distribution(tmp_path)
    config = tmp_path / "ainode.yaml"
    config.write_text("port: 11112\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    try:
        registry.reload()
        assert main(["check-config", str(config)]) == 0  # the node would still serve
    finally:
        monkeypatch.undo()
        registry.reload()
    err = capsys.readouterr().err
    assert "protocol plug-in not-a-spec = ainode_broken_plugin:SPEC is not loaded" in err
    assert "missing-module = ainode_no_such_module:SPEC" in err


# --- parameters ----------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("protocol", "params", "name"),
    [
        ("l3-body-composition", {"skin_mm": "abc"}, "skin_mm"),
        ("l3-body-composition", {"skin_mm": True}, "skin_mm"),
        ("l3-body-composition", {"skin_mm": -1.0}, "skin_mm"),
        ("l3-body-composition", {"muscle_hu": [150, -29]}, "muscle_hu"),
        ("l3-body-composition", {"muscle_hu": [-29]}, "muscle_hu"),
        ("l3-body-composition", {"cutoff_set": "baumgartner"}, "cut-off set"),
        ("chest-respiratory-muscle", {"include_diaphragm": "no"}, "include_diaphragm"),
        ("chest-respiratory-muscle", {"include_diaphragm": 1}, "include_diaphragm"),
        ("chest-respiratory-muscle", {"min_lung_fraction": 1.5}, "min_lung_fraction"),
        ("neonatal-rds", {"working_size_px": 32}, "working_size_px"),
        ("neonatal-rds", {"working_size_px": 512.5}, "working_size_px"),
        ("neonatal-rds", {"require_chest_pixels": "yes"}, "require_chest_pixels"),
        ("brain-gwr", {"gwr_cutoff": 12}, "gwr_cutoff"),
        ("brain-gwr", {"registration_iterations": "many"}, "registration_iterations"),
        ("brain-gwr", {"gwr_cut_off": 1.2}, "gwr_cut_off"),
    ],
)
def test_wrong_types_and_out_of_range_values_are_refused_with_the_name(
    protocol: str, params: dict[str, Any], name: str
) -> None:
    with pytest.raises(ConfigError, match=name) as info:
        check_parameters(protocol, params)
    assert protocol in str(info.value)


def test_valid_values_are_typed_by_the_model() -> None:
    spec = protocols()["chest-respiratory-muscle"]
    params = registry.validate_parameters(
        spec.name, {"include_diaphragm": False, "min_slab_mm": 30, "muscle_hu": [-30, 150]}
    )
    assert isinstance(params, spec.parameters)
    assert params.include_diaphragm is False  # type: ignore[attr-defined]
    assert params.min_slab_mm == 30.0 and isinstance(params.min_slab_mm, float)  # type: ignore[attr-defined]
    assert params.muscle_hu == (-30.0, 150.0)  # type: ignore[attr-defined]
    # Environment variables are text: "false" and "30" are read; "no" is not.
    assert registry.validate_parameters(
        spec.name, {"include_diaphragm": "false", "min_slab_mm": "30"}
    ).include_diaphragm is False  # type: ignore[attr-defined]


def test_node_settings_validate_protocol_sections_with_the_spec_models(tmp_path: Path) -> None:
    from node.config import Settings, load_settings

    config = tmp_path / "node.yaml"
    config.write_text("chest:\n  include_diaphragm: 'no'\n")
    with pytest.raises(ConfigError, match="chest.include_diaphragm"):
        load_settings(config)
    config.write_text("l3:\n  cutoff_set: baumgartner\n")
    with pytest.raises(ConfigError, match="cut-off set"):
        load_settings(config)
    settings = Settings(protocol_parameters={"l3-body-composition": {"skin_mm": "abc"}})
    with pytest.raises(ConfigError, match="skin_mm"):
        settings.check_protocol_parameters()
    config.write_text("models:\n  l3_body_composition: reference\n  no_such_protocol: reference\n")
    with pytest.raises(ConfigError, match="no_such_protocol"):
        load_settings(config)


# --- patient context -----------------------------------------------------------------------------


def test_patient_context_reads_headers_by_the_one_rule() -> None:
    from pydicom.dataset import Dataset

    first, second = Dataset(), Dataset()
    first.PatientSize, first.PatientWeight, first.PatientSex = "0", "-3", "X"
    first.PatientAge, first.KVP = "065Y", "120"
    second.PatientSize, second.PatientWeight, second.PatientSex = "1.8", "80", "F"
    second.ConvolutionKernel = ["FC18", "H"]
    second.ContrastBolusAgent = "IOPAMIDOL"
    context = PatientContext.from_headers([first, second])
    assert context == PatientContext(
        height_m=1.8, weight_kg=80.0, sex="F", age_years=65.0, kvp=120.0, kernel="FC18\\H",
        contrast=True,
    )
    assert PatientContext.from_headers([]) == PatientContext()


# --- measurement tables --------------------------------------------------------------------------


def _abdomen(tmp_path: Path) -> list[Any]:
    from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series

    write_phantom_series(make_abdomen_phantom(seed=1), tmp_path)
    return read_instances([tmp_path]).datasets


def _chest(tmp_path: Path) -> list[Any]:
    from training.phantoms.chest import make_chest_phantom, write_chest_series

    write_chest_series(make_chest_phantom(seed=1), tmp_path)
    return read_instances([tmp_path]).datasets


def _radiograph(tmp_path: Path) -> list[Any]:
    from training.phantoms.chest_radiograph import make_chest_radiograph, phantom_to_dataset

    return [phantom_to_dataset(make_chest_radiograph(seed=1))]


def _head(tmp_path: Path) -> list[Any]:
    from training.phantoms.head import make_head_phantom, write_head_series

    write_head_series(make_head_phantom(seed=3), tmp_path)
    return read_instances([tmp_path]).datasets


def _numeric_keys(summary: dict[str, Any]) -> set[str]:
    return {
        key for key, value in summary.items()
        if isinstance(value, numbers.Number) and not isinstance(value, bool)
    }


@pytest.mark.slow
@pytest.mark.parametrize(
    ("protocol", "make"),
    [
        ("l3-body-composition", _abdomen),
        ("chest-respiratory-muscle", _chest),
        ("neonatal-rds", _radiograph),
        ("brain-gwr", _head),
    ],
)
def test_measurement_table_covers_every_summary_value_and_measurement_of_a_phantom_run(
    protocol: str, make: Any, tmp_path: Path
) -> None:
    spec = protocols()[protocol]
    datasets = make(tmp_path)
    result = registry.run_protocol(protocol, datasets, {})
    assert result.protocol == protocol and result.source_datasets
    keys = _numeric_keys(result.summary)
    assert keys, "the phantom run produced no numeric summary value"
    rows = {row.key: row for row in spec.measurements}
    assert len(rows) == len(spec.measurements), "duplicate keys in the measurement table"
    missing = sorted(keys - set(rows))
    assert not missing, f"{protocol}: summary keys without a measurement row: {missing}"
    # Every measurement the SR carries is named by the table as well.
    unnamed = sorted({m.key for m in result.measurements} - set(rows))
    assert not unnamed, f"{protocol}: measurements without a row: {unnamed}"
    for row in spec.measurements:
        assert row.label and row.decimals >= 0
