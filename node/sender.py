"""Returns the outputs to the destinations by C-STORE or STOW-RS, one thread per destination.

Each (output, destination) pair is a row in the ``sends`` table with its own attempts and next-attempt
time, so a destination that is down only delays its own sends. A send counts as done only on a
Success (0x0000) or Warning (0xB000, 0xB006, 0xB007) status from the peer; anything else is retried
with exponential back-off up to ``send_max_attempts``, then the job fails with the reason and
``ainode jobs retry ID`` resends it later. A destination with ``tls`` settings is reached over
DICOM TLS (:func:`node.tls.client_context`: its certificate is verified, its name checked).

A DICOMweb destination (``kind: dicomweb``) is sent to by STOW-RS (:mod:`node.stow`) under the
same queue, retry and backoff rules; an object the origin server refuses itself (Failed SOP
Sequence, e.g. with a 409) fails at once with the server's reason, without further attempts.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import pydicom
from pydicom.dataset import Dataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian
from pynetdicom import AE

from node.config import DicomWebDestination, Destination
from node.stow import stow_files
from node.tls import client_tls_args
from ainode_core.errors import ConfigError, SendError
from storage.database import JobDatabase

logger = logging.getLogger(__name__)

#: C-STORE statuses after which the peer holds the object (PS3.4 Table B.2-1).
STORED_STATUSES = frozenset({0x0000, 0xB000, 0xB006, 0xB007})


@dataclass(frozen=True)
class SendOutcome:
    """Result of sending one file."""

    path: str
    ok: bool
    error: str | None = None
    permanent: bool = False


def send_files(
    destination: Destination,
    paths: Sequence[str | Path],
    *,
    calling_ae_title: str,
    timeout_seconds: float = 30.0,
) -> list[SendOutcome]:
    """Send DICOM files to ``destination`` over one association.

    Parameters
    ----------
    destination:
        The peer.
    paths:
        Part 10 files; each is offered in its own transfer syntax and in Explicit/Implicit VR Little
        Endian.
    calling_ae_title:
        Our AE title.
    timeout_seconds:
        Network timeouts.

    Returns
    -------
    list[SendOutcome]
        One outcome per path, in order.

    Raises
    ------
    SendError
        If no association could be established (peer down, refused, timeout); then nothing was sent.
    """
    datasets: list[tuple[str, Dataset | None]] = []
    outcomes: list[SendOutcome | None] = []
    for path in paths:
        try:
            datasets.append((str(path), pydicom.dcmread(path)))
            outcomes.append(None)
        except Exception as exc:  # noqa: BLE001 - report per file
            datasets.append((str(path), None))
            outcomes.append(SendOutcome(str(path), False, f"cannot read {path}: {exc}"))
    ae = AE(ae_title=calling_ae_title)
    ae.acse_timeout = ae.dimse_timeout = ae.network_timeout = timeout_seconds
    contexts: dict[str, set[str]] = {}
    for _, ds in datasets:
        if ds is None:
            continue
        syntaxes = contexts.setdefault(str(ds.SOPClassUID), set())
        syntaxes.update(
            {str(ds.file_meta.TransferSyntaxUID), ExplicitVRLittleEndian, ImplicitVRLittleEndian}
        )
    if not contexts:  # nothing readable to send: each file has its own error already
        return [
            outcome or SendOutcome(path, False, "unreadable")
            for outcome, (path, _) in zip(outcomes, datasets, strict=True)
        ]
    for sop_class_uid, syntaxes in contexts.items():
        ae.add_requested_context(sop_class_uid, sorted(syntaxes))
    try:
        tls_args = client_tls_args(destination.host, destination.tls)
    except ConfigError as exc:
        raise SendError(f"cannot send to {destination.name} over TLS: {exc}") from exc
    assoc = ae.associate(
        destination.host, destination.port, ae_title=destination.ae_title, tls_args=tls_args
    )
    if not assoc.is_established:
        reason = "rejected" if assoc.is_rejected else "aborted" if assoc.is_aborted else "failed"
        tls_hint = (
            f"; over TLS: does its certificate verify against tls.ca_file and match "
            f"{tls_args[1]!r}, and does it accept our client certificate?"
            if tls_args is not None and not assoc.is_rejected
            else ""
        )
        raise SendError(
            f"association with {destination.name} {reason}: is the destination up, and does it "
            f"accept calling AE {calling_ae_title!r}?{tls_hint}"
        )
    try:
        for index, (path, ds) in enumerate(datasets):
            if ds is None:
                continue
            try:
                status = assoc.send_c_store(ds)
            except Exception as exc:  # noqa: BLE001 - network errors are per-file outcomes
                outcomes[index] = SendOutcome(path, False, f"C-STORE failed: {exc}")
                continue
            code = int(getattr(status, "Status", -1)) if status else -1
            if code in STORED_STATUSES:
                outcomes[index] = SendOutcome(path, True)
            elif code == -1:
                outcomes[index] = SendOutcome(
                    path, False, "no C-STORE response (association aborted or timed out)"
                )
            else:
                comment = status.get("ErrorComment", "") if status else ""
                outcomes[index] = SendOutcome(
                    path,
                    False,
                    f"{destination.name} refused the object with status 0x{code:04X}"
                    + (f" ({comment})" if comment else ""),
                )
            if not assoc.is_established:
                break
    finally:
        if assoc.is_established:
            assoc.release()
    return [
        outcome or SendOutcome(path, False, "association ended before the object was sent")
        for outcome, (path, _) in zip(outcomes, datasets, strict=True)
    ]


class DestinationSender(threading.Thread):
    """Background thread sending due outputs to one destination.

    Parameters
    ----------
    database:
        The job database holding the ``sends`` rows.
    destination:
        The peer this thread serves.
    calling_ae_title:
        Our AE title.
    max_attempts, backoff_seconds:
        Retry policy (see module docstring).
    poll_seconds:
        How often to look for due sends.
    """

    def __init__(
        self,
        database: JobDatabase,
        destination: Destination | DicomWebDestination,
        *,
        calling_ae_title: str,
        max_attempts: int,
        backoff_seconds: float,
        timeout_seconds: float,
        poll_seconds: float = 0.5,
    ) -> None:
        super().__init__(name=f"send-{destination.name}", daemon=True)
        self.database = database
        self.destination = destination
        self.calling_ae_title = calling_ae_title
        self.max_attempts = max_attempts
        self.backoff_seconds = backoff_seconds
        self.timeout_seconds = timeout_seconds
        self.poll_seconds = poll_seconds
        self.wake = threading.Event()
        self.stopping = threading.Event()

    def run(self) -> None:
        while not self.stopping.is_set():
            try:
                self.send_due()
            except Exception:
                logger.exception("sender for %s failed; continuing", self.destination.name)
            self.wake.wait(self.poll_seconds)
            self.wake.clear()

    def stop(self) -> None:
        """Ask the thread to stop after the current batch."""
        self.stopping.set()
        self.wake.set()

    def send_due(self) -> int:
        """Send every due output once; returns how many were attempted."""
        due = self.database.due_sends(self.destination.name)
        if not due:
            return 0
        paths = [path for _, _, path, _ in due]
        try:
            if isinstance(self.destination, DicomWebDestination):
                outcomes = [
                    SendOutcome(o.path, o.ok, o.error, o.permanent)
                    for o in stow_files(self.destination, paths)
                ]
            else:
                outcomes = send_files(
                    self.destination,
                    paths,
                    calling_ae_title=self.calling_ae_title,
                    timeout_seconds=self.timeout_seconds,
                )
        except SendError as exc:
            outcomes = [SendOutcome(path, False, str(exc)) for _, _, path, _ in due]
        except Exception as exc:
            logger.exception("sending to %s failed unexpectedly", self.destination.name)
            message = f"unexpected error while sending: {type(exc).__name__}: {exc}"
            outcomes = [SendOutcome(path, False, message) for _, _, path, _ in due]
        for (send_id, job_id, _, sop_instance_uid), outcome in zip(due, outcomes, strict=True):
            self.database.mark_send(
                send_id,
                ok=outcome.ok,
                error=outcome.error,
                # A refusal by the destination itself is final: this attempt is the last.
                max_attempts=1 if outcome.permanent else self.max_attempts,
                backoff_seconds=self.backoff_seconds,
            )
            if outcome.ok:
                logger.info(
                    "job %d: sent %s to %s", job_id, sop_instance_uid, self.destination.name
                )
            else:
                logger.warning(
                    "job %d: send of %s to %s failed: %s",
                    job_id,
                    sop_instance_uid,
                    self.destination.name,
                    outcome.error,
                )
        return len(due)
