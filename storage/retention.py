"""Retention and disk safety: delete old data of finished jobs, refuse data the disk cannot keep.

Retention (:func:`purge`: by hand with ``ainode purge --older-than 30d``, see
:mod:`node.cli.purge`, or periodically in the node with ``retention.max_age_days``) deletes, for
every *finished* job (``done``, ``failed``, ``ignored``, ``cancelled`` — any state but received /
queued / running / sending) with no pending send that finished before the cut-off:

- the job's output files (``outputs/<job id>/``);
- the received instances of its series, but only when **every** job of that series is finished
  before the cut-off with no pending send and the series is not receiving instances again (a
  series re-sent later keeps its files until its newest job is old enough too).

The job, its events, outputs and sends stay in the database as history; the job gets a
``purged: ...`` event (shown in ``ainode jobs show`` and the dashboard) and the rows of the deleted
instances are removed. Files are deleted *before* their rows: a crash in between leaves rows
without files, which the next run removes; the reverse order would leave files without rows, which
the node's start-up scan would register again as newly received (and process again). Nothing
outside ``<data_dir>/instances`` and ``<data_dir>/outputs`` is ever deleted.

Disk safety (:class:`DiskGuard`): the listener checks the free space of the data directory's file
system for every association request and every C-STORE and refuses below
``retention.min_free_disk_mb`` / ``retention.min_free_disk_percent``.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
import shutil
import sys
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from sqlalchemy import delete, exists, func, select
from tqdm import tqdm

from ainode_core.errors import ConfigError, StorageError
from storage.database import JobDatabase
from storage.instance_store import InstanceStore
from storage.models import (
    Instance,
    Job,
    JobEvent,
    JobState,
    Output,
    Send,
    SendState,
    Series,
    SeriesState,
    utcnow,
)

logger = logging.getLogger(__name__)

#: Job states in which a job may still read its instances or write/send outputs.
UNFINISHED_STATES = (JobState.RECEIVED, JobState.QUEUED, JobState.RUNNING, JobState.SENDING)
#: Prefix of the job event that marks a purged job (the marker :func:`purge` looks for).
PURGE_EVENT_PREFIX = "purged:"

_AGE_RE = re.compile(r"^\s*(?P<value>\d+(?:\.\d+)?)\s*(?P<unit>[wdhms])\s*$")
_AGE_UNITS = {"w": 7 * 86400, "d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_age(text: str) -> dt.timedelta:
    """Parse an age such as ``30d``, ``12h``, ``2w``, ``90m`` or ``45s``.

    Raises
    ------
    ConfigError
        If the text is not a number followed by one of the units w, d, h, m, s.
    """
    match = _AGE_RE.match(text)
    if not match:
        raise ConfigError(
            f"invalid age {text!r}: expected a number and a unit, e.g. 30d, 12h, 2w "
            "(units: w d h m s)"
        )
    return dt.timedelta(seconds=float(match["value"]) * _AGE_UNITS[match["unit"]])


# -- disk safety -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class DiskSpace:
    """Free and total bytes of a file system (as available to unprivileged users)."""

    free_bytes: int
    total_bytes: int

    @property
    def free_mb(self) -> float:
        return self.free_bytes / 1e6

    @property
    def free_percent(self) -> float:
        return 100.0 * self.free_bytes / self.total_bytes if self.total_bytes else 0.0


def disk_space(path: str | os.PathLike[str]) -> DiskSpace:
    """Free space of the file system holding ``path`` (``statvfs``; blocks free to non-root)."""
    stats = os.statvfs(path)
    return DiskSpace(stats.f_bavail * stats.f_frsize, stats.f_blocks * stats.f_frsize)


class DiskGuard:
    """Says whether the data directory has room for more received data.

    Parameters
    ----------
    path:
        The data directory.
    min_free_mb:
        Least free space in MB (10^6 bytes); 0 disables this limit.
    min_free_percent:
        Least free space in percent of the file system; 0 disables this limit.
    """

    def __init__(
        self, path: str | os.PathLike[str], min_free_mb: float = 0.0, min_free_percent: float = 0.0
    ) -> None:
        self.path = Path(path)
        self.min_free_mb = float(min_free_mb)
        self.min_free_percent = float(min_free_percent)

    @classmethod
    def from_settings(cls, data_dir: str | os.PathLike[str], retention: Any) -> DiskGuard:
        """The guard of ``data_dir`` with the limits of ``Settings.retention``."""
        return cls(data_dir, retention.min_free_disk_mb, retention.min_free_disk_percent)

    def shortage(self) -> str | None:
        """``None`` while there is room, else why not (for the log and the refusal).

        A file system that cannot be queried counts as full: accepting data that may not be
        kept is worse than refusing it for a while.
        """
        if self.min_free_mb <= 0 and self.min_free_percent <= 0:
            return None
        try:
            space = disk_space(self.path)
        except OSError as exc:
            return f"cannot query the free space of {self.path}: {exc.strerror or exc}"
        if self.min_free_mb > 0 and space.free_mb < self.min_free_mb:
            return (
                f"only {space.free_mb:.0f} MB free in {self.path} (retention.min_free_disk_mb "
                f"{self.min_free_mb:g}); free space or run `ainode purge`"
            )
        if self.min_free_percent > 0 and space.free_percent < self.min_free_percent:
            return (
                f"only {space.free_percent:.1f} % free in {self.path} "
                f"(retention.min_free_disk_percent {self.min_free_percent:g}); free space or run "
                "`ainode purge`"
            )
        return None


# -- retention --------------------------------------------------------------------------------


@dataclass
class PurgeReport:
    """What :func:`purge` deleted (or, with ``dry_run``, would delete)."""

    cutoff: dt.datetime
    dry_run: bool
    jobs: list[int] = field(default_factory=list)
    series: list[str] = field(default_factory=list)
    instance_files: int = 0
    output_files: int = 0
    bytes: int = 0
    kept_series: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, object]:
        return {
            "cutoff": self.cutoff.isoformat(timespec="seconds") + "Z",
            "dry_run": self.dry_run,
            "jobs": self.jobs,
            "series": self.series,
            "instance_files": self.instance_files,
            "output_files": self.output_files,
            "bytes": self.bytes,
            "series_kept_for_newer_jobs": self.kept_series,
        }


def _within(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root.resolve())
    except (ValueError, OSError):
        return False
    return True


def _file_size(path: Path) -> int | None:
    try:
        return path.stat().st_size if path.is_file() else None
    except OSError:
        return None


def _unlink(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError as exc:
        raise StorageError(f"cannot delete {path}: {exc.strerror or exc}") from exc


def _remove_empty_dirs(directory: Path, stop: Path) -> None:
    """Remove ``directory`` and its parents up to (not including) ``stop`` while empty."""
    current = directory
    while _within(current, stop) and current.resolve() != stop.resolve():
        try:
            current.rmdir()
        except OSError:
            return
        current = current.parent


def _purgeable_jobs(database: JobDatabase, cutoff: dt.datetime) -> list[tuple[int, str]]:
    """``(job id, series UID)`` of finished jobs older than ``cutoff``, not yet purged."""
    pending = exists().where(Send.job_id == Job.id, Send.state == SendState.PENDING)
    purged = exists().where(
        JobEvent.job_id == Job.id, JobEvent.message.startswith(PURGE_EVENT_PREFIX)
    )
    finished_at = func.coalesce(Job.finished_at, Job.updated_at)
    with database.session() as session:
        rows = session.execute(
            select(Job.id, Job.series_instance_uid)
            .where(
                Job.state.not_in([str(s) for s in UNFINISHED_STATES]),
                finished_at <= cutoff,
                ~pending,
                ~purged,
            )
            .order_by(Job.id)
        ).all()
    return [(int(r[0]), str(r[1])) for r in rows]


def _series_purgeable(database: JobDatabase, series_instance_uid: str, cutoff: dt.datetime) -> bool:
    """Whether the instances of a series may go: every job of it old and finished, series closed."""
    finished_at = func.coalesce(Job.finished_at, Job.updated_at)
    with database.session() as session:
        series = session.get(Series, series_instance_uid)
        if series is not None and (
            series.state == SeriesState.OPEN or series.last_received_at > cutoff
        ):
            return False
        blocking = session.scalar(
            select(func.count(Job.id)).where(
                Job.series_instance_uid == series_instance_uid,
                (Job.state.in_([str(s) for s in UNFINISHED_STATES]))
                | (finished_at > cutoff)
                | exists().where(Send.job_id == Job.id, Send.state == SendState.PENDING),
            )
        )
        return not blocking


def purge(
    database: JobDatabase,
    store: InstanceStore,
    older_than: dt.timedelta,
    *,
    dry_run: bool = False,
    now: dt.datetime | None = None,
    progress: bool = False,
) -> PurgeReport:
    """Delete the instances and outputs of jobs that finished more than ``older_than`` ago.

    Parameters
    ----------
    database, store:
        The node's job database and instance store.
    older_than:
        Age after the job finished (``Job.finished_at``, naive UTC).
    dry_run:
        Only report what would be deleted.
    now:
        Reference time (default: now, UTC).
    progress:
        Show a progress bar over the jobs on standard error when it is a terminal
        (``ainode purge``; the node's scheduled purge shows none).

    Returns
    -------
    PurgeReport
        Jobs purged, series whose instances were deleted, files and bytes.

    Raises
    ------
    StorageError
        If a file cannot be deleted or the database fails (what was done so far stays done and
        consistent; run it again).
    """
    cutoff = (now or utcnow()) - older_than
    report = PurgeReport(cutoff=cutoff, dry_run=dry_run)
    series_done: dict[str, bool] = {}
    jobs = _purgeable_jobs(database, cutoff)
    for job_id, series_uid in tqdm(jobs, desc="purge", unit="job", file=sys.stderr, leave=False,
                                   disable=None if progress else True):
        # 1. Outputs of this job: the job's directory, and any recorded output file in the store.
        output_files: list[Path] = []
        with database.session() as session:
            recorded = [
                Path(p) for p in session.scalars(select(Output.path).where(Output.job_id == job_id))
            ]
        job_dir = store.outputs_root / str(job_id)
        if job_dir.is_dir():
            output_files.extend(p.resolve() for p in job_dir.rglob("*") if p.is_file())
        for path in recorded:
            resolved = path.resolve()
            if (
                _within(path, store.outputs_root)
                and path.is_file()
                and resolved not in output_files
            ):
                output_files.append(resolved)
        # 2. Instances of its series, when no newer or unfinished job still needs them.
        if series_uid not in series_done:
            series_done[series_uid] = _series_purgeable(database, series_uid, cutoff)
        instance_rows: list[str] = []
        instance_files: list[Path] = []
        if series_done[series_uid]:
            with database.session() as session:
                rows = session.execute(
                    select(
                        Instance.sop_instance_uid,
                        Instance.study_instance_uid,
                        Instance.series_instance_uid,
                        Instance.path,
                    ).where(
                        Instance.series_instance_uid == series_uid,
                        Instance.received_at <= cutoff,
                    )
                ).all()
            for sop_uid, study_uid, row_series_uid, recorded_path in rows:
                instance_rows.append(str(sop_uid))
                # The recorded path, and the store's own path for the UIDs (the recorded one is
                # relative when the node ran with a relative data_dir from another directory).
                candidates = [Path(recorded_path)]
                try:
                    candidates.append(store.path_for(study_uid, row_series_uid, sop_uid))
                except StorageError:
                    pass
                for candidate in candidates:
                    resolved = candidate.resolve()
                    if (
                        _within(candidate, store.root)
                        and candidate.is_file()
                        and resolved not in instance_files
                    ):
                        instance_files.append(resolved)
        elif series_uid not in report.kept_series:
            report.kept_series.append(series_uid)
        sizes = [_file_size(p) or 0 for p in output_files + instance_files]
        report.jobs.append(job_id)
        if instance_rows and series_uid not in report.series:
            report.series.append(series_uid)
        report.instance_files += len(instance_files)
        report.output_files += len(output_files)
        report.bytes += sum(sizes)
        if dry_run:
            continue
        # Files first, then rows (see the module docstring).
        for path in output_files:
            _unlink(path)
        if job_dir.is_dir():
            shutil.rmtree(job_dir, ignore_errors=True)
        for path in instance_files:
            _unlink(path)
        for directory in {p.parent for p in instance_files}:
            _remove_empty_dirs(directory, store.root)
        if series_done[series_uid]:
            message = (
                f"{PURGE_EVENT_PREFIX} {len(output_files)} output file(s) and "
                f"{len(instance_files)} received instance file(s) of the series deleted "
                f"({sum(sizes) / 1e6:.1f} MB; the job finished before "
                f"{cutoff.isoformat(timespec='seconds')}Z); the outputs can no longer be re-sent "
                "and the job cannot be run again"
            )
        else:
            message = (
                f"{PURGE_EVENT_PREFIX} {len(output_files)} output file(s) deleted "
                f"({sum(sizes) / 1e6:.1f} MB; the job finished before "
                f"{cutoff.isoformat(timespec='seconds')}Z); the received instances are kept "
                "while a newer job of the series needs them"
            )
        with database.session() as session:
            for start in range(0, len(instance_rows), 500):
                session.execute(
                    delete(Instance).where(
                        Instance.sop_instance_uid.in_(instance_rows[start : start + 500]),
                        Instance.received_at <= cutoff,
                    )
                )
            if instance_rows:
                series = session.get(Series, series_uid)
                remaining = session.scalar(
                    select(func.count())
                    .select_from(Instance)
                    .where(Instance.series_instance_uid == series_uid)
                )
                if series is not None and series.state != SeriesState.OPEN and not remaining:
                    session.delete(series)
            session.add(JobEvent(job_id=job_id, message=message))
        logger.info("job %d: %s", job_id, message)
    return report


class RetentionScheduler(threading.Thread):
    """Runs :func:`purge` every ``interval_minutes`` in the node (when ``max_age_days`` is set).

    Parameters
    ----------
    database, store:
        The node's job database and instance store.
    max_age_days:
        Age after a job finished at which its data goes.
    interval_minutes:
        Time between runs (the first run is right after start).
    """

    def __init__(
        self,
        database: JobDatabase,
        store: InstanceStore,
        *,
        max_age_days: float,
        interval_minutes: float = 60.0,
    ) -> None:
        super().__init__(name="retention", daemon=True)
        self.database = database
        self.store = store
        self.max_age = dt.timedelta(days=max_age_days)
        self.interval_s = interval_minutes * 60.0
        self.stopping = threading.Event()
        self.runs = 0

    @classmethod
    def from_settings(
        cls, database: JobDatabase, store: InstanceStore, retention: Any
    ) -> RetentionScheduler | None:
        """The scheduler for ``Settings.retention``, or ``None`` when ``max_age_days`` is unset."""
        if retention.max_age_days is None:
            return None
        return cls(
            database,
            store,
            max_age_days=retention.max_age_days,
            interval_minutes=retention.interval_minutes,
        )

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                report = purge(self.database, self.store, self.max_age)
                if report.jobs:
                    logger.info(
                        "retention: deleted %d instance file(s) and %d output file(s) of %d "
                        "job(s), %.1f MB",
                        report.instance_files,
                        report.output_files,
                        len(report.jobs),
                        report.bytes / 1e6,
                    )
            except Exception:
                logger.exception(
                    "retention run failed; trying again in %g min", self.interval_s / 60
                )
            self.runs += 1
            self.stopping.wait(self.interval_s)

    def stop(self) -> None:
        """End the thread after the current run."""
        self.stopping.set()
        if self.is_alive():
            self.join(timeout=30)
