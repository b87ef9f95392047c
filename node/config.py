"""The node's one typed settings object.

Sources, highest priority first: command-line flags, environment variables with the prefix
``AINODE_`` (nested fields with ``__``, e.g. ``AINODE_L3__CUTOFF_SET=prado-2008``), the YAML file
given with ``--config`` (or ``AINODE_CONFIG``), then the defaults below. ``ainode check-config FILE``
validates a file and prints the effective settings. The protocols' sections (``l3``, ``chest``,
...) and the per-protocol model selections (``models.<protocol>``) are built from the protocol
registry (:mod:`pipelines.registry`), typed by each spec's parameter model. Every field has a
description; the configuration reference in ``docs/configuration.md`` is generated from them
(``ainode check-config --reference``).
"""

from __future__ import annotations

import json
import os
import re
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, Literal

import yaml
from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    Discriminator,
    Tag,
    create_model,
    field_validator,
    model_validator,
)
from pydantic_settings import (
    BaseSettings,
    NoDecode,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
    YamlConfigSettingsSource,
)

from ainode_core.errors import ConfigError

_DESTINATION_RE = re.compile(r"^(?P<aet>[^@]{1,16})@(?P<host>[^:]+|\[[0-9a-fA-F:]+\]):(?P<port>\d{1,5})$")


class DestinationTLS(BaseModel):
    """DICOM TLS towards one destination (the node is the TLS client)."""

    ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM file of the CA certificate(s) the destination's certificate is checked against "
            "(a self-signed destination: its own certificate). Unset: the system's CAs."
        ),
    )
    certificate: Path | None = Field(
        default=None,
        description="PEM client certificate the node presents when the destination asks for one.",
    )
    key: Path | None = Field(default=None, description="PEM private key of `certificate`.")
    server_name: str | None = Field(
        default=None,
        description=(
            "Name checked against the destination's certificate (DNS name or IP address in its "
            "subjectAltName). Unset: the destination's host."
        ),
    )

    @model_validator(mode="after")
    def _key_with_certificate(self) -> DestinationTLS:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("tls: give both certificate and key, or neither")
        return self


class Destination(BaseModel):
    """A DICOM node that receives the results by C-STORE (usually the PACS)."""

    kind: Literal["dimse"] = Field(
        default="dimse", description="'dimse': send by C-STORE (the default)."
    )
    ae_title: str = Field(description="Called AE title of the destination.", max_length=16)
    host: str = Field(description="Host name or IP address.")
    port: int = Field(description="TCP port.", ge=1, le=65535)
    tls: DestinationTLS | None = Field(
        default=None,
        description="Send over DICOM TLS with these settings. Unset: a plain TCP association.",
    )

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


class DicomWebAuth(BaseModel):
    """Credentials the node presents to a STOW-RS destination (never written in the YAML itself).

    The secret (password or token) is read from an environment variable or a file each time the
    node sends, so it can be rotated without a restart and never appears in the configuration.
    """

    type: Literal["basic", "bearer"] = Field(
        description="'basic': HTTP Basic (RFC 7617) with username and password; 'bearer': "
        "an OAuth 2.0 bearer token (RFC 6750)."
    )
    username: str | None = Field(default=None, description="User name (type basic).")
    password_env: str | None = Field(
        default=None, description="Environment variable holding the password (type basic)."
    )
    password_file: Path | None = Field(
        default=None, description="File holding the password, first line (type basic)."
    )
    token_env: str | None = Field(
        default=None, description="Environment variable holding the token (type bearer)."
    )
    token_file: Path | None = Field(
        default=None, description="File holding the token, first line (type bearer)."
    )

    @model_validator(mode="after")
    def _complete(self) -> DicomWebAuth:
        if self.type == "basic":
            if not self.username or (self.password_env is None) == (self.password_file is None):
                raise ValueError(
                    "auth type basic needs username and one of password_env or password_file"
                )
        elif (self.token_env is None) == (self.token_file is None):
            raise ValueError("auth type bearer needs one of token_env or token_file")
        return self

    def secret(self) -> str:
        """The password (basic) or token (bearer), read now from its variable or file.

        Raises
        ------
        ConfigError
            If the variable is unset or empty, or the file cannot be read or is empty.
        """
        env = self.password_env if self.type == "basic" else self.token_env
        path = self.password_file if self.type == "basic" else self.token_file
        what = "password" if self.type == "basic" else "token"
        if env is not None:
            value = os.environ.get(env, "")
            if not value:
                raise ConfigError(f"the DICOMweb {what} variable {env} is unset or empty: set it")
            return value
        assert path is not None
        try:
            lines = Path(path).read_text().splitlines()
        except OSError as exc:
            raise ConfigError(f"cannot read the DICOMweb {what} file {path}: {exc}") from exc
        value = lines[0].strip() if lines else ""
        if not value:
            raise ConfigError(f"the DICOMweb {what} file {path} is empty: write the {what} in it")
        return value


