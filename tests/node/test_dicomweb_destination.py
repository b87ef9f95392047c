"""DICOMweb destinations: configuration, secrets, and STOW-RS over https with a CA bundle.

The https peer is the node's own STOW-RS endpoint served by uvicorn with a self-signed
certificate (openssl), so the whole path (TLS verification, HTTP Basic from a password file,
durable storage on the receiving node) runs for real.
"""

from __future__ import annotations

import subprocess
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import uvicorn
from peers import require_binary
from pydantic import ValidationError

from ainode_core.errors import ConfigError
from node.config import DicomWebAuth, DicomWebDestination, Destination, Settings
from node.local_pacs import find_free_port
from node.server import Node
from node.stow import client_for, stow_files
from node.users import add_user
from node.web.app import create_app

SERVICE = ("pacs-stow", "service-secret-1")


def test_destinations_of_both_kinds_from_yaml_values_and_the_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    settings = Settings(destinations=[
        {"ae_title": "PACS", "host": "10.0.0.5", "port": 104},
        {"kind": "dicomweb", "url": "https://pacs.example.org/dicom-web/",
         "auth": {"type": "bearer", "token_env": "PACS_TOKEN"}},
    ])
    dimse, web = settings.destinations
    assert isinstance(dimse, Destination) and dimse.name == "PACS@10.0.0.5:104"
    assert isinstance(web, DicomWebDestination)
    assert web.name == "https://pacs.example.org/dicom-web"  # trailing slash dropped
    monkeypatch.setenv("AINODE_DESTINATIONS", "PACS@10.0.0.5:104,http://127.0.0.1:8042/dicom-web")
    kinds = [d.kind for d in Settings().destinations]
    assert kinds == ["dimse", "dicomweb"]


@pytest.mark.parametrize(
    ("entry", "message"),
    [
        ({"kind": "dicomweb", "url": "https://user:pw@pacs.example.org/dw"}, "no credentials"),
        ({"kind": "dicomweb", "url": "ftp://pacs.example.org/dw"}, "http"),
        ({"kind": "dicomweb", "url": "https://p.example.org/dw",
          "auth": {"type": "basic", "username": "u"}}, "password_env or password_file"),
        ({"kind": "dicomweb", "url": "https://p.example.org/dw",
          "auth": {"type": "bearer", "token_env": "A", "token_file": "/x"}}, "one of token_env"),
        ({"kind": "smtp", "url": "https://p.example.org/dw"}, "smtp"),
    ],
)
def test_invalid_dicomweb_destinations_are_refused(entry: dict[str, object], message: str) -> None:
    with pytest.raises(ValidationError, match=message):
        Settings(destinations=[entry])


def test_secrets_come_from_the_environment_or_a_file_at_send_time(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("t0ken-from-file\nignored\n")
    bearer = DicomWebAuth(type="bearer", token_file=token_file)
    destination = DicomWebDestination(kind="dicomweb", url="https://p.example.org/dw", auth=bearer)
    with client_for(destination) as client:
        assert client.headers["Authorization"] == "Bearer t0ken-from-file"
    token_file.write_text("rotated\n")  # read again at the next send, no restart
    assert bearer.secret() == "rotated"
    basic = DicomWebAuth(type="basic", username="u", password_env="AINODE_TEST_UNSET_PW")
    monkeypatch.delenv("AINODE_TEST_UNSET_PW", raising=False)
    with pytest.raises(ConfigError, match="AINODE_TEST_UNSET_PW is unset"):
        basic.secret()
    token_file.write_text("")
    with pytest.raises(ConfigError, match="is empty"):
        bearer.secret()


@pytest.fixture
def https_stow_node(
    make_node: Callable[..., Node], tmp_path: Path
) -> Iterator[tuple[Node, str, Path]]:
    """A node whose STOW-RS endpoint is served over https; (node, base URL, its certificate)."""
    require_binary("openssl")
    cert, key = tmp_path / "server.pem", tmp_path / "server.key"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key),
         "-out", str(cert), "-days", "2", "-subj", "/CN=127.0.0.1",
         "-addext", "subjectAltName=IP:127.0.0.1,DNS:localhost"],
        check=True, capture_output=True,
    )
    node = make_node()
    add_user(node.database, *SERVICE, ["service"])
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(node.settings, node.database), host="127.0.0.1", port=port,
        ssl_certfile=str(cert), ssl_keyfile=str(key), log_level="warning",
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield node, f"https://127.0.0.1:{port}/dicomweb", cert
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_stow_over_https_verifies_the_certificate_against_the_ca_bundle(
    https_stow_node: tuple[Node, str, Path], real_ct_slice_path: Path, tmp_path: Path
) -> None:
    node, url, cert = https_stow_node
    password_file = tmp_path / "stow-password"
    password_file.write_text(SERVICE[1] + "\n")
    auth = DicomWebAuth(type="basic", username=SERVICE[0], password_file=password_file)
    # Without the CA bundle the self-signed certificate is not trusted: retried, nothing stored.
    (untrusted,) = stow_files(DicomWebDestination(kind="dicomweb", url=url, auth=auth),
                              [real_ct_slice_path])
    assert not untrusted.ok and not untrusted.permanent
    assert "ca_bundle" in str(untrusted.error)
    assert list(node.store.iter_instances()) == []
    (outcome,) = stow_files(
        DicomWebDestination(kind="dicomweb", url=url, auth=auth, ca_bundle=cert),
        [real_ct_slice_path],
    )
    assert outcome.ok, outcome.error
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    stored = node.store.path_for(source.StudyInstanceUID, source.SeriesInstanceUID,
                                 source.SOPInstanceUID)
    assert stored.read_bytes() == real_ct_slice_path.read_bytes()
