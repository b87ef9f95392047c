"""Who is asking: session cookie, trusted reverse-proxy header, or HTTP Basic; CSRF tokens.

* Browser sign-in (``/login``) stores the user name and the sign-in time in a signed session
  cookie (Starlette ``SessionMiddleware``, itsdangerous, ``SameSite=Strict``, ``HttpOnly``). The
  user is looked up in the database on every request, so removing a user or changing roles
  takes effect at once.
* With ``web.trusted_user_header`` set, a request from one of ``web.trusted_proxies`` carrying
  that header is signed in as that (existing) user.
* The REST API and ``/metrics`` also accept HTTP Basic credentials. No ``WWW-Authenticate``
  challenge is ever sent, so browsers never cache Basic credentials and cannot replay them
  cross-site; scripts send them pre-emptively (``curl -u``).
* Every state-changing request authenticated by session or proxy must carry the session's CSRF
  token (hidden form field ``csrf_token`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import secrets
import threading
import time
from collections import defaultdict, deque
from typing import Any

from fastapi import Request

from node.users import CurrentUser, authenticate, lookup_user

SESSION_USER = "user"
SESSION_SIGNED_IN_AT = "signed_in_at"
SESSION_CSRF = "csrf"

#: How long a verified HTTP Basic credential is remembered (Argon2 costs ~0.1-0.6 s per check).
BASIC_CACHE_TTL_S = 300.0

#: Failed sign-ins per user name within :data:`THROTTLE_WINDOW_S` before sign-in is refused.
THROTTLE_FAILURES = 5
THROTTLE_WINDOW_S = 900.0


class LoginThrottle:
    """Refuses sign-in for a name after repeated failures (per process, in memory)."""

    def __init__(self, failures: int = THROTTLE_FAILURES, window_s: float = THROTTLE_WINDOW_S) -> None:
        self.failures, self.window_s = failures, window_s
        self._seen: dict[str, deque[float]] = defaultdict(deque)
        self._lock = threading.Lock()

    def blocked(self, name: str) -> bool:
        """Whether sign-in for ``name`` is refused now."""
        with self._lock:
            recent = self._prune(name)
            return len(recent) >= self.failures

    def failed(self, name: str) -> None:
        """Note a failed sign-in."""
        with self._lock:
            self._prune(name).append(time.monotonic())

    def succeeded(self, name: str) -> None:
        """Forget the failures of ``name``."""
        with self._lock:
            self._seen.pop(name, None)

    def _prune(self, name: str) -> deque[float]:
        recent = self._seen[name]
        cutoff = time.monotonic() - self.window_s
        while recent and recent[0] < cutoff:
            recent.popleft()
        return recent


def client_address(request: Request) -> str:
    """The client's address; the right-most X-Forwarded-For entry from a trusted proxy."""
    peer = request.client.host if request.client else ""
    settings = request.app.state.settings
    if peer in settings.web.trusted_proxies:
        forwarded = request.headers.get("x-forwarded-for", "")
        hops = [h.strip() for h in forwarded.split(",") if h.strip()]
        if hops:
            return hops[-1]
    return peer


def csrf_token(request: Request) -> str:
    """The session's CSRF token (created on first use)."""
    token = request.session.get(SESSION_CSRF)
    if not token:
        token = secrets.token_urlsafe(32)
        request.session[SESSION_CSRF] = token
    return str(token)


def csrf_ok(request: Request, submitted: str | None) -> bool:
    """Whether ``submitted`` (form field or header) matches the session's token."""
    expected = request.session.get(SESSION_CSRF)
    candidate = submitted or request.headers.get("x-csrf-token")
    if not expected or not candidate:
        return False
    return hmac.compare_digest(str(expected), str(candidate))


def _basic_credentials(request: Request) -> tuple[str, str] | None:
    header = request.headers.get("authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() != "basic" or not value:
        return None
    try:
        decoded = base64.b64decode(value.strip(), validate=True).decode("utf-8")
    except (binascii.Error, UnicodeDecodeError):
        return None
    name, sep, password = decoded.partition(":")
    return (name, password) if sep else None


class BasicCredentialCache:
    """Remembers verified HTTP Basic credentials for :data:`BASIC_CACHE_TTL_S` seconds.

    Entries are keyed by an HMAC (per-process random key) of name, password and the stored
    Argon2 hash, so a password change or user removal invalidates them at once.
    """

    def __init__(self, ttl_s: float = BASIC_CACHE_TTL_S, size: int = 256) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, float] = {}
        self._lock = threading.Lock()

    def _digest(self, name: str, password: str, stored_hash: str) -> bytes:
        message = f"{name}\0{password}\0{stored_hash}".encode()
        return hmac.new(self._key, message, "sha256").digest()

    def verified(self, name: str, password: str, stored_hash: str) -> bool:
        """Whether this credential was verified against this hash recently."""
        digest = self._digest(name, password, stored_hash)
        with self._lock:
            at = self._entries.get(digest)
            return at is not None and time.monotonic() - at < self.ttl_s

    def remember(self, name: str, password: str, stored_hash: str) -> None:
        """Note a successful verification."""
        digest = self._digest(name, password, stored_hash)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[digest] = time.monotonic()


def _basic_user(request: Request, name: str, password: str) -> CurrentUser | None:
    state = request.app.state
    database = state.database
    cache: BasicCredentialCache = state.basic_cache
    stored = database.get_user(name)
    if stored is not None and cache.verified(name, password, stored.password_hash):
        return CurrentUser(stored.name, frozenset(stored.roles.split(",")), via="basic")
    throttle: LoginThrottle = state.throttle
    if throttle.blocked(name):
        return None
    found = authenticate(database, name, password)
    if found is None:
        throttle.failed(name)
        return None
    throttle.succeeded(name)
    refreshed = database.get_user(name)
    if refreshed is not None:
        cache.remember(name, password, refreshed.password_hash)
    return CurrentUser(found.name, found.roles, via="basic")


def current_user(request: Request, *, allow_basic: bool = False) -> CurrentUser | None:
    """The user making the request, or ``None`` when not signed in.

    Parameters
    ----------
    allow_basic:
        Accept HTTP Basic credentials (REST API and /metrics only).
    """
    cached: Any = getattr(request.state, "user", None)
    if cached is not None:
        return cached
    state = request.app.state
    settings, database = state.settings, state.database
    user: CurrentUser | None = None
    header = settings.web.trusted_user_header
    peer = request.client.host if request.client else ""
    if header and peer in settings.web.trusted_proxies and request.headers.get(header):
        user = lookup_user(database, request.headers[header].strip(), via="proxy")
    if user is None:
        name = request.session.get(SESSION_USER)
        signed_in_at = float(request.session.get(SESSION_SIGNED_IN_AT, 0))
        lifetime_s = settings.web.session_lifetime_minutes * 60
        if name and time.time() - signed_in_at < lifetime_s:
            user = lookup_user(database, str(name), via="session")
        elif name:
            request.session.pop(SESSION_USER, None)
    if user is None and allow_basic:
        credentials = _basic_credentials(request)
        if credentials is not None:
            user = _basic_user(request, *credentials)
    if user is not None:
        request.state.user = user
    return user


def sign_in(request: Request, user: CurrentUser) -> None:
    """Start a new session for ``user`` (the old session, CSRF token included, is dropped)."""
    request.session.clear()
    request.session[SESSION_USER] = user.name
    request.session[SESSION_SIGNED_IN_AT] = time.time()
    csrf_token(request)


def sign_out(request: Request) -> None:
    """End the session."""
    request.session.clear()
