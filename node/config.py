"""The node's one typed settings object.

Sources, highest priority first: command-line flags, environment variables with the prefix
``AINODE_`` (nested fields with ``__``, e.g. ``AINODE_L3__CUTOFF_SET=prado-2008``), the YAML file
given with ``--config`` (or ``AINODE_CONFIG``), then the defaults below. ``ainode check-config FILE``
validates a file and prints the effective settings. Every field has a description; the
configuration reference in ``docs/configuration.md`` is generated from them
(``ainode check-config --reference``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import Annotated, Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from pipelines.errors import ConfigError

_DESTINATION_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class Destination(BaseModel):
    """A DICOM node that receives the results (usually the PACS)."""

    ae_title: str = Field(description="Called AE title of the destination.", max_length=16)
    host: str = Field(description="Host name or IP address.")
    port: int = Field(description="TCP port.", ge=1, le=65535)

    @property
    def name(self) -> str:
        """``AET@host:port``, the destination's name in the job database."""
        return f"{self.ae_title}@{self.host}:{self.port}"

    @classmethod
    def parse(cls, text: str) -> Destination:
        """Parse ``AET@HOST:PORT``.

        Raises
        ------
        ConfigError
            If the text is not of that form.
        """
        match = _DESTINATION_RE.match(text.strip())
        if not match:
            raise ConfigError(
                f"invalid destination {text!r}: expected AET@HOST:PORT, e.g. PACS@10.0.0.5:104"
            )
        return cls(
            ae_title=match["aet"], host=match["host"].strip("[]"), port=int(match["port"])
        )


class AllowedCaller(BaseModel):
    """One entry of the calling-AE allow-list."""

    ae_title: str = Field(description="Calling AE title allowed to associate.", max_length=16)
    host: str | None = Field(
        default=None, description="If set, the association must also come from this IP address."
    )


class L3Settings(BaseModel):
    """Parameters of the l3-body-composition protocol."""

    cutoff_set: Literal["none", "prado-2008", "martin-2013", "van-der-werf-2018"] = Field(
        default="none",
        description=(
            "Sex-specific low-SMI cut-off set for the sarcopenia flag (sources in "
            "docs/pipelines/l3-body-composition.md). 'none' reports no flag."
        ),
    )


