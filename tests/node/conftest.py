"""Node fixtures: an in-process node, an ``ainode serve`` subprocess, and DICOM send helpers."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from node_helpers import c_echo

from node.config import Destination, Settings
from node.local_pacs import find_free_port
from node.server import Node


@pytest.fixture
def make_node(tmp_path: Path) -> Iterator[Callable[..., Node]]:
    """Factory: start an in-process node with test settings (stopped at teardown)."""
    nodes: list[Node] = []

    def factory(destinations: list[Destination] | None = None, **overrides: Any) -> Node:
        settings = Settings(
            data_dir=overrides.pop("data_dir", tmp_path / f"node{len(nodes)}"),
            host="127.0.0.1",
            port=find_free_port(),
            quiet_seconds=overrides.pop("quiet_seconds", 1.0),
            destinations=destinations or [],
            send_backoff_seconds=overrides.pop("send_backoff_seconds", 0.5),
            **overrides,
        )
        node = Node(settings)
        node.start()
        nodes.append(node)
        return node

    yield factory
    for node in nodes:
        node.stop()


class ServeProcess:
    """``ainode serve`` as a real subprocess (for kill -9 tests)."""

    def __init__(self, data_dir: Path, port: int, send_to: str | None, log: Path) -> None:
        self.data_dir, self.port, self.send_to, self.log = data_dir, port, send_to, log
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        args = [
            sys.executable, "-m", "node", "serve", "--data-dir", str(self.data_dir),
            "--port", str(self.port), "--host", "127.0.0.1", "--quiet-seconds", "1",
        ]
        if self.send_to:
            args += ["--send-to", self.send_to]
        env = {**os.environ, "AINODE_SEND_BACKOFF_SECONDS": "0.5"}
        self.process = subprocess.Popen(
            args, stdout=self.log.open("ab"), stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise AssertionError(f"ainode serve exited: {self.log.read_text()[-3000:]}")
            if c_echo(self.port) == 0:
                return
            time.sleep(0.3)
        raise AssertionError(f"ainode serve did not answer C-ECHO: {self.log.read_text()[-3000:]}")

    def kill9(self) -> None:
        assert self.process is not None
        os.killpg(self.process.pid, signal.SIGKILL)  # the node and its worker children
        self.process.wait(timeout=10)

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait(timeout=10)


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator[Callable[..., ServeProcess]]:
    """Factory of ``ainode serve`` subprocesses (stopped at teardown)."""
    processes: list[ServeProcess] = []

    def factory(data_dir: Path, send_to: str | None = None, port: int | None = None) -> ServeProcess:
        proc = ServeProcess(data_dir, port or find_free_port(), send_to, tmp_path / "serve.log")
        processes.append(proc)
        return proc

    yield factory
    for proc in processes:
        proc.stop()
