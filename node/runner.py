"""The job runner: claims queued jobs from the database and runs each in a child process.

The runner sits behind the small :class:`JobRunner` interface so a distributed engine can replace
the local pool later; the job database stays the single source of truth either way (claims are
compare-and-set updates, see :meth:`storage.job_queue.JobQueue.claim_job`). Claims follow the fair
order of :mod:`storage.scheduling`: priority, then round robin between calling AE titles, then
age; the Celery workers (:mod:`node.worker`) claim through the same method.

Each job runs in a fresh ``spawn``-ed process (CUDA does not survive ``fork``; a fresh process
also frees all memory afterwards). A child that exceeds ``job_timeout_seconds`` is killed and its
job failed with a timeout; a child that crashes (segfault, out of memory, kill) fails its attempt
and the job is retried up to ``max_job_attempts``. Errors in the input are never retried.
"""

from __future__ import annotations

import json
import logging
import multiprocessing
import os
import socket
import tempfile
import threading
from collections.abc import Callable
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

from node.execution import JobOutcome, JobSpec, child_main
from storage.database import ClaimedJob, JobDatabase
from storage.instance_store import InstanceStore
from storage.models import JobState

logger = logging.getLogger(__name__)


class JobRunner(Protocol):
    """What the node needs from a job runner."""

    def start(self) -> None:
        """Start taking jobs."""

    def stop(self) -> None:
        """Stop taking jobs; running children are killed (their jobs resume at next start)."""

    def wake(self) -> None:
        """A job was queued: look now rather than at the next poll."""


