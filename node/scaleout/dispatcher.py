"""The node's side of the Celery runner: publish the id of every queued job to its queue.

The node decides nothing about who runs a job: it publishes ``ainode.run_job(job_id)`` to the
protocol's queue; a worker taking the message claims the next job of that queue in fair order
(:meth:`storage.job_queue.JobQueue.claim_job`, compare-and-set), so the broker's order does not
decide which job runs first, the job database does. Because the
job database is the single source of truth, publishing is "at least once":

- every job that becomes ``queued`` (routed, retried, re-queued after a crash) is published
  at once; a change of the job row (``updated_at``) counts as new;
- a job still ``queued`` ``celery.republish_after_seconds`` after its last message is published
  again once its queue holds no waiting message (the message was lost: broker restarted
  without persistence, queue purged, publish failed); while messages wait, the job is most
  likely in the backlog and republishing would only add duplicates;
- a job whose worker died is re-queued by the node when its lease expires
  (:meth:`storage.database.JobDatabase.expire_leases`, in the node's dispatcher) and so
  published again.

A duplicate message is harmless: it runs the next queued job of its queue, or, when none is
queued, it is acknowledged without a run; a job is never run twice (compare-and-set claims).
When the broker is unreachable, publishing is retried every poll; nothing is lost meanwhile.
"""

from __future__ import annotations

import datetime as dt
import logging
import threading
import time
from typing import Any

from node.config import Settings
from node.scaleout.app import RUN_JOB_TASK, make_celery_app, queue_for
from storage.database import JobDatabase
from storage.models import JobState

logger = logging.getLogger(__name__)


class CeleryRunner:
    """A :class:`node.runner.JobRunner` that hands queued jobs to Celery workers.

    Parameters
    ----------
    database:
        The job database (shared with the workers).
    settings:
        Node settings (``celery.*``).
    poll_seconds:
        How often queued jobs are checked without a :meth:`wake`.
    """

    def __init__(self, database: JobDatabase, settings: Settings, *, poll_seconds: float = 1.0) -> None:
        self.database = database
        self.settings = settings
        self.poll_seconds = poll_seconds
        self.app = make_celery_app(settings)
        self._published: dict[int, tuple[dt.datetime | None, float]] = {}
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._broker_ok = True
        self._connection: Any = None
        self._producer_obj: Any = None
        self.published_count = 0

    # -- JobRunner -------------------------------------------------------------------------------

    def start(self) -> None:
        """Start the publishing thread."""
        self._thread = threading.Thread(target=self._loop, name="celery-dispatch", daemon=True)
        self._thread.start()

    def stop(self) -> None:
        """Stop publishing. Jobs run by workers keep running; their results land in the database."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout=10)
        self._close_connection()
        self.app.close()

    def wake(self) -> None:
        """A job was queued: publish now."""
        self._wake.set()

    # -- publishing ------------------------------------------------------------------------------

    def _loop(self) -> None:
        while not self._stopping.is_set():
            try:
                self.publish_due()
            except Exception:
                logger.exception("celery dispatcher error; retrying")
            self._wake.wait(self.poll_seconds)
            self._wake.clear()

    def publish_due(self, now: float | None = None) -> list[int]:
        """Publish queued jobs that have no recent message.

        Returns
        -------
        list[int]
            Ids of the jobs published by this call.
        """
        now = time.monotonic() if now is None else now
        queued = self.database.jobs_in_state(JobState.QUEUED)
        queued_ids = {job.id for job in queued}
        for job_id in list(self._published):
            if job_id not in queued_ids:
                del self._published[job_id]
        published: list[int] = []
        waiting: dict[str, int] = {}
        for job in queued:
            last = self._published.get(job.id)
            queue = queue_for(self.settings, str(job.protocol))
            if last is not None and last[0] == job.updated_at:
                if now - last[1] < self.settings.celery.republish_after_seconds:
                    continue
                # Messages still wait in the queue: this job's is most likely among them (a
                # backlog, not a loss); look again when the queue has drained.
                if queue not in waiting:
                    waiting[queue] = self.messages_waiting(queue)
                if waiting[queue] > 0:
                    continue
            if not self._publish(job.id, queue, republish=last is not None):
                break  # broker unreachable: try again at the next poll
            self._published[job.id] = (job.updated_at, now)
            published.append(job.id)
        return published

    def messages_waiting(self, queue: str) -> int:
        """Messages ready in ``queue`` (0 when the queue does not exist or cannot be asked)."""
        try:
            self._producer()
            channel = self._connection.channel()
            try:
                _name, count, _consumers = channel.queue_declare(queue=queue, passive=True)
                return int(count)
            finally:
                try:
                    channel.close()
                except Exception:
                    logger.debug("channel already closed", exc_info=True)
        except Exception:  # noqa: BLE001 - unknown queue (404) or broker down
            return 0

    def _producer(self) -> Any:
        # One connection owned by the publishing thread (not kombu's process-wide pools).
        if self._connection is None:
            self._connection = self.app.connection_for_write()
            self._producer_obj = self.app.amqp.Producer(self._connection)
        return self._producer_obj

    def _close_connection(self) -> None:
        connection, self._connection, self._producer_obj = self._connection, None, None
        if connection is not None:
            try:
                connection.release()
            except Exception:
                logger.debug("closing the broker connection failed", exc_info=True)

    def _publish(self, job_id: int, queue: str, *, republish: bool) -> bool:
        try:
            self.app.send_task(
                RUN_JOB_TASK,
                args=[job_id],
                queue=queue,
                producer=self._producer(),
                retry=True,
                retry_policy={"max_retries": 2, "interval_start": 0.2, "interval_step": 0.5},
            )
        except Exception as exc:  # noqa: BLE001 - kombu raises many kinds of connection errors
            self._close_connection()
            if self._broker_ok:
                logger.error(
                    "cannot publish job %d to queue %r at %s: %s; jobs stay queued in the "
                    "database and are published when the broker is back",
                    job_id,
                    queue,
                    _redacted(self.settings.celery.broker_url),
                    exc,
                )
            self._broker_ok = False
            return False
        if not self._broker_ok:
            logger.warning("broker reachable again; publishing queued jobs")
        self._broker_ok = True
        self.published_count += 1
        logger.info("job %d: %s to queue %r", job_id, "published again" if republish else "published", queue)
        return True


def _redacted(url: str) -> str:
    """A broker URL without its password (for logs)."""
    from kombu.utils.url import maybe_sanitize_url

    return str(maybe_sanitize_url(url))


def purge_queue(app: Any, queue: str) -> int:
    """Delete every message waiting in ``queue`` (tests and operations: simulate a lost message).

    Returns
    -------
    int
        Number of messages deleted.
    """
    with app.connection_for_write() as connection:
        channel = connection.default_channel
        return int(channel.queue_purge(queue) or 0)