class Settings(BaseSettings):
    """Settings of an ainode node."""

    model_config = SettingsConfigDict(
        env_prefix="AINODE_", env_nested_delimiter="__", extra="forbid", validate_default=True
    )

    ae_title: str = Field(default="AINODE", max_length=16, description="The node's own AE title.")
    host: str = Field(
        default="0.0.0.0", description="Address the DICOM listener binds to (0.0.0.0 = all)."
    )
    port: int = Field(default=11112, ge=1, le=65535, description="DICOM listener TCP port.")
    data_dir: Path = Field(
        default=Path("ainode-data"),
        description="Data directory: instance store, outputs and the SQLite job database.",
    )
    database_url: str | None = Field(
        default=None,
        description=(
            "SQLAlchemy URL of the job database; default SQLite in the data directory. "
            "PostgreSQL: postgresql+psycopg://user:password@host/dbname"
        ),
    )
    quiet_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "A series is complete when no instance of it arrived for this many seconds. Each "
            "new instance restarts the wait, so slowly arriving large series are not cut."
        ),
    )
    destinations: Annotated[list[Destination], NoDecode] = Field(
        default_factory=list,
        description=(
            "Where results are sent by C-STORE (usually the PACS). Several are allowed. In an "
            "environment variable: comma-separated AET@HOST:PORT, or a JSON list."
        ),
    )
    allowed_callers: list[AllowedCaller] = Field(
        default_factory=list,
        description=(
            "Calling-AE allow-list (AE title, optionally with IP). Empty = accept any caller."
        ),
    )
    routing_rules: list[dict[str, Any]] | None = Field(
        default=None,
        description=(
            "Ordered routing rules (see docs/routing.md); the first match wins. Unset = the "
            "shipped default rules."
        ),
    )
    workers: int = Field(default=1, ge=1, le=64, description="Jobs run in parallel.")
    job_timeout_seconds: float = Field(
        default=900.0, gt=0, description="A job running longer is killed and failed."
    )
    max_job_attempts: int = Field(
        default=2,
        ge=1,
        description="Attempts per job when its worker crashes (input errors are not retried).",
    )
    send_max_attempts: int = Field(
        default=6, ge=1, description="C-STORE attempts per output and destination."
    )
    send_backoff_seconds: float = Field(
        default=10.0,
        gt=0,
        description="First retry delay of a failed send; doubles with every attempt.",
    )
    network_timeout_seconds: float = Field(
        default=30.0, gt=0, description="DIMSE/ACSE/network timeout of associations."
    )
    validate_outputs: bool = Field(
        default=True,
        description=(
            "Check every output object with dciodvfy (dicom3tools) when it is installed; an "
            "object with errors is not sent and the job fails."
        ),
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        default="auto",
        description=(
            "Where trained networks run (auto = CUDA when torch sees a GPU). The reference "
            "methods of this version use no network and run on the CPU."
        ),
    )
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = Field(
        default="INFO", description="Log level."
    )
    log_phi: bool = Field(
        default=False,
        description=(
            "Allow pynetdicom's identifier logging (may contain patient data). Off by default."
        ),
    )
    l3: L3Settings = Field(default_factory=L3Settings, description="l3-body-composition.")

    @field_validator("destinations", mode="before")
    @classmethod
    def _parse_destinations(cls, value: Any) -> Any:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    value = json.loads(text)
                except json.JSONDecodeError as exc:
                    raise ValueError(f"destinations: invalid JSON list ({exc})") from exc
            else:
                value = [v for v in text.split(",") if v.strip()]
        if isinstance(value, list):
            return [Destination.parse(v) if isinstance(v, str) else v for v in value]
        return value

    def protocol_params(self, protocol: str) -> dict[str, Any]:
        """Pipeline parameters of ``protocol`` from these settings (empty when it has none)."""
        if protocol == "l3-body-composition":
            return {"cutoff_set": self.l3.cutoff_set}
        return {}

    @property
    def resolved_database_url(self) -> str:
        """The job database URL (default: SQLite in the data directory)."""
        if self.database_url:
            return self.database_url
        return f"sqlite:///{(self.data_dir / 'ainode.sqlite3').resolve()}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        yaml_file = os.environ.get("AINODE_CONFIG")
        sources: list[PydanticBaseSettingsSource] = [init_settings, env_settings]
        if yaml_file:
            if not Path(yaml_file).is_file():
                raise ConfigError(f"AINODE_CONFIG names {yaml_file}, which does not exist")
            sources.append(YamlConfigSettingsSource(settings_cls, yaml_file=yaml_file))
        return tuple(sources)


def load_settings(config_file: str | os.PathLike[str] | None = None, **overrides: Any) -> Settings:
    """Load settings from an optional YAML file, the environment and explicit overrides.

    Parameters
    ----------
    config_file:
        YAML file (keys as in :class:`Settings`); ``None`` uses ``$AINODE_CONFIG`` if set.
    overrides:
        Values that win over everything else (command-line flags); ``None`` values are ignored.

    Returns
    -------
    Settings

    Raises
    ------
    ConfigError
        If the file is missing or invalid, with every problem listed.
    """
    clean = {k: v for k, v in overrides.items() if v is not None}
    previous = os.environ.get("AINODE_CONFIG")
    try:
        if config_file is not None:
            path = Path(config_file)
            if not path.is_file():
                raise ConfigError(f"configuration file {path} does not exist")
            try:
                content = yaml.safe_load(path.read_text()) or {}
            except yaml.YAMLError as exc:
                raise ConfigError(f"{path} is not valid YAML: {exc}") from exc
            if not isinstance(content, dict):
                raise ConfigError(f"{path}: expected a mapping of settings at the top level")
            os.environ["AINODE_CONFIG"] = str(path)
        settings = Settings(**clean)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(top level)'}: {err['msg']}"
            for err in exc.errors()
        )
        raise ConfigError(f"invalid configuration: {problems}") from exc
    finally:
        if config_file is not None:
            if previous is None:
                os.environ.pop("AINODE_CONFIG", None)
            else:
                os.environ["AINODE_CONFIG"] = previous
    return settings


def settings_reference() -> str:
    """Markdown table of every setting with its type, default and description."""
    lines = ["| setting | env variable | default | description |", "|---|---|---|---|"]

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, field in model.model_fields.items():
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel) and annotation not in (Destination, AllowedCaller):
                walk(annotation, f"{prefix}{name}.")
                continue
            default = field.get_default(call_default_factory=True)
            env = "AINODE_" + (prefix + name).replace(".", "__").upper()
            lines.append(
                f"| `{prefix}{name}` | `{env}` | `{default!s}` | {field.description or ''} |"
            )

    walk(Settings, "")
    return "\n".join(lines)
