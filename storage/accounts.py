"""Dashboard accounts and the audit log: local users (Argon2 hashes from :mod:`node.users`) and
one entry per state-changing action of a dashboard or API user."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import delete, select, update

from ainode_core.errors import StorageError
from storage.engine import DatabaseCore
from storage.models import AuditEntry, User


class Accounts(DatabaseCore):
    """Users and the audit log."""

    def add_user(self, name: str, password_hash: str, roles: Sequence[str]) -> None:
        """Create a local user (the hash comes from :mod:`node.users`).

        Raises
        ------
        StorageError
            If a user of that name exists.
        """
        with self.session() as session:
            if session.scalar(select(User.id).where(User.name == name)) is not None:
                raise StorageError(
                    f"user {name!r} exists; remove it first (`ainode users remove {name}`)"
                )
            session.add(User(name=name, password_hash=password_hash, roles=",".join(roles)))

    def get_user(self, name: str) -> User | None:
        """The user of that name, or ``None``."""
        with self.session() as session:
            return session.scalar(select(User).where(User.name == name))

    def list_users(self) -> list[User]:
        """Every user, by name."""
        with self.session() as session:
            return list(session.scalars(select(User).order_by(User.name)))

    def remove_user(self, name: str) -> bool:
        """Delete a user; ``False`` if there was none."""
        with self.session() as session:
            result = session.execute(delete(User).where(User.name == name))
            return bool(result.rowcount)  # type: ignore[attr-defined]

    def set_password_hash(self, name: str, password_hash: str) -> None:
        """Replace a user's password hash (re-hash after an Argon2 parameter change)."""
        with self.session() as session:
            session.execute(update(User).where(User.name == name).values(password_hash=password_hash))

    def record_audit(
        self,
        *,
        user_name: str,
        action: str,
        job_id: int | None,
        remote_address: str,
        outcome: str,
    ) -> None:
        """Append one entry to the audit log."""
        with self.session() as session:
            session.add(
                AuditEntry(
                    user_name=user_name,
                    action=action,
                    job_id=job_id,
                    remote_address=remote_address[:64],
                    outcome=outcome,
                )
            )

    def list_audit(self, limit: int = 100, job_id: int | None = None) -> list[AuditEntry]:
        """Most recent audit entries first (optionally of one job)."""
        with self.session() as session:
            query = select(AuditEntry).order_by(AuditEntry.id.desc()).limit(limit)
            if job_id is not None:
                query = query.where(AuditEntry.job_id == job_id)
            return list(session.scalars(query))