class DicomWebDestination(BaseModel):
    """A DICOMweb origin server that receives the results by STOW-RS (PS3.18 10.5)."""

    kind: Literal["dicomweb"] = Field(description="'dicomweb': send by STOW-RS over HTTP(S).")
    url: str = Field(
        max_length=128,
        description=(
            "Base URL of the DICOMweb service (the part before /studies), e.g. "
            "https://pacs.example.org/dicom-web; no credentials in it (use auth)."
        ),
    )
    auth: DicomWebAuth | None = Field(
        default=None, description="HTTP authentication. Unset: none."
    )
    ca_bundle: Path | None = Field(
        default=None,
        description=(
            "PEM file of the CA certificate(s) an https URL's certificate is checked against. "
            "Unset: the system's CAs."
        ),
    )
    timeout_seconds: float = Field(
        default=60.0, gt=0, description="Connect/read/write timeout of one STOW-RS request, s."
    )

    @field_validator("url")
    @classmethod
    def _check_url(cls, value: str) -> str:
        from urllib.parse import urlsplit

        parts = urlsplit(value.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"url {value!r}: expected http(s)://host[:port]/path")
        if parts.username or parts.password:
            raise ValueError("url: put no credentials in the URL; use auth with password_env")
        if parts.query or parts.fragment:
            raise ValueError(f"url {value!r}: no query or fragment allowed")
        return value.strip().rstrip("/")

    @property
    def name(self) -> str:
        """The URL, the destination's name in the job database."""
        return self.url


def _destination_kind(value: Any) -> str:
    if isinstance(value, dict):
        return str(value.get("kind", "dimse"))
    return str(getattr(value, "kind", "dimse"))


#: One destination: a DIMSE AE (``kind: dimse``, the default) or a STOW-RS URL (``kind: dicomweb``).
AnyDestination = Annotated[
    Annotated[Destination, Tag("dimse")] | Annotated[DicomWebDestination, Tag("dicomweb")],
    Discriminator(_destination_kind),
]


class AllowedCaller(BaseModel):
    """One entry of the calling-AE allow-list."""

    ae_title: str = Field(description="Calling AE title allowed to associate.", max_length=16)
    host: str | None = Field(
        default=None, description="If set, the association must also come from this IP address."
    )


