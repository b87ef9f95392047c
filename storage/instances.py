"""Stored instances and series arrival: the ingest side of the job database.

Every acknowledged C-STORE is recorded here (:meth:`InstanceLedger.record_instances`, one
transaction per batch); a series receiving nothing for the quiet period is closed into one job
(:meth:`InstanceLedger.complete_quiet_series`, state ``received``), which the node then routes;
with ``completion: study`` the open series of a quiet study are closed together
(:meth:`InstanceLedger.complete_quiet_studies`).
"""

from __future__ import annotations

import datetime as dt
import hashlib
from collections import Counter, defaultdict
from collections.abc import Sequence
from dataclasses import dataclass

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from storage.engine import DatabaseCore
from storage.models import Instance, Job, JobEvent, JobState, Series, SeriesState, utcnow


#: Series closed per round of statements in :meth:`InstanceLedger.complete_quiet_series`.
_CHUNK = 500


@dataclass(frozen=True)
class InstanceRecord:
    """One stored instance to record (see :meth:`InstanceLedger.record_instances`)."""

    sop_instance_uid: str
    study_instance_uid: str
    series_instance_uid: str
    sop_class_uid: str
    transfer_syntax_uid: str
    modality: str
    path: str
    calling_ae_title: str
    received_at: dt.datetime
    accession_number: str = ""



def input_fingerprint(sop_instance_uids: Sequence[str]) -> str:
    """sha256 of the sorted SOP Instance UIDs of a job's input (identifies a re-sent series)."""
    digest = hashlib.sha256("\n".join(sorted(sop_instance_uids)).encode()).hexdigest()
    return digest



