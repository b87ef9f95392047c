"""Methods are pure: no method module draws (PIL) or writes DICOM outputs (pipelines.outputs).

The rule is the import-linter contract ``methods-pure`` in pyproject.toml; these tests run it,
check that it covers every module of ``pipelines`` outside the output writers and the protocol
registry, and that PIL is imported by one module only, the key-image renderer. pydicom and
highdicom's reading side (``highdicom.Volume``) stay allowed in methods for now: ``CTVolume``
carries the source datasets.
"""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import grimp
import numpy as np

from pipelines.outputs.render import render_key_image_gray, render_key_image_spec
from pipelines.types import (
    SCT_TISSUE,
    CodedTerm,
    KeyImageAnnotation,
    KeyImagePanel,
    KeyImageSpec,
    SegmentDefinition,
)

ROOT = Path(__file__).resolve().parents[2]

#: Modules of ``pipelines`` that are not methods: the output writers (which draw and write
#: DICOM), the dciodvfy runner that checks outputs, and the protocol registry and specs
#: (``pipelines.protocol``, ``pipelines.protocols``), which run methods and name the rest by
#: "module:function" strings.
NOT_METHODS = (
    "pipelines.outputs",
    "pipelines.validation",
    "pipelines.registry",
    "pipelines.protocol",
    "pipelines.protocols",
)


def _contract() -> dict:
    config = tomllib.loads((ROOT / "pyproject.toml").read_text())
    contracts = config["tool"]["importlinter"]["contracts"]
    return next(c for c in contracts if c["id"] == "methods-pure")


def test_methods_pure_contract_is_kept() -> None:
    lint = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint), "--config", str(ROOT / "pyproject.toml"), "--contract", "methods-pure"],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "KEPT" in result.stdout


def test_contract_covers_every_method_module() -> None:
    contract = _contract()
    assert {"PIL", "pipelines.outputs"} <= set(contract["forbidden_modules"])
    sources = set(contract["source_modules"])
    graph = grimp.build_graph("pipelines")
    uncovered = sorted(
        module
        for module in graph.modules
        if module != "pipelines"
        and not any(module == s or module.startswith(s + ".") for s in sources)
        and not any(module == n or module.startswith(n + ".") for n in NOT_METHODS)
    )
    assert not uncovered, (
        f"modules {uncovered} are neither in the methods-pure contract nor output writers: "
        "add them to source_modules in pyproject.toml"
    )


def test_only_the_renderer_imports_pil() -> None:
    graph = grimp.build_graph("pipelines", include_external_packages=True)
    importers = sorted(graph.find_modules_that_directly_import("PIL"))
    assert importers == ["pipelines.outputs.render"]


MUSCLE = SegmentDefinition(
    1, "Muscle", "muscle", SCT_TISSUE, CodedTerm("91727004", "SCT", "Muscle"), None, "m",
    (255, 0, 0),
)


def test_single_panel_spec_draws_as_the_grey_renderer_does() -> None:
    hu = np.linspace(-200.0, 300.0, 64 * 80, dtype=np.float32).reshape(64, 80)
    labels = np.zeros(hu.shape, dtype=np.uint8)
    labels[20:40, 30:50] = 1
    spec = KeyImageSpec(
        panels=(KeyImagePanel(hu, (0.5, 1.0), window_hu=(-100.0, 100.0), labels=labels),),
        segments=(MUSCLE,), text_lines=("SMA 1.0 cm2",), source_index=3,
        patient_orientation=("L", "P"),
    )
    key = render_key_image_spec(spec)
    grey = np.clip((hu + 100.0) / 200.0, 0.0, 1.0)
    expected = render_key_image_gray(grey, labels, [MUSCLE], ["SMA 1.0 cm2"], (0.5, 1.0))
    np.testing.assert_array_equal(key.pixels_rgb, expected)
    assert key.source_index == 3 and key.patient_orientation == ("L", "P")
    # 80 columns of 1.0 mm at 0.5 mm square pixels, then enlarged to 512 columns.
    assert key.pixel_spacing_mm[1] == 80 * 1.0 / 512


def test_panels_side_by_side_and_annotations() -> None:
    left = np.full((40, 60), 1.0, dtype=np.float32)  # white grey image
    right = np.zeros((20, 30), dtype=np.float32)
    note = KeyImageAnnotation(row=10.0, col=0.0, line_to_col=29.0, colour=(0, 0, 255))
    spec = KeyImageSpec(
        panels=(
            KeyImagePanel(left, (1.0, 1.0), window_hu=None),
            KeyImagePanel(right, (2.0, 2.0), window_hu=None, annotations=(note,)),
        ),
        segments=(), text_lines=(), source_index=0,
    )
    key = render_key_image_spec(spec)
    # Both panels at 1.0 mm: 60 + 4 + 60 columns, enlarged to 512.
    scale = 512 / 124
    assert np.allclose(key.pixel_spacing_mm, 1.0 / scale, rtol=0.01)  # rows rounded
    pixels = key.pixels_rgb
    assert (pixels[5, 5] == 255).all()  # left panel white
    # The right panel's line (row 10 of 20, i.e. row 20 of 40 after resampling) is blue.
    row = round(20 * scale)
    col = round((64 + 30) * scale)
    assert tuple(pixels[row, col]) == (0, 0, 255)
    assert (pixels[row - 8, col] == 0).all()  # black above the line


def test_unknown_spacing_gives_no_pixel_spacing() -> None:
    spec = KeyImageSpec(
        panels=(KeyImagePanel(np.zeros((10, 10)), None, window_hu=None),),
        segments=(), text_lines=(), source_index=0,
    )
    assert render_key_image_spec(spec).pixel_spacing_mm == (0.0, 0.0)
