"""The instance store: received DICOM files by Study / Series / SOP Instance UID.

Layout under the data directory::

    instances/<StudyInstanceUID>/<SeriesInstanceUID>/<SOPInstanceUID>.dcm
    outputs/<job id>/<kind>_<SOP Instance UID>.dcm

Every file is written atomically and durably *before* the C-STORE success status is returned:
the bytes go to a temporary file in the target directory, which is flushed and ``fsync``-ed, then
renamed over the final name, and the directory is ``fsync``-ed so that the rename itself survives
a power loss (POSIX rename is atomic; the directory fsync makes it durable). A re-sent instance
replaces the file with identical content, so storing is idempotent. The store is the journal of
what was acknowledged: at start-up the node re-registers any stored file the job database does not
know (a crash between the file write and the database commit), see :meth:`InstanceStore.iter_instances`.
"""

from __future__ import annotations

import logging
import os
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from ainode_core.errors import StorageError

logger = logging.getLogger(__name__)

#: A DICOM UID: digits and dots, at most 64 characters (PS3.5 §9.1). Anything else is refused as a
#: path component, so a malicious UID cannot escape the store (e.g. "../../etc").
_UID_RE = re.compile(r"^[0-9]+(\.[0-9]+)*$")
_TEMP_PREFIX = ".tmp-"


def check_uid(value: str, what: str) -> str:
    """Return ``value`` if it is a valid DICOM UID, else raise.

    Raises
    ------
    StorageError
        If ``value`` is empty, longer than 64 characters or has characters other than digits and
        dots (PS3.5 §9.1).
    """
    value = str(value).strip().rstrip("\x00")
    if not value or len(value) > 64 or not _UID_RE.match(value):
        raise StorageError(f"invalid {what} {value!r}: a UID has only digits and dots, 64 at most")
    return value


def fsync_directory(path: Path) -> None:
    """``fsync`` a directory so that renames and new entries in it are durable."""
    fd = os.open(path, os.O_RDONLY | getattr(os, "O_DIRECTORY", 0))
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def make_directories(directory: Path, *, durable: bool = True) -> None:
    """Create ``directory`` and its missing parents; with ``durable`` each new entry is fsync-ed.

    A file renamed into a new directory survives a power loss only if the new directory's own
    entry in its parent (and so on up) is durable too: the parent of every directory created
    here is fsync-ed after the creation.
    """
    missing: list[Path] = []
    current = directory
    while not current.is_dir():
        missing.append(current)
        if current.parent == current:
            break
        current = current.parent
    for new in reversed(missing):
        try:
            new.mkdir()
        except FileExistsError:
            continue  # created by a concurrent writer, which makes it durable itself
        if durable:
            fsync_directory(new.parent)


def write_atomic(path: Path, data: bytes | memoryview, *, durable: bool = True) -> None:
    """Write ``data`` to ``path`` atomically (temp file + rename), durably if ``durable``.

    The directory is created (durably, :func:`make_directories`) only when the temporary file
    cannot be opened for lack of it: a ``mkdir`` that finds the directory there cost about 1 ms
    per instance on the 2-core machine (docs/benchmarks.md).

    Parameters
    ----------
    path:
        Final file path; its directory is created if needed.
    data:
        The bytes.
    durable:
        ``fsync`` the file and its directory (default). Only tests and benchmarks turn it off.

    Raises
    ------
    StorageError
        If the file cannot be written (disk full, permissions).
    """
    directory = path.parent
    tmp = directory / f"{_TEMP_PREFIX}{path.name}.{os.getpid()}.{id(data):x}"
    try:
        try:
            handle = open(tmp, "wb")  # noqa: SIM115 - closed by the with block below
        except FileNotFoundError:
            make_directories(directory, durable=durable)
            handle = open(tmp, "wb")  # noqa: SIM115
        with handle:
            handle.write(data)
            handle.flush()
            if durable:
                os.fsync(handle.fileno())
        os.replace(tmp, path)
        if durable:
            fsync_directory(directory)
    except OSError as exc:
        try:
            tmp.unlink(missing_ok=True)
        except OSError:
            pass
        raise StorageError(f"cannot write {path}: {exc.strerror or exc}") from exc


@dataclass(frozen=True)
class StoredInstance:
    """A file in the store and the UIDs its path encodes."""

    study_instance_uid: str
    series_instance_uid: str
    sop_instance_uid: str
    path: Path


class InstanceStore:
    """Files of received instances under ``<data_dir>/instances``.

    Parameters
    ----------
    data_dir:
        The node's data directory.
    durable:
        ``fsync`` every write (default ``True``; never turn off in production).
    """

    def __init__(self, data_dir: Path, *, durable: bool = True) -> None:
        self.root = Path(data_dir) / "instances"
        self.outputs_root = Path(data_dir) / "outputs"
        self.durable = durable
        self.root.mkdir(parents=True, exist_ok=True)
        self.outputs_root.mkdir(parents=True, exist_ok=True)

    def path_for(
        self, study_instance_uid: str, series_instance_uid: str, sop_instance_uid: str
    ) -> Path:
        """Path of an instance; raises :class:`StorageError` for invalid UIDs."""
        return (
            self.root
            / check_uid(study_instance_uid, "Study Instance UID")
            / check_uid(series_instance_uid, "Series Instance UID")
            / f"{check_uid(sop_instance_uid, 'SOP Instance UID')}.dcm"
        )

    def store(
        self,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_instance_uid: str,
        encoded: bytes | memoryview,
    ) -> StoredInstance:
        """Store one DICOM Part 10 file atomically and durably.

        Parameters
        ----------
        study_instance_uid, series_instance_uid, sop_instance_uid:
            The instance's UIDs (validated; they form the path).
        encoded:
            The complete Part 10 file (preamble, file meta information and dataset), e.g. from
            pynetdicom's ``event.encoded_dataset()``.

        Returns
        -------
        StoredInstance

        Raises
        ------
        StorageError
            On invalid UIDs or I/O errors.
        """
        path = self.path_for(study_instance_uid, series_instance_uid, sop_instance_uid)
        write_atomic(path, encoded, durable=self.durable)
        return StoredInstance(study_instance_uid, series_instance_uid, sop_instance_uid, path)

    def series_dir(self, study_instance_uid: str, series_instance_uid: str) -> Path:
        """Directory holding one series' files."""
        return (
            self.root
            / check_uid(study_instance_uid, "Study Instance UID")
            / check_uid(series_instance_uid, "Series Instance UID")
        )

    def iter_instances(self) -> Iterator[StoredInstance]:
        """Yield every stored instance (temp files of interrupted writes are removed)."""
        for study_dir in sorted(p for p in self.root.iterdir() if p.is_dir()):
            for series_dir in sorted(p for p in study_dir.iterdir() if p.is_dir()):
                for path in sorted(series_dir.iterdir()):
                    if path.name.startswith(_TEMP_PREFIX):
                        logger.warning("removing interrupted write %s", path)
                        path.unlink(missing_ok=True)
                        continue
                    if path.suffix == ".dcm":
                        yield StoredInstance(study_dir.name, series_dir.name, path.stem, path)

    def output_dir(self, job_id: int) -> Path:
        """Directory for one job's output objects (created)."""
        path = self.outputs_root / str(int(job_id))
        path.mkdir(parents=True, exist_ok=True)
        return path