class TLSSettings(BaseModel):
    """DICOM TLS of the listener (PS3.15 Annex B.1, Basic TLS Secure Transport Connection Profile)."""

    port: int | None = Field(
        default=None,
        ge=1,
        le=65535,
        description=(
            "TCP port of the DICOM TLS listener (2762 is the IANA port of DICOM over TLS). "
            "Unset: no TLS listener."
        ),
    )
    tls_only: bool = Field(
        default=False,
        description=(
            "Accept DICOM over TLS only: the plain listener on `port` is not opened. Needs "
            "tls.port."
        ),
    )
    certificate: Path | None = Field(
        default=None,
        description="PEM certificate (chain) the listener presents. Needed with tls.port.",
    )
    key: Path | None = Field(
        default=None,
        description=(
            "PEM private key of the certificate, unencrypted; readable by the ainode user only."
        ),
    )
    ca_file: Path | None = Field(
        default=None,
        description=(
            "PEM file of the CA certificate(s) that callers' client certificates are checked "
            "against. Needed with require_client_certificate."
        ),
    )
    require_client_certificate: bool = Field(
        default=False,
        description=(
            "Refuse TLS callers without a client certificate signed by a CA of ca_file (mutual "
            "TLS). Off: any caller may connect over TLS (the AE allow-list still applies)."
        ),
    )
    minimum_version: Literal["TLSv1.2", "TLSv1.3"] = Field(
        default="TLSv1.2",
        description=(
            "Oldest TLS version the listener accepts (the sender always needs 1.2 or newer)."
        ),
    )

    @model_validator(mode="after")
    def _consistent(self) -> TLSSettings:
        if (self.certificate is None) != (self.key is None):
            raise ValueError("give both tls.certificate and tls.key, or neither")
        if self.port is not None and self.certificate is None:
            raise ValueError("tls.port needs tls.certificate and tls.key")
        if self.tls_only and self.port is None:
            raise ValueError("tls.tls_only needs tls.port (the TLS listener)")
        if self.require_client_certificate and self.ca_file is None:
            raise ValueError("tls.require_client_certificate needs tls.ca_file")
        return self


class RetentionSettings(BaseModel):
    """Deletion of old data and disk-space safety (see docs/operations.md, "Retention")."""

    max_age_days: float | None = Field(
        default=None,
        gt=0,
        description=(
            "Delete the received instances and the outputs of a finished job (done, failed, "
            "ignored, cancelled; no send pending) this many days after it finished; the job's "
            "history stays in the database. Unset: keep everything (delete by hand with "
            "`ainode purge`)."
        ),
    )
    interval_minutes: float = Field(
        default=60.0, gt=0, description="How often the node applies max_age_days."
    )
    min_free_disk_mb: float = Field(
        default=1024.0,
        ge=0,
        description=(
            "Refuse new associations (and C-STOREs, status 0xA700) while the file system of "
            "data_dir has less free space than this, in MB. 0: no limit."
        ),
    )
    min_free_disk_percent: float = Field(
        default=0.0,
        ge=0,
        le=100,
        description="As min_free_disk_mb, in percent of the file system's size. 0: no limit.",
    )


class WebSettings(BaseModel):
    """The admin dashboard and REST API (``ainode dashboard``, docs/dashboard.md)."""

    host: str = Field(
        default="127.0.0.1",
        description=(
            "Address the dashboard binds to. Loopback by default: put a TLS reverse proxy in "
            "front of it rather than exposing it directly."
        ),
    )
    port: int = Field(default=8080, ge=1, le=65535, description="Dashboard HTTP port.")
    secret_key_file: Path | None = Field(
        default=None,
        description=(
            "File with the key that signs session cookies; created (mode 0600) when missing. "
            "Default: web-secret.key in the data directory."
        ),
    )
    session_lifetime_minutes: int = Field(
        default=480, ge=1, description="A sign-in expires after this many minutes."
    )
    cookie_secure: bool = Field(
        default=False,
        description="Send the session cookie over HTTPS only (set true behind a TLS proxy).",
    )
    trusted_user_header: str | None = Field(
        default=None,
        description=(
            "Header carrying the signed-in user name set by a reverse proxy (e.g. X-Remote-User); "
            "believed only from trusted_proxies. The user must exist (`ainode users add`) and "
            "gets the roles stored there. Unset = local sign-in only."
        ),
    )
    trusted_proxies: list[str] = Field(
        default_factory=list,
        description=(
            "Client addresses (e.g. 127.0.0.1 for a proxy on the same host) whose "
            "trusted_user_header and X-Forwarded-For are believed. Empty = none."
        ),
    )
    metrics_public: bool = Field(
        default=True,
        description=(
            "Serve /metrics without sign-in (counts only, no patient data). False = HTTP Basic "
            "or a session is required."
        ),
    )
    stow_max_request_mb: float = Field(
        default=1024.0,
        gt=0,
        description=(
            "Largest STOW-RS request (POST /dicomweb/studies) the dashboard accepts, in MB; a "
            "larger one is answered 413 (send the study in several requests). The request is "
            "held in memory while it is stored."
        ),
    )


