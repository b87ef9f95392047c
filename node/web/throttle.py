"""Sign-in throttling of the dashboard: token buckets, lockout per (name, address), Argon2 slots.

Every password check (sign-in form and HTTP Basic without a cached credential) passes
:meth:`SignInGuard.admit` **before** any Argon2 work, in this order:

1. **Lockout per (user name, client address)**: from the :data:`LOCKOUT_AFTER`-th failure of one
   name from one address on, each failure imposes a wait that doubles (5 s, 10 s, 20 s, ... at
   most :data:`LOCKOUT_MAX_S`). Keyed by name *and* address, so failures from another address never
   lock a user out (OWASP Authentication Cheat Sheet, "Account lockout": lockout by account alone
   lets an attacker deny service to that account).
2. **Token bucket per client address** (:data:`PER_ADDRESS_BURST` attempts, then
   :data:`PER_ADDRESS_RATE` per second).
3. **Global token bucket** (:data:`GLOBAL_BURST`, then :data:`GLOBAL_RATE` per second), the
   bound for many addresses at once.
4. **Argon2 slots**: at most :data:`ARGON2_SLOTS` verifications run at once (each allocates
   64 MiB: argon2-cffi's default, RFC 9106 low-memory profile); a request that finds no slot
   within :data:`SLOT_WAIT_S` is refused.

A refused request costs a dictionary look-up: the caller answers 429 with ``Retry-After``.
All state is in memory, per dashboard process, bounded (least recently used keys are dropped
beyond :data:`MAX_KEYS`).
"""

from __future__ import annotations

import math
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass

#: Failures of one user name from one address before each further failure costs a wait.
LOCKOUT_AFTER = 3
#: Wait after the :data:`LOCKOUT_AFTER`-th failure, seconds (doubles with each further one).
LOCKOUT_BASE_S = 5.0
#: Longest wait after repeated failures of one (user name, address), seconds.
LOCKOUT_MAX_S = 900.0
#: A (user name, address) without failures for this long is forgotten, seconds.
LOCKOUT_FORGET_S = 900.0
#: Password checks one address may start at once, then :data:`PER_ADDRESS_RATE` per second.
PER_ADDRESS_BURST = 10.0
PER_ADDRESS_RATE = 1.0
#: Password checks all addresses together may start at once, then :data:`GLOBAL_RATE` per second.
GLOBAL_BURST = 20.0
GLOBAL_RATE = 5.0
#: Argon2 verifications running at once (64 MiB each).
ARGON2_SLOTS = 1
#: How long a request waits for a free Argon2 slot before it is refused, seconds.
SLOT_WAIT_S = 1.0
#: Most addresses / (name, address) pairs remembered.
MAX_KEYS = 10_000
_BUSY = "The dashboard is busy with sign-ins; try again shortly."


class SignInRefused(Exception):
    """A password check was not started (throttled or locked out).

    Attributes
    ----------
    retry_after_s:
        Whole seconds after which a new attempt may be admitted (``Retry-After``).
    message:
        What the user sees.
    """

    def __init__(self, message: str, retry_after_s: float) -> None:
        super().__init__(message)
        self.message = message
        self.retry_after_s = max(1, math.ceil(retry_after_s))


