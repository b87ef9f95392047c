"""The Celery application of ainode's scale-out runner, built from the node's settings.

Broker: RabbitMQ (AMQP). The settings follow from the job database being the single source of
truth and from long GPU jobs:

- ``task_acks_late``: a message is acknowledged only after its job ran (or was found already
  taken), so a worker that dies mid-job leaves its message to be delivered again;
- ``task_reject_on_worker_lost``: the same when a pool child dies;
- ``worker_prefetch_multiplier = 1``: a busy worker holds no further message that an idle
  worker could run;
- ``broker_heartbeat = 0``: the solo pool runs a job in the consumer's own thread, so no AMQP
  heartbeat can be sent during a long job and RabbitMQ would close the connection (Celery issue
  #3430); a dead worker's TCP connection is still closed by its kernel, and the job database's
  lease covers a worker whose machine vanished;
- no result backend: results go to the job database.

Messages carry only a job id, as the single argument of the task :data:`RUN_JOB_TASK`. A message
is a turn to run one job of its queue: the worker claims the queue's next job in the fair order of
:mod:`storage.scheduling` (priority, caller round robin, age), the same order as the local runner,
which need not be the job the message names; so no broker-side priority (``x-max-priority``) or
per-priority queues are needed, and a backlog in the broker cannot delay an urgent study.
"""

from __future__ import annotations

from typing import Any

from kombu import Queue

from node.config import Settings
from storage.scheduling import ProtocolFilter

RUN_JOB_TASK = "ainode.run_job"
"""Name of the task that runs one job (argument: the job id)."""


def queue_for(settings: Settings, protocol: str) -> str:
    """Queue name of a protocol (``celery.queues``, else ``celery.default_queue``)."""
    return settings.celery.queues.get(protocol, settings.celery.default_queue)


def protocols_of_queue(settings: Settings, queue: str) -> ProtocolFilter:
    """The protocols whose jobs a message of ``queue`` may run: those mapped to it in
    ``celery.queues``; for the default queue, every protocol not mapped to another queue."""
    if queue == settings.celery.default_queue:
        return ProtocolFilter(
            excluded=frozenset(p for p, q in settings.celery.queues.items() if q != queue)
        )
    return ProtocolFilter(only=frozenset(p for p, q in settings.celery.queues.items() if q == queue))


def known_queues(settings: Settings) -> list[str]:
    """Every queue named in the settings (the default queue first)."""
    names = [settings.celery.default_queue]
    for name in settings.celery.queues.values():
        if name not in names:
            names.append(name)
    return names


def celery_config(settings: Settings, queues: list[str] | None = None) -> dict[str, Any]:
    """Celery configuration (``app.conf``) for these settings.

    Parameters
    ----------
    settings:
        The node's (or worker's) settings.
    queues:
        Queues to declare; default :func:`known_queues`.
    """
    names = queues or known_queues(settings)
    return {
        "broker_url": settings.celery.broker_url,
        "broker_heartbeat": 0,
        "broker_connection_retry_on_startup": True,
        "broker_connection_max_retries": None,
        "result_backend": None,
        "task_ignore_result": True,
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_acks_on_failure_or_timeout": True,
        "worker_prefetch_multiplier": settings.celery.prefetch_multiplier,
        "worker_cancel_long_running_tasks_on_connection_loss": True,
        "worker_hijack_root_logger": False,
        "worker_redirect_stdouts": False,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": settings.celery.default_queue,
        "task_queues": [Queue(name, durable=True) for name in names],
        "task_create_missing_queues": True,
        "task_default_delivery_mode": "persistent",
        "enable_utc": True,
    }


def make_celery_app(settings: Settings, queues: list[str] | None = None) -> Any:
    """A Celery application configured by :func:`celery_config` (no task registered).

    The node only publishes (``app.send_task(RUN_JOB_TASK, ...)``); :mod:`node.worker`
    registers the task on its own application.
    """
    from celery import Celery

    app = Celery("ainode", set_as_current=False)
    app.conf.update(celery_config(settings, queues))
    return app