class CelerySettings(BaseModel):
    """The Celery + RabbitMQ runner backend (``runner: celery``; see docs/scaling.md)."""

    broker_url: str = Field(
        default="amqp://guest:guest@localhost:5672//",
        description=(
            "RabbitMQ URL (amqp://user:password@host:5672/vhost). RabbitMQ, not Redis: Redis "
            "brokers re-deliver long jobs after their visibility timeout."
        ),
    )
    queues: dict[str, str] = Field(
        default_factory=dict,
        description=(
            "Protocol name -> queue name (e.g. {brain-gwr: gpu, l3-body-composition: cpu}); "
            "workers take jobs from the queues given to `ainode worker --queues`."
        ),
    )
    default_queue: str = Field(
        default="gpu", min_length=1, description="Queue of protocols not named in `queues`."
    )
    lease_seconds: float = Field(
        default=60.0,
        ge=2,
        description=(
            "A worker holds its job's lease this long and renews it every third of it; the "
            "node re-queues a job whose lease expired (its worker died) and publishes it again."
        ),
    )
    republish_after_seconds: float = Field(
        default=300.0,
        gt=0,
        description=(
            "The node publishes a queued job again when no worker claimed it this long after "
            "its last message (a lost message). Duplicates are harmless: the claim decides."
        ),
    )
    prefetch_multiplier: int = Field(
        default=1,
        ge=1,
        description="Messages a worker reserves beyond the one it runs (1: none waits on a busy worker).",
    )
    isolate_jobs: bool = Field(
        default=False,
        description=(
            "Run each job in a fresh child process of the worker, as the local runner does "
            "(memory freed after every job), instead of in the worker process itself, which "
            "keeps libraries, CUDA context and models loaded between jobs (seconds saved per "
            "job). Either way a job over job_timeout_seconds is failed; in-process, the worker "
            "then exits and must be restarted by its service manager."
        ),
    )
    node_data_dir: Path | None = Field(
        default=None,
        description=(
            "On a worker whose shared-storage mount differs from the node's: the node's "
            "data_dir. Paths under it in the job database are mapped onto this machine's "
            "data_dir and back. Unset: the same path on every machine."
        ),
    )


_MODEL_SELECTION_RE = re.compile(r"^(reference|best-validated|[a-z0-9][a-z0-9._-]{0,63})$")
_MODEL_SELECTION_HELP = (
    "'reference' (the rule-based reference method, no network), a model name from `ainode "
    "models list`, or 'best-validated' (the installed 'validated', else 'research', model of the "
    "protocol with the best evaluation metric; phantom-only models are never chosen this way, "
    "and without such a model the reference method runs)"
)


def _check_model_selection(value: str) -> str:
    if not isinstance(value, str) or not _MODEL_SELECTION_RE.match(value):
        raise ValueError(
            f"{value!r} is not 'reference', 'best-validated' or a model name (lower-case "
            "letters, digits, '.', '_', '-')"
        )
    return value


ModelSelection = Annotated[str, AfterValidator(_check_model_selection)]


def _protocol_key(name: str) -> str:
    """Settings key of protocol ``name`` (``-`` becomes ``_``: ``brain-gwr`` -> ``brain_gwr``)."""
    return name.replace("-", "_")


def _registered_protocols() -> dict[str, Any]:
    from pipelines.registry import protocols

    return protocols()


