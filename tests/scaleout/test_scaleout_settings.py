"""Scale-out settings: runner selection, Celery configuration, queues per protocol, path mapping."""

from __future__ import annotations

from pathlib import Path

import pytest

from node.config import Settings, load_settings
from node.local_pacs import find_free_port
from node.runner import LocalProcessRunner
from node.scaleout.app import celery_config, known_queues, queue_for
from node.scaleout.dispatcher import CeleryRunner
from node.server import Node
from node.worker import CeleryJobWorker
from pipelines.errors import ConfigError


def test_the_local_runner_stays_the_default_and_celery_is_selected_in_config(tmp_path: Path) -> None:
    base = {"data_dir": tmp_path / "node", "host": "127.0.0.1", "port": find_free_port()}
    default = Node(Settings(**base))
    try:
        assert isinstance(default.runner, LocalProcessRunner)
    finally:
        default.database.close()
    celery = Node(Settings(**base, runner="celery"))
    try:
        assert isinstance(celery.runner, CeleryRunner)
    finally:
        celery.database.close()


def test_runner_and_celery_settings_are_validated(tmp_path: Path) -> None:
    config = tmp_path / "bad.yaml"
    config.write_text("runner: kubernetes\n")
    with pytest.raises(ConfigError, match="runner"):
        load_settings(config)
    config.write_text("runner: celery\ncelery:\n  prefetch_multiplier: 0\n")
    with pytest.raises(ConfigError, match="prefetch_multiplier"):
        load_settings(config)


def test_celery_configuration_and_queues_per_protocol() -> None:
    settings = Settings(
        runner="celery",
        celery={"queues": {"l3-body-composition": "cpu", "brain-gwr": "gpu"}, "default_queue": "gpu"},
    )
    assert queue_for(settings, "l3-body-composition") == "cpu"
    assert queue_for(settings, "neonatal-rds") == "gpu"
    assert known_queues(settings) == ["gpu", "cpu"]
    conf = celery_config(settings)
    assert conf["task_acks_late"] is True
    assert conf["task_reject_on_worker_lost"] is True
    assert conf["worker_prefetch_multiplier"] == 1
    assert conf["broker_heartbeat"] == 0
    assert conf["result_backend"] is None
    assert [q.name for q in conf["task_queues"]] == ["gpu", "cpu"]
    assert all(q.durable for q in conf["task_queues"])


def test_worker_maps_paths_between_the_node_and_its_own_mount(tmp_path: Path) -> None:
    local = tmp_path / "mnt" / "ainode"
    settings = Settings(
        data_dir=local,
        database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}",
        runner="celery",
        celery={"node_data_dir": "/var/lib/ainode/data"},
    )
    worker = CeleryJobWorker(settings)
    try:
        stored = "/var/lib/ainode/data/instances/1.2/1.2.3/1.2.3.4.dcm"
        assert worker.input_path(stored) == f"{local.resolve()}/instances/1.2/1.2.3/1.2.3.4.dcm"
        # A path outside the node's data_dir (or a look-alike prefix) is left alone.
        assert worker.input_path("/var/lib/ainode/data2/x.dcm") == "/var/lib/ainode/data2/x.dcm"
        output = f"{local.resolve()}/outputs/7/seg.dcm"
        assert worker.recorded_path(output) == "/var/lib/ainode/data/outputs/7/seg.dcm"
    finally:
        worker.database.close()
    same = CeleryJobWorker(
        Settings(data_dir=local, database_url=f"sqlite:///{tmp_path / 'jobs.sqlite3'}")
    )
    try:
        assert same.input_path("/var/lib/ainode/data/x.dcm") == "/var/lib/ainode/data/x.dcm"
        assert same.worker_name.endswith("/celery")
    finally:
        same.database.close()