class InstanceLedger(DatabaseCore):
    """Instances and series: recording arrivals and closing quiet series into jobs."""

    def record_instance(
        self,
        *,
        sop_instance_uid: str,
        study_instance_uid: str,
        series_instance_uid: str,
        sop_class_uid: str,
        transfer_syntax_uid: str,
        modality: str,
        path: str,
        calling_ae_title: str,
        received_at: dt.datetime | None = None,
        accession_number: str = "",
    ) -> bool:
        """Record one stored instance; see :meth:`record_instances`.

        Returns
        -------
        bool
            ``True`` if the instance was new.
        """
        record = InstanceRecord(
            sop_instance_uid=sop_instance_uid,
            study_instance_uid=study_instance_uid,
            series_instance_uid=series_instance_uid,
            sop_class_uid=sop_class_uid,
            transfer_syntax_uid=transfer_syntax_uid,
            modality=modality,
            path=path,
            calling_ae_title=calling_ae_title,
            received_at=received_at or utcnow(),
            accession_number=accession_number,
        )
        return self.record_instances([record]) == 1

    def record_instances(self, records: Sequence[InstanceRecord]) -> int:
        """Record stored instances and note their arrival in their series, in one transaction.

        A re-sent instance (same SOP Instance UID) updates its row; a new instance arriving for a
        complete series re-opens it (it becomes a new job after the next quiet period).

        Returns
        -------
        int
            How many of the instances were new.
        """
        new_count = 0
        with self._ingest_lock, self.session() as session:
            # One SELECT for the batch and one flush at the end, instead of a SELECT and a
            # flush per record (about 1 ms of CPU each with a batch of 200; issue 14 item 7).
            uids = {record.sop_instance_uid for record in records}
            known: dict[str, Instance] = {
                instance.sop_instance_uid: instance
                for instance in session.scalars(
                    select(Instance).where(Instance.sop_instance_uid.in_(uids))
                )
            }
            series_of: dict[str, Series] = {}
            for record in records:
                now = record.received_at
                instance = known.get(record.sop_instance_uid)
                is_new = instance is None
                if instance is None:
                    known[record.sop_instance_uid] = Instance(
                        sop_instance_uid=record.sop_instance_uid,
                        study_instance_uid=record.study_instance_uid,
                        series_instance_uid=record.series_instance_uid,
                        sop_class_uid=record.sop_class_uid,
                        transfer_syntax_uid=record.transfer_syntax_uid,
                        path=record.path,
                        calling_ae_title=record.calling_ae_title,
                        received_at=now,
                    )
                    session.add(known[record.sop_instance_uid])
                else:
                    if instance.series_instance_uid != record.series_instance_uid:
                        # Re-sent under another series (e.g. a PACS correction): the instance
                        # leaves its old series and counts as new in the one it joins.
                        old_series = session.get(Series, instance.series_instance_uid)
                        if old_series is not None and old_series.instance_count > 0:
                            old_series.instance_count -= 1
                        instance.series_instance_uid = record.series_instance_uid
                        instance.study_instance_uid = record.study_instance_uid
                        is_new = True
                    instance.path = record.path
                    instance.transfer_syntax_uid = record.transfer_syntax_uid
                    instance.sop_class_uid = record.sop_class_uid
                    instance.received_at = now
                new_count += int(is_new)
                series = series_of.get(record.series_instance_uid) or session.get(
                    Series, record.series_instance_uid
                )
                if series is None:
                    series = Series(
                        series_instance_uid=record.series_instance_uid,
                        study_instance_uid=record.study_instance_uid,
                        modality=record.modality,
                        calling_ae_title=record.calling_ae_title,
                        accession_number=record.accession_number[:16],
                        state=SeriesState.OPEN,
                        instance_count=1,
                        first_received_at=now,
                        last_received_at=now,
                    )
                    session.add(series)
                    session.flush()
                    series_of[record.series_instance_uid] = series
                else:
                    series_of[record.series_instance_uid] = series
                    if series.state == SeriesState.COMPLETE:
                        series.state = SeriesState.OPEN
                        series.first_received_at = now
                    if is_new:
                        series.instance_count += 1
                    series.last_received_at = max(series.last_received_at, now)
                    series.calling_ae_title = record.calling_ae_title or series.calling_ae_title
                    if record.accession_number:
                        series.accession_number = record.accession_number[:16]
            session.flush()
        return new_count

    def known_sop_instance_uids(self) -> set[str]:
        """SOP Instance UIDs of every recorded instance (for the start-up store scan)."""
        with self.session() as session:
            return set(session.scalars(select(Instance.sop_instance_uid)))

    def series_instances(self, series_instance_uid: str) -> list[Instance]:
        """The recorded instances of a series."""
        with self.session() as session:
            return list(
                session.scalars(
                    select(Instance)
                    .where(Instance.series_instance_uid == series_instance_uid)
                    .order_by(Instance.sop_instance_uid)
                )
            )

    def complete_quiet_series(
        self, quiet_seconds: float, now: dt.datetime | None = None, max_attempts: int = 2
    ) -> list[int]:
        """Close every open series that received nothing for ``quiet_seconds``; one job each.

        ``max_attempts`` is how often the job may be run when its worker crashes.

        Returns
        -------
        list[int]
            Ids of the jobs created (state ``received``).
        """
        now = now or utcnow()
        cutoff = now - dt.timedelta(seconds=quiet_seconds)
        created: list[int] = []
        with self._ingest_lock, self.session() as session:
            quiet = session.scalars(
                select(Series).where(
                    Series.state == SeriesState.OPEN, Series.last_received_at <= cutoff
                )
            ).all()
            # A flood of small series (2,000 at once) is closed in a few statements per chunk,
            # not several per series: routing of everything else waits while this runs.
            for start in range(0, len(quiet), _CHUNK):
                chunk = quiet[start : start + _CHUNK]
                created.extend(
                    self._close_series(session, chunk, now, quiet_seconds, max_attempts)
                )
        return created

    def complete_quiet_studies(
        self,
        quiet_seconds: float,
        max_wait_seconds: float,
        now: dt.datetime | None = None,
        max_attempts: int = 2,
    ) -> list[int]:
        """Close every open series of each study that is complete (``completion: study``).

        A study is complete when none of its open series received an instance for
        ``quiet_seconds``, or when its oldest open series began arriving ``max_wait_seconds``
        ago (the study is then processed with what has arrived; later instances re-open their
        series and the study is evaluated again). Every open series of a complete study
        becomes one job in state ``received``; the node routes a study's received jobs together
        and selects the series each protocol runs on (:mod:`node.selection`).

        Returns
        -------
        list[int]
            Ids of the jobs created (state ``received``).
        """
        now = now or utcnow()
        quiet_cutoff = now - dt.timedelta(seconds=quiet_seconds)
        wait_cutoff = now - dt.timedelta(seconds=max_wait_seconds)
        created: list[int] = []
        with self._ingest_lock, self.session() as session:
            studies = session.execute(
                select(
                    Series.study_instance_uid,
                    func.max(Series.last_received_at),
                    func.min(Series.first_received_at),
                )
                .where(Series.state == SeriesState.OPEN)
                .group_by(Series.study_instance_uid)
            ).all()
            why: dict[str, str] = {}
            for study_uid, last, first in studies:
                if last <= quiet_cutoff:
                    why[study_uid] = f"study complete: nothing new in the study for {quiet_seconds:g} s"
                elif first <= wait_cutoff:
                    why[study_uid] = (
                        f"study still receiving after {max_wait_seconds:g} s: processed with "
                        "what has arrived"
                    )
            if not why:
                return created
            ready = session.scalars(
                select(Series).where(
                    Series.state == SeriesState.OPEN, Series.study_instance_uid.in_(list(why))
                )
            ).all()
            for start in range(0, len(ready), _CHUNK):
                chunk = ready[start : start + _CHUNK]
                created.extend(
                    self._close_series(
                        session, chunk, now, quiet_seconds, max_attempts, why=why
                    )
                )
        return created

    @staticmethod
    def _close_series(
        session: Session,
        chunk: Sequence[Series],
        now: dt.datetime,
        quiet_seconds: float,
        max_attempts: int,
        why: dict[str, str] | None = None,
    ) -> list[int]:
        """Mark ``chunk`` complete and create one ``received`` job per series (with its event)."""
        keys = [series.series_instance_uid for series in chunk]
        uids: dict[str, list[str]] = defaultdict(list)
        for series_uid, sop_uid in session.execute(
            select(Instance.series_instance_uid, Instance.sop_instance_uid).where(
                Instance.series_instance_uid.in_(keys)
            )
        ):
            uids[series_uid].append(sop_uid)
        fingerprints = {key: input_fingerprint(uids[key]) for key in keys}
        previous: Counter[str] = Counter()
        for series_uid, fingerprint in session.execute(
            select(Job.series_instance_uid, Job.input_fingerprint).where(
                Job.series_instance_uid.in_(keys)
            )
        ):
            if fingerprint == fingerprints[series_uid]:
                previous[series_uid] += 1
        jobs: list[Job] = []
        for series in chunk:
            key = series.series_instance_uid
            series.state = SeriesState.COMPLETE
            series.completed_at = now
            job = Job(
                study_instance_uid=series.study_instance_uid,
                series_instance_uid=key,
                modality=series.modality,
                calling_ae_title=series.calling_ae_title,
                accession_number=series.accession_number,
                state=JobState.RECEIVED,
                instance_count=len(uids[key]),
                input_fingerprint=fingerprints[key],
                max_attempts=max_attempts,
                created_at=now,
            )
            session.add(job)
            jobs.append(job)
        session.flush()
        for job in jobs:
            count, before = job.instance_count, previous[job.series_instance_uid]
            note = (
                f"; the same {count} instance(s) were processed before by "
                f"{before} job(s): outputs get the same UIDs and replace them"
                if before
                else ""
            )
            closed = (
                f"series complete (with its study): {count} instance(s); "
                + why[job.study_instance_uid]
                if why is not None
                else f"series complete: {count} instance(s), nothing new for {quiet_seconds:g} s"
            )
            session.add(JobEvent(job_id=job.id, at=now, message=closed + note))
        return [job.id for job in jobs]

    def count_instances(self) -> int:
        """Number of recorded instances."""
        with self.session() as session:
            return int(session.scalar(select(func.count()).select_from(Instance)) or 0)

