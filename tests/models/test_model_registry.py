"""Model registry: discovery, sha256 verification, installation and selection."""

from __future__ import annotations

import json
import tarfile
from pathlib import Path

import pytest

from models.registry import (
    discover,
    get_model,
    install_model,
    load_entry,
    select_model,
    sha256_file,
    verify_model,
)
from node.cli import main
from pipelines.errors import ModelError


def _tamper(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[-1] ^= 0x01  # one bit of the last tensor value
    path.write_bytes(bytes(data))


def test_shipped_l3_model_is_discovered_and_verifies(shipped_l3_dir: Path) -> None:
    found = discover(None, verify=True)
    names = {e.name: e for e in found.entries}
    assert "ainode-l3-phantom" in names
    entry = names["ainode-l3-phantom"]
    assert entry.origin == "shipped" and entry.path == shipped_l3_dir
    for spec in entry.card.networks:
        assert sha256_file(shipped_l3_dir / spec.weights) == spec.sha256
        assert (shipped_l3_dir / spec.weights).stat().st_size < 4_000_000  # "a few MB at most"


def test_tampered_weights_are_refused(l3_model_copy: Path, tmp_path: Path) -> None:
    entry = load_entry(l3_model_copy)  # verifies: the untouched copy is fine
    _tamper(l3_model_copy / "tissue.safetensors")
    with pytest.raises(ModelError, match="sha256 .* but the card says") as info:
        verify_model(entry)
    assert "refused" in str(info.value)
    with pytest.raises(ModelError, match="sha256"):
        install_model(l3_model_copy, tmp_path / "installed")
    assert not (tmp_path / "installed" / "l3-copy").exists()


def test_install_verify_and_cli_fail_on_a_file_tampered_after_install(
    l3_model_copy: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data_dir = tmp_path / "data"
    assert main(["models", "install", str(l3_model_copy), "--data-dir", str(data_dir)]) == 0
    assert main(["models", "verify", "--data-dir", str(data_dir)]) == 0
    out = capsys.readouterr().out
    assert "ok      l3-copy" in out and "ok      ainode-l3-phantom" in out
    assert main(["models", "list", "--data-dir", str(data_dir), "--json"]) == 0
    listed = json.loads(capsys.readouterr().out)
    assert {m["name"]: m["origin"] for m in listed["models"]}["l3-copy"] == "installed"

    _tamper(data_dir / "models" / "l3-copy" / "level.safetensors")
    assert main(["models", "verify", "--data-dir", str(data_dir)]) == 1
    out = capsys.readouterr().out
    assert "FAILED  l3-copy" in out and "level.safetensors has sha256" in out
    with pytest.raises(ModelError, match="sha256"):
        get_model("l3-copy", data_dir / "models")
    with pytest.raises(ModelError, match="sha256"):
        select_model("l3-body-composition", "l3-copy", data_dir / "models")


def test_install_from_archive_copies_only_card_and_weights(l3_model_copy: Path, tmp_path: Path) -> None:
    (l3_model_copy / "evil.py").write_text("raise SystemExit('never run')\n")
    (l3_model_copy / "README.md").write_text("notes\n")
    archive = tmp_path / "model.tar.gz"
    with tarfile.open(archive, "w:gz") as tf:
        tf.add(l3_model_copy, arcname="l3-copy")
    entry = install_model(archive, tmp_path / "installed")
    files = sorted(p.name for p in entry.path.iterdir())
    assert files == ["README.md", "card.json", "level.safetensors", "tissue.safetensors"]
    with pytest.raises(ModelError, match="already installed"):
        install_model(archive, tmp_path / "installed")
    assert install_model(archive, tmp_path / "installed", replace=True).name == "l3-copy"


def test_archive_with_a_link_is_refused(l3_model_copy: Path, tmp_path: Path) -> None:
    (l3_model_copy / "link.md").symlink_to("/etc/passwd")
    archive = tmp_path / "model.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(l3_model_copy, arcname="m")
    with pytest.raises(ModelError, match="not a plain file"):
        install_model(archive, tmp_path / "installed")


def test_shipped_name_cannot_be_installed_again(shipped_l3_dir: Path, tmp_path: Path) -> None:
    with pytest.raises(ModelError, match="belongs to a shipped model"):
        install_model(shipped_l3_dir, tmp_path / "installed")


def test_selection_reference_named_and_best_validated(l3_model_copy: Path, tmp_path: Path) -> None:
    installed = tmp_path / "installed"
    assert select_model("l3-body-composition", "reference", installed) is None
    # Only phantom-only models: best-validated never picks them -> reference method.
    install_model(l3_model_copy, installed)
    assert select_model("l3-body-composition", "best-validated", installed) is None
    named = select_model("l3-body-composition", "ainode-l3-phantom", installed)
    assert named is not None and named.name == "ainode-l3-phantom"
    with pytest.raises(ModelError, match="is for protocol 'l3-body-composition', not 'brain-gwr'"):
        select_model("brain-gwr", "ainode-l3-phantom", installed)
    with pytest.raises(ModelError, match="no usable model named 'nope'"):
        select_model("l3-body-composition", "nope", installed)
    # Two "research" models: the better primary metric wins.
    for name, dice in (("l3-research-a", 0.80), ("l3-research-b", 0.90)):
        card = json.loads((l3_model_copy / "card.json").read_text())
        card.update(name=name, validation_status="research")
        card["evaluation"]["metrics"]["dice_sma_mean"] = dice
        (l3_model_copy / "card.json").write_text(json.dumps(card))
        install_model(l3_model_copy, installed)
    best = select_model("l3-body-composition", "best-validated", installed)
    assert best is not None and best.name == "l3-research-b"
