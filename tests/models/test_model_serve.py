"""A node configured with the shipped L3 model: a phantom series sent by ``storescu`` to the
running node comes back as SEG + SR + SC produced by the network (dciodvfy-checked by the node)."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pydicom
import pytest
from peers import require_binary, storescu

from node.config import ModelSettings, Settings
from node.local_pacs import find_free_port
from node.server import Node
from pipelines.validation import dciodvfy_available, run_dciodvfy


def test_served_series_is_measured_by_the_configured_model(
    small_l3_phantom_series: tuple[Path, object], tmp_path: Path
) -> None:
    require_binary("storescu")
    series, phantom = small_l3_phantom_series
    settings = Settings(
        data_dir=tmp_path / "node", host="127.0.0.1", port=find_free_port(), quiet_seconds=1.0,
        device="cpu", models=ModelSettings(l3_body_composition="ainode-l3-phantom"),
    )
    node = Node(settings)
    node.start()
    try:
        done = storescu("127.0.0.1", settings.port, settings.ae_title, [series])
        assert done.returncode == 0, done.stderr
        deadline = time.monotonic() + 180
        job = None
        while time.monotonic() < deadline:
            jobs = [j for j in node.database.list_jobs() if str(j.state) in ("done", "failed")]
            if jobs:
                job = node.database.get_job(jobs[0].id)
                break
            time.sleep(0.5)
        assert job is not None, "no finished job"
        assert str(job.state) == "done", job.error
        assert job.algorithm == "ainode-l3-phantom 0.1.0"
        results = json.loads(job.results_json)
        assert results["inference_device"] == "cpu" and results["inference_seconds"] > 0
        assert results["level_method"] == "network (ainode-l3-phantom 0.1.0)"
        first, last = phantom.vertebra_slices["L3"]
        assert first <= results["slice_index"] <= last
        kinds = {o.kind for o in job.outputs}
        assert kinds == {"SEG", "SR", "SC"}
        for output in job.outputs:
            ds = pydicom.dcmread(output.path)
            names = [e.value for e in ds.iterall() if isinstance(e.value, str)]
            assert any("ainode-l3-phantom" in v for v in names), output.kind
            if dciodvfy_available():
                assert run_dciodvfy(output.path).errors == [], output.kind
    finally:
        node.stop()


@pytest.mark.parametrize("selection", ["ainode-l3-phantom", "best-validated", "reference"])
def test_model_options_follow_the_selection(selection: str) -> None:
    settings = Settings(models=ModelSettings(l3_body_composition=selection), device="cpu")
    assert settings.protocol_params("l3-body-composition") == {"cutoff_set": "none"}
    options = settings.model_options("l3-body-composition")
    if selection == "reference":
        assert options is None
    else:
        assert options is not None
        assert options["selection"] == selection
        assert options["device"] == "cpu"
        assert options["install_dir"].endswith("models")
    assert settings.model_options("brain-gwr") is None


def test_invalid_model_selection_is_a_config_error() -> None:
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="is not 'reference', 'best-validated'"):
        ModelSettings(l3_body_composition="../evil")
