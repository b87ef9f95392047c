"""Shared pytest fixtures of ainode.

Sections:

1. Real test images (pydicom-data).
2. DICOM peers: a real Orthanc PACS, an in-process pynetdicom Storage SCP, free ports.
3. Node fixtures: for the ainode node itself (to be added below, in their own section).

``tests/`` is not a package: import the DCMTK helpers with ``from peers import storescu``.
Binaries that are missing make tests skip locally and FAIL under CI (``CI=true``), see
:func:`peers.require_binary`.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from node.local_pacs import InProcessStorageSCP, OrthancPACS, find_free_port
from peers import SETUP_HINT, require_binary, running_under_ci, write_dcmtk_readable_copy

@pytest.fixture(autouse=True)
def _short_study_quiet_period(monkeypatch: pytest.MonkeyPatch) -> None:
    """Nodes in tests close a study after 1 s without instances (default 60 s), unless a test
    sets ``study_quiet_seconds`` itself; ``ainode serve`` children inherit the variable."""
    monkeypatch.setenv("AINODE_STUDY_QUIET_SECONDS", "1")


# --------------------------------------------------------------------------------------------
# 1. Real test images (pydicom-data, module ``data_store``)
# --------------------------------------------------------------------------------------------


def _pydicom_data_file(name: str) -> Path:
    """Path of a file of the pydicom-data package; skip (fail under CI) when it is missing."""
    try:
        import data_store
    except ImportError:
        message = f"pydicom-data is not installed (pip install pydicom-data). {SETUP_HINT}"
        if running_under_ci():
            pytest.fail(f"CI=true but {message}", pytrace=False)
        pytest.skip(message)
    path = Path(os.path.dirname(data_store.__file__)) / "data" / name
    if not path.is_file():
        message = f"pydicom-data has no {name} at {path}; reinstall pydicom-data==1.0.0"
        if running_under_ci():
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    return path


@pytest.fixture(scope="session")
def real_ct_slice_path() -> Path:
    """A real abdominal CT slice (pydicom-data ``explicit_VR-UN.dcm``).

    JPEG 2000 lossless, 512 x 512, most standard elements encoded with VR UN; DCMTK refuses it
    as it is (use :func:`real_ct_slice_dcmtk_path` for storescu).
    """
    return _pydicom_data_file("explicit_VR-UN.dcm")


@pytest.fixture(scope="session")
def real_ct_slice_dcmtk_path(real_ct_slice_path: Path,
                             tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The real CT slice rewritten with explicit VRs (pixel data still JPEG 2000 lossless)."""
    destination = tmp_path_factory.mktemp("dcmtk_readable") / "ct_slice.dcm"
    return write_dcmtk_readable_copy(real_ct_slice_path, destination)


@pytest.fixture(scope="session")
def real_chest_cr_path() -> Path:
    """A real CR chest radiograph (pydicom-data ``RG1_UNCI.dcm``, explicit VR little endian)."""
    return _pydicom_data_file("RG1_UNCI.dcm")


# --------------------------------------------------------------------------------------------
# 2. DICOM peers
# --------------------------------------------------------------------------------------------


@pytest.fixture
def free_port() -> int:
    """A TCP port free on 127.0.0.1 at the time of the call."""
    return find_free_port()


@pytest.fixture
def orthanc(tmp_path: Path) -> Iterator[OrthancPACS]:
    """A started Orthanc PACS (AE ``ORTHANC``) with an empty store in ``tmp_path/orthanc``.

    Function scope: each test gets a fresh, empty PACS (start ~0.3 s, clean stop ~3 s).
    Its log is ``orthanc.log_path``.
    """
    require_binary("Orthanc")
    pacs = OrthancPACS(tmp_path / "orthanc")
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture(scope="module")
def orthanc_module(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OrthancPACS]:
    """One Orthanc PACS shared by the tests of a module (store NOT emptied between tests)."""
    require_binary("Orthanc")
    pacs = OrthancPACS(tmp_path_factory.mktemp("orthanc_module"))
    pacs.start()
    try:
        yield pacs
    finally:
        pacs.stop()


@pytest.fixture
def in_process_scp(tmp_path: Path) -> Iterator[InProcessStorageSCP]:
    """A started pynetdicom Storage SCP (AE ``AINODE_DEST``) storing into ``tmp_path/scp``."""
    scp = InProcessStorageSCP(tmp_path / "scp")
    scp.start()
    try:
        yield scp
    finally:
        scp.stop()


# --------------------------------------------------------------------------------------------
# 3. Node fixtures (ainode itself: settings, a running node, its database...)
#    Add them below this line.
# --------------------------------------------------------------------------------------------
