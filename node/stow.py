"""STOW-RS client: returns the outputs to a DICOMweb destination (PS3.18 10.5, Store Transaction).

One request per study: ``POST {url}/studies/{StudyInstanceUID}`` with a
``multipart/related; type="application/dicom"`` body, one Part 10 file per part, and
``Accept: application/dicom+json``. The origin server's answer is read per instance
(PS3.18 Table 10.5.3-1): an instance in the Referenced SOP Sequence (0008,1199) is stored; one
in the Failed SOP Sequence (0008,1198) was refused for the Failure Reason (0008,1197) given, a
permanent failure (not retried) unless the reason is a lack of resources (0xA7xx). A 5xx answer,
408, 429, a timeout or a connection error leaves every instance of the request to the send
queue's retry and backoff (:class:`storage.send_queue.RetryPolicy`), as a DIMSE association
failure does; so does any other 4xx without per-instance reasons (wrong URL or credentials can be
fixed while the sends wait).

httpx is used rather than dicomweb-client: dicomweb-client is built on requests and offers no
per-request timeout, and a hung origin server must not block the destination's sender thread.
The multipart body is built here (a few lines); answers are JSON, read with pydicom's
``Dataset.from_json``.
"""

from __future__ import annotations

import json
import secrets
import ssl
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import httpx
import pydicom
from pydicom.dataset import Dataset

from ainode_core.errors import ConfigError, SendError
from node.config import DicomWebDestination

#: Failure Reasons of STOW-RS (PS3.18 Table I.2-1, PS3.4 Annex B.2) named in messages.
FAILURE_REASONS: dict[int, str] = {
    0x0110: "processing failure",
    0x0122: "SOP Class not supported",
    0x0124: "not authorized",
    0xA700: "out of resources",
    0xA900: "data set does not match SOP Class",
    0xC000: "cannot understand",
    0xC122: "Referenced Transfer Syntax not supported",
}

#: HTTP statuses after which the request is tried again later (with the other 5xx).
RETRYABLE_HTTP = frozenset({408, 425, 429})

_HINTS = {
    401: "check the destination's auth settings (user, password or token)",
    403: "the account lacks the right to store on the destination",
    404: "check the destination's url (the part before /studies)",
    413: "the destination refuses requests this large",
    415: "the destination does not accept application/dicom parts",
}


@dataclass(frozen=True)
class StowOutcome:
    """Result of storing one file by STOW-RS.

    Attributes
    ----------
    path:
        The file.
    ok:
        The origin server stored it.
    error:
        Why not.
    permanent:
        The server refused the instance itself (retrying cannot help).
    """

    path: str
    ok: bool
    error: str | None = None
    permanent: bool = False


def client_for(destination: DicomWebDestination) -> httpx.Client:
    """An httpx client with the destination's authentication, CA bundle and timeout.

    Raises
    ------
    ConfigError
        If the password/token or the CA bundle cannot be read.
    """
    auth: httpx.Auth | None = None
    headers: dict[str, str] = {}
    if destination.auth is not None:
        secret = destination.auth.secret()
        if destination.auth.type == "basic":
            auth = httpx.BasicAuth(str(destination.auth.username), secret)
        else:
            headers["Authorization"] = f"Bearer {secret}"
    verify: ssl.SSLContext | bool = True
    if destination.url.startswith("https://"):
        try:
            verify = ssl.create_default_context(
                cafile=str(destination.ca_bundle) if destination.ca_bundle else None
            )
        except (OSError, ssl.SSLError) as exc:
            raise ConfigError(
                f"cannot load the CA bundle {destination.ca_bundle} of {destination.name}: {exc}"
            ) from exc
    return httpx.Client(
        auth=auth,
        headers=headers,
        verify=verify,
        timeout=destination.timeout_seconds,
        follow_redirects=False,
    )


def multipart_related(parts: Sequence[bytes]) -> tuple[bytes, str]:
    """A ``multipart/related`` body of Part 10 files (RFC 2387, PS3.18 8.6.1.2).

    Returns
    -------
    tuple[bytes, str]
        The body and its Content-Type header value.
    """
    boundary = secrets.token_hex(16)
    while any(boundary.encode() in part for part in parts):  # practically never
        boundary = secrets.token_hex(16)
    chunks: list[bytes] = []
    for part in parts:
        head = f"--{boundary}\r\nContent-Type: application/dicom\r\n\r\n".encode()
        chunks += [head, part, b"\r\n"]
    chunks.append(f"--{boundary}--\r\n".encode())
    content_type = f'multipart/related; type="application/dicom"; boundary={boundary}'
    return b"".join(chunks), content_type


def _reason_text(code: int | None) -> str:
    if code is None:
        return "no Failure Reason given"
    name = FAILURE_REASONS.get(code)
    return f"Failure Reason 0x{code:04X}" + (f" ({name})" if name else "")


