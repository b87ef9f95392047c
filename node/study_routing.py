"""Routing a complete study (``completion: study``): one job per protocol, on the chosen series.

When a study is complete (:meth:`storage.database.JobDatabase.complete_quiet_studies`), each of its
series is a job in state ``received``. :class:`StudyRouter` routes every series of the study (the
new ones and those processed before), selects the series each protocol runs on
(:func:`node.selection.select_series`) and records the outcome on the jobs: the chosen series'
job is queued for its protocol, every other new series' job is ignored with the reason it was
skipped. The choices live on the jobs (routing reason and timeline), so ``ainode jobs show``
and the dashboard list every series of a study with its reason.

A series arriving after its study was processed (a late series) is a new round: it is ranked
with the study's earlier series; when it would now be chosen for a protocol another series was
run on, ``late_series: rerun`` queues it (the outputs' UIDs derive from the study and the
protocol, so its results replace the earlier ones) and ``late_series: ignore`` records why it
is not run. A series that is re-sent and chosen again is run again, as in series mode.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping
from dataclasses import dataclass

from node.routing import RoutingDecision, SeriesSummary
from node.selection import SeriesCandidate, SeriesChoice, SeriesPreferences, select_series
from storage.database import JobDatabase
from storage.models import Job, JobState

logger = logging.getLogger(__name__)

#: States of a job that ran, runs or will run its protocol (its series counts as chosen).
_RUN_STATES = frozenset(
    {JobState.QUEUED, JobState.RUNNING, JobState.DONE, JobState.FAILED}
)


@dataclass(frozen=True)
class RoutedSeries:
    """One series routed from its headers: summary and decision, or why it could not be."""

    summary: SeriesSummary | None
    decision: RoutingDecision | None
    #: Unreadable instances (job events).
    errors: list[str]
    #: Why the series could not be routed (its job fails with this), or ``None``.
    failure: str | None = None


class StudyRouter:
    """Routes the received jobs of complete studies (see the module docstring).

    Parameters
    ----------
    database:
        The job database.
    route:
        ``series_instance_uid -> RoutedSeries``: reads the series' headers and routes them
        (the node's rules and pixel fallback).
    preferences:
        :class:`node.selection.SeriesPreferences` by protocol.
    late_series:
        ``"rerun"`` or ``"ignore"`` (:class:`node.config.Settings`).
    """

    def __init__(
        self,
        database: JobDatabase,
        route: Callable[[str], RoutedSeries],
        preferences: Mapping[str, SeriesPreferences],
        late_series: str,
    ) -> None:
        self.database = database
        self.route = route
        self.preferences = preferences
        self.late_series = late_series

    def route_study(self, study_instance_uid: str) -> list[int]:
        """Route every received job of one study; returns the ids of the jobs queued."""
        jobs = self.database.study_jobs(study_instance_uid)
        received: dict[str, Job] = {}
        for job in jobs:
            if job.state != JobState.RECEIVED:
                continue
            older = received.get(job.series_instance_uid)
            if older is not None:
                self.database.set_routing(
                    older.id, protocol=None, rule=None,
                    reason=f"superseded by job {job.id} of the same series",
                )
            received[job.series_instance_uid] = job
        if not received:
            return []
        earlier: dict[str, Job] = {}
        for job in jobs:
            if job.state != JobState.RECEIVED and job.series_instance_uid not in received:
                earlier[job.series_instance_uid] = job  # the latest job of each earlier series
        previous_run: dict[str, Job] = {}
        for job in jobs:
            if job.protocol and job.state in _RUN_STATES:
                previous_run[job.protocol] = job

        candidates: list[SeriesCandidate] = []
        owners: list[Job | None] = []
        for series_uid, job in received.items():
            routed = self.route(series_uid)
            for error in routed.errors[:5]:
                self.database.add_event(job.id, error, level="error")
            if routed.summary is None or routed.decision is None:
                self.database.fail_job(job.id, routed.failure or "routing failed")
                continue
            candidates.append(SeriesCandidate(routed.summary, routed.decision))
            owners.append(job)
        for series_uid in earlier:
            routed = self.route(series_uid)
            if routed.summary is not None and routed.decision is not None:
                candidates.append(SeriesCandidate(routed.summary, routed.decision))
                owners.append(None)
        choices = select_series(candidates, self.preferences)
        late = bool(earlier) or bool(previous_run)
        queued: list[int] = []
        for candidate, choice, job in zip(candidates, choices, owners, strict=True):
            if job is None:
                continue
            if self._record(job, candidate.decision, choice, previous_run, late):
                queued.append(job.id)
        summary = "; ".join(
            f"{c.series_instance_uid[-12:]}: {'chosen' if c.chosen else 'skipped'}"
            + (f" ({c.protocol})" if c.protocol else "")
            for c in choices
        )
        logger.info("study %s routed: %s", study_instance_uid[-12:], summary)
        return queued

    def _record(
        self,
        job: Job,
        decision: RoutingDecision,
        choice: SeriesChoice,
        previous_run: Mapping[str, Job],
        late: bool,
    ) -> bool:
        """Queue or ignore one new series' job; True when queued."""
        protocol = choice.protocol
        if not choice.chosen or protocol is None:
            self.database.set_routing(
                job.id, protocol=None, rule=decision.rule,
                reason=self._with_routing(choice.reason, decision),
            )
            return False
        before = previous_run.get(protocol)
        if before is not None and before.series_instance_uid != job.series_instance_uid:
            if self.late_series == "ignore":
                self.database.set_routing(
                    job.id, protocol=None, rule=decision.rule,
                    reason=(
                        f"late series: would now be {choice.reason}, but late_series is ignore: "
                        f"job {before.id} keeps its results"
                    ),
                )
                return False
            reason = (
                f"{choice.reason} (late series: re-runs {protocol}; its results replace those "
                f"of job {before.id})"
            )
            self.database.set_routing(
                job.id, protocol=protocol, rule=decision.rule,
                reason=self._with_routing(reason, decision), priority=decision.priority,
            )
            self.database.supersede(
                before.id, by_job_id=job.id,
                note=f"a later series of the study is now chosen for {protocol}",
            )
            return True
        reason = choice.reason
        if late and before is not None:
            reason += f" (re-sent; its results replace those of job {before.id})"
        self.database.set_routing(
            job.id, protocol=protocol, rule=decision.rule,
            reason=self._with_routing(reason, decision), priority=decision.priority,
        )
        return True

    @staticmethod
    def _with_routing(reason: str, decision: RoutingDecision) -> str:
        if decision.protocol is None or decision.reason in reason:
            return reason
        return f"{reason} [{decision.reason}]"


__all__ = ["RoutedSeries", "StudyRouter"]
