"""Fixtures of the plug-in tests: the example L1 plug-in installed apart from the main venv.

:func:`l1_plugin_site` copies ``examples/ainode-l1-trabecular`` to a temporary folder, installs
it with ``pip install --no-deps --no-build-isolation --target SITE`` (the main venv is never
touched) and puts SITE first on ``sys.path`` for in-process checks; node subprocesses get it on
``PYTHONPATH`` (:func:`plugin_env`). ``importlib.metadata`` then finds the package's entry point
in group ``ainode.protocols`` like that of any installed plug-in.
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
def l1_plugin_site(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """Folder holding the installed plug-in (``ainode_l1`` and its ``.dist-info``)."""
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
def plugin_env(l1_plugin_site: Path) -> dict[str, str]:
    """Environment for subprocesses (``ainode ...``) that should see the plug-in."""
    paths = [str(l1_plugin_site), str(REPO)]
    if os.environ.get("PYTHONPATH"):
        paths.append(os.environ["PYTHONPATH"])
    return {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
