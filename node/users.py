"""Local dashboard users: roles, Argon2 password hashes, sign-in checks.

Roles (combine freely; any role but ``service`` may read the dashboard):

* ``viewer``: read the job list, job pages, node status and metrics.
* ``admin``: also retry, cancel and delete jobs, and read the audit log.
* ``phi``: also see patient name, Patient ID and Accession Number.
* ``service``: store instances by STOW-RS (``POST /dicomweb/studies``); a service account with
  only this role cannot read the dashboard or the REST API (403).

Passwords are hashed with Argon2id (argon2-cffi's ``PasswordHasher`` defaults, RFC 9106 low-memory
profile: t=3, m=64 MiB, p=4); only the hash is stored, in the ``users`` table of the job database.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError, VerifyMismatchError

from ainode_core.errors import ConfigError
from storage.database import JobDatabase

logger = logging.getLogger(__name__)

ROLES = ("viewer", "admin", "phi", "service")
#: Roles that may read the dashboard and the REST API.
DASHBOARD_ROLES = frozenset({"viewer", "admin", "phi"})
_NAME_RE = re.compile(r"^[A-Za-z0-9._@-]{1,64}$")
_hasher = PasswordHasher()
# Verified against when the user does not exist, so both cases take the same time.
_DUMMY_HASH = _hasher.hash("ainode-no-such-user")
MIN_PASSWORD_LENGTH = 10


@dataclass(frozen=True)
class CurrentUser:
    """A signed-in user.

    Attributes
    ----------
    name:
        User name.
    roles:
        Subset of :data:`ROLES`.
    via:
        How the user was authenticated: ``"session"``, ``"basic"`` or ``"proxy"``.
    """

    name: str
    roles: frozenset[str]
    via: str = "session"

    @property
    def is_admin(self) -> bool:
        """May retry, cancel and delete jobs."""
        return "admin" in self.roles

    @property
    def reads_dashboard(self) -> bool:
        """May read the dashboard and the REST API (any role but ``service`` alone)."""
        return bool(self.roles & DASHBOARD_ROLES)

    @property
    def may_store(self) -> bool:
        """May store instances by STOW-RS (role ``service``)."""
        return "service" in self.roles

    @property
    def sees_phi(self) -> bool:
        """May see patient name, Patient ID and Accession Number."""
        return "phi" in self.roles


def parse_roles(values: Iterable[str]) -> list[str]:
    """Roles from repeated and/or comma-separated values, checked and de-duplicated.

    Raises
    ------
    ConfigError
        If a role is unknown or none is given.
    """
    roles: list[str] = []
    for value in values:
        for role in value.split(","):
            role = role.strip().lower()
            if not role:
                continue
            if role not in ROLES:
                raise ConfigError(f"unknown role {role!r}: use {', '.join(ROLES)}")
            if role not in roles:
                roles.append(role)
    if not roles:
        raise ConfigError(f"give at least one role ({', '.join(ROLES)})")
    return roles


def check_user_name(name: str) -> str:
    """The name if valid (1-64 of letters, digits, ``. _ @ -``).

    Raises
    ------
    ConfigError
        Otherwise.
    """
    if not _NAME_RE.match(name):
        raise ConfigError(
            f"invalid user name {name!r}: use 1 to 64 letters, digits, '.', '_', '@' or '-'"
        )
    return name


def hash_password(password: str) -> str:
    """Argon2id hash of a password.

    Raises
    ------
    ConfigError
        If the password is shorter than :data:`MIN_PASSWORD_LENGTH` characters.
    """
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ConfigError(
            f"password too short ({len(password)} characters): use at least {MIN_PASSWORD_LENGTH}"
        )
    return _hasher.hash(password)


def add_user(database: JobDatabase, name: str, password: str, roles: Sequence[str]) -> None:
    """Create a user with a hashed password.

    Raises
    ------
    ConfigError
        If the name, password or roles are invalid.
    StorageError
        If the user exists.
    """
    database.add_user(check_user_name(name), hash_password(password), parse_roles(roles))


def authenticate(database: JobDatabase, name: str, password: str) -> CurrentUser | None:
    """The user if the password matches, else ``None``.

    An unknown but valid user name costs one Argon2 verification against a dummy hash, so a
    guesser cannot tell existing names by the response time; a name no account can have (see
    :func:`check_user_name`) costs none. Callers bound how many verifications run at once and how
    often (the dashboard's :class:`node.web.throttle.SignInGuard`): each allocates 64 MiB.
    """
    if not _NAME_RE.match(name or ""):
        return None
    user = database.get_user(name)
    stored_hash = user.password_hash if user is not None else _DUMMY_HASH
    try:
        _hasher.verify(stored_hash, password)
    except (VerifyMismatchError, VerificationError, InvalidHashError):
        return None
    if user is None:
        return None
    if _hasher.check_needs_rehash(stored_hash):
        database.set_password_hash(user.name, _hasher.hash(password))
    return CurrentUser(name=user.name, roles=frozenset(user.roles.split(",")), via="session")


def lookup_user(database: JobDatabase, name: str, via: str) -> CurrentUser | None:
    """The stored user of that name without a password check (sessions, trusted proxy)."""
    user = database.get_user(name)
    if user is None:
        return None
    return CurrentUser(name=user.name, roles=frozenset(user.roles.split(",")), via=via)
