"""Local DICOM peers for the demo and the tests: a real Orthanc PACS and an in-process Storage SCP.

:class:`OrthancPACS` starts the real Orthanc binary (Debian package ``orthanc``) with a generated
configuration on free loopback ports; it never reads ``/etc/orthanc``. :class:`InProcessStorageSCP`
is a pynetdicom Storage SCP that ``ainode demo`` uses when Orthanc is not installed.

Both expose the same small API: ``ae_title``, ``host``, ``port``, ``instances()``,
``get_instance_file(instance_id)``, ``wait_for_instances(count, timeout_s, predicate)`` and
``stop()``; both are context managers. ``instances()`` returns one dict per stored instance with
the keys of :data:`INSTANCE_KEYS`.

Research use, not for diagnosis. No patient names, IDs or birth dates are logged (UIDs are).
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

from ainode_core.errors import AINodeError, StorageError

logger = logging.getLogger(__name__)

#: Keys of each dict returned by ``instances()`` of both peers. ``ID`` is the Orthanc identifier
#: (:class:`OrthancPACS`) or the stored file path (:class:`InProcessStorageSCP`); pass it to
#: ``get_instance_file``. Missing attributes are ``None``.
INSTANCE_KEYS: tuple[str, ...] = (
    "ID",
    "SOPClassUID",
    "SOPInstanceUID",
    "SeriesInstanceUID",
    "StudyInstanceUID",
    "Modality",
    "SeriesDescription",
    "TransferSyntaxUID",
    "CallingAETitle",
)

InstancePredicate = Callable[[dict[str, Any]], bool]

_ORTHANC_BINARY_CANDIDATES: tuple[str, ...] = ("/usr/sbin/Orthanc", "/usr/bin/Orthanc")


class PeerError(AINodeError, RuntimeError):
    """A local DICOM peer (Orthanc, in-process SCP) is missing, failed to start or to answer."""


def find_free_port(host: str = "127.0.0.1") -> int:
    """Return a TCP port that is free on ``host`` at the time of the call.

    Parameters
    ----------
    host : str
        Interface address to probe (default loopback).

    Returns
    -------
    int
        A port number the kernel just handed out for ``bind(host, 0)``. Another process may take it
        before the caller binds it; callers that can bind port 0 themselves should do so instead.
    """
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind((host, 0))
        port: int = sock.getsockname()[1]
        return port


def find_orthanc_binary() -> str | None:
    """Return the path of the Orthanc executable, or ``None`` when Orthanc is not installed.

    Looks at ``$PATH`` (``shutil.which("Orthanc")``), then ``/usr/sbin/Orthanc`` and
    ``/usr/bin/Orthanc`` (``/usr/sbin`` is often not on a user's ``$PATH``).
    """
    found = shutil.which("Orthanc")
    if found:
        return found
    for candidate in _ORTHANC_BINARY_CANDIDATES:
        if os.path.isfile(candidate) and os.access(candidate, os.X_OK):
            return candidate
    return None


def _tail(path: Path, max_chars: int = 4000) -> str:
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return "(no log)"
    return text[-max_chars:] if text else "(empty log)"


def _parent_death_signal_hook() -> Callable[[], None] | None:
    """A ``preexec_fn`` asking Linux to SIGTERM the child when its parent dies (no orphan Orthanc).

    ``prctl(PR_SET_PDEATHSIG)`` fires when the *thread* that forked exits, so the hook is only
    used from the main thread. libc is resolved here, in the parent, so that the child runs a
    single foreign call between fork and exec. Returns ``None`` where unavailable.
    """
    on_main_thread = threading.current_thread() is threading.main_thread()
    if not sys.platform.startswith("linux") or not on_main_thread:
        return None
    try:
        import ctypes

        prctl = ctypes.CDLL(None, use_errno=True).prctl
    except (OSError, AttributeError):
        return None
    pr_set_pdeathsig = 1
    sigterm = int(signal.SIGTERM)

    def hook() -> None:  # pragma: no cover - runs in the child process
        prctl(pr_set_pdeathsig, sigterm)

    return hook


def _wait_for_instances(
    list_instances: Callable[[], list[dict[str, Any]]],
    count: int,
    timeout_s: float,
    predicate: InstancePredicate | None,
    peer_name: str,
    poll_interval_s: float = 0.2,
) -> list[dict[str, Any]]:
    deadline = time.monotonic() + timeout_s
    while True:
        found = [i for i in list_instances() if predicate is None or predicate(i)]
        if len(found) >= count:
            return found
        if time.monotonic() >= deadline:
            raise TimeoutError(
                f"{peer_name}: {len(found)} matching instance(s) after {timeout_s:.1f} s, expected "
                f"at least {count}. Check that the sender targets this peer's host/port/AE title."
            )
        time.sleep(poll_interval_s)


class OrthancPACS:
    """The real Orthanc PACS, started as a subprocess with a generated configuration.

    Parameters
    ----------
    work_dir : str | os.PathLike | None
        Directory for the configuration, storage, index and log. ``None`` creates a temporary
        directory that :meth:`stop` removes (the log is then lost; pass a directory to keep it).
    ae_title : str
        Orthanc's DICOM AE title (``DicomAet``).
    host : str
        Address the clients use (loopback). Orthanc 1.10 has no bind-address option: its DICOM
        port listens on all interfaces; its HTTP server refuses non-local clients
        (``RemoteAccessAllowed`` false).
    dicom_port, http_port : int | None
        Ports to use; ``None`` picks free ones.
    binary : str | None
        Path of the Orthanc executable; ``None`` uses :func:`find_orthanc_binary`.
    startup_timeout_s : float
        Seconds to wait for the REST API (``/system``) to answer.
    verbose : bool
        Pass ``--verbose`` to Orthanc (more detail in the log).
    extra_config : dict | None
        Options merged over the generated configuration (Orthanc Book option names).

    Raises
    ------
    PeerError
        From :meth:`start` when Orthanc is not installed, exits early or does not answer in time;
        the message includes the tail of Orthanc's log.
    """

    def __init__(
        self,
        work_dir: str | os.PathLike[str] | None = None,
        *,
        ae_title: str = "ORTHANC",
        host: str = "127.0.0.1",
        dicom_port: int | None = None,
        http_port: int | None = None,
        binary: str | None = None,
        startup_timeout_s: float = 30.0,
        verbose: bool = False,
        extra_config: dict[str, Any] | None = None,
    ) -> None:
        if not ae_title or len(ae_title) > 16:
            raise ValueError(f"AE title must be 1 to 16 characters, got {ae_title!r}")
        self.ae_title = ae_title
        self.host = host
        self._requested_dicom_port = dicom_port
        self._requested_http_port = http_port
        self._binary = binary
        self._startup_timeout_s = startup_timeout_s
        self._verbose = verbose
        self._extra_config = dict(extra_config or {})
        self._owns_work_dir = work_dir is None
        self._work_dir_arg = Path(work_dir) if work_dir is not None else None
        self.work_dir: Path | None = None
        self.port: int = 0
        self.http_port: int = 0
        self._process: subprocess.Popen[bytes] | None = None
        self._log_handle: Any = None

    # ------------------------------------------------------------------ lifecycle
    @property
    def http_url(self) -> str:
        """Base URL of Orthanc's REST API, e.g. ``http://127.0.0.1:8042``."""
        return f"http://{self.host}:{self.http_port}"

    @property
    def log_path(self) -> Path:
        """Path of Orthanc's log file (stdout and stderr of the process)."""
        if self.work_dir is None:
            raise PeerError("OrthancPACS has not been started: no log yet")
        return self.work_dir / "orthanc.log"

    @property
    def config_path(self) -> Path:
        """Path of the generated JSON configuration."""
        if self.work_dir is None:
            raise PeerError("OrthancPACS has not been started: no configuration yet")
        return self.work_dir / "orthanc.json"

    @property
    def pid(self) -> int | None:
        """Process id of the running Orthanc, or ``None``."""
        return self._process.pid if self._process is not None else None

    def is_running(self) -> bool:
        """Return whether the Orthanc process is alive."""
        return self._process is not None and self._process.poll() is None

    def build_config(self) -> dict[str, Any]:
        """Return the Orthanc configuration this instance starts with (ports set by :meth:`start`).

        Returns
        -------
        dict
            JSON-serialisable Orthanc configuration (option names from the Orthanc Book, checked
            against ``Orthanc --config=-`` of Orthanc 1.10.1).
        """
        if self.work_dir is None:
            raise PeerError("OrthancPACS.build_config() needs the working directory: call start()")
        storage = self.work_dir / "storage"
        config: dict[str, Any] = {
            "Name": f"ainode-local-{self.ae_title}",
            "StorageDirectory": str(storage),
            "IndexDirectory": str(storage),
            "StorageCompression": False,
            # An empty list: Debian's plugins (configured in /etc/orthanc) are never loaded.
            "Plugins": [],
            "LuaScripts": [],
            "ExecuteLuaEnabled": False,
            "RestApiWriteToFileSystemEnabled": False,
            "HttpServerEnabled": True,
            "HttpPort": self.http_port,
            "RemoteAccessAllowed": False,
            "AuthenticationEnabled": False,
            "RegisteredUsers": {},
            "SslEnabled": False,
            "HttpThreadsCount": 8,
            "DicomServerEnabled": True,
            "DicomAet": self.ae_title,
            "DicomPort": self.port,
            "DicomCheckCalledAet": False,
            "DicomCheckModalityHost": False,
            "DicomAlwaysAllowEcho": True,
            "DicomAlwaysAllowStore": True,
            "DicomAlwaysAllowFind": True,
            "DicomAlwaysAllowGet": True,
            "DicomAlwaysAllowMove": True,
            "DicomModalities": {},
            "DicomModalitiesInDatabase": False,
            "OrthancPeers": {},
            "DicomThreadsCount": 4,
            "DicomScpTimeout": 30,
            # Every transfer syntax Orthanc knows (uncompressed, deflate, JPEG, JPEG-LS,
            # JPEG 2000, RLE, MPEG/HEVC): compressed files are stored as they are.
            "AcceptedTransferSyntaxes": ["1.2.840.10008.1.*"],
            # Promiscuous mode: any storage SOP class (SEG, Comprehensive 3D SR, Secondary
            # Capture and classes newer than Orthanc's DCMTK dictionary) is accepted.
            "UnknownSopClassAccepted": True,
            # A re-sent SOP Instance UID replaces the stored one (the latest result wins).
            "OverwriteInstances": True,
            "SaveJobs": False,
            "StableAge": 2,
            "DeidentifyLogs": True,
        }
        config.update(self._extra_config)
        return config

    def start(self) -> OrthancPACS:
        """Start Orthanc and wait until its REST API answers.

        Returns
        -------
        OrthancPACS
            ``self``, started.

        Raises
        ------
        PeerError
            Orthanc is not installed, exits during start-up or its REST API does not answer within
            ``startup_timeout_s``; the message includes the tail of its log.
        """
        if self.is_running():
            return self
        binary = self._binary or find_orthanc_binary()
        if binary is not None and not (os.path.isfile(binary) and os.access(binary, os.X_OK)):
            raise PeerError(
                f"Orthanc is not installed at {binary!r} (no executable file there). Install the "
                "Debian package 'orthanc' or pass the right path."
            )
        if binary is None:
            raise PeerError(
                "Orthanc is not installed (no 'Orthanc' on $PATH, nor /usr/sbin/Orthanc). Install "
                "the Debian package 'orthanc' (apt-get install orthanc) or use InProcessStorageSCP."
            )
        if self._work_dir_arg is not None:
            self.work_dir = self._work_dir_arg
            self.work_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.work_dir = Path(tempfile.mkdtemp(prefix="ainode-orthanc-"))
        self.work_dir = self.work_dir.resolve()
        (self.work_dir / "storage").mkdir(exist_ok=True)

        # Ports picked by find_free_port can be taken by someone else before Orthanc binds them:
        # retry with fresh ports when Orthanc exits early and no port was imposed.
        attempts = 1 if (self._requested_dicom_port or self._requested_http_port) else 3
        last_error: PeerError | None = None
        for _ in range(attempts):
            self.port = self._requested_dicom_port or find_free_port(self.host)
            self.http_port = self._requested_http_port or find_free_port(self.host)
            while self.http_port == self.port:
                self.http_port = find_free_port(self.host)
            try:
                self._launch(binary)
                return self
            except PeerError as error:
                last_error = error
                self._terminate()
        assert last_error is not None
        raise last_error

    def _launch(self, binary: str) -> None:
        self.config_path.write_text(json.dumps(self.build_config(), indent=2))
        args = [binary]
        if self._verbose:
            args.append("--verbose")
        args.append(str(self.config_path))
        if self._log_handle is not None:
            self._log_handle.close()
        self._log_handle = open(self.log_path, "ab")  # noqa: SIM115 - closed in _terminate
        logger.info(
            "Starting Orthanc %s: AE %s, DICOM port %d, HTTP port %d, log %s",
            binary, self.ae_title, self.port, self.http_port, self.log_path,
        )
        self._process = subprocess.Popen(
            args,
            cwd=str(self.work_dir),
            stdin=subprocess.DEVNULL,
            stdout=self._log_handle,
            stderr=subprocess.STDOUT,
            preexec_fn=_parent_death_signal_hook(),
        )
        deadline = time.monotonic() + self._startup_timeout_s
        while True:
            code = self._process.poll()
            if code is not None:
                raise PeerError(
                    f"Orthanc exited with status {code} during start-up (DICOM port {self.port}, "
                    f"HTTP port {self.http_port}). Log {self.log_path} ends with:\n"
                    f"{_tail(self.log_path)}"
                )
            try:
                system = self._get_json("/system", timeout_s=1.0)
                if system.get("DicomAet") == self.ae_title and self._dicom_port_open():
                    logger.info("Orthanc %s ready (pid %d)", system.get("Version"),
                                self._process.pid)
                    return
            except (OSError, PeerError, ValueError):
                pass
            if time.monotonic() >= deadline:
                raise PeerError(
                    f"Orthanc did not answer on {self.http_url}/system within "
                    f"{self._startup_timeout_s:.0f} s. Log {self.log_path} ends with:\n"
                    f"{_tail(self.log_path)}"
                )
            time.sleep(0.1)

    def _dicom_port_open(self) -> bool:
        try:
            with socket.create_connection((self.host, self.port), timeout=1.0):
                return True
        except OSError:
            return False

    def _terminate(self, timeout_s: float = 10.0) -> None:
        process = self._process
        if process is not None and process.poll() is None:
            process.terminate()
            try:
                process.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                logger.warning("Orthanc (pid %d) ignored SIGTERM for %.0f s: killing it",
                               process.pid, timeout_s)
                process.kill()
                process.wait(timeout=timeout_s)
        if self._log_handle is not None:
            self._log_handle.close()
            self._log_handle = None

    def stop(self, timeout_s: float = 10.0) -> None:
        """Stop Orthanc: SIGTERM, then SIGKILL after ``timeout_s``; remove a temporary work dir.

        Parameters
        ----------
        timeout_s : float
            Seconds to wait for a clean exit before killing the process.
        """
        self._terminate(timeout_s)
        if self._process is not None:
            logger.info("Orthanc (pid %d) stopped with status %s", self._process.pid,
                        self._process.returncode)
        if self._owns_work_dir and self.work_dir is not None:
            shutil.rmtree(self.work_dir, ignore_errors=True)

    def __enter__(self) -> OrthancPACS:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ REST
    def _request(self, path: str, timeout_s: float = 30.0, data: bytes | None = None) -> bytes:
        url = self.http_url + path
        method = "POST" if data is not None else "GET"
        request = urllib.request.Request(url, data=data, method=method)
        try:
            with urllib.request.urlopen(request, timeout=timeout_s) as response:
                body: bytes = response.read()
                return body
        except urllib.error.HTTPError as error:
            detail = error.read()[:500].decode(errors="replace")
            raise PeerError(f"Orthanc REST {url} answered HTTP {error.code}: {detail}") from error

    def _get_json(self, path: str, timeout_s: float = 30.0) -> Any:
        return json.loads(self._request(path, timeout_s=timeout_s))

    def system(self) -> dict[str, Any]:
        """Return Orthanc's ``/system`` answer (version, AE title, ports)."""
        result: dict[str, Any] = self._get_json("/system")
        return result

    def instances(self) -> list[dict[str, Any]]:
        """List the stored instances.

        Returns
        -------
        list of dict
            One dict per instance with the keys of :data:`INSTANCE_KEYS` (``ID`` is the Orthanc
            identifier). SOP Class UID, transfer syntax and calling AE title come from Orthanc's
            instance metadata; series and study attributes from the parent resources.

        Raises
        ------
        PeerError
            Orthanc answered with an HTTP error or is not running.
        """
        if not self.is_running():
            raise PeerError("OrthancPACS.instances(): Orthanc is not running; call start() first")
        series = {s["ID"]: s for s in self._get_json("/series?expand")}
        studies = {s["ID"]: s for s in self._get_json("/studies?expand")}
        result: list[dict[str, Any]] = []
        for instance in self._get_json("/instances?expand"):
            metadata: dict[str, str] = self._get_json(
                f"/instances/{instance['ID']}/metadata?expand"
            )
            parent_series = series.get(instance.get("ParentSeries"), {})
            series_tags = parent_series.get("MainDicomTags", {})
            study_tags = studies.get(parent_series.get("ParentStudy"), {}).get("MainDicomTags", {})
            result.append(
                {
                    "ID": instance["ID"],
                    "SOPClassUID": metadata.get("SopClassUid"),
                    "SOPInstanceUID": instance.get("MainDicomTags", {}).get("SOPInstanceUID"),
                    "SeriesInstanceUID": series_tags.get("SeriesInstanceUID"),
                    "StudyInstanceUID": study_tags.get("StudyInstanceUID"),
                    "Modality": series_tags.get("Modality"),
                    "SeriesDescription": series_tags.get("SeriesDescription"),
                    "TransferSyntaxUID": metadata.get("TransferSyntax"),
                    "CallingAETitle": metadata.get("RemoteAET"),
                }
            )
        return result

    def get_instance_file(self, orthanc_id: str) -> bytes:
        """Return the stored DICOM file (Part 10 bytes) of one instance.

        Parameters
        ----------
        orthanc_id : str
            The ``ID`` of an entry of :meth:`instances`.
        """
        return self._request(f"/instances/{orthanc_id}/file")

    def wait_for_instances(
        self, count: int, timeout_s: float = 30.0, predicate: InstancePredicate | None = None
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` stored instances satisfy ``predicate``.

        Parameters
        ----------
        count : int
            Minimum number of matching instances.
        timeout_s : float
            Seconds to wait.
        predicate : callable, optional
            Filter on the dicts of :meth:`instances` (e.g. ``lambda i: i["Modality"] == "SEG"``).

        Returns
        -------
        list of dict
            All matching instances (possibly more than ``count``).

        Raises
        ------
        TimeoutError
            Fewer than ``count`` matching instances after ``timeout_s``.
        """
        return _wait_for_instances(self.instances, count, timeout_s, predicate,
                                   f"Orthanc {self.ae_title}@{self.host}:{self.port}")


class InProcessStorageSCP:
    """A pynetdicom Storage SCP in a background thread, storing received files in a directory.

    Accepts every storage SOP class known to pynetdicom (``AllStoragePresentationContexts``,
    which includes Segmentation, Comprehensive 3D SR and Secondary Capture) in every transfer
    syntax pynetdicom knows, plus Verification (C-ECHO). Any calling AE title is accepted.

    Parameters
    ----------
    storage_dir : str | os.PathLike | None
        Where received files are written as ``<SOPInstanceUID>.dcm``; ``None`` creates a
        temporary directory that :meth:`stop` removes.
    ae_title : str
        The SCP's AE title (the called AE title is not checked).
    host : str
        Address to listen on.
    port : int
        Port to listen on; 0 lets the kernel pick a free one (read it from :attr:`port`).
    """

    def __init__(
        self,
        storage_dir: str | os.PathLike[str] | None = None,
        *,
        ae_title: str = "AINODE_DEST",
        host: str = "127.0.0.1",
        port: int = 0,
    ) -> None:
        if not ae_title or len(ae_title) > 16:
            raise ValueError(f"AE title must be 1 to 16 characters, got {ae_title!r}")
        self.ae_title = ae_title
        self.host = host
        self.port = port
        self._owns_dir = storage_dir is None
        self._storage_dir_arg = Path(storage_dir) if storage_dir is not None else None
        self.storage_dir: Path | None = None
        self._server: Any = None
        self._received: list[dict[str, Any]] = []
        self._lock = threading.Lock()

    def start(self) -> InProcessStorageSCP:
        """Start listening; returns ``self``.

        Raises
        ------
        PeerError
            The port cannot be bound.
        """
        if self._server is not None:
            return self
        from pynetdicom import AE, ALL_TRANSFER_SYNTAXES, AllStoragePresentationContexts, evt
        from pynetdicom.sop_class import Verification  # type: ignore[attr-defined]

        if self._storage_dir_arg is not None:
            self.storage_dir = self._storage_dir_arg
            self.storage_dir.mkdir(parents=True, exist_ok=True)
        else:
            self.storage_dir = Path(tempfile.mkdtemp(prefix="ainode-scp-"))
        ae = AE(ae_title=self.ae_title)
        for context in AllStoragePresentationContexts:
            assert context.abstract_syntax is not None
            ae.add_supported_context(context.abstract_syntax, ALL_TRANSFER_SYNTAXES)
        ae.add_supported_context(Verification)
        handlers: list[Any] = [
            (evt.EVT_C_STORE, self._handle_store),
            (evt.EVT_C_ECHO, lambda event: 0x0000),
        ]
        try:
            self._server = ae.start_server((self.host, self.port), block=False,
                                           evt_handlers=handlers)
        except OSError as error:
            raise PeerError(
                f"InProcessStorageSCP could not listen on {self.host}:{self.port}: {error}. "
                "Pick another port (0 = any free port)."
            ) from error
        self.port = int(self._server.server_address[1])
        logger.info("In-process Storage SCP %s listening on %s:%d, storing into %s",
                    self.ae_title, self.host, self.port, self.storage_dir)
        return self

    def _handle_store(self, event: Any) -> int:
        request = event.request
        sop_instance_uid = str(request.AffectedSOPInstanceUID)
        assert self.storage_dir is not None
        path = self.storage_dir / f"{sop_instance_uid}.dcm"
        try:
            path.write_bytes(event.encoded_dataset(include_meta=True))
            dataset = event.dataset
            record = {
                "ID": str(path),
                "SOPClassUID": str(request.AffectedSOPClassUID),
                "SOPInstanceUID": sop_instance_uid,
                "SeriesInstanceUID": _optional_str(dataset.get("SeriesInstanceUID")),
                "StudyInstanceUID": _optional_str(dataset.get("StudyInstanceUID")),
                "Modality": _optional_str(dataset.get("Modality")),
                "SeriesDescription": _optional_str(dataset.get("SeriesDescription")),
                "TransferSyntaxUID": str(event.context.transfer_syntax),
                "CallingAETitle": str(event.assoc.requestor.ae_title).strip(),
            }
        except Exception:  # a store failure must become a DIMSE status, not kill the thread
            logger.exception("In-process SCP failed to store SOP Instance UID %s", sop_instance_uid)
            return 0xA700  # Refused: out of resources
        with self._lock:
            self._received = [r for r in self._received if r["SOPInstanceUID"] != sop_instance_uid]
            self._received.append(record)
        logger.info("In-process SCP stored SOP Instance UID %s (SOP Class %s) from %s",
                    sop_instance_uid, record["SOPClassUID"], record["CallingAETitle"])
        return 0x0000

    def instances(self) -> list[dict[str, Any]]:
        """List received instances (latest per SOP Instance UID), keys of :data:`INSTANCE_KEYS`.

        ``ID`` is the path of the stored file.
        """
        with self._lock:
            return [dict(r) for r in self._received]

    def get_instance_file(self, instance_id: str) -> bytes:
        """Return the stored DICOM file (Part 10 bytes) whose path is ``instance_id``.

        Raises
        ------
        StorageError
            ``instance_id`` is not one of this SCP's stored files.
        """
        known = {r["ID"] for r in self.instances()}
        if instance_id not in known:
            raise StorageError(
                f"{instance_id!r} is not a file received by this SCP; use an 'ID' from instances()"
            )
        return Path(instance_id).read_bytes()

    def wait_for_instances(
        self, count: int, timeout_s: float = 30.0, predicate: InstancePredicate | None = None
    ) -> list[dict[str, Any]]:
        """Wait until at least ``count`` received instances satisfy ``predicate``.

        Raises
        ------
        TimeoutError
            Fewer than ``count`` matching instances after ``timeout_s``.
        """
        return _wait_for_instances(self.instances, count, timeout_s, predicate,
                                   f"in-process SCP {self.ae_title}@{self.host}:{self.port}",
                                   poll_interval_s=0.05)

    def stop(self) -> None:
        """Stop listening (open associations are aborted); remove a temporary storage directory."""
        if self._server is not None:
            self._server.shutdown()
            self._server = None
            logger.info("In-process Storage SCP %s stopped", self.ae_title)
        if self._owns_dir and self.storage_dir is not None:
            shutil.rmtree(self.storage_dir, ignore_errors=True)

    def __enter__(self) -> InProcessStorageSCP:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def _optional_str(element: Any) -> str | None:
    if element is None:
        return None
    value = element.value if hasattr(element, "value") else element
    return None if value is None or value == "" else str(value)


__all__ = [
    "INSTANCE_KEYS",
    "InProcessStorageSCP",
    "OrthancPACS",
    "PeerError",
    "find_free_port",
    "find_orthanc_binary",
]
