"""DICOM TLS: :class:`ssl.SSLContext` objects for the listener and the sender, built from config.

DICOM over TLS is the Basic TLS Secure Transport Connection Profile (PS3.15 Annex B.1): the DICOM
Upper Layer protocol runs unchanged inside a TLS connection (IANA port 2762). pynetdicom does the
DICOM part; this module only builds the contexts:

- :func:`server_context` for the Storage SCP (``AE.start_server(..., ssl_context=ctx)``): the
  node's certificate and key, TLS 1.2 or newer, and with ``require_client_certificate`` a check
  of the caller's certificate against ``ca_file`` (mutual TLS).
- :func:`client_context` for the C-STORE SCU (``AE.associate(..., tls_args=(ctx, name))``): the
  destination's certificate is always verified (against its ``ca_file`` or the system CAs) and
  its name checked; a client certificate is presented when configured.

pynetdicom wraps each accepted socket in the server's accept loop. With the default
``do_handshake_on_connect=True`` the TLS handshake then runs in that loop, so one caller that
connects and sends nothing would block every other caller of the TLS port. The server context
returned here is a :class:`DeferredHandshakeContext`, which defers the handshake to the first read
in the association's own thread (where pynetdicom's ACSE timeout applies).
"""

from __future__ import annotations

import logging
import socket
import ssl
from pathlib import Path
from typing import Any

from node.config import DestinationTLS, TLSSettings
from ainode_core.errors import ConfigError

logger = logging.getLogger(__name__)

_VERSIONS = {"TLSv1.2": ssl.TLSVersion.TLSv1_2, "TLSv1.3": ssl.TLSVersion.TLSv1_3}


class DeferredHandshakeContext(ssl.SSLContext):
    """Server-side context whose sockets do the TLS handshake on first use, not on accept."""

    def wrap_socket(  # type: ignore[override]
        self,
        sock: socket.socket,
        server_side: bool = False,
        do_handshake_on_connect: bool = True,
        *args: Any,
        **kwargs: Any,
    ) -> ssl.SSLSocket:
        return super().wrap_socket(
            sock, server_side, False if server_side else do_handshake_on_connect, *args, **kwargs
        )


def _readable_file(path: Path | None, what: str) -> str:
    if path is None:
        raise ConfigError(f"{what} is not set")
    if not Path(path).is_file():
        raise ConfigError(f"{what} {path} does not exist or is not a file")
    return str(path)


def _load_chain(
    context: ssl.SSLContext, certificate: Path | None, key: Path | None, what: str
) -> None:
    cert_file = _readable_file(certificate, f"{what}.certificate")
    key_file = _readable_file(key, f"{what}.key")
    try:
        context.load_cert_chain(cert_file, key_file)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(
            f"cannot load {what}.certificate {cert_file} with {what}.key {key_file}: {exc}; both "
            "must be PEM, the key unencrypted and matching the certificate"
        ) from exc


def _load_ca(context: ssl.SSLContext, ca_file: Path | None, what: str) -> None:
    path = _readable_file(ca_file, f"{what}.ca_file")
    try:
        context.load_verify_locations(cafile=path)
    except (ssl.SSLError, OSError) as exc:
        raise ConfigError(f"cannot load {what}.ca_file {path}: {exc}; it must be PEM") from exc


def server_context(settings: TLSSettings) -> ssl.SSLContext:
    """The listener's TLS context.

    Parameters
    ----------
    settings:
        ``Settings.tls``; ``certificate`` and ``key`` must be set.

    Returns
    -------
    ssl.SSLContext
        A :class:`DeferredHandshakeContext`: TLS ``minimum_version`` or newer; client certificates
        required and checked against ``ca_file`` when ``require_client_certificate``, else
        checked only if a caller sends one and ``ca_file`` is set.

    Raises
    ------
    ConfigError
        If a file is missing or unreadable, or the key does not match the certificate.
    """
    context = DeferredHandshakeContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = _VERSIONS[settings.minimum_version]
    _load_chain(context, settings.certificate, settings.key, "tls")
    if settings.ca_file is not None:
        _load_ca(context, settings.ca_file, "tls")
        context.verify_mode = (
            ssl.CERT_REQUIRED if settings.require_client_certificate else ssl.CERT_OPTIONAL
        )
    elif settings.require_client_certificate:  # the config validator already refuses this
        raise ConfigError("tls.require_client_certificate needs tls.ca_file")
    return context


def client_context(settings: DestinationTLS) -> ssl.SSLContext:
    """The sender's TLS context for one destination.

    Parameters
    ----------
    settings:
        The destination's ``tls`` settings.

    Returns
    -------
    ssl.SSLContext
        TLS 1.2 or newer; the peer's certificate verified against ``ca_file`` (or the system CAs)
        with its name checked; the client certificate loaded when configured.

    Raises
    ------
    ConfigError
        If a configured file is missing or unreadable.
    """
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)  # CERT_REQUIRED + check_hostname
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    if settings.ca_file is not None:
        _load_ca(context, settings.ca_file, "destination tls")
    else:
        context.load_default_certs(ssl.Purpose.SERVER_AUTH)
    if settings.certificate is not None:
        _load_chain(context, settings.certificate, settings.key, "destination tls")
    return context


def client_tls_args(
    host: str, settings: DestinationTLS | None
) -> tuple[ssl.SSLContext, str] | None:
    """``tls_args`` for ``AE.associate``: ``(context, server name)``, or ``None`` without TLS."""
    if settings is None:
        return None
    return client_context(settings), settings.server_name or host
