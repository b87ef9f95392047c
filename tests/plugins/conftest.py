"""Fixtures of the plug-in tests: the example L1 plug-in installed apart from the main venv.

:func:`l1_plugin_site` copies ``examples/ainode-l1-trabecular`` to a temporary folder, installs
it with ``pip install --no-deps --no-build-isolation --target SITE`` (the main venv is never
touched) and puts SITE first on ``sys.path`` for in-process checks; node subprocesses get it on
``PYTHONPATH`` (:func:`plugin_env`). ``importlib.metadata`` then finds the package's entry point
in group ``ainode.protocols`` like that of any installed plug-in. The package is installed once
per session; it is on ``sys.path`` only during the modules that ask for :func:`l1_plugin_site`.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
PLUGIN_SOURCE = REPO / "examples" / "ainode-l1-trabecular"


def _forget_registry() -> None:
    """Make the registry discover the entry points again (when the core caches them)."""
    from pipelines import registry

    reload = getattr(registry, "reload", None)
    if callable(reload):
        reload()


@pytest.fixture(scope="session")
def l1_plugin_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder holding the installed plug-in (``ainode_l1`` and its ``.dist-info``); installed
    once per session, not yet on ``sys.path``."""
    work = tmp_path_factory.mktemp("l1-plugin")
    source = work / "src"
    shutil.copytree(PLUGIN_SOURCE, source,
                    ignore=shutil.ignore_patterns("build", "*.egg-info", "__pycache__"))
    site = work / "site"
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--quiet", "--no-deps", "--no-build-isolation",
         "--no-input", "--disable-pip-version-check", "--target", str(site), str(source)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return site


@pytest.fixture(scope="module")
def l1_plugin_site(l1_plugin_installed: Path) -> Iterator[Path]:
    """The installed plug-in on ``sys.path`` for the tests of one module, the registry
    rediscovered; both undone afterwards, so tests elsewhere see only the shipped protocols."""
    site = l1_plugin_installed
    sys.path.insert(0, str(site))
    _forget_registry()
    try:
        yield site
    finally:
        sys.path.remove(str(site))
        for name in [m for m in sys.modules if m == "ainode_l1" or m.startswith("ainode_l1.")]:
            del sys.modules[name]
        _forget_registry()


@pytest.fixture(scope="session")
def plugin_env(l1_plugin_installed: Path) -> dict[str, str]:
    """Environment for subprocesses (``ainode ...``) that should see the plug-in."""
    paths = [str(l1_plugin_installed), str(REPO)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
