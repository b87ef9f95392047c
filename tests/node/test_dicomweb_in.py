"""DICOMweb in: STOW-RS to the node's dashboard app (``POST /dicomweb/studies``).

A series posted with a service account is stored durably (every file fsync-ed before the answer),
recorded like a C-STORE, processed by the running node, and its SEG, SR and SC reach Orthanc.
Also: 401 without credentials, 403 for an account without the service role (and a service
account cannot read the REST API), a non-DICOM part in the Failed SOP Sequence, a study that
differs from the URL's, and the request size limit.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
from fastapi.testclient import TestClient
from node_helpers import wait_for_jobs
from pydicom.dataset import Dataset

from node.config import Destination
from node.local_pacs import OrthancPACS
from node.server import Node
from node.users import add_user
from node.web.app import create_app
from storage.models import JobState

pytestmark = pytest.mark.peers

SERVICE = ("pacs-stow", "service-secret-1")
VIEWER = ("ward-viewer", "viewer-secret-1")
DICOM_JSON = "application/dicom+json"


def _body(parts: list[tuple[str, bytes]]) -> tuple[bytes, str]:
    """A multipart/related body of (Content-Type, bytes) parts, and its Content-Type."""
    boundary = secrets.token_hex(12)
    chunks = []
    for media_type, data in parts:
        chunks += [f"--{boundary}\r\nContent-Type: {media_type}\r\n\r\n".encode(), data, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    return b"".join(chunks), f'multipart/related; type="application/dicom"; boundary={boundary}'


def _answer(response: object) -> Dataset:
    assert response.headers["content-type"].startswith(DICOM_JSON)  # type: ignore[attr-defined]
    return Dataset.from_json(response.json())  # type: ignore[attr-defined]


@pytest.fixture
def make_stow_node(
    make_node: Callable[..., Node],
) -> Iterator[Callable[..., tuple[Node, TestClient]]]:
    """Factory: a running node with a service and a viewer account, and a client of its app."""
    clients: list[TestClient] = []

    def factory(destinations: list[Destination] | None = None) -> tuple[Node, TestClient]:
        node = make_node(destinations)
        add_user(node.database, *SERVICE, ["service"])
        add_user(node.database, *VIEWER, ["viewer"])
        client = TestClient(create_app(node.settings, node.database), base_url="http://127.0.0.1")
        clients.append(client)
        return node, client

    yield factory
    for client in clients:
        client.close()


@pytest.fixture
def node_and_client(
    make_stow_node: Callable[..., tuple[Node, TestClient]],
) -> tuple[Node, TestClient]:
    """A node without destination (the tests that need no PACS) and its client."""
    return make_stow_node()


@pytest.fixture
def fsynced(monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Paths passed to ``os.fsync`` (the real fsync still runs)."""
    paths: list[str] = []
    real_fsync = os.fsync

    def recording_fsync(fd: int) -> None:
        paths.append(os.readlink(f"/proc/self/fd/{fd}"))
        real_fsync(fd)

    monkeypatch.setattr(os, "fsync", recording_fsync)
    return paths


def test_posted_series_is_stored_durably_and_processed_like_c_store(
    make_stow_node: Callable[..., tuple[Node, TestClient]], orthanc: OrthancPACS,
    real_ct_slice_path: Path, fsynced: list[str],
) -> None:
    node, client = make_stow_node(
        [Destination(ae_title=orthanc.ae_title, host=orthanc.host, port=orthanc.port)]
    )
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    body, content_type = _body([("application/dicom", real_ct_slice_path.read_bytes())])
    response = client.post(f"/dicomweb/studies/{source.StudyInstanceUID}", content=body,
                           headers={"Content-Type": content_type, "Accept": DICOM_JSON},
                           auth=SERVICE)
    assert response.status_code == 200, response.text
    answer = _answer(response)
    assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == [
        str(source.SOPInstanceUID)
    ]
    assert "FailedSOPSequence" not in answer
    # Durable before the answer: the file (as its temp file) and its directory were fsync-ed.
    stored = node.store.path_for(source.StudyInstanceUID, source.SeriesInstanceUID,
                                 source.SOPInstanceUID)
    assert stored.read_bytes() == real_ct_slice_path.read_bytes()
    assert any(Path(p).parent == stored.parent and Path(p).name.startswith(f".tmp-{stored.name}")
               for p in fsynced), fsynced
    assert str(stored.parent) in fsynced
    # Processed by the node like a C-STORE: one job, its outputs in Orthanc.
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.DONE, job.error
    assert job.calling_ae_title == SERVICE[0]
    assert job.series_instance_uid == source.SeriesInstanceUID
    wanted = {o.sop_instance_uid for o in job.outputs}
    assert {o.kind for o in job.outputs} == {"SEG", "SR", "SC"}
    orthanc.wait_for_instances(3, timeout_s=30, predicate=lambda i: i["SOPInstanceUID"] in wanted)