class LocalProcessRunner:
    """Runs jobs in child processes on this machine, ``workers`` at a time.

    Parameters
    ----------
    database, store:
        Job database and instance store.
    workers:
        Number of jobs run in parallel.
    job_timeout_seconds:
        Wall-clock limit of one job.
    destinations:
        Destination names (``AET@host:port``) to queue sends for.
    params_for:
        Protocol name -> parameters mapping passed to the pipeline.
    validate_outputs, software_version, device:
        Passed to :class:`node.execution.JobSpec`.
    on_results:
        Called after a job's outputs are recorded (wakes the senders).
    model_for:
        Protocol name -> model selection and inference settings
        (:meth:`node.config.Settings.model_options`), or ``None`` for the reference method.
    """

    def __init__(
        self,
        database: JobDatabase,
        store: InstanceStore,
        *,
        workers: int,
        job_timeout_seconds: float,
        destinations: list[str],
        params_for: Callable[[str], dict[str, Any]],
        validate_outputs: bool,
        software_version: str,
        device: str = "auto",
        log_level: str = "INFO",
        on_results: Callable[[], None] | None = None,
        poll_seconds: float = 0.5,
        model_for: Callable[[str], dict[str, Any] | None] | None = None,
        output_scope: str = "series",
    ) -> None:
        self.database = database
        self.output_scope = output_scope  # settings.completion: what output UIDs derive from
        self.model_for: Callable[[str], dict[str, Any] | None] = model_for or (lambda _p: None)
        self.store = store
        self.workers = workers
        self.job_timeout_seconds = job_timeout_seconds
        self.destinations = destinations
        self.params_for = params_for
        self.validate_outputs = validate_outputs
        self.software_version = software_version
        self.device = device
        self.log_level = log_level
        self.on_results = on_results
        self.poll_seconds = poll_seconds
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._threads: list[threading.Thread] = []
        self._children: set[multiprocessing.process.BaseProcess] = set()
        self._children_lock = threading.Lock()
        self._context = multiprocessing.get_context("spawn")
        self.worker_name = f"{socket.gethostname()}:{os.getpid()}"

    def start(self) -> None:
        for index in range(self.workers):
            thread = threading.Thread(
                target=self._loop, name=f"runner-{index}", args=(index,), daemon=True
            )
            thread.start()
            self._threads.append(thread)

    def stop(self) -> None:
        self._stopping.set()
        self._wake.set()
        with self._children_lock:
            for child in list(self._children):
                child.kill()
        for thread in self._threads:
            thread.join(timeout=10)

    def wake(self) -> None:
        self._wake.set()

    def _loop(self, index: int) -> None:
        worker = f"{self.worker_name}/{index}"
        while not self._stopping.is_set():
            try:
                claimed = self.database.claim_job(worker, self.job_timeout_seconds + 60)
                if claimed is not None:
                    self.run_claimed(claimed)
                    continue
            except Exception:
                logger.exception("runner %s: error while taking a job", worker)
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def run_claimed(self, claimed: ClaimedJob) -> None:
        """Run one claimed job to its outcome and record it."""
        spec = self.build_spec(claimed)
        outcome = self._run_child(spec)
        if self._stopping.is_set() and outcome is None:
            # Killed by stop() (shutdown or restart): not the job's fault, run it again later.
            self.database.release_job(claimed.id)
            return
        if outcome is None:
            return
        self.record_outcome(claimed, outcome)

    def input_path(self, path: str) -> str:
        """Path of a stored instance as this machine sees it (identity here; see scale-out)."""
        return path

    def recorded_path(self, path: str) -> str:
        """Path of an output as recorded in the job database (identity here; see scale-out)."""
        return path

    def build_spec(self, claimed: ClaimedJob) -> JobSpec:
        """The :class:`JobSpec` of a claimed job: its series' files, output directory, params."""
        instances = self.database.series_instances(claimed.series_instance_uid)
        out_dir = self.store.output_dir(claimed.id)
        logger.info(
            "job %d: running %s on series %s (%d instances)",
            claimed.id,
            claimed.protocol,
            claimed.series_instance_uid,
            len(instances),
        )
        return JobSpec(
            job_id=claimed.id,
            protocol=claimed.protocol,
            files=[self.input_path(i.path) for i in instances],
            out_dir=str(out_dir),
            params=self.params_for(claimed.protocol),
            model=self.model_for(claimed.protocol),
            validate_outputs=self.validate_outputs,
            software_version=self.software_version,
            device=self.device,
            log_level=self.log_level,
            output_scope=self.output_scope,
        )

    def owner_of(self, job_id: int) -> tuple[str, int] | None:
        """``(worker, attempt)`` of this runner's run of ``job_id``, used to guard the writes
        of results and failures; ``None`` = unguarded (the local runner, whose children cannot
        outlive it)."""
        return None

    def fail_attempt(self, job_id: int, error: str, *, retry: bool) -> JobState | None:
        """Record a failed attempt (see :meth:`storage.database.JobDatabase.fail_job`)."""
        return self.database.fail_job(job_id, error, retry=retry, owner=self.owner_of(job_id))

    def record_outcome(self, claimed: ClaimedJob, outcome: JobOutcome) -> None:
        """Record a job's outputs and queue its sends, or record its failure."""
        if outcome.ok:
            self.database.record_results(
                claimed.id,
                algorithm=outcome.algorithm or "",
                results=outcome.summary,
                outputs=[
                    (
                        o.kind,
                        o.sop_class_uid,
                        o.sop_instance_uid,
                        o.series_instance_uid,
                        self.recorded_path(o.path),
                    )
                    for o in outcome.outputs
                ],
                destinations=self.destinations,
                warnings=outcome.warnings,
                owner=self.owner_of(claimed.id),
            )
            logger.info("job %d: results recorded", claimed.id)
            if self.on_results is not None:
                self.on_results()
        else:
            state = self.fail_attempt(
                claimed.id,
                outcome.error or "unknown error",
                retry=outcome.error_kind == "internal",
            )
            logger.warning("job %d: %s (%s)", claimed.id, outcome.error, state)

    def _run_child(self, spec: JobSpec) -> JobOutcome | None:
        with tempfile.TemporaryDirectory(prefix=f"ainode-job-{spec.job_id}-") as tmp:
            spec_path = Path(tmp) / "spec.json"
            outcome_path = Path(tmp) / "outcome.json"
            spec_path.write_text(json.dumps(asdict(spec)))
            child = self._context.Process(
                target=child_main,
                args=(str(spec_path), str(outcome_path)),
                name=f"ainode-job-{spec.job_id}",
            )
            with self._children_lock:
                child.start()
                self._children.add(child)
            try:
                child.join(self.job_timeout_seconds)
                if child.is_alive():
                    child.kill()
                    child.join(10)
                    self.fail_attempt(
                        spec.job_id,
                        f"timed out after {self.job_timeout_seconds:g} s (job_timeout_seconds); "
                        "the worker was killed",
                        retry=False,
                    )
                    return None
            finally:
                with self._children_lock:
                    self._children.discard(child)
            if self._stopping.is_set() and not outcome_path.exists():
                return None
            if not outcome_path.exists():
                self.fail_attempt(
                    spec.job_id,
                    f"the worker process died with exit code {child.exitcode} (crash or out of "
                    "memory)",
                    retry=True,
                )
                return None
            return JobOutcome.from_json(outcome_path.read_text())
