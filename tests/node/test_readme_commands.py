"""The README's command blocks, run in order as a new admin would type them.

Blocks preceded by the line ``<!-- readme-test: run -->`` are runnable: each command line (with
``\\`` continuations, ``# comments`` removed) runs in order, in a directory that looks like a fresh
clone (``.venv`` and ``deploy/`` linked from the repository), with ``HOME`` a fresh directory so
``$HOME/ainode-data`` is a fresh data directory. Long-running commands (``serve``,
``dashboard``) are started in the background and checked (port open, HTTP 200).

Only site-specific values are replaced, each printed with the reason: the site PACS
(``PACS@10.0.0.5:104``) by a real Storage SCP started here, ``/path/to/series/`` by a directory
holding the real CT slice of pydicom-data, busy fixed ports by free ones, and the interactive
password prompt by ``--password-stdin``. Between the two blocks the test plays the PACS and sends
that slice to the node, as the README says ("once the PACS has sent a series").
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import time
import urllib.request
from pathlib import Path

import pytest
from node_helpers import c_store, wait_for_jobs

from node.local_pacs import InProcessStorageSCP, find_free_port
from storage.database import JobDatabase

ROOT = Path(__file__).resolve().parents[2]
MARKER = "<!-- readme-test: run -->"


def runnable_blocks(readme: str) -> list[list[str]]:
    """The command lines of every fenced block right after the marker line."""
    blocks = []
    for match in re.finditer(re.escape(MARKER) + r"\s*\n```[a-z]*\n(.*?)\n```", readme, re.S):
        commands: list[str] = []
        pending = ""
        for raw in match.group(1).splitlines():
            line = pending + raw
            if line.rstrip().endswith("\\"):
                pending = line.rstrip()[:-1] + " "
                continue
            pending = ""
            command = _strip_comment(line).strip()
            if command:
                commands.append(" ".join(command.split()))
        blocks.append(commands)
    return blocks


def _strip_comment(line: str) -> str:
    """``line`` without its trailing ``# comment`` (the README's commands quote no ``#``)."""
    return re.split(r"(?:^|\s)#", line, maxsplit=1)[0]


def _wait_port(port: int, process: subprocess.Popen[bytes], what: str, timeout: float = 60) -> None:
    import socket

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, f"{what} exited with status {process.returncode}"
        with socket.socket() as probe:
            if probe.connect_ex(("127.0.0.1", port)) == 0:
                return
        time.sleep(0.2)
    raise AssertionError(f"{what} did not open port {port} in {timeout} s")


@pytest.mark.slow
def test_readme_blocks_run_in_order_on_a_fresh_machine(
    tmp_path: Path, real_ct_slice_path: Path
) -> None:
    blocks = runnable_blocks((ROOT / "README.md").read_text())
    assert len(blocks) >= 2 and all(blocks), "the README has lost its runnable blocks"
    commands = [c for block in blocks for c in block]
    assert any(" serve " in c for c in commands) and any("jobs show" in c for c in commands)

    clone = tmp_path / "clone"
    clone.mkdir()
    (clone / ".venv").symlink_to(ROOT / ".venv")
    (clone / "deploy").symlink_to(ROOT / "deploy")
    home = tmp_path / "home"
    home.mkdir()
    series_dir = tmp_path / "series"
    series_dir.mkdir()
    shutil.copy(real_ct_slice_path, series_dir / real_ct_slice_path.name)
    env = {k: v for k, v in os.environ.items() if not k.startswith("AINODE_")}
    env["HOME"] = str(home)

    pacs = InProcessStorageSCP(tmp_path / "pacs")
    pacs.start()
    node_port, web_port = find_free_port(), find_free_port()
    substitutions = {
        "PACS@10.0.0.5:104": (f"{pacs.ae_title}@{pacs.host}:{pacs.port}",
                              "the site PACS: a Storage SCP started by the test"),
        "/path/to/series/": (f"{series_dir}/", "a series: the real CT slice of pydicom-data"),
        "--port 11112": (f"--port {node_port}", "11112 may be in use on this machine"),
        "users add alice --role admin": ("users add alice --role admin --password-stdin",
                                         "no terminal to type the password on"),
    }
    for text, (value, why) in substitutions.items():
        print(f"README test: {text!r} -> {value!r} ({why})")
    background: list[subprocess.Popen[bytes]] = []
    try:
        for block_index, block in enumerate(blocks):
            if block_index == 1:  # "once the PACS has sent a series": the test plays the PACS
                data_dir = home / "ainode-data"
                assert c_store(real_ct_slice_path, node_port) == 0
                database = JobDatabase(f"sqlite:///{data_dir / 'ainode.sqlite3'}")
                try:
                    (job,) = wait_for_jobs(database, 1, timeout_s=240)
                    assert str(job.state) == "done", job.error
                finally:
                    database.close()
            for command in block:
                for text, (value, _why) in substitutions.items():
                    command = command.replace(text, value)
                if command.startswith("export "):
                    name, _, value = command.removeprefix("export ").partition("=")
                    env[name] = os.path.expandvars(value.replace("$HOME", env["HOME"]))
                    continue
                print(f"README test: $ {command}")
                if " serve " in command:
                    process = subprocess.Popen(["bash", "-c", f"exec {command}"], cwd=clone,
                                               env=env, stderr=subprocess.DEVNULL)
                    background.append(process)
                    _wait_port(node_port, process, "ainode serve")
                    assert not (home / "ainode-data").is_symlink()
                    continue
                if command.endswith(" dashboard"):
                    process = subprocess.Popen(
                        ["bash", "-c", f"exec {command} --port {web_port}"], cwd=clone, env=env,
                        stderr=subprocess.DEVNULL)
                    background.append(process)
                    _wait_port(web_port, process, "ainode dashboard")
                    with urllib.request.urlopen(f"http://127.0.0.1:{web_port}/login") as page:
                        assert page.status == 200
                    process.terminate()
                    process.wait(timeout=30)
                    continue
                result = subprocess.run(
                    ["bash", "-c", command], cwd=clone, env=env, capture_output=True, text=True,
                    input="readme-test-password\n", timeout=300,
                )
                print(result.stdout[-2000:])
                assert result.returncode == 0, f"{command}\n{result.stdout}\n{result.stderr}"
                assert "Traceback" not in result.stderr, result.stderr
        assert (clone / "results").is_dir(), "`ainode run --out results/` wrote nothing"
        assert (home / "ainode-data" / "ainode.sqlite3").is_file()
    finally:
        for process in background:
            if process.poll() is None:
                process.terminate()
                try:
                    process.wait(timeout=30)
                except subprocess.TimeoutExpired:
                    process.kill()
        pacs.stop()
