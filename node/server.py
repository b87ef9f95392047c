"""The running node: listener, series completion, routing, job runner and senders wired together.

Data flows one way: C-STORE -> instance store + job database -> (quiet period) job -> routing ->
runner (pipeline in a child process) -> outputs -> senders (C-STORE to the destinations).

At start-up the node first repairs what a crash may have left: stored files that the job database
does not know are registered (their series complete after the quiet period and become jobs), and
jobs left ``running`` are queued again.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import threading
import time
from collections.abc import Sequence
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any

from node.config import Settings
from node.pixel_routing import pixel_region_in_child
from node.routing import (
    RoutingDecision,
    RoutingRule,
    configured_rules,
    route_series,
    summarize_series,
)
from node.runner import JobRunner, LocalProcessRunner
from node.scp import StorageSCP
from node.sender import DestinationSender
from node.study_routing import RoutedSeries, StudyRouter
from ainode_core.errors import AINodeError, InvalidInputError
from pipelines.registry import get_protocol
from storage.database import JobDatabase
from storage.instance_store import InstanceStore
from storage.models import JobState
from storage.retention import DiskGuard, RetentionScheduler

logger = logging.getLogger(__name__)


def software_version() -> str:
    """Installed version of ainode."""
    try:
        return version("ainode")
    except PackageNotFoundError:
        return "0+unknown"


def pixel_region_of(
    files: Sequence[str],
    *,
    memory_mb: int = 1536,
    timeout_s: float = 60.0,
    max_image_mb: float | None = None,
) -> Any:
    """Guess the body region of a series from its pixels (the routing fallback).

    Nothing is decoded in this process: a bounded child decodes a few sampled images
    (:func:`node.pixel_routing.pixel_region_in_child`; memory and time limits, declared image
    sizes checked first).

    Returns a :class:`pipelines.body_region.RegionGuess`; never raises: a series whose pixels
    cannot be read or analysed gives region ``unknown`` with the reason.
    """
    from pipelines.body_region import RegionGuess

    try:
        return pixel_region_in_child(
            files, memory_mb=memory_mb, timeout_s=timeout_s, max_image_mb=max_image_mb
        )
    except Exception as exc:  # noqa: BLE001 - the fallback must not break routing
        return RegionGuess(["unknown"], f"pixels could not be analysed: {exc}", {})


class Node:
    """An ainode node built from :class:`node.config.Settings`.

    Use :meth:`start` / :meth:`stop`, or as a context manager.
    """

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        settings.check_protocol_parameters()
        # Imported now, not on the first routing: a first import in the dispatcher thread
        # holds the GIL for a second or more, and C-ECHO/C-STORE would wait for it.
        import pipelines.body_region  # noqa: F401
        from pipelines.volume import MAX_IMAGE_MB_ENV

        # Job children (spawned) and the pixel-routing child inherit the decode limit; the value
        # found before is put back by stop(), so a node started in-process (tests, the demo)
        # leaves no limit behind for the next Settings() to pick up.
        self._previous_max_image_mb = os.environ.get(MAX_IMAGE_MB_ENV)
        os.environ[MAX_IMAGE_MB_ENV] = repr(float(settings.max_image_mb))
        settings.data_dir.mkdir(parents=True, exist_ok=True)
        self.store = InstanceStore(settings.data_dir)
        self.database = JobDatabase(settings.resolved_database_url)
        self.rules: list[RoutingRule] = configured_rules(settings.routing_rules)
        self.version = software_version()
        self.senders = [
            DestinationSender(
                self.database,
                destination,
                calling_ae_title=settings.ae_title,
                max_attempts=settings.send_max_attempts,
                backoff_seconds=settings.send_backoff_seconds,
                timeout_seconds=settings.network_timeout_seconds,
            )
            for destination in settings.destinations
        ]
        self.runner: JobRunner = self._make_runner(settings)
        self.scp = StorageSCP(
            ae_title=settings.ae_title,
            host=settings.host,
            port=settings.port,
            store=self.store,
            database=self.database,
            allowed_callers=settings.allowed_callers,
            network_timeout_seconds=settings.network_timeout_seconds,
            tls=settings.tls,
            disk_guard=DiskGuard.from_settings(settings.data_dir, settings.retention),
            max_associations=settings.max_associations,
            max_connections_per_ip=settings.max_connections_per_ip,
            max_connections=settings.max_connections,
            association_request_timeout_seconds=settings.association_request_timeout_seconds,
        )
        self.retention = RetentionScheduler.from_settings(
            self.database, self.store, settings.retention
        )
        self.study_router = StudyRouter(
            self.database,
            self.route_series_of,
            settings.series_preferences(),
            settings.late_series,
        )
        self._stopping = threading.Event()
        self._dispatcher = threading.Thread(target=self._dispatch_loop, name="dispatcher", daemon=True)

    def _make_runner(self, settings: Settings) -> JobRunner:
        """The configured job runner: local child processes (default) or Celery workers."""
        if settings.runner == "celery":
            from node.scaleout.dispatcher import CeleryRunner

            return CeleryRunner(self.database, settings)
        return LocalProcessRunner(
            self.database,
            self.store,
            workers=settings.workers,
            job_timeout_seconds=settings.job_timeout_seconds,
            destinations=[d.name for d in settings.destinations],
            params_for=settings.protocol_params,
            model_for=settings.model_options,
            validate_outputs=settings.validate_outputs,
            software_version=self.version,
            device=settings.device,
            log_level=settings.log_level,
            on_results=self._wake_senders,
            output_scope=settings.completion,
        )

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Recover from any crash, then start listening, dispatching, running and sending."""
        self.recover()
        self.scp.start()
        self._dispatcher.start()
        self.runner.start()
        if self.retention is not None:
            self.retention.start()
        for sender in self.senders:
            sender.start()

    def stop(self) -> None:
        """Stop everything; unfinished jobs resume at the next start."""
        self._stopping.set()
        self.scp.stop()
        self.runner.stop()
        if self.retention is not None:
            self.retention.stop()
        for sender in self.senders:
            sender.stop()
        self._dispatcher.join(timeout=5)
        for sender in self.senders:
            sender.join(timeout=5)
        self.database.close()
        from pipelines.volume import MAX_IMAGE_MB_ENV

        if self._previous_max_image_mb is None:
            os.environ.pop(MAX_IMAGE_MB_ENV, None)
        else:
            os.environ[MAX_IMAGE_MB_ENV] = self._previous_max_image_mb

    def __enter__(self) -> Node:
        self.start()
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def recover(self) -> None:
        """Register stored files the database does not know, and re-queue interrupted jobs."""
        known = self.database.known_sop_instance_uids()
        recovered = 0
        for stored in self.store.iter_instances():
            if stored.sop_instance_uid in known:
                continue
            try:
                from pipelines.volume import read_instance

                header = read_instance(stored.path, stop_before_pixels=True)
            except InvalidInputError as exc:
                logger.error("stored file %s is unreadable: %s", stored.path, exc)
                continue
            self.database.record_instance(
                sop_instance_uid=stored.sop_instance_uid,
                study_instance_uid=stored.study_instance_uid,
                series_instance_uid=stored.series_instance_uid,
                sop_class_uid=str(header.SOPClassUID),
                transfer_syntax_uid=str(header.file_meta.get("TransferSyntaxUID", "")),
                modality=str(header.get("Modality", ""))[:16],
                path=str(stored.path),
                calling_ae_title="",
                received_at=dt.datetime.fromtimestamp(stored.path.stat().st_mtime, dt.UTC).replace(tzinfo=None),
            )
            recovered += 1
        if recovered:
            logger.warning("registered %d stored instance(s) missing from the job database", recovered)
        orphaned = self.database.fail_sends_to_unknown_destinations(
            [d.name for d in self.settings.destinations]
        )
        if orphaned:
            logger.warning(
                "failed %d pending send(s) to destinations no longer configured", orphaned
            )
        if self.settings.runner == "celery":
            # Workers on other machines may still run their jobs (they renew their leases):
            # only jobs whose lease ran out while the node was down are queued again.
            expired = self.database.expire_leases()
            if expired:
                logger.warning("re-queued %d job(s) whose worker lease expired: %s", len(expired), expired)
        else:
            resumed = self.database.resume_interrupted()
            if resumed:
                logger.warning(
                    "re-queued %d job(s) interrupted by a stop: %s", len(resumed), resumed
                )

    # -- dispatching --------------------------------------------------------------------------------

    def _wake_senders(self) -> None:
        for sender in self.senders:
            sender.wake.set()

    def _dispatch_loop(self) -> None:
        # Routing passes every 0.5 s. Series completion queries every open series (about 10 ms
        # of CPU with SQLite, taken from the associations through the GIL during ingest), so it
        # runs every fifth of the quiet period (2 s with the default 10 s), 0.5 s at the most.
        completion_interval_s = min(2.0, max(0.5, self.settings.quiet_seconds / 5))
        last_completion = float("-inf")
        while not self._stopping.is_set():
            now = time.monotonic()
            complete = now - last_completion >= completion_interval_s
            try:
                self.dispatch_once(complete_series=complete)
            except Exception:
                logger.exception("dispatcher error; continuing")
            if complete:
                last_completion = now
            self._stopping.wait(0.5)

    def dispatch_once(self, *, complete_series: bool = True) -> None:
        """Complete quiet series into jobs (unless ``complete_series`` is false) and route every
        received job."""
        if complete_series:
            # Every acknowledged instance must be in the database before its series may close.
            self.scp.recorder.drain()
            if self.settings.completion == "study":
                created = self.database.complete_quiet_studies(
                    self.settings.study_quiet_seconds,
                    self.settings.study_max_wait_seconds,
                    max_attempts=self.settings.max_job_attempts,
                )
            else:
                created = self.database.complete_quiet_series(
                    self.settings.quiet_seconds, max_attempts=self.settings.max_job_attempts
                )
            for job_id in created:
                logger.info("job %d created", job_id)
        # Bounded, callers in turn: a flood from one caller cannot hold up another's routing.
        studies: dict[str, int] = {}
        for job in self.database.jobs_to_route():
            if self.settings.completion == "study":
                studies.setdefault(job.study_instance_uid, job.id)
                continue
            try:
                self.route_job(job.id, job.series_instance_uid)
            except Exception as exc:
                logger.exception("job %d: routing failed", job.id)
                self.database.fail_job(job.id, f"routing failed: {type(exc).__name__}: {exc}")
        for study_uid, first_job in studies.items():
            # All received jobs of the study are routed together, also those beyond this batch.
            try:
                if self.study_router.route_study(study_uid):
                    self.runner.wake()
            except Exception as exc:
                logger.exception("job %d: routing of its study failed", first_job)
                for job in self.database.study_jobs(study_uid):
                    if job.state == JobState.RECEIVED:
                        self.database.fail_job(
                            job.id, f"routing failed: {type(exc).__name__}: {exc}"
                        )
        self.database.expire_leases()
        # e.g. `ainode jobs retry` of a job whose destination was removed from the configuration
        self.database.fail_sends_to_unknown_destinations([d.name for d in self.settings.destinations])

    def route_series_of(self, series_instance_uid: str) -> RoutedSeries:
        """Read a stored series' headers and route them (rules, then the pixel fallback)."""
        from pipelines.volume import read_instances

        files = [i.path for i in self.database.series_instances(series_instance_uid)]
        read = read_instances(files, stop_before_pixels=True)
        headers, errors = read.datasets, read.errors
        if not headers:
            return RoutedSeries(
                None, None, errors,
                "no readable DICOM instance in the series (" + "; ".join(errors[:2]) + ")",
            )
        try:
            decision = route_series(
                headers,
                self.rules,
                pixel_region=lambda: pixel_region_of(
                    files,
                    memory_mb=self.settings.pixel_routing_memory_mb,
                    timeout_s=self.settings.pixel_routing_timeout_seconds,
                    max_image_mb=self.settings.max_image_mb,
                ),
            )
        except AINodeError as exc:
            return RoutedSeries(None, None, errors, f"routing failed: {exc}")
        protocol, reason = decision.protocol, decision.reason
        if protocol is not None and not get_protocol(protocol).implemented:
            reason = (
                f"{reason}; but protocol {protocol!r} is not available in this version of ainode, "
                "so the series is not analysed"
            )
            decision = RoutingDecision(None, decision.rule, reason, decision.checks)
        return RoutedSeries(summarize_series(headers), decision, errors)

    def route_job(self, job_id: int, series_instance_uid: str) -> None:
        """Choose the protocol of a job (or ignore/fail it) and record why (series mode)."""
        routed = self.route_series_of(series_instance_uid)
        for error in routed.errors[:5]:
            self.database.add_event(job_id, error, level="error")
        decision = routed.decision
        if decision is None:
            self.database.fail_job(job_id, routed.failure or "routing failed")
            return
        protocol, reason = decision.protocol, decision.reason
        self.database.set_routing(
            job_id, protocol=protocol, rule=decision.rule, reason=reason, priority=decision.priority
        )
        logger.info("job %d: %s (%s)", job_id, protocol or "ignored", reason)
        if protocol:
            self.runner.wake()


def data_dir_path(value: str | Path) -> Path:
    """The data directory as an absolute path."""
    return Path(value).expanduser().resolve()
