"""A real, temporary PostgreSQL server for the database tests.

``AINODE_TEST_POSTGRES_URL`` (e.g. ``postgresql+psycopg://user:pw@host/postgres``) points the tests
at an existing server. Otherwise, when Debian's PostgreSQL binaries are installed
(``scripts/setup.sh`` installs them), a throw-away cluster is created with ``initdb`` and started
with ``pg_ctl`` on a free loopback port for the test session. Each test gets its own database.
Under CI (``CI=true``) a missing server fails the test instead of skipping it.
"""

from __future__ import annotations

import atexit
import glob
import os
import shutil
import socket
import subprocess
import tempfile
import uuid

import pytest

_server: dict[str, str] = {}


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _run_as_postgres(args: list[str]) -> subprocess.CompletedProcess[str]:
    if os.geteuid() == 0:
        args = ["runuser", "-u", "postgres", "--", *args]
    return subprocess.run(args, check=True, capture_output=True, text=True, timeout=120)


def _start_cluster() -> str:
    candidates = sorted(glob.glob("/usr/lib/postgresql/*/bin/initdb"))
    if not candidates:
        raise FileNotFoundError("PostgreSQL server binaries (Debian package postgresql) not found")
    bindir = os.path.dirname(candidates[-1])
    root = tempfile.mkdtemp(prefix="ainode-pg-")
    os.chmod(root, 0o777)
    datadir = os.path.join(root, "data")
    if os.geteuid() == 0:
        shutil.chown(root, "postgres")
    port = _free_port()
    _run_as_postgres([f"{bindir}/initdb", "-D", datadir, "-A", "trust", "-U", "postgres", "--no-sync"])
    _run_as_postgres(
        [
            f"{bindir}/pg_ctl", "-D", datadir, "-w", "-l", os.path.join(root, "log"),
            "-o", f"-p {port} -k {root} -c listen_addresses=127.0.0.1 -c fsync=off",
            "start",
        ]
    )
    atexit.register(
        lambda: subprocess.run(
            (["runuser", "-u", "postgres", "--"] if os.geteuid() == 0 else [])
            + [f"{bindir}/pg_ctl", "-D", datadir, "-m", "immediate", "stop"],
            capture_output=True,
        )
    )
    return f"postgresql+psycopg://postgres@127.0.0.1:{port}/postgres"


def postgres_url_or_skip(request: pytest.FixtureRequest) -> str:
    """URL of a fresh PostgreSQL database; skips (fails under CI) when none can be had."""
    if "url" not in _server:
        try:
            _server["url"] = os.environ.get("AINODE_TEST_POSTGRES_URL") or _start_cluster()
        except (OSError, subprocess.SubprocessError) as exc:
            _server["error"] = str(getattr(exc, "stderr", "") or exc)
            _server["url"] = ""
    if not _server["url"]:
        message = f"no PostgreSQL server: {_server.get('error')}; run scripts/setup.sh"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message, pytrace=False)
        pytest.skip(message)
    from sqlalchemy import create_engine, text

    admin = create_engine(_server["url"], isolation_level="AUTOCOMMIT")
    name = f"ainode_test_{uuid.uuid4().hex[:12]}"
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    admin.dispose()
    return _server["url"].rsplit("/", 1)[0] + f"/{name}"
