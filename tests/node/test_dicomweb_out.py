"""DICOMweb out: a job's SEG, SR and SC reach Orthanc (DICOMweb plugin, HTTP Basic) by STOW-RS.

Also: an endpoint that is down is retried with the send queue's backoff until it comes up, and
an object the origin server refuses itself (Failed SOP Sequence, 409) fails at once with the
server's reason.
"""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pydicom
import pytest
import uvicorn
from node_helpers import c_store, wait_for_jobs
from peers import orthanc_dicomweb

from node.config import DicomWebAuth, DicomWebDestination
from node.local_pacs import OrthancPACS, find_free_port
from node.server import Node
from node.stow import stow_files
from node.users import add_user
from node.web.app import create_app
from pipelines.volume import DEFAULT_MAX_IMAGE_MB, MAX_IMAGE_MB_ENV
from storage.models import JobState

pytestmark = pytest.mark.peers

PASSWORD_ENV = "AINODE_TEST_STOW_PASSWORD"


@pytest.fixture
def orthanc_web(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[OrthancPACS]:
    """Orthanc with the DICOMweb plugin; its password in :data:`PASSWORD_ENV`."""
    pacs = orthanc_dicomweb(tmp_path / "orthanc-web")
    pacs.start()
    monkeypatch.setenv(PASSWORD_ENV, pacs.password)  # type: ignore[attr-defined]
    try:
        yield pacs
    finally:
        pacs.stop()


def _stow_destination(url: str, user: str = "stow") -> DicomWebDestination:
    return DicomWebDestination(
        kind="dicomweb", url=url, timeout_seconds=10,
        auth=DicomWebAuth(type="basic", username=user, password_env=PASSWORD_ENV),
    )


def _describe(job: object) -> str:
    events = "\n".join(
        f"  {e.level}: {e.message}" for e in job.events  # type: ignore[attr-defined]
    )
    return f"job {job.id} {job.state} error={job.error}\n{events}"  # type: ignore[attr-defined]


def test_job_outputs_reach_orthanc_by_stow_rs(
    make_node: Callable[..., Node], orthanc_web: OrthancPACS, real_ct_slice_path: Path
) -> None:
    node = make_node([_stow_destination(orthanc_web.dicomweb_url)])  # type: ignore[attr-defined]
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1)
    assert job.state == JobState.DONE, _describe(job)
    outputs = {o.kind: o for o in job.outputs}
    assert set(outputs) == {"SEG", "SR", "SC"}
    for output in outputs.values():
        assert [(s.destination, s.state) for s in output.sends] == [
            (orthanc_web.dicomweb_url, "sent")  # type: ignore[attr-defined]
        ]
    wanted = {o.sop_instance_uid for o in outputs.values()}
    received = orthanc_web.wait_for_instances(
        3, timeout_s=30, predicate=lambda i: i["SOPInstanceUID"] in wanted
    )
    assert {i["SOPInstanceUID"] for i in received} == wanted
    source = pydicom.dcmread(real_ct_slice_path, stop_before_pixels=True)
    for instance in received:
        stored = pydicom.dcmread(io.BytesIO(orthanc_web.get_instance_file(instance["ID"])))
        assert stored.StudyInstanceUID == source.StudyInstanceUID


