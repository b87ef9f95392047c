"""The real-data corpus for tests: where it is, its cases, and running a job on one.

The corpus is ``../shared/realdata`` beside the checkout (README there: sources and licences), or
the folder named by ``AINODE_REALDATA``. Under ``CI=true`` a missing corpus FAILS these tests;
elsewhere they skip with a message that names the missing folder.

The two large series ship as ``.tar.xz`` archives; :func:`realdata_case` unpacks them once into a
cache (``AINODE_REALDATA_CACHE``, default ``~/.cache/ainode-realdata``) keyed on the archive's
sha256, so a changed archive is unpacked anew.
"""

from __future__ import annotations

import hashlib
import os
import tarfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from node.execution import JobOutcome, JobSpec, execute_job
from peers import running_under_ci

_REPO = Path(__file__).resolve().parents[1]

#: Archive that holds each case that is not a plain folder of the corpus.
ARCHIVE_OF_CASE = {
    "chest-ct-lidc-0314": "chest-ct-lidc-0314.tar.xz",
    "chest-ct-lidc-0314-nodule-seg.dcm": "chest-ct-lidc-0314.tar.xz",
    "head-ct-cranium-axial": "head-ct-cranium.tar.xz",
    "head-ct-cranium-coronal": "head-ct-cranium.tar.xz",
}


def realdata_root() -> Path:
    """The corpus folder: ``$AINODE_REALDATA`` or ``../shared/realdata`` beside the checkout."""
    configured = os.environ.get("AINODE_REALDATA")
    return Path(configured) if configured else _REPO.parent / "shared" / "realdata"


def _missing(message: str) -> None:
    if running_under_ci():
        pytest.fail(f"CI=true but {message}", pytrace=False)
    pytest.skip(message)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _unpacked(archive: Path) -> Path:
    cache = Path(
        os.environ.get("AINODE_REALDATA_CACHE", Path.home() / ".cache" / "ainode-realdata")
    )
    target = cache / f"{archive.name.removesuffix('.tar.xz')}-{_sha256(archive)[:16]}"
    done = target / ".unpacked"
    if not done.exists():
        target.mkdir(parents=True, exist_ok=True)
        with tarfile.open(archive, "r:xz") as tar:
            tar.extractall(target, filter="data")
        done.touch()
    return target


def case_path(name: str) -> Path:
    """Path of the corpus case ``name`` (a folder or file of the README's table).

    Skips (fails under CI) when the corpus or the case is missing.
    """
    root = realdata_root()
    if not root.is_dir():
        _missing(f"the real-data corpus {root} is missing (set AINODE_REALDATA to its folder)")
    archive_name = ARCHIVE_OF_CASE.get(name)
    if archive_name is None:
        path = root / name
    else:
        archive = root / archive_name
        if not archive.is_file():
            _missing(f"the real-data archive {archive} is missing")
        path = _unpacked(archive) / name
    if not path.exists():
        _missing(f"the real-data case {path} is missing")
    return path


def dicom_files(path: Path) -> list[str]:
    """Every regular, non-hidden file under ``path`` (or ``path`` itself), sorted."""
    if path.is_file():
        return [str(path)]
    return sorted(str(p) for p in path.rglob("*") if p.is_file() and not p.name.startswith("."))


def run_case(
    protocol: str,
    files: list[str],
    out_dir: Path,
    params: dict[str, Any] | None = None,
) -> JobOutcome:
    """Run ``protocol`` on ``files`` as a job does (outputs written and checked by dciodvfy)."""
    spec = JobSpec(
        job_id=0,
        protocol=protocol,
        files=files,
        out_dir=str(out_dir),
        params=params or {},
        validate_outputs=True,
        software_version="test",
    )
    return execute_job(spec)
