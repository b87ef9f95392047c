"""The Storage SCP: C-ECHO and C-STORE, association policy, and nothing slower.

The C-STORE handler writes the received bytes durably (:meth:`storage.instance_store.InstanceStore.store`,
temp file + fsync + rename), records the instance in the job database, and only then returns
Success. Anything that fails before that returns a failure status, so the sender keeps the
instance and retries: nothing acknowledged is ever lost. Pixel data is never decoded here.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass

from pydicom.dataset import Dataset
from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, evt
from pynetdicom.presentation import AllStoragePresentationContexts
from pynetdicom.sop_class import Verification

from node.config import AllowedCaller
from pipelines.errors import StorageError
from storage.database import JobDatabase
from storage.instance_store import InstanceStore

logger = logging.getLogger(__name__)

# C-STORE status codes (PS3.4 Table B.2-1) and A-ASSOCIATE-RJ reasons (PS3.8 Table 9-21).
STATUS_SUCCESS = 0x0000
STATUS_OUT_OF_RESOURCES = 0xA700
STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS = 0xA900
STATUS_CANNOT_UNDERSTAND = 0xC000
REJECT_PERMANENT = 0x01
REJECT_SOURCE_SERVICE_USER = 0x01
REJECT_CALLING_AE_NOT_RECOGNISED = 0x03


@dataclass
class IngestCounters:
    """Counters of the listener since start (for logs and the status command)."""

    associations: int = 0
    rejected_associations: int = 0
    instances_stored: int = 0
    instances_refused: int = 0


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
        ACSE/DIMSE/network timeout.
    on_stored:
        Optional callback ``(series_instance_uid) -> None`` after each stored instance.
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
        on_stored: Callable[[str], None] | None = None,
    ) -> None:
        self.store = store
        self.database = database
        self.allowed_callers = list(allowed_callers or [])
        self.on_stored = on_stored
        self.counters = IngestCounters()
        self._lock = threading.Lock()
        self.ae = AE(ae_title=ae_title)
        self.ae.acse_timeout = network_timeout_seconds
        self.ae.dimse_timeout = network_timeout_seconds
        self.ae.network_timeout = network_timeout_seconds
        self.ae.maximum_associations = 20
        self.ae.add_supported_context(Verification)
        for context in AllStoragePresentationContexts:
            self.ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        self.address = (host, port)
        self._server: object | None = None

    # -- lifecycle --------------------------------------------------------------------------------

    def start(self) -> None:
        """Start listening in background threads.

        Raises
        ------
        StorageError
            If the port cannot be bound (in use, or privileged).
        """
        handlers = [
            (evt.EVT_C_STORE, self._on_c_store),
            (evt.EVT_C_ECHO, self._on_c_echo),
            (evt.EVT_REQUESTED, self._on_requested),
        ]
        try:
            self._server = self.ae.start_server(self.address, block=False, evt_handlers=handlers)
        except OSError as exc:
            raise StorageError(
                f"cannot listen on {self.address[0]}:{self.address[1]}: {exc.strerror or exc}; "
                "choose another --port or stop the program using it"
            ) from exc
        logger.info(
            "listening as %s on %s:%d", self.ae.ae_title, self.address[0], self.address[1]
        )

    def stop(self) -> None:
        """Stop listening; associations in progress are aborted."""
        if self._server is not None:
            self._server.shutdown()  # type: ignore[attr-defined]
            self._server = None

    @property
    def port(self) -> int:
        """The bound TCP port."""
        if self._server is None:
            return self.address[1]
        return int(self._server.server_address[1])  # type: ignore[attr-defined]

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
        calling = str(requestor.ae_title).strip()
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
            event.assoc.acse.send_reject(
                REJECT_PERMANENT, REJECT_SOURCE_SERVICE_USER, REJECT_CALLING_AE_NOT_RECOGNISED
            )

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
        except Exception as exc:  # noqa: BLE001 - any decoding failure is the sender's data
            return self._refuse(
                STATUS_CANNOT_UNDERSTAND,
                f"C-STORE from {calling}: cannot read the SOP Instance/Series/Study UID ({exc})",
            )
        try:
            stored = self.store.store(
                study_instance_uid,
                series_instance_uid,
                sop_instance_uid,
                event.encoded_dataset(include_meta=True),
            )
        except StorageError as exc:
            # Invalid UIDs are the sender's problem; I/O errors are ours (out of resources).
            status = (
                STATUS_DATASET_DOES_NOT_MATCH_SOP_CLASS
                if "invalid" in str(exc)
                else STATUS_OUT_OF_RESOURCES
            )
            return self._refuse(status, f"C-STORE {sop_instance_uid} from {calling}: {exc}")
        try:
            self.database.record_instance(
                sop_instance_uid=sop_instance_uid,
                study_instance_uid=study_instance_uid,
                series_instance_uid=series_instance_uid,
                sop_class_uid=str(event.request.AffectedSOPClassUID),
                transfer_syntax_uid=str(event.context.transfer_syntax),
                modality=modality,
                path=str(stored.path),
                calling_ae_title=calling,
            )
        except StorageError as exc:
            # The file is stored; the sender will re-send and the store is idempotent.
            return self._refuse(
                STATUS_OUT_OF_RESOURCES, f"C-STORE {sop_instance_uid}: job database error: {exc}"
            )
        with self._lock:
            self.counters.instances_stored += 1
        if self.on_stored is not None:
            self.on_stored(series_instance_uid)
        return STATUS_SUCCESS

    def _refuse(self, status: int, message: str) -> int:
        with self._lock:
            self.counters.instances_refused += 1
        logger.error("%s (status 0x%04X)", message, status)
        return status
