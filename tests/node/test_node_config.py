"""Settings: YAML < environment < flags, destination parsing, errors that name the field."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import Destination, load_settings, settings_reference
from pipelines.errors import ConfigError

ROOT = Path(__file__).resolve().parents[2]


def test_precedence_flags_over_environment_over_yaml(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    config = tmp_path / "node.yaml"
    config.write_text("port: 2000\nae_title: FROMYAML\nl3:\n  cutoff_set: prado-2008\n")
    assert load_settings(config).port == 2000
    monkeypatch.setenv("AINODE_PORT", "3000")
    monkeypatch.setenv("AINODE_L3__CUTOFF_SET", "martin-2013")
    settings = load_settings(config)
    assert (settings.port, settings.ae_title, settings.l3.cutoff_set) == (3000, "FROMYAML", "martin-2013")
    assert load_settings(config, port=4000).port == 4000


def test_destinations_from_environment_comma_or_json(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AINODE_DESTINATIONS", "PACS@10.0.0.5:104,ARCHIVE@archive.local:11112")
    assert [d.name for d in load_settings().destinations] == [
        "PACS@10.0.0.5:104", "ARCHIVE@archive.local:11112"
    ]
    monkeypatch.setenv("AINODE_DESTINATIONS", '[{"ae_title": "PACS", "host": "h", "port": 104}]')
    assert [d.name for d in load_settings().destinations] == ["PACS@h:104"]


@pytest.mark.parametrize("bad", ["PACS@host", "@host:104", "A" * 17 + "@h:104", "PACS@h:999999"])
def test_invalid_destination_is_a_config_error(bad: str) -> None:
    with pytest.raises((ConfigError, ValueError)):
        Destination.parse(bad)
    with pytest.raises(ConfigError, match="destinations"):
        load_settings(destinations=[bad])


def test_missing_or_invalid_files_are_reported(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "missing.yaml")
    broken = tmp_path / "broken.yaml"
    broken.write_text("port: [1, 2\n")
    with pytest.raises(ConfigError, match="not valid YAML"):
        load_settings(broken)
    unknown = tmp_path / "unknown.yaml"
    unknown.write_text("prot: 104\n")
    with pytest.raises(ConfigError, match="prot"):
        load_settings(unknown)
    monkeypatch.setenv("AINODE_CONFIG", str(tmp_path / "gone.yaml"))
    with pytest.raises(ConfigError, match="AINODE_CONFIG"):
        load_settings()


def test_configuration_reference_in_the_docs_is_current() -> None:
    doc = (ROOT / "docs" / "configuration.md").read_text()
    assert settings_reference() in doc, "regenerate with `ainode check-config --reference`"


def test_shipped_example_configuration_is_valid() -> None:
    settings = load_settings(ROOT / "deploy" / "ainode.example.yaml")
    assert settings.destinations


def test_protocol_parameters_reach_the_pipelines_and_are_checked() -> None:
    """Typed protocol settings and protocol_parameters become pipeline parameters; unknown
    protocols or parameter names are refused before anything runs."""
    from node.config import Settings
    from pipelines.errors import ConfigError

    settings = Settings(
        brain_gwr={"gwr_cutoff": 1.2},
        chest={"include_diaphragm": False},
        protocol_parameters={"chest-respiratory-muscle": {"min_slab_mm": 30.0}},
    )
    settings.check_protocol_parameters()
    assert settings.protocol_params("brain-gwr")["gwr_cutoff"] == 1.2
    assert settings.protocol_params("chest-respiratory-muscle") == {
        "include_diaphragm": False,
        "min_slab_mm": 30.0,
    }
    with pytest.raises(ConfigError, match="unknown protocol"):
        Settings(protocol_parameters={"brain-gwr-v2": {}}).check_protocol_parameters()
    with pytest.raises(ConfigError, match="min_slab"):
        Settings(
            protocol_parameters={"chest-respiratory-muscle": {"min_slab": 30.0}}
        ).check_protocol_parameters()


def test_check_config_hides_the_broker_password(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from node.cli import main

    config = tmp_path / "ainode.yaml"
    config.write_text("celery:\n  broker_url: amqp://ainode:s3cret@rabbit:5672//\n")
    assert main(["check-config", str(config)]) == 0
    assert "s3cret" not in capsys.readouterr().out
    assert main(["check-config", "--show", str(config)]) == 0
    out = capsys.readouterr().out
    assert "s3cret" not in out and "amqp://ainode:***@rabbit" in out