class _ModelSettingsBase(BaseModel):
    """Which trained network each protocol runs, and how inference runs (docs/models.md).

    One selection per registered protocol, keyed by its name with ``_`` for ``-`` (e.g.
    ``brain_gwr: reference``); the keys come from the protocol registry, so a plug-in's protocol
    is selected the same way.
    """

    model_config = ConfigDict(extra="allow")

    sliding_window_overlap: float = Field(
        default=0.25, ge=0.0, lt=1.0,
        description="Overlap of neighbouring windows in sliding-window inference (MONAI).",
    )
    sw_batch_size: int = Field(
        default=4, ge=1, le=256, description="Windows per forward pass in sliding-window inference."
    )
    amp: bool = Field(
        default=True, description="Automatic mixed precision (float16) on CUDA; ignored on the CPU."
    )
    install_dir: Path | None = Field(
        default=None,
        description="Directory of installed models; default <data_dir>/models.",
    )

    @model_validator(mode="after")
    def _check_extra_selections(self) -> _ModelSettingsBase:
        """Keys not declared as fields (a plug-in installed after start-up) must name a
        registered protocol, and hold a valid selection."""
        extra = dict(self.__pydantic_extra__ or {})
        if extra:
            known = {_protocol_key(name) for name in _registered_protocols()}
            unknown = sorted(set(extra) - known)
            if unknown:
                raise ValueError(
                    f"unknown protocol(s) {unknown}; known: {', '.join(sorted(known))} (the "
                    "protocol name with '_' for '-')"
                )
            for value in extra.values():
                _check_model_selection(value)
        return self

    def selection(self, protocol: str) -> str:
        """The configured selection for ``protocol`` (``"reference"`` when not set)."""
        return str(getattr(self, _protocol_key(protocol), None) or "reference")


#: Model selection per protocol, one field per protocol in the registry (see
#: :class:`_ModelSettingsBase`).
ModelSettings = _ModelSettingsBase if TYPE_CHECKING else create_model(
    "ModelSettings",
    __base__=_ModelSettingsBase,
    __doc__=_ModelSettingsBase.__doc__,
    **{
        _protocol_key(name): (
            ModelSelection,
            Field(default="reference", description=f"{name}: {_MODEL_SELECTION_HELP}."),
        )
        for name in _registered_protocols()
    },
)


class _ProtocolSection(BaseModel):
    """A protocol's section of the settings: the parameters its spec offers there."""

    model_config = ConfigDict(extra="forbid")

    #: The protocol's full parameter model (set on each generated section class).
    _parameters: Any = None

    @model_validator(mode="after")
    def _check_with_the_protocol(self) -> _ProtocolSection:
        """Cross-field rules and refusals of the protocol's own model apply here too."""
        model = type(self)._parameters
        if model is not None:
            model.from_mapping(self.values())
        return self

    def values(self) -> dict[str, Any]:
        """The section's parameters, unset (``None``) ones left out."""
        return {k: v for k, v in self.model_dump().items() if v is not None}


def _protocol_section(name: str, spec: Any) -> tuple[Any, Any]:
    fields = spec.parameters.model_fields
    section = create_model(
        f"{spec.parameters.__name__}Section",
        __base__=_ProtocolSection,
        __doc__=f"Parameters of {name} set in the node's settings.",
        **{key: (fields[key].annotation, fields[key]) for key in spec.settings_fields},
    )
    section._parameters = spec.parameters
    return (section, Field(default_factory=section, description=f"{name}: {spec.title}."))


