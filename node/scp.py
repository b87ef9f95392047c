"""The Storage SCP: C-ECHO and C-STORE, association policy, and nothing slower.

The C-STORE handler writes the received bytes durably (:meth:`storage.instance_store.InstanceStore.store`,
temp file + fsync + rename) and only then returns Success; anything that fails before that returns
a failure status, so the sender keeps the instance and retries. The durable file is the record of
what was acknowledged: the job database row is written right after by :class:`IngestRecorder`, in
batches, off the association's thread (a crash in between is repaired at start-up by
:meth:`node.server.Node.recover`, which registers stored files the database lacks). Series
completion drains the recorder first, so a series is never closed while some of its instances are
still on the way into the database. Pixel data is never decoded here.

With ``tls`` settings the same AE also listens for DICOM over TLS on ``tls.port`` (contexts from
:mod:`node.tls`), beside the plain port or, with ``tls.tls_only``, instead of it. With a
:class:`storage.retention.DiskGuard`, association requests are rejected (A-ASSOCIATE-RJ, transient,
"local limit exceeded") and C-STOREs refused with 0xA700 (Out of Resources) while the data
directory's file system is below its free-space threshold, each with a log line saying why.
"""

from __future__ import annotations

import logging
import queue
import threading
import time
from datetime import datetime
from dataclasses import dataclass
from typing import Any

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts

from node.admission import AdmissionControl, AdmissionServer
from node.config import AllowedCaller, TLSSettings
from ainode_core.errors import StorageError
from storage.database import InstanceRecord, JobDatabase
from storage.instance_store import InstanceStore, check_uid
from storage.models import utcnow
from storage.retention import DiskGuard

logger = logging.getLogger(__name__)

VERIFICATION_SOP_CLASS = "1.2.840.10008.1.1"

# C-STORE status codes (PS3.4 Table B.2-1) and A-ASSOCIATE-RJ reasons (PS3.8 Table 9-21).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_CANNOT_UNDERSTAND = 0xC000
REJECT_PERMANENT = 0x01
REJECT_TRANSIENT = 0x02
REJECT_SOURCE_SERVICE_USER = 0x01
REJECT_SOURCE_SERVICE_PROVIDER_PRESENTATION = 0x03
REJECT_CALLING_AE_NOT_RECOGNISED = 0x03
REJECT_LOCAL_LIMIT_EXCEEDED = 0x02


class IngestRecorder(threading.Thread):
    """Writes received instances into the job database in batches, in a background thread.

    Parameters
    ----------
    database:
        The job database.
    max_batch:
        Most records per transaction.
    retry_seconds:
        Wait before retrying a batch the database refused (records are kept, in order).
    linger_seconds:
        After the first record of a batch, wait this long for more before committing: one
        transaction per instance cost about 2 ms of CPU each (measured with SQLite on the
        2-core machine), taken from the associations' threads through the GIL. The file is
        already durable; a crash before the commit is repaired by :meth:`node.server.Node.recover`.
    """

    def __init__(
        self,
        database: JobDatabase,
        max_batch: int = 200,
        retry_seconds: float = 1.0,
        linger_seconds: float = 0.25,
    ) -> None:
        super().__init__(name="ingest-recorder", daemon=True)
        self.database = database
        self.max_batch = max_batch
        self.retry_seconds = retry_seconds
        self.linger_seconds = linger_seconds
        self._queue: queue.Queue[InstanceRecord | None] = queue.Queue()
        self._stopping = threading.Event()
        self._draining = threading.Event()

    def submit(self, record: InstanceRecord) -> None:
        """Queue a record (never blocks)."""
        self._queue.put(record)

    def drain(self, timeout_s: float | None = None) -> bool:
        """Wait until every submitted record is committed; ``False`` on timeout."""
        deadline = None if timeout_s is None else time.monotonic() + timeout_s
        self._draining.set()  # commit what is there now, without lingering
        try:
            while self._queue.unfinished_tasks:
                if deadline is not None and time.monotonic() > deadline:
                    return False
                time.sleep(0.01)
        finally:
            self._draining.clear()
        return True

    def stop(self) -> None:
        """Commit what is queued, then end the thread."""
        self._stopping.set()
        self._queue.put(None)
        self.join(timeout=30)

    def run(self) -> None:
        while True:
            first = self._queue.get()
            if first is None:
                self._queue.task_done()
                if self._stopping.is_set() and self._queue.empty():
                    return
                continue
            batch = [first]
            stop_seen = False
            close_at = time.monotonic() + self.linger_seconds
            while len(batch) < self.max_batch:
                wait = close_at - time.monotonic()
                if self._stopping.is_set() or self._draining.is_set():
                    wait = 0.0
                try:
                    item = self._queue.get(timeout=wait) if wait > 0 else self._queue.get_nowait()
                except queue.Empty:
                    break
                if item is None:
                    self._queue.task_done()
                    if self._stopping.is_set():
                        stop_seen = True
                        break
                    continue
                batch.append(item)
            while True:
                try:
                    self.database.record_instances(batch)
                    break
                except StorageError as exc:
                    logger.error(
                        "cannot record %d received instance(s) in the job database (%s); the "
                        "files are stored; retrying in %g s",
                        len(batch),
                        exc,
                        self.retry_seconds,
                    )
                    time.sleep(self.retry_seconds)
            for _ in batch:
                self._queue.task_done()
            if stop_seen and self._queue.empty():
                return


