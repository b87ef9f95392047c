"""The L1 plug-in keeps to the plug-in contract (docs/plugins.md): its source imports ainode's
``pipelines`` (and the shared kernel ``ainode_core``) only, never ``node``, ``storage``,
``models``, ``training``, pydicom or PIL (checked on the source); loading its spec pulls in none
of ``node``, ``storage``, ``models``, ``training`` (checked at run time; pydicom and PIL do get
loaded, by the core's ``pipelines`` modules); and the core never names it.
"""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PACKAGE = REPO / "examples" / "ainode-l1-trabecular" / "ainode_l1"

ALLOWED_TOP_LEVEL = {
    "ainode_l1", "pipelines", "ainode_core", "numpy", "scipy", "pydantic",
    "__future__", "logging", "dataclasses", "typing", "collections",
}


def _imports(path: Path) -> set[str]:
    names: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.Import):
            names.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_plugin_imports_only_pipelines_and_libraries() -> None:
    files = sorted(PACKAGE.glob("*.py"))
    assert len(files) >= 4
    for path in files:
        extra = _imports(path) - ALLOWED_TOP_LEVEL
        assert not extra, f"{path.name} imports {sorted(extra)}"


def test_loading_the_spec_pulls_in_no_node_storage_or_training(
    plugin_env: dict[str, str],
) -> None:
    code = (
        "import sys\n"
        "from importlib.metadata import entry_points\n"
        "(ep,) = [e for e in entry_points(group='ainode.protocols')"
        " if e.name == 'l1-trabecular-attenuation']\n"
        "spec = ep.load()\n"
        "print(spec.name)\n"
        "print(sorted({m.split('.')[0] for m in sys.modules}"
        " & {'node', 'storage', 'training', 'models'}))\n"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            env=plugin_env, timeout=120, check=False)
    assert result.returncode == 0, result.stderr
    name, loaded = result.stdout.split("\n")[:2]
    assert name == "l1-trabecular-attenuation"
    assert loaded == "[]", f"loading the plug-in imported {loaded}"


def test_the_core_never_names_the_plugin() -> None:
    for package in ("node", "storage", "models", "training", "pipelines", "ainode_core"):
        for path in (REPO / package).rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            assert "ainode_l1" not in text, path
            assert "l1-trabecular" not in text, path
