"""Fixtures of the real-data test suite (``tests/realdata``); helpers in ``realdata_corpus``.

Import helpers with ``from realdata_corpus import case_path, dicom_files, run_case`` (``tests/``
is on ``sys.path``; a ``from conftest import`` would pick whichever conftest was loaded first).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from realdata_corpus import case_path


@pytest.fixture(scope="session")
def realdata_case() -> Callable[[str], Path]:
    """Factory fixture: ``realdata_case("head-ct-cranium-axial")`` -> path of the case."""
    return case_path