@dataclass
class IngestCounters:
    """Counters of the listener since start (for logs and the status command)."""

    associations: int = 0
    rejected_associations: int = 0
    instances_stored: int = 0
    instances_refused: int = 0
    refused_for_disk_space: int = 0


class StorageSCP:
    """pynetdicom Storage SCP that feeds the instance store and the job database.

    Parameters
    ----------
    ae_title, host, port:
        The listener.
    store, database:
        Where received instances go.
    allowed_callers:
        Calling-AE allow-list; empty accepts any caller.
    network_timeout_seconds:
        DIMSE/network timeout, and the socket timeout of accepted connections.
    max_associations, max_connections_per_ip, max_connections:
        Admission limits (:mod:`node.admission`; docs/conformance.md).
    association_request_timeout_seconds:
        ARTIM: a connection whose A-ASSOCIATE-RQ (or A-RELEASE-RP) has not arrived in this time
        is closed; also the TLS handshake timeout.
    tls:
        DICOM TLS listener settings (``Settings.tls``); ``None`` or no ``tls.port``: plain only.
    disk_guard:
        Free-space check of the data directory; ``None``: no check.
    """

    def __init__(
        self,
        *,
        ae_title: str,
        host: str,
        port: int,
        store: InstanceStore,
        database: JobDatabase,
        allowed_callers: list[AllowedCaller] | None = None,
        network_timeout_seconds: float = 30.0,
        tls: TLSSettings | None = None,
        disk_guard: DiskGuard | None = None,
        max_associations: int = 20,
        max_connections_per_ip: int = 30,
        max_connections: int = 200,
        association_request_timeout_seconds: float = 10.0,
    ) -> None:
        self.store = store
        self.tls = tls if tls is not None and tls.port is not None else None
        self.disk_guard = disk_guard
        self.database = database
        self.allowed_callers = list(allowed_callers or [])
        self.counters = IngestCounters()
        self.recorder = IngestRecorder(database)
        self._lock = threading.Lock()
        hosts = {c.host for c in self.allowed_callers}
        self.admission = AdmissionControl(
            max_associations=max_associations,
            max_connections_per_ip=max_connections_per_ip,
            max_connections=max_connections,
            # Decided at TCP accept only when every allowed caller names its host.
            allowed_hosts=None if not hosts or None in hosts else {str(h) for h in hosts},
        )
        self.network_timeout_seconds = network_timeout_seconds
        self.association_request_timeout_seconds = association_request_timeout_seconds
        self.ae = AE(ae_title=ae_title)
        # pynetdicom's ARTIM timer is the ACSE timeout (waiting for A-ASSOCIATE-RQ/-RP).
        self.ae.acse_timeout = association_request_timeout_seconds
        self.ae.dimse_timeout = network_timeout_seconds
        self.ae.network_timeout = network_timeout_seconds
        # pynetdicom counts every connection thread, idle ones included; AdmissionControl
        # counts admitted associations only, so pynetdicom's own limit must never bite first.
        self.ae.maximum_associations = max_connections + 1
        self.ae.add_supported_context(VERIFICATION_SOP_CLASS)
        for context in AllStoragePresentationContexts:
            if context.abstract_syntax is not None:
                self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.address = (host, port)
        self._server: object | None = None
        self._tls_server: object | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening in background threads.

        Raises
        ------
        StorageError
            If the port cannot be bound (in use, or privileged).
        """
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_C_ECHO, self._on_c_echo),
            (evt.EVT_REQUESTED, self._on_requested),
            (evt.EVT_ACCEPTED, self._on_accepted),
            (evt.EVT_REJECTED, self._on_rejected),
        ]
        ssl_context = None
        if self.tls is not None:
            from node.tls import server_context

            ssl_context = server_context(self.tls)  # ConfigError before anything listens
        if not self.recorder.is_alive():
            self.recorder.start()
        if self.tls is None or not self.tls.tls_only:
            self._server = self._listen(self.address, handlers, None, "--port")
            logger.info(
                "listening as %s on %s:%d", self.ae.ae_title, self.address[0], self.address[1]
            )
        if self.tls is not None and self.tls.port is not None:
            address = (self.address[0], self.tls.port)
            try:
                self._tls_server = self._listen(address, handlers, ssl_context, "tls.port")
            except StorageError:
                self.stop()
                raise
            logger.info(
                "listening as %s for DICOM over TLS on %s:%d (client certificate %s)",
                self.ae.ae_title,
                address[0],
                address[1],
                "required" if self.tls.require_client_certificate else "not required",
            )

    def _listen(
        self, address: tuple[str, int], handlers: list[Any], ssl_context: Any, option: str
    ) -> object:
        # As AE.start_server(block=False) does, with the admission server class.
        try:
            server = self.ae.make_server(
                address,
                evt_handlers=handlers,
                ssl_context=ssl_context,
                server_class=AdmissionServer,
            )
        except OSError as exc:
            raise StorageError(
                f"cannot listen on {address[0]}:{address[1]}: {exc.strerror or exc}; "
                f"choose another {option} or stop the program using it"
            ) from exc
        assert isinstance(server, AdmissionServer)
        server.configure(
            self.admission,
            handshake_timeout_s=self.association_request_timeout_seconds,
            socket_timeout_s=self.network_timeout_seconds,
        )
        stamp = datetime.now().strftime("%Y%m%d%H%M%S")
        thread = threading.Thread(
            target=server.serve_forever, name=f"AcceptorServer@{stamp}", daemon=True
        )
        thread.start()
        self.ae._servers.append(server)  # noqa: SLF001 - as start_server; shutdown() removes it
        return server

    def stop(self) -> None:
        """Stop listening; associations in progress are aborted."""
        for server in (self._server, self._tls_server):
            if server is not None:
                server.shutdown()  # type: ignore[attr-defined]
        self._server = self._tls_server = None
        if self.recorder.is_alive():
            self.recorder.stop()

    @property
    def port(self) -> int:
        """The bound TCP port of the plain listener (of the TLS listener when TLS-only)."""
        if self._server is None:
            if self.tls is not None and self.tls.tls_only:
                return self.tls_port or self.address[1]
            return self.address[1]
        return int(self._server.server_address[1])  # type: ignore[attr-defined]

    @property
    def tls_port(self) -> int | None:
        """The bound TCP port of the TLS listener, ``None`` without TLS."""
        if self._tls_server is not None:
            return int(self._tls_server.server_address[1])  # type: ignore[attr-defined]
        return self.tls.port if self.tls is not None else None

    # -- handlers ---------------------------------------------------------------------------------

    def _caller_allowed(self, ae_title: str, address: str) -> bool:
        if not self.allowed_callers:
            return True
        for caller in self.allowed_callers:
            if caller.ae_title.strip() == ae_title.strip() and (
                caller.host is None or caller.host == address
            ):
                return True
        return False

    def _on_requested(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        # ae_title is filled in during negotiation, after this event: read the A-ASSOCIATE-RQ.
        primitive = requestor.primitive
        calling = str(getattr(primitive, "calling_ae_title", "") or "").strip()
        address = str(requestor.address)
        with self._lock:
            self.counters.associations += 1
        if not self._caller_allowed(calling, address):
            with self._lock:
                self.counters.rejected_associations += 1
            logger.warning(
                "rejected association from calling AE %r at %s: not in allowed_callers",
                calling,
                address,
            )
            self._log_association(calling, address, False, "calling AE not in allowed_callers")
            event.assoc.acse.send_reject(
                REJECT_PERMANENT, REJECT_SOURCE_SERVICE_USER, REJECT_CALLING_AE_NOT_RECOGNISED
            )
            # As pynetdicom does for its own AE-title check: kill() lets the DUL send the
            # A-ASSOCIATE-RJ before the connection closes.
            event.assoc.kill()
            return
        shortage = self.disk_guard.shortage() if self.disk_guard is not None else None
        if shortage is not None:
            with self._lock:
                self.counters.rejected_associations += 1
                self.counters.refused_for_disk_space += 1
            logger.error(
                "rejected association from calling AE %r at %s: %s (A-ASSOCIATE-RJ transient, "
                "local limit exceeded)",
                calling,
                address,
                shortage,
            )
            self._log_association(calling, address, False, str(shortage))
            event.assoc.acse.send_reject(
                REJECT_TRANSIENT,
                REJECT_SOURCE_SERVICE_PROVIDER_PRESENTATION,
                REJECT_LOCAL_LIMIT_EXCEEDED,
            )
            event.assoc.kill()
            return
        if not self.admission.admit(event.assoc):
            with self._lock:
                self.counters.rejected_associations += 1
            limit = self.admission.max_associations
            reason = f"{limit} associations in progress (max_associations)"
            logger.warning(
                "rejected association from calling AE %r at %s: %s (A-ASSOCIATE-RJ transient, "
                "local limit exceeded)",
                calling,
                address,
                reason,
            )
            self._log_association(calling, address, False, reason)
            event.assoc.acse.send_reject(
                REJECT_TRANSIENT,
                REJECT_SOURCE_SERVICE_PROVIDER_PRESENTATION,
                REJECT_LOCAL_LIMIT_EXCEEDED,
            )
            event.assoc.kill()

    def _on_c_echo(self, event: evt.Event) -> int:
        return STATUS_SUCCESS

    def _on_c_store(self, event: evt.Event) -> int | Dataset:
        calling = str(event.assoc.requestor.ae_title).strip()
        try:
            dataset = event.dataset
            sop_instance_uid = str(dataset.SOPInstanceUID)
            study_instance_uid = str(dataset.StudyInstanceUID)
            series_instance_uid = str(dataset.SeriesInstanceUID)
            modality = str(dataset.get("Modality", ""))[:16]
            accession_number = str(dataset.get("AccessionNumber", "") or "")[:16]
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the sender's data
            return self._refuse(
                STATUS_CANNOT_UNDERSTAND,
                f"C-STORE from {calling}: cannot read the SOP Instance/Series/Study UID ({exc})",
            )
        try:
            for uid, what in (
                (study_instance_uid, "Study Instance UID"),
                (series_instance_uid, "Series Instance UID"),
                (sop_instance_uid, "SOP Instance UID"),
            ):
                check_uid(uid, what)
        except StorageError as exc:
            return self._refuse(STATUS_CANNOT_UNDERSTAND, f"C-STORE from {calling}: {exc}")
        shortage = self.disk_guard.shortage() if self.disk_guard is not None else None
        if shortage is not None:
            with self._lock:
                self.counters.refused_for_disk_space += 1
            return self._refuse(
                STATUS_OUT_OF_RESOURCES,
                f"C-STORE {sop_instance_uid} from {calling} refused: {shortage}",
            )
        try:
            stored = self.store.store(
                study_instance_uid,
                series_instance_uid,
                sop_instance_uid,
                event.encoded_dataset(include_meta=True),
            )
        except StorageError as exc:
            return self._refuse(
                STATUS_OUT_OF_RESOURCES, f"C-STORE {sop_instance_uid} from {calling}: {exc}"
            )
        self.recorder.submit(
            InstanceRecord(
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                sop_class_uid=str(event.request.AffectedSOPClassUID),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                modality=modality,
                path=str(stored.path),
                calling_ae_title=calling,
                received_at=utcnow(),
                accession_number=accession_number,
            )
        )
        with self._lock:
            self.counters.instances_stored += 1
        return STATUS_SUCCESS

    def _refuse(self, status: int, message: str) -> int:
        with self._lock:
            self.counters.instances_refused += 1
        logger.error("%s (status 0x%04X)", message, status)
        return status

    # -- association log (the dashboard's "associations in the last hour") ------------------------

    def _on_accepted(self, event: evt.Event) -> None:
        requestor = event.assoc.requestor
        self._log_association(str(requestor.ae_title).strip(), str(requestor.address), True, None)

    def _on_rejected(self, event: evt.Event) -> None:
        # Rejections by pynetdicom itself (e.g. maximum_associations); ours are logged where made.
        requestor = event.assoc.requestor
        calling = str(getattr(requestor.primitive, "calling_ae_title", "") or "").strip()
        self._log_association(calling, str(requestor.address), False, "rejected by pynetdicom")

    def _log_association(self, calling: str, address: str, accepted: bool, reason: str | None) -> None:
        """One row in the ``associations`` table; a database error never affects the peer."""
        try:
            self.database.record_association(
                calling_ae_title=calling, address=address, accepted=accepted, reason=reason
            )
        except StorageError as exc:
            logger.warning("could not log the association from %s in the job database: %s", calling, exc)