class _SettingsBase(BaseSettings):
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
    completion: Literal["study", "series"] = Field(
        default="study",
        description=(
            "study: wait until a whole study is quiet, then choose the best series for each "
            "protocol and run it once per study (docs/routing.md); series: every series that "
            "is quiet for quiet_seconds becomes its own job (sites that route single series)."
        ),
    )
    study_quiet_seconds: float = Field(
        default=60.0,
        gt=0,
        description=(
            "completion: study. A study is complete when no instance of it arrived for this "
            "many seconds."
        ),
    )
    study_max_wait_seconds: float = Field(
        default=1800.0,
        gt=0,
        description=(
            "completion: study. A study still receiving after this many seconds (from its "
            "first open series) is processed with what has arrived."
        ),
    )
    late_series: Literal["ignore", "rerun"] = Field(
        default="rerun",
        description=(
            "A series arriving after its study was processed: rerun a protocol when the new "
            "series would now be chosen (the results replace the earlier ones: same UIDs), or "
            "ignore it (its reason is recorded)."
        ),
    )
    series_selection: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Series preferences by protocol, overriding the protocol's defaults, e.g. "
            "{'l3-body-composition': {'slice_thickness_mm': [1, 2.5]}}; keys of "
            "node.selection.SeriesPreferences (docs/routing.md)."
        ),
    )
    destinations: Annotated[list[AnyDestination], NoDecode] = Field(
        default_factory=list,
        description=(
            "Where results are sent (usually the PACS): by C-STORE ({ae_title, host, port}, "
            "kind dimse) or by STOW-RS ({kind: dicomweb, url, auth, ca_bundle}). Several are "
            "allowed. In an environment variable: comma-separated AET@HOST:PORT or "
            "http(s) URLs, or a JSON list."
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
    runner: Literal["local", "celery"] = Field(
        default="local",
        description=(
            "Where jobs run: 'local' child processes of the node (`workers` at a time), or "
            "'celery' workers (`ainode worker`) on this or other machines, via RabbitMQ."
        ),
    )
    celery: CelerySettings = Field(
        default_factory=CelerySettings, description="Celery runner (runner: celery)."
    )
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
    # -- admission and decoding limits (issue 14; docs/conformance.md) --------------------------
    max_associations: int = Field(
        default=20,
        ge=1,
        description=(
            "Established associations at a time (plain and TLS together); the next request is "
            "rejected (transient, local limit exceeded). Connections that have not sent their "
            "association request do not count."
        ),
    )
    max_connections_per_ip: int = Field(
        default=30,
        ge=1,
        description=(
            "Open TCP connections per remote IP address; more are closed at accept, before any "
            "DICOM is read. At least max_associations, so one PACS can use every slot."
        ),
    )
    max_connections: int = Field(
        default=200, ge=1, description="Open TCP connections in all; more are closed at accept."
    )
    association_request_timeout_seconds: float = Field(
        default=10.0,
        gt=0,
        description=(
            "ARTIM (PS3.8 9.1.5): a connection whose A-ASSOCIATE-RQ (or release) has not arrived "
            "within this time is closed, so idle sockets cannot hold slots."
        ),
    )
    max_image_mb: float = Field(
        default=2048.0,
        gt=0,
        description=(
            "Largest decoded pixel data of one image (Rows x Columns x Samples x Frames x Bits "
            "Allocated / 8) that is decoded; larger images are refused before any allocation."
        ),
    )
    pixel_routing_memory_mb: int = Field(
        default=1536,
        ge=256,
        description=(
            "Address-space limit (RLIMIT_AS) of the child process that guesses a series' body "
            "region from its pixels (routing fallback)."
        ),
    )
    pixel_routing_timeout_seconds: float = Field(
        default=60.0, gt=0, description="Time limit of that child process."
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
            "methods use no network and run on the CPU."
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
    protocol_parameters: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description=(
            "Any pipeline parameter, by protocol name, e.g. {'chest-respiratory-muscle': "
            "{'min_slab_mm': 30}}; it overrides the protocol's own section (e.g. "
            "chest.include_diaphragm). Names, types and bounds come from the protocol's "
            "parameter model (docs/pipelines/); unknown protocols or names, wrong types and "
            "values out of range are refused at start, naming the parameter."
        ),
    )
    models: ModelSettings = Field(
        default_factory=ModelSettings,
        description="Trained networks per protocol and inference settings (docs/models.md).",
    )
    web: WebSettings = Field(
        default_factory=WebSettings, description="Admin dashboard and REST API."
    )
    tls: TLSSettings = Field(default_factory=TLSSettings, description="DICOM TLS listener.")
    retention: RetentionSettings = Field(
        default_factory=RetentionSettings, description="Retention and disk-space safety."
    )

    @field_validator("series_selection")
    @classmethod
    def _check_series_selection(cls, value: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
        from pydantic import ValidationError as _Invalid

        from node.selection import preferences_for

        registered = _registered_protocols()
        for protocol, overrides in value.items():
            if protocol not in registered:
                raise ValueError(
                    f"series_selection names unknown protocol {protocol!r}; known: "
                    f"{', '.join(sorted(registered))}"
                )
            try:
                preferences_for(protocol, registered[protocol].series_preferences, overrides)
            except _Invalid as exc:
                problems = "; ".join(
                    f"{'.'.join(str(p) for p in error['loc']) or protocol}: {error['msg']}"
                    for error in exc.errors()
                )
                raise ValueError(f"series_selection.{protocol}: {problems}") from None
        return value

    def series_preferences(self) -> dict[str, Any]:
        """:class:`node.selection.SeriesPreferences` of every registered protocol: the spec's
        ``series_preferences`` updated by ``series_selection``."""
        from node.selection import preferences_for

        return {
            name: preferences_for(name, spec.series_preferences, self.series_selection.get(name))
            for name, spec in _registered_protocols().items()
        }

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
            return [
                (
                    {"kind": "dicomweb", "url": v.strip()}
                    if v.strip().lower().startswith(("http://", "https://"))
                    else Destination.parse(v)
                )
                if isinstance(v, str)
                else v
                for v in value
            ]
        return value

    def protocol_params(self, protocol: str) -> dict[str, Any]:
        """Pipeline parameters of ``protocol`` from these settings (empty when none are set).

        The protocol's own section (its spec's ``settings_fields`` under
        :meth:`pipelines.protocol.ProtocolSpec.settings_section`, e.g. ``l3.cutoff_set``) comes
        first, unset (null) values left out; ``protocol_parameters`` may add or override any
        parameter of the protocol.
        """
        params: dict[str, Any] = {}
        spec = _registered_protocols().get(protocol)
        if spec is not None:
            section = getattr(self, spec.settings_section(), None)
            if isinstance(section, _ProtocolSection):
                params.update(section.values())
        params.update(self.protocol_parameters.get(protocol, {}))
        return params

    def check_protocol_parameters(self) -> None:
        """Check every protocol's parameters from these settings (without running anything).

        Raises
        ------
        ConfigError
            An unknown protocol in ``protocol_parameters``, or an unknown name, a wrong type or
            a value out of range (the message names the protocol and the parameter).
        """
        from pipelines.registry import check_parameters

        registered = _registered_protocols()
        unknown = sorted(set(self.protocol_parameters) - set(registered))
        if unknown:
            raise ConfigError(
                f"protocol_parameters names unknown protocol(s) {unknown}; known: "
                f"{', '.join(sorted(registered))}"
            )
        for name in registered:
            check_parameters(name, self.protocol_params(name))

    @property
    def models_install_dir(self) -> Path:
        """Directory of installed models (``models.install_dir`` or ``<data_dir>/models``)."""
        return self.models.install_dir or (self.data_dir / "models")

    def model_options(self, protocol: str) -> dict[str, Any] | None:
        """Model selection and inference settings of ``protocol`` for the job's process.

        Returns
        -------
        dict | None
            ``None`` when the protocol runs its reference method; else ``selection``,
            ``install_dir``, ``device``, ``overlap``, ``sw_batch_size`` and ``amp`` (JSON values).
        """
        selection = self.models.selection(protocol)
        if selection == "reference":
            return None
        return {
            "selection": selection,
            "install_dir": str(self.models_install_dir),
            "device": self.device,
            "overlap": self.models.sliding_window_overlap,
            "sw_batch_size": self.models.sw_batch_size,
            "amp": self.models.amp,
        }

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


#: The settings: :class:`_SettingsBase` plus one section per registered protocol that offers
#: one (its spec's ``settings_fields``, typed by its parameter model, under
#: :meth:`pipelines.protocol.ProtocolSpec.settings_section`).
Settings = _SettingsBase if TYPE_CHECKING else create_model(
    "Settings",
    __base__=_SettingsBase,
    __doc__=_SettingsBase.__doc__,
    **{
        spec.settings_section(): _protocol_section(name, spec)
        for name, spec in _registered_protocols().items()
        if spec.settings_fields
    },
)


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