def test_authentication_and_roles(
    node_and_client: tuple[Node, TestClient], real_ct_slice_path: Path
) -> None:
    node, client = node_and_client
    body, content_type = _body([("application/dicom", real_ct_slice_path.read_bytes())])
    headers = {"Content-Type": content_type}
    assert client.post("/dicomweb/studies", content=body, headers=headers).status_code == 401
    assert client.post("/dicomweb/studies", content=body, headers=headers,
                       auth=(SERVICE[0], "wrong-password")).status_code == 401
    refused = client.post("/dicomweb/studies", content=body, headers=headers, auth=VIEWER)
    assert refused.status_code == 403 and "service role" in refused.json()["detail"]
    # A service account may store but not read the REST API.
    assert client.get("/api/v1/jobs", auth=SERVICE).status_code == 403
    assert client.get("/api/v1/jobs", auth=VIEWER).status_code == 200
    assert list(node.store.iter_instances()) == []


def test_non_dicom_part_is_reported_in_the_failed_sop_sequence(
    node_and_client: tuple[Node, TestClient], real_ct_slice_path: Path
) -> None:
    node, client = node_and_client
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    body, content_type = _body([
        ("application/dicom", real_ct_slice_path.read_bytes()),
        ("application/dicom", b"this is not a DICOM file"),
    ])
    response = client.post("/dicomweb/studies", content=body,
                           headers={"Content-Type": content_type}, auth=SERVICE)
    assert response.status_code == 202, response.text
    answer = _answer(response)
    assert [str(i.ReferencedSOPInstanceUID) for i in answer.ReferencedSOPSequence] == [
        str(source.SOPInstanceUID)
    ]
    (failed,) = answer.FailedSOPSequence
    assert failed.FailureReason == 0xC000
    assert [i.sop_instance_uid for i in node.store.iter_instances()] == [source.SOPInstanceUID]


def test_other_study_than_the_urls_and_wrong_media_type_are_refused(
    node_and_client: tuple[Node, TestClient], real_ct_slice_path: Path
) -> None:
    node, client = node_and_client
    body, content_type = _body([("application/dicom", real_ct_slice_path.read_bytes())])
    response = client.post("/dicomweb/studies/1.2.3.4", content=body,
                           headers={"Content-Type": content_type}, auth=SERVICE)
    assert response.status_code == 409, response.text
    (failed,) = _answer(response).FailedSOPSequence
    assert failed.FailureReason == 0xA900
    wrong_type = client.post("/dicomweb/studies", content=body,
                             headers={"Content-Type": "application/json"}, auth=SERVICE)
    assert wrong_type.status_code == 415
    assert list(node.store.iter_instances()) == []


def test_request_larger_than_the_limit_is_refused(
    node_and_client: tuple[Node, TestClient], real_ct_slice_path: Path
) -> None:
    node, _ = node_and_client
    settings = node.settings.model_copy(
        update={"web": node.settings.web.model_copy(update={"stow_max_request_mb": 0.01})}
    )
    body, content_type = _body([("application/dicom", real_ct_slice_path.read_bytes())])
    assert len(body) > 0.01 * 2**20
    with TestClient(create_app(settings, node.database), base_url="http://127.0.0.1") as client:
        response = client.post("/dicomweb/studies", content=body,
                               headers={"Content-Type": content_type}, auth=SERVICE)
        assert response.status_code == 413 and "stow_max_request_mb" in response.json()["detail"]
        # Without Content-Length (chunked): refused once the streamed body passes the limit.
        chunked = client.post("/dicomweb/studies", content=iter([body[:4096], body[4096:]]),
                              headers={"Content-Type": content_type}, auth=SERVICE)
    assert "content-length" not in chunked.request.headers
    assert chunked.status_code == 413
    assert list(node.store.iter_instances()) == []
