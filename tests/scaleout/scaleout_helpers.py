"""Helpers of the scale-out tests: a throw-away RabbitMQ server, claim workers, waiting for jobs."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

RABBITMQ_SERVER = Path("/usr/sbin/rabbitmq-server")
# The Debian wrapper above switches to the rabbitmq user and /var/lib/rabbitmq; the script it
# calls runs the broker as the current user with the directories given in the environment.
RABBITMQ_SERVER_SCRIPT = Path("/usr/lib/rabbitmq/bin/rabbitmq-server")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def rabbitmq_missing_reason() -> str | None:
    """Why no RabbitMQ server can be started here, or ``None``."""
    if not RABBITMQ_SERVER.exists() or not RABBITMQ_SERVER_SCRIPT.exists():
        return (
            f"RabbitMQ server not installed ({RABBITMQ_SERVER} missing): "
            "apt-get install rabbitmq-server (scripts/setup.sh)"
        )
    if shutil.which("epmd") is None:
        return "Erlang's epmd not found (Debian package erlang-base)"
    return None


@dataclass
class RabbitMQServer:
    """A RabbitMQ broker started on free loopback ports in a temporary directory."""

    root: Path
    port: int
    node_name: str
    process: subprocess.Popen[bytes]
    epmd: subprocess.Popen[bytes]

    @property
    def url(self) -> str:
        """AMQP URL (guest may connect from loopback only, which is where we are)."""
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def log_tail(self, chars: int = 3000) -> str:
        """The end of the broker's console output."""
        path = self.root / "console.log"
        return path.read_text(errors="replace")[-chars:] if path.exists() else ""

    def stop(self) -> None:
        """Kill the broker and its epmd (a test broker keeps nothing worth a clean stop)."""
        for proc in (self.process, self.epmd):
            if proc.poll() is None:
                try:
                    os.killpg(proc.pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
                proc.wait(timeout=10)
        shutil.rmtree(self.root, ignore_errors=True)


def start_rabbitmq(timeout_s: float = 90.0) -> RabbitMQServer:
    """Start a private RabbitMQ broker (own epmd, own node name, own directories).

    Raises
    ------
    RuntimeError
        If the broker does not accept an AMQP connection within ``timeout_s``.
    """
    from kombu import Connection

    root = Path(tempfile.mkdtemp(prefix="ainode-rabbitmq-"))
    port, dist_port, epmd_port = free_port(), free_port(), free_port()
    (root / "enabled_plugins").write_text("[].\n")
    epmd = subprocess.Popen(
        ["epmd", "-port", str(epmd_port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    _wait_for_port(epmd_port, 10)
    env = {
        **os.environ,
        "HOME": str(root),  # the Erlang cookie is written here
        "RABBITMQ_MNESIA_BASE": str(root / "mnesia"),
        "RABBITMQ_LOG_BASE": str(root / "log"),
        "RABBITMQ_NODE_PORT": str(port),
        "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
        "RABBITMQ_NODENAME": f"ainode-test-{port}@localhost",
        "RABBITMQ_DIST_PORT": str(dist_port),
        "ERL_EPMD_PORT": str(epmd_port),
        "RABBITMQ_CONF_ENV_FILE": str(root / "rabbitmq-env.conf"),
        "RABBITMQ_CONFIG_FILE": str(root / "rabbitmq"),
        "RABBITMQ_ENABLED_PLUGINS_FILE": str(root / "enabled_plugins"),
    }
    process = subprocess.Popen(
        [str(RABBITMQ_SERVER_SCRIPT)],
        cwd=root,
        env=env,
        stdout=(root / "console.log").open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    server = RabbitMQServer(root, port, env["RABBITMQ_NODENAME"], process, epmd)
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if process.poll() is not None:
            tail = server.log_tail()
            server.stop()
            raise RuntimeError(f"rabbitmq-server exited with {process.returncode}: {tail}")
        try:
            with Connection(server.url, connect_timeout=2) as connection:
                connection.connect()
                return server
        except Exception:  # noqa: BLE001 - not up yet
            time.sleep(0.5)
    tail = server.log_tail()
    server.stop()
    raise RuntimeError(f"rabbitmq-server did not accept AMQP within {timeout_s:g} s: {tail}")


def _wait_for_port(port: int, timeout_s: float) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                return
        except OSError:
            time.sleep(0.1)
    raise RuntimeError(f"nothing listens on port {port} after {timeout_s:g} s")


def claim_worker(
    url: str, name: str, mode: str, job_ids: list[int], go: Any, results: Any
) -> None:
    """Body of one claiming process (spawned): claim jobs and "run" each by recording results.

    ``mode`` ``"oldest"`` claims with :meth:`JobDatabase.claim_job` (SKIP LOCKED on PostgreSQL)
    until none is left; ``"by-id"`` tries :meth:`JobDatabase.claim_job_by_id` on every id of ``job_ids``
    (each id is delivered to every worker, like duplicated broker messages). Puts
    ``(name, [job ids run])`` on ``results``.
    """
    from storage.database import JobDatabase

    database = JobDatabase(url, migrate_schema=False)
    ran: list[int] = []
    go.wait(60)
    try:
        if mode == "oldest":
            while (job := database.claim_job(name, 60)) is not None:
                database.record_results(
                    job.id, algorithm="test", results={"by": name}, outputs=[], destinations=[]
                )
                ran.append(job.id)
        else:
            for job_id in job_ids:
                claim = database.claim_job_by_id(job_id, name, 60)
                if claim.job is not None:
                    database.record_results(
                        job_id, algorithm="test", results={"by": name}, outputs=[], destinations=[]
                    )
                    ran.append(job_id)
    finally:
        results.put((name, ran))
        database.close()


def wait_until(predicate: Any, timeout_s: float, what: str, poll_s: float = 0.2) -> Any:
    """Poll ``predicate()`` until it returns something truthy; returns it.

    Raises
    ------
    AssertionError
        After ``timeout_s`` (with ``what`` in the message).
    """
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(poll_s)
    raise AssertionError(f"timed out after {timeout_s:g} s waiting for {what}")
