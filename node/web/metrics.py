"""Prometheus metrics at ``/metrics``, read from the job database at scrape time.

The dashboard is its own process, so the metrics describe the database, which every node
process and worker shares: they are the same whichever dashboard instance is scraped.

=====================================  =======  ==========================================
metric                                 type     meaning
=====================================  =======  ==========================================
``ainode_instances_received``          gauge    instances recorded in the job database
``ainode_jobs{state}``                 gauge    jobs per state
``ainode_job_duration_seconds``        summary  done jobs per protocol: count and sum of
                                                run start to finish (sends included)
``ainode_sends{state}``                gauge    sends per state; ``failed`` = send failures
``ainode_queue_depth{protocol}``       gauge    queued jobs per protocol
``ainode_queue_depth_by_priority``     gauge    queued jobs per ``priority`` (urgent, routine,
                                                low)
``ainode_queue_oldest_wait_seconds``    gauge    per ``priority``: how long its oldest queued
                                                job has waited (0 when none waits)
``ainode_associations_last_hour``      gauge    association requests, by ``outcome``
``ainode_info{version}``               gauge    1
=====================================  =======  ==========================================
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterator
from typing import Any

from prometheus_client import CollectorRegistry, generate_latest
from prometheus_client.core import GaugeMetricFamily, Metric, SummaryMetricFamily

from node.web.status import software_version
from storage.models import JobState, SendState, utcnow


class JobDatabaseCollector:
    """A Prometheus collector over :class:`storage.database.JobDatabase`."""

    def __init__(self, database: Any) -> None:
        self.database = database

    def collect(self) -> Iterator[Metric]:
        db = self.database
        instances = GaugeMetricFamily(
            "ainode_instances_received", "Instances recorded in the job database."
        )
        instances.add_metric([], db.count_instances())
        yield instances
        jobs = GaugeMetricFamily("ainode_jobs", "Jobs per state.", labels=["state"])
        counts = db.count_jobs_by_state()
        for state in JobState:
            jobs.add_metric([state.value], counts.get(state.value, 0))
        yield jobs
        duration = SummaryMetricFamily(
            "ainode_job_duration_seconds",
            "Done jobs per protocol: run start to finish, sends included.",
            labels=["protocol"],
        )
        for protocol, (count, total) in sorted(db.job_duration_by_protocol().items()):
            duration.add_metric([protocol], count_value=count, sum_value=total)
        yield duration
        sends = GaugeMetricFamily("ainode_sends", "Sends per state.", labels=["state"])
        send_counts = db.count_sends_by_state()
        for send_state in SendState:
            sends.add_metric([send_state.value], send_counts.get(send_state.value, 0))
        yield sends
        queue = GaugeMetricFamily("ainode_queue_depth", "Queued jobs per protocol.", labels=["protocol"])
        for protocol, count in sorted(db.queue_depth_by_protocol().items()):
            queue.add_metric([protocol], count)
        yield queue
        by_priority = GaugeMetricFamily(
            "ainode_queue_depth_by_priority", "Queued jobs per priority.", labels=["priority"]
        )
        oldest = GaugeMetricFamily(
            "ainode_queue_oldest_wait_seconds",
            "Per priority: seconds the oldest queued job has waited.",
            labels=["priority"],
        )
        for priority, stats in db.queue_stats_by_priority().items():
            by_priority.add_metric([priority], stats.depth)
            oldest.add_metric([priority], stats.oldest_waiting_seconds)
        yield by_priority
        yield oldest
        associations = GaugeMetricFamily(
            "ainode_associations_last_hour", "Association requests in the last hour.",
            labels=["outcome"],
        )
        for outcome, count in db.association_counts(utcnow() - dt.timedelta(hours=1)).items():
            associations.add_metric([outcome], count)
        yield associations
        info = GaugeMetricFamily("ainode_info", "ainode version.", labels=["version"])
        info.add_metric([software_version()], 1)
        yield info


def make_registry(database: Any) -> CollectorRegistry:
    """A registry holding only the job database collector."""
    registry = CollectorRegistry(auto_describe=False)
    registry.register(JobDatabaseCollector(database))  # type: ignore[arg-type]
    return registry


def render(registry: CollectorRegistry) -> bytes:
    """The text exposition format."""
    return generate_latest(registry)
