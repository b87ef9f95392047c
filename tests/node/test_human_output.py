"""What people read carries no Python values and no internal keys (issue 16).

The CLI commands, the demo and the dashboard's job page are run for real on the real CT slice of
pydicom-data; their human output is scanned for ``None``/``True``/``False``, list or dict reprs
(``['``, ``{'``, ``[0``...) and the stored result keys of that very job (e.g. ``sma_cm2``), which
only ``--json`` and the API may show. The keys come from the job's own ``--json`` output, so the
test follows whatever the protocol stores.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import pytest
from fastapi.testclient import TestClient
from node_helpers import c_store, wait_for_jobs

from node.presentation import format_value, measurement_lines
from node.server import Node

REPR = re.compile(r"\b(?:None|True|False)\b|[\[{]\s*(?:['\"\d\-\[{\]}]|None\b|True\b|False\b)")


def ainode(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "node", *args], capture_output=True, text=True,
                          timeout=timeout)


def python_values(text: str) -> list[str]:
    """Lines of ``text`` with a Python repr in them."""
    return [line for line in text.splitlines() if REPR.search(line)]


def internal_keys(text: str, results: dict[str, object]) -> list[str]:
    """Stored result keys (those with an underscore: ``sma_cm2``) that appear in ``text``.

    A key inside a dotted configuration path (``set l3.cutoff_set``) is an instruction naming
    the setting to change, not a result shown by its key, and is not counted.
    """
    return sorted(k for k in results
                  if "_" in k and re.search(rf"(?<![\w.]){re.escape(k)}\b", text))


def test_format_value_never_returns_a_python_repr() -> None:
    for value in (None, True, False, [1.5, -2.0], {"muscle": [-29.0, 150.0]}, 3, 2.5, "text"):
        shown = format_value(value, "HU", 1)
        assert not python_values(shown), (value, shown)
    assert format_value(True) == "yes" and format_value(None) == "–"
    assert format_value(152.345, "cm²", 1) == "152.3 cm²"


def test_missing_values_say_not_measured_with_the_stored_reason() -> None:
    lines = measurement_lines(None, {"smi_cm2_per_m2": None, "smi_reason": "height missing",
                                     "sma_cm2": 91.05})
    by_key = {line.key: line for line in lines}
    assert by_key["smi_cm2_per_m2"].text == "not measured: height missing"
    assert not by_key["smi_cm2_per_m2"].measured and by_key["sma_cm2"].measured
    assert "smi_reason" not in by_key  # a reason is shown beside its value, not as a value


@pytest.mark.slow
def test_cli_demo_and_dashboard_show_no_python_values_or_internal_keys(
    make_node: Callable[..., Node], real_ct_slice_path: Path, tmp_path: Path
) -> None:
    from node.users import add_user
    from node.web.app import create_app

    node = make_node()
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1)
    assert str(job.state) == "done", job.error
    data_dir = str(node.settings.data_dir)
    results = json.loads(ainode("jobs", "show", str(job.id), "--data-dir", data_dir,
                                "--json").stdout)["results"]
    assert any("_" in key for key in results)

    outputs: dict[str, str] = {}
    for name, args in {
        "jobs list": ("jobs", "list", "--data-dir", data_dir),
        "jobs show": ("jobs", "show", str(job.id), "--data-dir", data_dir),
        "run": ("run", "--protocol", "l3-body-composition", str(real_ct_slice_path),
                "--out", str(tmp_path / "out")),
        "route": ("route", str(real_ct_slice_path)),
        "check-config": ("check-config", str(Path(__file__).parents[2] / "deploy"
                                             / "ainode.example.yaml")),
        "models list": ("models", "list", "--data-dir", data_dir),
        "purge": ("purge", "--older-than", "30d", "--dry-run", "--data-dir", data_dir),
        "demo": ("demo", "--pacs", "builtin"),
    }.items():
        result = ainode(*args)
        assert result.returncode == 0, f"{name}: {result.stdout}{result.stderr}"
        outputs[name] = result.stdout + result.stderr

    add_user(node.database, "reader", "reader-password-1", ["admin"])
    with TestClient(create_app(node.settings, node.database)) as client:
        form = client.get("/login")
        token = form.text.split('name="csrf_token" value="')[1].split('"')[0]
        client.post("/login", data={"username": "reader", "password": "reader-password-1",
                                    "csrf_token": token, "next": "/jobs"})
        page = client.get(f"/jobs/{job.id}")
        assert page.status_code == 200
        panel = page.text.split("<h2>Measurements</h2>")[1].split("</section>")[0]
        outputs["dashboard measurements"] = re.sub(r"<[^>]+>", " ", panel)

    for name, text in outputs.items():
        assert not python_values(text), f"{name} shows Python values: {python_values(text)}"
        assert not internal_keys(text, results), (
            f"{name} shows internal keys {internal_keys(text, results)}")
    # The human lines are there, from the protocol's description.
    sma = next(line for line in measurement_lines(job.protocol, results) if line.key == "sma_cm2")
    for name in ("jobs show", "run", "demo", "dashboard measurements"):
        assert sma.label in outputs[name], name
    assert "not measured" in outputs["jobs show"]
    assert "--keep" in outputs["demo"] and "..." not in outputs["demo"]
    assert not re.search(r"^\d{4}-\d\d-\d\d[ T]\d\d:\d\d:\d\d\S* WARNING", outputs["demo"], re.M)
    assert "measured on digital phantoms" in outputs["models list"]
    assert len(outputs["route"].strip().splitlines()) <= 2  # one line per series (+ the hint)


def test_closed_pipe_ends_quietly() -> None:
    shell = subprocess.run(
        f"{sys.executable} -m node check-config --reference | head -n 1",
        shell=True, capture_output=True, text=True, timeout=120)
    assert shell.returncode == 0 and shell.stdout.startswith("| setting")
    assert "Traceback" not in shell.stderr and "BrokenPipe" not in shell.stderr


def test_serve_on_a_busy_port_creates_nothing(tmp_path: Path) -> None:
    import socket

    with socket.socket() as busy:
        busy.bind(("0.0.0.0", 0))
        busy.listen()
        port = busy.getsockname()[1]
        result = ainode("serve", "--data-dir", str(tmp_path / "data"), "--port", str(port),
                        timeout=60)
    assert result.returncode == 2 and str(port) in result.stderr
    assert not (tmp_path / "data").exists()


def test_progress_bar_on_a_terminal_only(tmp_path: Path) -> None:
    import fcntl
    import os
    import pty
    import struct
    import termios
    import threading

    import data_store
    import pydicom
    from pydicom.uid import generate_uid

    source = Path(data_store.__file__).parent / "data" / "MR2_UNCI.dcm"
    for index in range(3):  # three series, ignored by routing (MR): quick, but three steps
        ds = pydicom.dcmread(source)
        ds.SeriesInstanceUID = generate_uid()
        ds.SOPInstanceUID = generate_uid()
        ds.save_as(tmp_path / f"mr{index}.dcm")
    args = [sys.executable, "-m", "node", "run", str(tmp_path), "--out", str(tmp_path / "out")]
    piped = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert piped.returncode == 0, piped.stderr
    assert "/3 [" not in piped.stderr  # CI logs: no bar

    primary, secondary = pty.openpty()
    # A terminal 100 columns wide (a fresh pty has 0 columns, where tqdm draws nothing).
    fcntl.ioctl(secondary, termios.TIOCSWINSZ, struct.pack("HHHH", 30, 100, 0, 0))
    seen: list[bytes] = []

    def read_terminal() -> None:
        while True:
            try:
                chunk = os.read(primary, 65536)
            except OSError:  # EIO once the child has closed the terminal
                return
            if not chunk:
                return
            seen.append(chunk)

    reader = threading.Thread(target=read_terminal, daemon=True)
    reader.start()
    try:
        on_terminal = subprocess.run(args, stdout=subprocess.DEVNULL, stderr=secondary,
                                     timeout=120)
    finally:
        os.close(secondary)
        reader.join(timeout=10)
        os.close(primary)
    assert on_terminal.returncode == 0
    shown = b"".join(seen)
    assert b"series:" in shown and b"/3 [" in shown, shown[-500:]


def test_check_config_one_line_per_file_and_show(tmp_path: Path) -> None:
    deploy = sorted(str(p) for p in (Path(__file__).parents[2] / "deploy").glob("*.yaml"))
    bad = tmp_path / "typo.yaml"
    bad.write_text("quiet_second: 5\n")
    result = ainode("check-config", *deploy)
    assert result.returncode == 0, result.stdout + result.stderr
    lines = result.stdout.strip().splitlines()
    assert len(lines) == len(deploy) and any(": valid (" in line for line in lines)
    result = ainode("check-config", *deploy, str(bad))
    assert result.returncode == 2 and f"{bad}: INVALID" in result.stderr
    assert "quiet_second" in result.stderr
    shown = ainode("check-config", "--show", deploy[0])
    assert shown.returncode == 0
    assert json.loads(shown.stdout.split("\n", 1)[1])["quiet_seconds"] > 0


def test_example_config_marks_every_value_that_is_not_the_default(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """deploy/ainode.example.yaml says its values are the defaults unless marked EXAMPLE."""
    import yaml

    # The real defaults, not the short study quiet period the test session sets for its nodes.
    monkeypatch.delenv("AINODE_STUDY_QUIET_SECONDS", raising=False)

    from node.config import Settings

    path = Path(__file__).parents[2] / "deploy" / "ainode.example.yaml"
    text = path.read_text()
    loaded = yaml.safe_load(text)
    defaults = json.loads(Settings().model_dump_json())
    key_line = re.compile(r"^(\s*)([a-z_]+):(.*)$")
    stack: list[tuple[int, str, bool]] = []  # (indent, key, marked EXAMPLE)
    comments: list[str] = []
    unmarked = []
    for line in text.splitlines():
        if line.strip().startswith("#") or not line.strip():
            comments = comments + [line] if line.strip() else []
            continue
        match = key_line.match(line)
        if not match:
            comments = []
            continue
        indent, key = len(match[1]), match[2]
        while stack and stack[-1][0] >= indent:
            stack.pop()
        marked = "EXAMPLE" in match[3] or any("EXAMPLE" in c for c in comments)
        marked = marked or any(m for _, _, m in stack)
        stack.append((indent, key, marked))
        comments = []
        keys = [k for _, k, _ in stack]
        value: object = loaded
        default: object = defaults
        for k in keys:
            value = value.get(k) if isinstance(value, dict) else None
            default = default.get(k) if isinstance(default, dict) else None
        if isinstance(value, dict) or keys[0] not in defaults:
            continue
        same = value == default or (
            isinstance(value, (int, float)) and isinstance(default, (int, float))
            and float(value) == float(default))
        if not same and not marked:
            unmarked.append(f"{'.'.join(keys)}: {value!r} (default {default!r})")
    assert not unmarked, f"values that differ from the default without EXAMPLE: {unmarked}"
