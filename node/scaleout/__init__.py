"""Scale-out: jobs run by Celery workers (``ainode worker``) through a RabbitMQ broker.

The job database stays the single source of truth; the broker only carries job ids.

- :mod:`node.scaleout.app` builds the Celery application from :class:`node.config.Settings`
  (late acknowledgement, prefetch 1, reject on worker loss, one queue per protocol group).
- :mod:`node.scaleout.dispatcher` is the node's side (:class:`CeleryRunner`, a
  :class:`node.runner.JobRunner`): it publishes the id of every queued job, and publishes again
  the jobs no worker claimed in time (a lost message) or whose worker died (expired lease).
- the database operations of a worker (claim the next job of a queue in fair order or one named
  job, compare-and-set; renew and check its lease) are those of the local runner, in
  :mod:`storage.job_queue`.
- :mod:`node.worker` is the worker's side (``ainode worker --queues gpu,cpu``).

See docs/scaling.md for the deployment (shared storage, queues, one worker per GPU).
"""
