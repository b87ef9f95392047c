"""The ``ainode`` command line, run as a real subprocess."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pydicom
import pytest
from node_helpers import c_store, wait_for_jobs
from peers import require_binary

from node.presentation import measurement_lines
from node.server import Node


def ainode(*args: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "node", *args], capture_output=True, text=True, timeout=timeout
    )


def test_help_lists_every_command() -> None:
    result = ainode("--help")
    assert result.returncode == 0
    for command in ("serve", "run", "jobs", "echo", "route", "check-config", "demo"):
        assert command in result.stdout


def test_run_real_slice_writes_outputs_and_reports_unverified_level(
    real_ct_slice_path: Path, tmp_path: Path
) -> None:
    result = ainode("run", "--protocol", "l3-body-composition", str(real_ct_slice_path),
                    "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["results"]["level_verified"] is False
    assert 60 < entry["results"]["sma_cm2"] < 250
    assert set(entry["outputs"]) == {"SEG", "SR", "SC"}
    for path in entry["outputs"].values():
        ds = pydicom.dcmread(path)
        assert ds.StudyInstanceUID == pydicom.dcmread(real_ct_slice_path).StudyInstanceUID
    # No patient data on the terminal.
    name = str(pydicom.dcmread(real_ct_slice_path).PatientName)
    assert not name or name not in result.stdout + result.stderr


def test_run_png_writes_the_key_image_as_the_secondary_capture_shows_it(
    real_chest_cr_path: Path, tmp_path: Path
) -> None:
    from PIL import Image

    result = ainode("run", str(real_chest_cr_path), "--out", str(tmp_path / "out"), "--json",
                    "--png")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    png = np.asarray(Image.open(entry["outputs"]["PNG"]))
    sc = pydicom.dcmread(entry["outputs"]["SC"]).pixel_array
    assert png.shape == sc.shape and np.array_equal(png, sc)


def test_run_without_protocol_routes_and_ignores_mr(tmp_path: Path) -> None:
    import data_store

    mr = Path(data_store.__file__).parent / "data" / "MR2_UNCI.dcm"
    result = ainode("run", str(mr), "--out", str(tmp_path), "--json")
    (entry,) = json.loads(result.stdout)
    assert "MR" in entry["ignored"]


def test_route_explains_the_decision(real_ct_slice_path: Path) -> None:
    result = ainode("route", str(real_ct_slice_path), "--json")
    assert result.returncode == 0, result.stderr
    (entry,) = json.loads(result.stdout)
    assert entry["protocol"] == "l3-body-composition"
    assert entry["reason"] and any("MATCH" in check for check in entry["checks"])


def test_check_config_rejects_bad_values_with_the_field_name(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("port: 99999\ndestinations: ['not-a-destination']\n")
    result = ainode("check-config", str(bad))
    assert result.returncode == 2
    assert "port" in result.stderr and "AET@HOST:PORT" in result.stderr
    good = tmp_path / "good.yaml"
    good.write_text("ae_title: NODE1\ndestinations: ['PACS@127.0.0.1:104']\nl3:\n  cutoff_set: martin-2013\n")
    result = ainode("check-config", str(good), "--show")
    assert result.returncode == 0, result.stderr
    assert '"cutoff_set": "martin-2013"' in result.stdout


def test_jobs_list_show_and_echo_against_a_running_node(
    make_node: Callable[..., Node], real_ct_slice_path: Path
) -> None:
    node = make_node()
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1)
    data_dir = str(node.settings.data_dir)
    listed = json.loads(ainode("jobs", "list", "--data-dir", data_dir, "--json").stdout)
    assert [j["id"] for j in listed] == [job.id] and listed[0]["state"] == "done"
    shown = ainode("jobs", "show", str(job.id), "--data-dir", data_dir, "--json")
    detail = json.loads(shown.stdout)
    assert detail["protocol"] == "l3-body-composition"
    assert {o["kind"] for o in detail["outputs"]} == {"SEG", "SR", "SC"}
    assert any("series complete" in e["message"] for e in detail["events"])
    text = ainode("jobs", "show", str(job.id), "--data-dir", data_dir)
    # Human form: labels, not the stored keys (those stay in --json).
    sma_label = next(line.label for line in measurement_lines("l3-body-composition", detail["results"])
                     if line.key == "sma_cm2")
    assert "routing reason" in text.stdout and sma_label in text.stdout
    assert "sma_cm2" not in text.stdout
    assert ainode("jobs", "show", "999", "--data-dir", data_dir).returncode == 1
    retried = ainode("jobs", "retry", str(job.id), "--data-dir", data_dir)
    assert retried.returncode == 0 and "running the job again" in retried.stdout
    echo = ainode("echo", f"AINODE@127.0.0.1:{node.scp.port}")
    assert echo.returncode == 0 and "success" in echo.stdout


@pytest.mark.peers
@pytest.mark.parametrize("pacs", ["orthanc", "builtin"])
def test_demo_puts_seg_sr_sc_into_the_local_pacs(pacs: str) -> None:
    if pacs == "orthanc":
        require_binary("Orthanc")
    result = ainode("demo", "--pacs", pacs)
    assert result.returncode == 0, result.stdout + result.stderr
    out = result.stdout
    labels = {line.key: line.label for line in measurement_lines(
        "l3-body-composition", {"sma_cm2": 1.0, "level_verified": False})}
    assert labels["sma_cm2"] in out
    assert re.search(re.escape(labels["level_verified"]) + r"\s+no\b", out)
    held = out.split("now holds:")[1]
    assert all(f"  {kind}" in held for kind in ("SEG", "SR ", "SC "))
    assert ("Orthanc" in out) == (pacs == "orthanc")


def test_malformed_patient_dates_do_not_fail_the_job_or_reach_the_output(
    real_ct_slice_path: Path, tmp_path: Path
) -> None:
    ds = pydicom.dcmread(real_ct_slice_path)
    with pytest.warns(UserWarning):
        ds.PatientBirthDate = "1975-03-14"  # not a DA (YYYYMMDD)
    source = tmp_path / "bad-dates.dcm"
    ds.save_as(source)
    result = ainode("run", "--protocol", "l3-body-composition", str(source),
                    "--out", str(tmp_path / "out"), "--json")
    assert result.returncode == 0, result.stderr
    assert "1975" not in result.stdout + result.stderr
    (entry,) = json.loads(result.stdout)
    seg = pydicom.dcmread(entry["outputs"]["SEG"])
    assert seg.PatientBirthDate == ""


def test_jobs_list_state_choices_are_the_job_states() -> None:
    from node.cli import build_parser
    from storage.models import JobState

    jobs = next(a for a in build_parser()._subparsers._group_actions[0].choices["jobs"]._subparsers._group_actions)  # type: ignore[union-attr]
    state = next(a for a in jobs.choices["list"]._actions if a.dest == "state")
    assert list(state.choices) == [s.value for s in JobState]


def test_jobs_commands_name_the_missing_database(tmp_path: Path) -> None:
    result = ainode("jobs", "list", "--data-dir", str(tmp_path / "nowhere"))
    assert result.returncode == 2
    assert "no job database at" in result.stderr and "--data-dir" in result.stderr


def test_run_uses_the_configured_routing_rules(real_ct_slice_path: Path, tmp_path: Path) -> None:
    config = tmp_path / "node.yaml"
    config.write_text(
        "routing_rules:\n"
        "  - name: no-ct-here\n"
        "    protocol: null\n"
        "    match: {modality: [CT]}\n"
    )
    result = ainode("run", "--config", str(config), str(real_ct_slice_path),
                    "--out", str(tmp_path / "out"), "--json")
    (entry,) = json.loads(result.stdout)
    assert "ignored" in entry, result.stdout + result.stderr
