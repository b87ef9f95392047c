"""Server-side session revocation and the Secure flag of the session cookie.

The session itself is a signed cookie (Starlette ``SessionMiddleware``): it holds the user name,
the sign-in time and a random session id. Signing out **revokes** that id on the server: the id's
SHA-256 is written to the job database as an ``audit_log`` row (action ``sign-out``), so every
dashboard process on that database refuses the cookie, also after a restart. Each process keeps
the revoked ids of the last session lifetime in memory and reads new ``sign-out`` rows at most
every :data:`REFRESH_S` seconds (an indexed primary-key range query); a revocation made by the
process itself takes effect at once. A session cookie without an id (issued before this version)
is refused: its user signs in again.

The cookie gets the ``Secure`` attribute whenever the request came over TLS: ``web.cookie_secure``,
an ``https`` connection, or ``X-Forwarded-Proto: https`` from one of ``web.trusted_proxies``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import threading
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any

from sqlalchemy import select

from storage.models import AuditEntry, utcnow

#: How often a process reads sign-outs written by other dashboard processes, seconds.
REFRESH_S = 1.0
SIGN_OUT_ACTION = "sign-out"
_OUTCOME_PREFIX = "session revoked: "


def session_digest(session_id: str) -> str:
    """SHA-256 (hex, 32 characters) of a session id: what the database stores."""
    return hashlib.sha256(session_id.encode()).hexdigest()[:32]


class SessionRevocations:
    """Revoked session ids, in memory and in the job database's audit log.

    Parameters
    ----------
    database:
        The job database (:class:`storage.database.JobDatabase`).
    lifetime_s:
        Session lifetime; older revocations are dropped (the cookie has expired anyway).
    """

    def __init__(self, database: Any, lifetime_s: float) -> None:
        self.database, self.lifetime_s = database, lifetime_s
        self._revoked: dict[str, float] = {}  # digest -> wall-clock time of revocation
        self._last_id = 0
        self._read_at = -1e18
        self._lock = threading.Lock()

    def revoke(self, session_id: str, user_name: str, remote_address: str) -> None:
        """Refuse ``session_id`` from now on, here and in every process on the database."""
        digest = session_digest(session_id)
        with self._lock:
            self._revoked[digest] = time.time()
        self.database.record_audit(
            user_name=user_name, action=SIGN_OUT_ACTION, job_id=None,
            remote_address=remote_address, outcome=_OUTCOME_PREFIX + digest,
        )

    def is_revoked(self, session_id: str) -> bool:
        """Whether ``session_id`` was signed out (in any process on the database)."""
        digest = session_digest(session_id)
        with self._lock:
            if digest in self._revoked:
                return True
            if time.monotonic() - self._read_at >= REFRESH_S:
                self._refresh()
            return digest in self._revoked

    def _refresh(self) -> None:
        now = time.time()
        since = utcnow() - dt.timedelta(seconds=self.lifetime_s)
        query = select(AuditEntry.id, AuditEntry.outcome).where(
            AuditEntry.action == SIGN_OUT_ACTION
        )
        query = query.where(AuditEntry.id > self._last_id) if self._last_id else query.where(
            AuditEntry.at >= since
        )
        with self.database.session() as session:
            rows = session.execute(query.order_by(AuditEntry.id)).all()
        for row_id, outcome in rows:
            self._last_id = max(self._last_id, int(row_id))
            if outcome.startswith(_OUTCOME_PREFIX):
                self._revoked[outcome[len(_OUTCOME_PREFIX):]] = now
        self._read_at = time.monotonic()
        cutoff = now - self.lifetime_s
        for digest in [d for d, at in self._revoked.items() if at < cutoff]:
            del self._revoked[digest]


def request_is_secure(scope: MutableMapping[str, Any], trusted_proxies: list[str]) -> bool:
    """Whether an ASGI HTTP request came over TLS (directly or via a trusted proxy that says so)."""
    if scope.get("scheme") == "https":
        return True
    client = scope.get("client")
    peer = client[0] if client else ""
    if peer not in trusted_proxies:
        return False
    for name, value in scope.get("headers", []):
        if name == b"x-forwarded-proto":
            return value.decode("latin-1").split(",")[0].strip().lower() == "https"
    return False


class SecureCookieMiddleware:
    """ASGI middleware: adds ``Secure`` to the session cookie of requests that came over TLS.

    Parameters
    ----------
    app:
        The wrapped ASGI application (the session middleware inside it sets the cookie).
    cookie_name:
        Name of the session cookie.
    always:
        ``web.cookie_secure``: add ``Secure`` to every response.
    trusted_proxies:
        ``web.trusted_proxies``: addresses whose ``X-Forwarded-Proto`` is believed.
    """

    def __init__(
        self, app: Any, cookie_name: str, always: bool, trusted_proxies: list[str]
    ) -> None:
        self.app, self.always, self.trusted_proxies = app, always, list(trusted_proxies)
        self._prefix = f"{cookie_name}=".encode()

    async def __call__(
        self,
        scope: MutableMapping[str, Any],
        receive: Callable[[], Awaitable[Any]],
        send: Callable[[MutableMapping[str, Any]], Awaitable[None]],
    ) -> None:
        if scope["type"] != "http" or not (
            self.always or request_is_secure(scope, self.trusted_proxies)
        ):
            await self.app(scope, receive, send)
            return

        async def send_secure(message: MutableMapping[str, Any]) -> None:
            if message["type"] == "http.response.start":
                headers = []
                for name, value in message.get("headers", []):
                    if (name.lower() == b"set-cookie" and value.startswith(self._prefix)
                            and b"; secure" not in value.lower()):
                        value = value + b"; secure"
                    headers.append((name, value))
                message["headers"] = headers
            await send(message)

        await self.app(scope, receive, send_secure)
