"""``ainode worker``: a Celery worker that runs ainode jobs from RabbitMQ queues.

Run one worker process per GPU (``CUDA_VISIBLE_DEVICES=N ainode worker --queues gpu``) and any
number for CPU protocols (``--queues cpu``); each uses Celery's solo pool, so it runs one job at
a time in its own process tree (CUDA does not survive ``fork``). Every worker reads the same
configuration as the node (job database URL, data directory, destinations, protocol
parameters, ``celery.*``).

For each message (a job id) the worker:

1. claims the next job of the message's queue in the job database, in the fair order shared with
   the local runner (:meth:`storage.job_queue.JobQueue.claim_job`: priority, caller round
   robin, age; a message is a turn, not an assignment); when nothing of that queue is queued
   (the named job runs elsewhere, finished, was cancelled, or is unknown) it acknowledges the
   message without running anything;
2. runs the job (:func:`node.execution.execute_job`, reading the series from the shared
   instance store) in the worker process itself, which keeps libraries, the CUDA context and
   models loaded between jobs; or, with ``celery.isolate_jobs``, in a fresh ``spawn``-ed child
   process exactly like the local runner (:class:`node.runner.LocalProcessRunner`);
3. renews the job's lease every third of ``celery.lease_seconds`` while it runs; if the lease
   was lost (the node re-queued the job because renewals stopped arriving, or it was
   cancelled), it kills an isolated job's child and records nothing. A job over
   ``job_timeout_seconds`` is failed; in-process, the worker then exits (exit status 70) to
   stop it, and its service manager starts it again;
4. records the outputs and queues the sends in the job database (the node's senders send
   them), or records the failure; then the message is acknowledged (late acknowledgement).

A worker killed mid-job (``kill -9``, lost machine) never acknowledges its message; RabbitMQ
delivers it again to another worker, whose claim fails while the dead worker's lease runs; when
the lease expires the node re-queues the job and publishes it again, and it runs once more.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from pathlib import Path
from typing import Any

from node.config import Settings
from node.execution import JobOutcome, execute_job
from node.runner import LocalProcessRunner
from node.scaleout.app import RUN_JOB_TASK, make_celery_app, protocols_of_queue, queue_for
from storage.database import ClaimedJob, ClaimRefusal, JobDatabase
from storage.instance_store import InstanceStore
from storage.models import JobState

logger = logging.getLogger(__name__)

EXIT_TIMED_OUT = 70
"""Exit status of a worker that ended itself because an in-process job ran past its limit."""


class CeleryJobWorker(LocalProcessRunner):
    """Runs the jobs named by broker messages, one at a time, in child processes.

    Parameters
    ----------
    settings:
        The worker's settings (the node's configuration file).
    database:
        Job database; default: opened from ``settings`` (schema migrations are the node's job).
    name:
        Worker name recorded in claimed jobs; default ``host:pid/celery``.
    """

    def __init__(
        self, settings: Settings, *, database: JobDatabase | None = None, name: str | None = None
    ) -> None:
        from node.server import software_version

        super().__init__(
            database or JobDatabase(settings.resolved_database_url, migrate_schema=False),
            InstanceStore(settings.data_dir),
            workers=1,
            job_timeout_seconds=settings.job_timeout_seconds,
            destinations=[d.name for d in settings.destinations],
            params_for=settings.protocol_params,
            model_for=settings.model_options,
            validate_outputs=settings.validate_outputs,
            software_version=software_version(),
            device=settings.device,
            log_level=settings.log_level,
            output_scope=settings.completion,
        )
        self.settings = settings
        self.worker_name = name or f"{socket.gethostname()}:{os.getpid()}/celery"
        self.lease_seconds = settings.celery.lease_seconds
        self._node_dir = (
            str(settings.celery.node_data_dir).rstrip("/") if settings.celery.node_data_dir else None
        )
        self._local_dir = str(Path(settings.data_dir).resolve()).rstrip("/")
        self.isolate_jobs = settings.celery.isolate_jobs
        self._current: ClaimedJob | None = None

    # -- paths on shared storage -----------------------------------------------------------------

    def input_path(self, path: str) -> str:
        """A stored instance's path mapped from the node's data_dir onto this machine's."""
        if self._node_dir and (path == self._node_dir or path.startswith(self._node_dir + "/")):
            return self._local_dir + path[len(self._node_dir):]
        return path

    def recorded_path(self, path: str) -> str:
        """An output's path mapped from this machine's data_dir onto the node's."""
        if self._node_dir and (path == self._local_dir or path.startswith(self._local_dir + "/")):
            return self._node_dir + path[len(self._local_dir):]
        return path

    # -- one message -----------------------------------------------------------------------------

    def handle(self, job_id: int) -> str:
        """Claim and run the next job of job ``job_id``'s queue (the body of the Celery task).

        The message is a turn: the job claimed is the next of that queue's protocols in fair
        order (:meth:`storage.job_queue.JobQueue.claim_job`: priority, caller round robin,
        age), often but not always job ``job_id``. Nothing runs when the named job is unknown or
        the queue has nothing queued.

        Returns
        -------
        str
            What happened (``"ran"``, or why nothing ran), for the worker log.
        """
        named = self.database.job_state(job_id)
        if named is None:
            logger.info("job %d: not run here (%s); message acknowledged", job_id, ClaimRefusal.UNKNOWN)
            return f"skipped: {ClaimRefusal.UNKNOWN}"
        state, protocol = named
        if protocol is None:
            logger.info("job %d: not run here (not routed, state %s); message acknowledged", job_id, state)
            return f"skipped: {ClaimRefusal.NOT_QUEUED} ({state})"
        if state != JobState.QUEUED:
            logger.info(
                "job %d: not run here (%s, state %s); its message is a turn for the next queued "
                "job of its queue",
                job_id,
                ClaimRefusal.NOT_QUEUED,
                state,
            )
        queue = queue_for(self.settings, protocol)
        claimed = self.database.claim_job(
            self.worker_name, self.lease_seconds, protocols=protocols_of_queue(self.settings, queue)
        )
        if claimed is None:
            logger.info("job %d: nothing queued in queue %r; message acknowledged", job_id, queue)
            return f"skipped: nothing queued ({state})"
        if claimed.id != job_id:
            logger.info(
                "job %d's message: job %d runs first (fair order: priority, caller, age)",
                job_id,
                claimed.id,
            )
        job_id = claimed.id
        self._current = claimed
        done = threading.Event()
        watchdog = threading.Thread(
            target=self._watch, args=(claimed, done), name=f"lease-{job_id}", daemon=True
        )
        watchdog.start()
        try:
            try:
                spec = self.build_spec(claimed)
                if self.isolate_jobs:
                    outcome = self._run_child(spec)
                else:
                    outcome = execute_job(spec)
            except Exception as exc:
                logger.exception("job %d: worker error", job_id)
                self.fail_attempt(
                    job_id, f"worker error: {type(exc).__name__}: {exc}", retry=True
                )
                return "worker error"
            finally:
                done.set()
                watchdog.join(timeout=10)
            if outcome is not None:
                self.record_outcome(claimed, outcome)
            return "ran"
        finally:
            self._current = None

    def _watch(self, claimed: ClaimedJob, done: threading.Event) -> None:
        """Renew the lease while the job runs; enforce the time limit of an in-process job."""
        interval = self.lease_seconds / 3
        deadline = time.monotonic() + self.job_timeout_seconds
        while not done.wait(
            interval if self.isolate_jobs else min(interval, max(0.05, deadline - time.monotonic()))
        ):
            if not self.isolate_jobs and time.monotonic() >= deadline and not done.is_set():
                self._time_out_in_process(claimed)
            try:
                still_ours = self.database.renew_lease(
                    claimed.id, self.worker_name, self.lease_seconds
                )
            except Exception:
                logger.warning("job %d: lease renewal failed; retrying", claimed.id, exc_info=True)
                continue
            if not still_ours:
                logger.warning(
                    "job %d: lease lost (re-queued by the node or cancelled); its results will "
                    "be discarded",
                    claimed.id,
                )
                with self._children_lock:
                    for child in list(self._children):
                        child.kill()
                return

    def _time_out_in_process(self, claimed: ClaimedJob) -> None:
        """Fail a job that ran past its limit in this process, then end the process.

        A pipeline cannot be interrupted safely from another thread, so the worker exits (its
        message is delivered again and acknowledged by the next worker, whose claim finds the
        job failed); systemd (``Restart=always``) or the container runtime starts it again.
        """
        message = (
            f"timed out after {self.job_timeout_seconds:g} s (job_timeout_seconds); the worker "
            f"{self.worker_name} was ended"
        )
        try:
            self.fail_attempt(claimed.id, message, retry=False)
        finally:
            logger.error("job %d: %s", claimed.id, message)
            logging.shutdown()
            os._exit(EXIT_TIMED_OUT)

    def _still_ours(self, job_id: int) -> bool:
        current = self._current
        return (
            current is not None
            and current.id == job_id
            and self.database.owns_job(job_id, self.worker_name, current.attempt)
        )

    def owner_of(self, job_id: int) -> tuple[str, int] | None:
        """This worker's run of ``job_id``: results and failures are written only while the
        database still shows it as the job's holder (same transaction as the write)."""
        current = self._current
        if current is not None and current.id == job_id:
            return (self.worker_name, current.attempt)
        return None

    def fail_attempt(self, job_id: int, error: str, *, retry: bool) -> JobState | None:
        """Record a failed attempt, unless the job is no longer this worker's."""
        if not self._still_ours(job_id):
            logger.warning("job %d: not recording failure (%s): the job is no longer ours", job_id, error)
            return None
        return super().fail_attempt(job_id, error, retry=retry)

    def record_outcome(self, claimed: ClaimedJob, outcome: JobOutcome) -> None:
        """Record results, unless the job is no longer this worker's (then discard them)."""
        if not self._still_ours(claimed.id):
            message = (
                f"results of attempt {claimed.attempt} on {self.worker_name} discarded: the job "
                "was re-queued or cancelled while it ran"
            )
            logger.warning("job %d: %s", claimed.id, message)
            self.database.add_event(claimed.id, message, level="warning")
            return
        super().record_outcome(claimed, outcome)


def make_worker_app(settings: Settings, worker: CeleryJobWorker, queues: list[str]) -> Any:
    """The Celery application of a worker, with the job task bound to ``worker``."""
    app = make_celery_app(settings, queues)

    @app.task(name=RUN_JOB_TASK, acks_late=True, reject_on_worker_lost=True, ignore_result=True)
    def run_job(job_id: int) -> str:
        return worker.handle(int(job_id))

    return app


def run_worker(
    settings: Settings, queues: list[str], *, name: str | None = None, loglevel: str = "INFO"
) -> None:
    """Run a Celery worker (solo pool, one job at a time) on ``queues`` until it is stopped.

    SIGTERM stops it after the running job (warm shutdown); a second SIGTERM or SIGQUIT stops it
    at once (the job's message is delivered again and its lease expires).
    """
    worker = CeleryJobWorker(settings, name=name)
    app = make_worker_app(settings, worker, queues)
    nodename = f"ainode-{os.getpid()}@{socket.gethostname()}"
    logger.info(
        "ainode worker %s: queues %s, database %s, data %s",
        worker.worker_name,
        ",".join(queues),
        _redact_db(settings.resolved_database_url),
        settings.data_dir,
    )
    try:
        app.worker_main(
            argv=[
                "worker",
                "--pool=solo",
                "--concurrency=1",
                "-Q",
                ",".join(queues),
                "-n",
                nodename,
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                f"--loglevel={loglevel}",
            ]
        )
    finally:
        worker.database.close()


def _redact_db(url: str) -> str:
    from storage.database import redact_url

    return redact_url(url)
