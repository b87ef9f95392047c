"""The association log: every association request the DICOM listener saw, kept
:data:`ASSOCIATION_LOG_DAYS` days (dashboard: "associations in the last hour")."""

from __future__ import annotations

import datetime as dt

from sqlalchemy import delete, func, select

from storage.engine import DatabaseCore
from storage.models import AssociationRecord, utcnow

#: Days the association log (dashboard: "associations in the last hour") is kept.
ASSOCIATION_LOG_DAYS = 7


class AssociationLog(DatabaseCore):
    """Recording and counting association requests."""

    def record_association(
        self,
        *,
        calling_ae_title: str,
        address: str,
        accepted: bool,
        reason: str | None = None,
        at: dt.datetime | None = None,
    ) -> None:
        """Log one association request seen by the listener.

        Rows older than :data:`ASSOCIATION_LOG_DAYS` days are deleted in the same transaction
        (an indexed range delete, usually of nothing), so the log stays small.
        """
        at = at or utcnow()
        with self.session() as session:
            session.execute(
                delete(AssociationRecord).where(
                    AssociationRecord.at < at - dt.timedelta(days=ASSOCIATION_LOG_DAYS)
                )
            )
            session.add(
                AssociationRecord(
                    at=at,
                    calling_ae_title=calling_ae_title[:16],
                    address=address[:64],
                    accepted=accepted,
                    reason=reason,
                )
            )

    def association_counts(self, since: dt.datetime) -> dict[str, int]:
        """Accepted and rejected association requests since ``since`` (naive UTC)."""
        with self.session() as session:
            rows = session.execute(
                select(AssociationRecord.accepted, func.count(AssociationRecord.id))
                .where(AssociationRecord.at >= since)
                .group_by(AssociationRecord.accepted)
            ).all()
        counts = {"accepted": 0, "rejected": 0}
        for accepted, count in rows:
            counts["accepted" if accepted else "rejected"] += int(count)
        return counts