class TokenBucket:
    """A token bucket: ``burst`` tokens, refilled at ``rate`` tokens per second.

    Parameters
    ----------
    burst:
        Capacity (tokens available at once).
    rate:
        Refill rate, tokens per second.
    clock:
        Monotonic clock in seconds (tests may pass their own).
    """

    def __init__(
        self, burst: float, rate: float, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.burst, self.rate, self._clock = burst, rate, clock
        self._tokens, self._at = burst, clock()

    def available(self) -> float:
        """0 when a token is available now, else the seconds until one is (takes nothing)."""
        now = self._clock()
        self._tokens = min(self.burst, self._tokens + (now - self._at) * self.rate)
        self._at = now
        return 0.0 if self._tokens >= 1.0 else (1.0 - self._tokens) / self.rate

    def take(self) -> float:
        """Take one token; 0 on success, else the seconds until one is available."""
        if self.available() == 0.0:
            self._tokens -= 1.0
            return 0.0
        return (1.0 - self._tokens) / self.rate


@dataclass
class _Failures:
    count: int = 0
    locked_until: float = 0.0
    last: float = 0.0


class _Bounded(OrderedDict[str, object]):
    """A dict that forgets its least recently used keys beyond ``size``."""

    def __init__(self, size: int) -> None:
        super().__init__()
        self.size = size

    def touch(self, key: str, make: Callable[[], object]) -> object:
        value = self.get(key)
        if value is None:
            value = make()
            self[key] = value
            while len(self) > self.size:
                self.popitem(last=False)
        else:
            self.move_to_end(key)
        return value


def lockout_delay_s(failures: int) -> float:
    """Wait after ``failures`` consecutive failures of one (user name, address), seconds.

    0 below :data:`LOCKOUT_AFTER`, then 5, 10, 20, ... seconds (:data:`LOCKOUT_BASE_S` doubled
    per further failure), at most :data:`LOCKOUT_MAX_S`.
    """
    if failures < LOCKOUT_AFTER:
        return 0.0
    return min(LOCKOUT_MAX_S, LOCKOUT_BASE_S * 2.0 ** min(failures - LOCKOUT_AFTER, 30))


class SignInGuard:
    """Decides whether a password check may start, and records its outcome.

    Parameters
    ----------
    clock:
        Monotonic clock in seconds.
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._global = TokenBucket(GLOBAL_BURST, GLOBAL_RATE, clock)
        self._addresses = _Bounded(MAX_KEYS)
        self._failures = _Bounded(MAX_KEYS)
        self._slots = threading.BoundedSemaphore(ARGON2_SLOTS)

    @staticmethod
    def _key(name: str, address: str) -> str:
        return f"{name.lower()}\0{address}"

    def admit(self, name: str, address: str) -> None:
        """Check lockout and buckets for one password check of ``name`` from ``address``.

        Raises
        ------
        SignInRefused
            When this (name, address) waits after failures, or a bucket is empty.
        """
        with self._lock:
            now = self._clock()
            failures = self._failures.get(self._key(name, address))
            if isinstance(failures, _Failures) and failures.locked_until > now:
                raise SignInRefused(
                    "Too many failed sign-ins for this user from this address; try again later.",
                    failures.locked_until - now,
                )
            bucket = self._addresses.touch(
                address, lambda: TokenBucket(PER_ADDRESS_BURST, PER_ADDRESS_RATE, self._clock)
            )
            assert isinstance(bucket, TokenBucket)
            wait = bucket.take()
            if wait:
                raise SignInRefused(
                    "Too many sign-in attempts from this address; wait a moment.", wait
                )
            wait = self._global.take()
            if wait:
                raise SignInRefused(_BUSY, wait)

    def congested(self, address: str) -> SignInRefused | None:
        """Whether ``address``'s bucket or the global one is empty (takes no token).

        Lets a front end refuse a flood before it parses anything (the user name is not known
        yet); :meth:`admit` still decides for the requests that pass.
        """
        with self._lock:
            bucket = self._addresses.get(address)
            wait = bucket.available() if isinstance(bucket, TokenBucket) else 0.0
            if wait:
                return SignInRefused(
                    "Too many sign-in attempts from this address; wait a moment.", wait
                )
            wait = self._global.available()
            if wait:
                return SignInRefused(_BUSY, wait)
            return None

    @contextmanager
    def argon2_slot(self) -> Iterator[None]:
        """Hold one of the :data:`ARGON2_SLOTS` while verifying a password.

        Raises
        ------
        SignInRefused
            If no slot is free within :data:`SLOT_WAIT_S`.
        """
        if not self._slots.acquire(timeout=SLOT_WAIT_S):
            raise SignInRefused(_BUSY, 1.0)
        try:
            yield
        finally:
            self._slots.release()

    def failed(self, name: str, address: str) -> float:
        """Record a failed password check; returns the wait now imposed on (name, address)."""
        with self._lock:
            now = self._clock()
            key = self._key(name, address)
            entry = self._failures.get(key)
            if isinstance(entry, _Failures) and now - entry.last > max(
                LOCKOUT_FORGET_S, entry.locked_until - entry.last
            ):
                entry = None
            if not isinstance(entry, _Failures):
                entry = _Failures()
                self._failures[key] = entry
                while len(self._failures) > self._failures.size:
                    self._failures.popitem(last=False)
            entry.count += 1
            entry.last = now
            delay = lockout_delay_s(entry.count)
            entry.locked_until = now + delay
            self._failures.move_to_end(key)
            return delay

    def succeeded(self, name: str, address: str) -> None:
        """Forget the failures of (name, address)."""
        with self._lock:
            self._failures.pop(self._key(name, address), None)
