"""Who is asking: session cookie, trusted reverse-proxy header, or HTTP Basic; CSRF tokens.

* Browser sign-in (``/login``) stores the user name, the sign-in time and a random session id in
  a signed session cookie (Starlette ``SessionMiddleware``, itsdangerous, ``SameSite=Strict``,
  ``HttpOnly``, ``Secure`` over TLS). The user is looked up in the database on every request, so
  removing a user or changing roles takes effect at once; sign-out revokes the session id on the
  server (:mod:`node.web.sessions`), so a copy of the cookie is refused afterwards.
* Every password check (form or HTTP Basic) passes the sign-in throttle
  (:class:`node.web.throttle.SignInGuard`) before any Argon2 work; a refused one is answered 429.
* With ``web.trusted_user_header`` set, a request from one of ``web.trusted_proxies`` carrying
  that header is signed in as that (existing) user.
* The REST API, the STOW-RS endpoint (``/dicomweb/``) and ``/metrics`` also accept HTTP Basic
  credentials. No ``WWW-Authenticate``
  challenge is ever sent, so browsers never cache Basic credentials and cannot replay them
  cross-site; scripts send them pre-emptively (``curl -u``).
* Every state-changing request authenticated by session or proxy must carry the session's CSRF
  token (hidden form field ``csrf_token`` or header ``X-CSRF-Token``).
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import secrets
import threading
import time
from typing import Any

from fastapi import HTTPException, Request

from node.users import CurrentUser, authenticate, lookup_user
from node.web.sessions import SessionRevocations
from node.web.throttle import SignInGuard, SignInRefused

SESSION_USER = "user"
SESSION_SIGNED_IN_AT = "signed_in_at"
SESSION_ID = "sid"
SESSION_CSRF = "csrf"
#: ASGI scope key: the (name, address) that :class:`BasicThrottleMiddleware` admitted.
ADMITTED = "ainode.sign_in_admitted"

#: How long a verified HTTP Basic credential is remembered (Argon2 costs ~0.1-0.6 s per check).
BASIC_CACHE_TTL_S = 300.0

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
    return _parse_basic(request.headers.get("authorization", ""))


def _parse_basic(header: str) -> tuple[str, str] | None:
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

    Entries are keyed by an HMAC (per-process random key) of name and password and hold the
    Argon2 hash they were verified against; a hit counts only while the stored hash is the same,
    so a password change or user removal invalidates them at once. A credential that is not in
    the cache costs no database query before the sign-in throttle has admitted it.
    """

    def __init__(self, ttl_s: float = BASIC_CACHE_TTL_S, size: int = 256) -> None:
        self.ttl_s, self.size = ttl_s, size
        self._key = secrets.token_bytes(32)
        self._entries: dict[bytes, tuple[float, str]] = {}
        self._lock = threading.Lock()

    def _digest(self, name: str, password: str) -> bytes:
        return hmac.new(self._key, f"{name}\0{password}".encode(), "sha256").digest()

    def candidate(self, name: str, password: str) -> str | None:
        """The stored hash this credential was verified against recently, else ``None``."""
        digest = self._digest(name, password)
        with self._lock:
            entry = self._entries.get(digest)
        if entry is None or time.monotonic() - entry[0] >= self.ttl_s:
            return None
        return entry[1]

    def remember(self, name: str, password: str, stored_hash: str) -> None:
        """Note a successful verification against ``stored_hash``."""
        digest = self._digest(name, password)
        with self._lock:
            if len(self._entries) >= self.size:
                self._entries.clear()
            self._entries[digest] = (time.monotonic(), stored_hash)


def check_password(request: Request, name: str, password: str) -> CurrentUser | None:
    """Verify a password under the sign-in throttle; the user, or ``None`` when wrong.

    Raises
    ------
    SignInRefused
        When the throttle refuses the attempt (no Argon2 work was done).
    """
    guard: SignInGuard = request.app.state.sign_in_guard
    address = client_address(request)
    if request.scope.get(ADMITTED) != (name, address):  # not yet by BasicThrottleMiddleware
        guard.admit(name, address)
    with guard.argon2_slot():
        user = authenticate(request.app.state.database, name, password)
    if user is None:
        guard.failed(name, address)
    else:
        guard.succeeded(name, address)
    return user


def too_many(refused: SignInRefused) -> HTTPException:
    """The 429 answer for a refused password check."""
    return HTTPException(status_code=429, detail=refused.message,
                         headers={"Retry-After": str(refused.retry_after_s)})