def _read_response(response: httpx.Response) -> tuple[set[str], dict[str, int | None]]:
    """Referenced and failed SOP Instance UIDs (with Failure Reason) of a STOW-RS answer."""
    try:
        payload = response.json()
    except (json.JSONDecodeError, UnicodeDecodeError, ValueError):
        return set(), {}
    if isinstance(payload, list):  # some servers wrap the one dataset in an array
        payload = payload[0] if payload else {}
    if not isinstance(payload, dict):
        return set(), {}
    try:
        answer = Dataset.from_json(payload)
    except Exception:  # noqa: BLE001 - a malformed answer counts as no per-instance detail
        return set(), {}
    referenced = {
        str(item.get("ReferencedSOPInstanceUID", ""))
        for item in answer.get("ReferencedSOPSequence", [])
    }
    failed: dict[str, int | None] = {}
    for item in answer.get("FailedSOPSequence", []):
        reason = item.get("FailureReason")
        failed[str(item.get("ReferencedSOPInstanceUID", ""))] = (
            int(reason) if reason is not None else None
        )
    return referenced, failed


def stow_files(
    destination: DicomWebDestination, paths: Sequence[str | Path]
) -> list[StowOutcome]:
    """Store DICOM files on a DICOMweb origin server, one STOW-RS request per study.

    Parameters
    ----------
    destination:
        The origin server.
    paths:
        Part 10 files (the node's SEG, SR and SC outputs).

    Returns
    -------
    list[StowOutcome]
        One outcome per path, in order.

    Raises
    ------
    SendError
        If the destination's credentials or CA bundle cannot be read (nothing was sent).
    """
    outcomes: list[StowOutcome | None] = [None] * len(paths)
    studies: dict[str, list[tuple[int, str, bytes]]] = {}
    for index, path in enumerate(paths):
        try:
            data = Path(path).read_bytes()
            header = pydicom.dcmread(
                path, stop_before_pixels=True,
                specific_tags=["StudyInstanceUID", "SOPInstanceUID"],
            )
            studies.setdefault(str(header.StudyInstanceUID), []).append(
                (index, str(header.SOPInstanceUID), data)
            )
        except Exception as exc:  # noqa: BLE001 - report per file
            outcomes[index] = StowOutcome(str(path), False, f"cannot read {path}: {exc}", True)
    if studies:
        try:
            client = client_for(destination)
        except ConfigError as exc:
            raise SendError(f"cannot send to {destination.name}: {exc}") from exc
        with client:
            for study_instance_uid, members in studies.items():
                for index, outcome in _stow_study(client, destination, study_instance_uid, members,
                                                  paths):
                    outcomes[index] = outcome
    return [o if o is not None else StowOutcome(str(p), False, "not sent")
            for o, p in zip(outcomes, paths, strict=True)]


def _stow_study(
    client: httpx.Client,
    destination: DicomWebDestination,
    study_instance_uid: str,
    members: list[tuple[int, str, bytes]],
    paths: Sequence[str | Path],
) -> list[tuple[int, StowOutcome]]:
    body, content_type = multipart_related([data for _, _, data in members])
    url = f"{destination.url}/studies/{study_instance_uid}"
    name = destination.name
    try:
        response = client.post(
            url, content=body,
            headers={"Content-Type": content_type, "Accept": "application/dicom+json"},
        )
    except httpx.TimeoutException as exc:
        message = f"STOW-RS to {name} timed out ({type(exc).__name__}); is it up and reachable?"
        return [(i, StowOutcome(str(paths[i]), False, message)) for i, _, _ in members]
    except httpx.HTTPError as exc:
        message = (f"STOW-RS to {name} failed: {exc}; is the destination up, and for https, "
                   "does its certificate verify against ca_bundle?")
        return [(i, StowOutcome(str(paths[i]), False, message)) for i, _, _ in members]
    status = response.status_code
    referenced, failed = _read_response(response)
    results: list[tuple[int, StowOutcome]] = []
    for index, sop_instance_uid, _ in members:
        path = str(paths[index])
        if sop_instance_uid in failed:
            code = failed[sop_instance_uid]
            transient = code is not None and (code & 0xFF00) == 0xA700
            results.append((index, StowOutcome(
                path, False,
                f"{name} refused the object (HTTP {status}, {_reason_text(code)})",
                permanent=not transient,
            )))
        elif sop_instance_uid in referenced or status == 200:
            results.append((index, StowOutcome(path, True)))
        elif status == 202:
            results.append((index, StowOutcome(
                path, False, f"{name} answered 202 without naming the object; sending again")))
        elif 400 <= status < 500 and status not in RETRYABLE_HTTP and failed:
            results.append((index, StowOutcome(
                path, False, f"{name} refused the request (HTTP {status})", permanent=True)))
        else:
            hint = _HINTS.get(status, "the destination may be overloaded or down")
            results.append((index, StowOutcome(
                path, False, f"STOW-RS to {name} answered HTTP {status}: {hint}")))
    return results
