"""The deployment files in deploy/: systemd units, compose file, Dockerfile, example configuration.

Docker cannot build or run here (no daemon, no compose plugin), so the compose file and the
Dockerfile are checked statically: their ainode commands must parse with ainode's own command-line
parser, their environment must make valid settings, and the services, volumes and pins must be
the ones the operations guide describes.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
import tomllib
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic import BaseModel

from node.cli import build_parser
from node.config import Settings, load_settings

DEPLOY = Path(__file__).resolve().parents[2] / "deploy"
ROOT = DEPLOY.parent
UNITS = ("ainode.service", "ainode-worker.service", "ainode-dashboard.service")
INSTALLED_AINODE = "/opt/ainode/.venv/bin/ainode"


def _parses(argv: list[str]) -> Any:
    """Parse an ainode command line as `ainode` would; fails the test on a usage error."""
    try:
        return build_parser().parse_args(argv)
    except SystemExit as exc:  # argparse exits on unknown commands or options
        pytest.fail(f"`ainode {' '.join(argv)}` is not a valid ainode command line ({exc})")


def _exec_start(unit: str) -> list[str]:
    (line,) = [l for l in (DEPLOY / unit).read_text().splitlines() if l.startswith("ExecStart=")]
    return line.removeprefix("ExecStart=").split()


@pytest.mark.parametrize("unit", UNITS)
def test_systemd_unit_passes_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    argv = _exec_start(unit)
    assert argv[0] == INSTALLED_AINODE
    args = _parses(argv[1:])
    assert args.config == "/etc/ainode/ainode.yaml"
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip(
            "systemd-analyze is not installed here (package systemd); the unit's "
            "command line was still checked against ainode's parser"
        )
    # verify needs an executable ExecStart: point it at this checkout's ainode.
    ainode = Path(sys.executable).with_name("ainode")
    assert ainode.is_file(), f"no ainode script next to {sys.executable}"
    copy = tmp_path / unit
    copy.write_text((DEPLOY / unit).read_text().replace(INSTALLED_AINODE, str(ainode)))
    result = subprocess.run(
        [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60, check=False
    )
    # Unknown keys or bad values are only warnings (exit 0): any output counts as a failure.
    assert result.returncode == 0 and not (result.stdout + result.stderr).strip(), (
        result.stdout + result.stderr
    )


def test_worker_unit_outlasts_a_job_on_stop() -> None:
    text = (DEPLOY / "ainode-worker.service").read_text()
    stop_s = int(re.search(r"^TimeoutStopSec=(\d+)$", text, re.MULTILINE).group(1))  # type: ignore[union-attr]
    assert stop_s > Settings().job_timeout_seconds
    args = _parses(_exec_start("ainode-worker.service")[1:])
    assert args.command == "worker" and args.queues == "gpu,cpu"


def _compose() -> dict[str, Any]:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def _interpolate(value: str) -> str:
    """Resolve ${VAR:?msg} / ${VAR:-default} as compose would, with test values."""
    return re.sub(r"\$\{(\w+)(?::[?-][^}]*)?\}", lambda m: f"test-{m.group(1).lower()}", value)


def test_compose_services_volumes_and_commands() -> None:
    compose = _compose()
    services = compose["services"]
    assert set(services) == {"node", "dashboard", "worker", "postgres", "rabbitmq", "orthanc"}
    commands = {name: services[name]["command"] for name in ("node", "dashboard", "worker")}
    assert [commands[n][0] for n in ("node", "dashboard", "worker")] == [
        "serve",
        "dashboard",
        "worker",
    ]
    for command in commands.values():
        _parses(command)
    assert _parses(services["node"]["healthcheck"]["test"][2:]).command == "echo"
    # The node and every worker see the instance store at the same path (shared storage).
    mounts = {name: services[name]["volumes"] for name in ("node", "dashboard", "worker")}
    assert (
        mounts["node"] == mounts["worker"] == mounts["dashboard"] == ["ainode-data:/var/lib/ainode"]
    )
    assert set(compose["volumes"]) == {
        "ainode-data",
        "postgres-data",
        "rabbitmq-data",
        "orthanc-data",
    }
    for service in services.values():
        for volume in service.get("volumes", []):
            assert volume.split(":")[0] in compose["volumes"], volume
    # The dashboard is published on loopback only.
    assert services["dashboard"]["ports"] == ["127.0.0.1:8080:8080"]
    assert services["worker"]["deploy"]["replicas"] == 2
    assert services["node"]["depends_on"]["postgres"]["condition"] == "service_healthy"


def test_compose_environment_makes_valid_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    services = _compose()["services"]
    env = {k: _interpolate(str(v)) for k, v in services["node"]["environment"].items()}
    assert env == {k: _interpolate(str(v)) for k, v in services["worker"]["environment"].items()}
    for key in [k for k in os.environ if k.startswith("AINODE_")]:
        monkeypatch.delenv(key)
    for key, value in env.items():
        monkeypatch.setenv(key, value)
    settings = load_settings(None)
    assert settings.runner == "celery"
    assert settings.resolved_database_url.startswith("postgresql+psycopg://ainode:")
    assert settings.resolved_database_url.endswith("@postgres:5432/ainode")
    assert (
        settings.celery.broker_url.startswith("amqp://ainode:")
        and "@rabbitmq:5672" in settings.celery.broker_url
    )
    assert [d.name for d in settings.destinations] == ["ORTHANC@orthanc:4242"]
    assert str(settings.data_dir) == "/var/lib/ainode/data"
    # The passwords come from deploy/.env, the same on both sides.
    postgres = services["postgres"]["environment"]
    assert _interpolate(postgres["POSTGRES_PASSWORD"]) in settings.resolved_database_url
    rabbitmq = services["rabbitmq"]["environment"]
    assert _interpolate(rabbitmq["RABBITMQ_DEFAULT_PASS"]) in settings.celery.broker_url


def test_dockerfile_pins_and_entrypoint() -> None:
    text = (DEPLOY / "Dockerfile").read_text()
    assert re.search(r"^FROM python:3\.11-slim$", text, re.MULTILINE)
    pyproject = tomllib.loads((ROOT / "pyproject.toml").read_text())
    (torch_pin,) = [d for d in pyproject["project"]["dependencies"] if d.startswith("torch==")]
    assert f"ARG TORCH_VERSION={torch_pin.removeprefix('torch==')}" in text
    assert "ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu" in text
    assert 'ENTRYPOINT ["ainode"]' in text
    (cmd,) = re.findall(r"^CMD (\[.*\])$", text, re.MULTILINE)
    _parses(yaml.safe_load(cmd))
    # Every package the project installs is copied into the image.
    copied = set(re.findall(r"^COPY (\w+) \./\w+$", text, re.MULTILINE))
    packages = {
        p.rstrip("*") for p in pyproject["tool"]["setuptools"]["packages"]["find"]["include"]
    }
    assert packages <= copied, packages - copied
    ignore = (DEPLOY / "Dockerfile.dockerignore").read_text().split()
    assert ".venv" in ignore and ".git" in ignore


def _field_names(model: type[BaseModel]) -> list[tuple[str, type[BaseModel] | None]]:
    out = []
    for name, field in model.model_fields.items():
        annotation = field.annotation
        nested = (
            annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel)
            else None
        )
        out.append((name, nested))
    return out


def test_example_configuration_is_valid_and_lists_every_setting() -> None:
    path = DEPLOY / "ainode.example.yaml"
    settings = load_settings(path)
    assert settings.ae_title == "AINODE"
    text = path.read_text()
    missing = []
    for name, nested in _field_names(Settings):
        if not re.search(rf"^#? ?{name}:", text, re.MULTILINE):
            missing.append(name)
        if nested is not None:
            block = re.search(rf"^#? ?{name}:\n((?:[ #].*\n)+)", text, re.MULTILINE)
            body = block.group(1) if block else ""
            missing += [
                f"{name}.{sub}"
                for sub, _ in _field_names(nested)
                if not re.search(rf"^#?\s+#? ?{sub}:", body, re.MULTILINE)
            ]
    assert not missing, f"settings not in deploy/ainode.example.yaml: {missing}"