def _basic_user(request: Request, name: str, password: str) -> CurrentUser | None:
    state = request.app.state
    database = state.database
    cache: BasicCredentialCache = state.basic_cache
    verified_hash = cache.candidate(name, password)
    if verified_hash is not None:
        stored = database.get_user(name)
        if stored is not None and hmac.compare_digest(stored.password_hash, verified_hash):
            return CurrentUser(stored.name, frozenset(stored.roles.split(",")), via="basic")
    try:
        found = check_password(request, name, password)
    except SignInRefused as refused:
        raise too_many(refused) from None
    if found is None:
        return None
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

    Raises
    ------
    HTTPException
        429 when HTTP Basic credentials must be checked and the sign-in throttle refuses.
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
        session_id = str(request.session.get(SESSION_ID) or "")
        lifetime_s = settings.web.session_lifetime_minutes * 60
        revocations: SessionRevocations = state.revocations
        if (name and session_id and time.time() - signed_in_at < lifetime_s
                and not revocations.is_revoked(session_id)):
            user = lookup_user(database, str(name), via="session")
        elif name:
            for key in (SESSION_USER, SESSION_SIGNED_IN_AT, SESSION_ID):
                request.session.pop(key, None)
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
    request.session[SESSION_ID] = secrets.token_urlsafe(24)
    csrf_token(request)


def sign_out(request: Request) -> None:
    """End the session and revoke its id on the server (copies of the cookie stop working)."""
    session_id = request.session.get(SESSION_ID)
    if session_id:
        revocations: SessionRevocations = request.app.state.revocations
        revocations.revoke(str(session_id), str(request.session.get(SESSION_USER, "")),
                           client_address(request))
    request.session.clear()


class BasicThrottleMiddleware:
    """ASGI middleware: sign-in attempts meet the throttle before anything else runs, on the
    event loop.

    HTTP Basic credentials that need a password check (not recently verified) pass
    :meth:`~node.web.throttle.SignInGuard.admit`; an admitted request is marked in the scope so
    that :func:`check_password` does not take a second token. A sign-in form post (``POST
    /login``) from an address whose bucket, or the global one, is empty is refused before its body
    is read (:meth:`~node.web.throttle.SignInGuard.congested`). A refused request is answered 429
    (``Retry-After``) without a thread, a session, a template or a database query, so a flood of
    guesses costs microseconds each.

    Parameters
    ----------
    app:
        The wrapped ASGI application.
    guard, cache:
        The application's :class:`~node.web.throttle.SignInGuard` and
        :class:`BasicCredentialCache`.
    trusted_proxies:
        ``web.trusted_proxies`` (their right-most ``X-Forwarded-For`` entry is the client).
    """

    def __init__(self, app: Any, guard: SignInGuard, cache: BasicCredentialCache,
                 trusted_proxies: list[str]) -> None:
        self.app, self.guard, self.cache = app, guard, cache
        self.trusted_proxies = list(trusted_proxies)

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        path = scope.get("path", "") if scope["type"] == "http" else ""
        if path == "/login" and scope.get("method") == "POST":
            refused = self.guard.congested(self._address(scope, dict(scope.get("headers", []))))
            if refused is not None:
                await self._refuse(send, refused, as_json=False)
                return
        elif path.startswith(("/api/", "/dicomweb/")) or path == "/metrics":
            headers = dict(scope.get("headers", []))
            credentials = _parse_basic(headers.get(b"authorization", b"").decode("latin-1"))
            if credentials is not None and self.cache.candidate(*credentials) is None:
                address = self._address(scope, headers)
                try:
                    self.guard.admit(credentials[0], address)
                except SignInRefused as refused:
                    await self._refuse(send, refused)
                    return
                scope[ADMITTED] = (credentials[0], address)
        await self.app(scope, receive, send)

    def _address(self, scope: Any, headers: dict[bytes, bytes]) -> str:
        client = scope.get("client")
        peer = client[0] if client else ""
        if peer in self.trusted_proxies:
            forwarded = headers.get(b"x-forwarded-for", b"").decode("latin-1")
            hops = [h.strip() for h in forwarded.split(",") if h.strip()]
            if hops:
                return hops[-1]
        return str(peer)

    @staticmethod
    async def _refuse(send: Any, refused: SignInRefused, as_json: bool = True) -> None:
        if as_json:
            body, kind = json.dumps({"detail": refused.message}).encode(), b"application/json"
        else:
            text = f"{refused.message} (retry in {refused.retry_after_s} s)\n"
            body, kind = text.encode(), b"text/plain; charset=utf-8"
        await send({"type": "http.response.start", "status": 429, "headers": [
            (b"content-type", kind), (b"content-length", str(len(body)).encode()),
            (b"retry-after", str(refused.retry_after_s).encode()), (b"cache-control", b"no-store"),
        ]})
        await send({"type": "http.response.body", "body": body})