def test_wrong_password_is_retried_with_a_hint(
    orthanc_web: OrthancPACS, real_ct_slice_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(PASSWORD_ENV, "not-the-password")
    (outcome,) = stow_files(
        _stow_destination(orthanc_web.dicomweb_url),  # type: ignore[attr-defined]
        [real_ct_slice_path],
    )
    assert not outcome.ok and not outcome.permanent
    assert "HTTP 401" in str(outcome.error) and "auth settings" in str(outcome.error)
    assert orthanc_web.instances() == []


def test_down_endpoint_is_retried_with_backoff_then_succeeds(
    make_node: Callable[..., Node], real_ct_slice_path: Path, tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    http_port = find_free_port()
    pacs = orthanc_dicomweb(tmp_path / "late-orthanc", http_port=http_port)
    monkeypatch.setenv(PASSWORD_ENV, pacs.password)  # type: ignore[attr-defined]
    url = f"http://127.0.0.1:{http_port}/dicom-web"
    node = make_node([_stow_destination(url)], send_max_attempts=8, send_backoff_seconds=0.5)
    assert c_store(real_ct_slice_path, node.scp.port) == 0
    (job,) = wait_for_jobs(node.database, 1, states=(JobState.SENDING,))
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:  # at least two failed attempts before the server comes up
        job = node.database.get_job(job.id)
        if all(s.attempts >= 2 for o in job.outputs for s in o.sends) and job.outputs:
            break
        time.sleep(0.2)
    else:
        raise AssertionError(_describe(job))
    assert job.state == JobState.SENDING, _describe(job)
    retries = [e.message for e in job.events if "retrying in" in e.message]
    assert any("retrying in 0.5 s" in m for m in retries), retries
    assert any("retrying in 1 s" in m for m in retries), retries
    assert all("timed out" in m or "failed:" in m for m in retries)
    with pacs:
        (job,) = wait_for_jobs(node.database, 1, timeout_s=60, states=(JobState.DONE,))
        assert all(s.state == "sent" and s.attempts >= 3 for o in job.outputs for s in o.sends)
        wanted = {o.sop_instance_uid for o in job.outputs}
        pacs.wait_for_instances(3, timeout_s=30, predicate=lambda i: i["SOPInstanceUID"] in wanted)


@pytest.fixture
def refusing_node_endpoint(
    make_node: Callable[..., Node], monkeypatch: pytest.MonkeyPatch
) -> Iterator[str]:
    """A second node's own STOW-RS endpoint (uvicorn), refusing every image (max_image_mb)."""
    # A Node exports max_image_mb as AINODE_MAX_IMAGE_MB (for its job children), which is also
    # that setting's environment name: keep it from the second node and from later tests.
    monkeypatch.setenv(MAX_IMAGE_MB_ENV, str(DEFAULT_MAX_IMAGE_MB))
    receiver = make_node(max_image_mb=0.001)
    monkeypatch.setenv(MAX_IMAGE_MB_ENV, str(DEFAULT_MAX_IMAGE_MB))
    add_user(receiver.database, "stow", "stow-secret-2", ["service"])
    monkeypatch.setenv(PASSWORD_ENV, "stow-secret-2")
    port = find_free_port()
    server = uvicorn.Server(uvicorn.Config(
        create_app(receiver.settings, receiver.database), host="127.0.0.1", port=port,
        log_level="warning",
    ))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started and time.monotonic() < deadline:
        time.sleep(0.05)
    assert server.started
    try:
        yield f"http://127.0.0.1:{port}/dicomweb"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


def test_refused_object_fails_at_once_with_the_servers_reason(
    make_node: Callable[..., Node], refusing_node_endpoint: str, real_ct_slice_path: Path
) -> None:
    (outcome,) = stow_files(_stow_destination(refusing_node_endpoint), [real_ct_slice_path])
    assert not outcome.ok and outcome.permanent
    assert "HTTP 409" in str(outcome.error) and "0xC000" in str(outcome.error)
    # Through the send queue: one attempt, then the send and its job fail with that reason.
    sender_node = make_node([_stow_destination(refusing_node_endpoint)], send_max_attempts=6)
    assert c_store(real_ct_slice_path, sender_node.scp.port) == 0
    (job,) = wait_for_jobs(sender_node.database, 1)
    assert job.state == JobState.FAILED, _describe(job)
    # SEG and SC carry pixel data the receiver refuses; the SR has none and is stored (HTTP 202).
    sends = {o.kind: s for o in job.outputs for s in o.sends}
    assert set(sends) == {"SEG", "SR", "SC"}
    assert sends["SR"].state == "sent"
    for kind in ("SEG", "SC"):
        assert sends[kind].state == "failed" and sends[kind].attempts == 1
        assert "Failure Reason 0xC000" in str(sends[kind].last_error)
