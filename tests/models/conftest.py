"""Fixtures of the models/ and training/ tests: small phantoms, the shipped L3 model, CLI runner."""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from models.registry import ZOO_DIR

SHIPPED_L3 = "ainode-l3-phantom"


@pytest.fixture(autouse=True)
def _one_torch_thread() -> object:
    """One intra-op thread for these tests (restored after): small networks gain nothing from
    more, and on a shared 2-core CI runner extra threads mostly wait for each other."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def shipped_l3_dir() -> Path:
    """The shipped phantom-trained L3 model directory (must exist in the repository)."""
    path = ZOO_DIR / SHIPPED_L3
    assert (path / "card.json").is_file(), f"shipped model {path} is missing"
    return path


@pytest.fixture()
def l3_model_copy(shipped_l3_dir: Path, tmp_path: Path) -> Path:
    """A writable copy of the shipped L3 model (card + weights only), renamed so it can be
    installed beside the shipped one."""
    import json

    target = tmp_path / "l3-copy"
    target.mkdir()
    for item in shipped_l3_dir.iterdir():
        if item.suffix in (".json", ".safetensors"):
            shutil.copy2(item, target / item.name)
    card = json.loads((target / "card.json").read_text())
    card["name"] = "l3-copy"
    (target / "card.json").write_text(json.dumps(card, indent=2))
    return target


@pytest.fixture(scope="session")
def small_l3_phantom_series(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, object]:
    """A held-out abdominal phantom (256 x 256 pixels, 60-76 slices, seed 31337) written as DICOM.

    Returns the series directory and the phantom (ground truth).
    """
    from training.datasets import phantom_parameters
    from training.phantoms.abdomen import make_abdomen_phantom, write_phantom_series

    phantom = make_abdomen_phantom(**phantom_parameters(31_337, "standard"))  # type: ignore[arg-type]
    directory = tmp_path_factory.mktemp("l3-phantom") / "series"
    write_phantom_series(phantom, directory)
    return directory, phantom
