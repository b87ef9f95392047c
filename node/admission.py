"""Association admission: who may hold a connection, and how many associations run at a time.

Three gates, the cheapest first (docs/conformance.md, "Association limits"):

1. **At TCP accept** (:meth:`AdmissionServer.verify_request`, before a thread is started or a
   byte is read): a connection is closed at once when its remote IP holds
   ``max_connections_per_ip`` open connections already, when ``max_connections`` are open in
   all, or when the allow-list names hosts for every caller and this IP is not among them.
2. **ARTIM** (PS3.8 §9.1.5): pynetdicom's ARTIM timer is ``ae.acse_timeout``; a connection
   whose A-ASSOCIATE-RQ has not arrived within ``association_request_timeout_seconds`` is
   closed. Accepted sockets also get ``network_timeout`` as their socket timeout, so a peer
   that stops half-way through a PDU cannot block its reader forever, and the TLS handshake
   runs in the connection's own thread with that timeout (pynetdicom does it in the accept
   loop, where one silent TLS client would stop every other connection).
3. **At A-ASSOCIATE-RQ** (:meth:`AdmissionControl.admit`, called from the EVT_REQUESTED handler
   after the AE-title allow-list): only admitted associations count against
   ``max_associations``; an idle or still-negotiating connection holds no slot. With the
   limit 20, twenty simultaneous requests are accepted and the 21st is rejected (transient,
   local limit exceeded).

pynetdicom's own count (``ae.maximum_associations``, which counts every connection thread,
idle ones included) is set high enough that it never decides.
"""

from __future__ import annotations

import copy
import logging
import socket
import threading
from collections import defaultdict
from typing import Any

from pynetdicom import evt
from pynetdicom.transport import RequestHandler, ThreadedAssociationServer

logger = logging.getLogger(__name__)


class AdmissionControl:
    """Counts connections per IP and admitted associations.

    Parameters
    ----------
    max_associations:
        Admitted (established or being accepted) associations at a time.
    max_connections_per_ip:
        Open TCP connections per remote IP address.
    max_connections:
        Open TCP connections in all.
    allowed_hosts:
        IP addresses that may connect at all; ``None`` when the allow-list does not restrict
        hosts (empty, or some entry without a host).
    """

    def __init__(
        self,
        *,
        max_associations: int,
        max_connections_per_ip: int,
        max_connections: int,
        allowed_hosts: set[str] | None = None,
    ) -> None:
        self.max_associations = max_associations
        self.max_connections_per_ip = max_connections_per_ip
        self.max_connections = max_connections
        self.allowed_hosts = allowed_hosts
        self._lock = threading.Lock()
        # Connections accepted but whose association thread has not started yet, per IP.
        self._pending: dict[str, int] = defaultdict(int)
        # Association threads (one per connection), per IP; dead ones are pruned on use.
        self._connections: dict[str, list[threading.Thread]] = defaultdict(list)
        self._admitted: list[threading.Thread] = []
        self.refused_connections = 0

    def _prune(self) -> None:
        for ip in list(self._connections):
            alive = [t for t in self._connections[ip] if t.is_alive()]
            if alive:
                self._connections[ip] = alive
            else:
                del self._connections[ip]
        self._admitted = [t for t in self._admitted if t.is_alive()]

    def open_connections(self, ip: str | None = None) -> int:
        """Open connections (accepted, not yet closed) from ``ip``, or in all."""
        with self._lock:
            self._prune()
            if ip is not None:
                return len(self._connections.get(ip, [])) + self._pending.get(ip, 0)
            return sum(len(v) for v in self._connections.values()) + sum(self._pending.values())

    def admitted_associations(self) -> int:
        """Associations holding a slot now."""
        with self._lock:
            self._prune()
            return len(self._admitted)

    def connection_refusal(self, ip: str) -> str | None:
        """Reserve a connection for ``ip``; the reason when it must be closed instead."""
        with self._lock:
            if self.allowed_hosts is not None and ip not in self.allowed_hosts:
                reason = "address not in allowed_callers"
            else:
                self._prune()
                mine = len(self._connections.get(ip, [])) + self._pending.get(ip, 0)
                total = sum(len(v) for v in self._connections.values()) + sum(
                    self._pending.values()
                )
                if mine >= self.max_connections_per_ip:
                    reason = f"{mine} connections from this address (max_connections_per_ip)"
                elif total >= self.max_connections:
                    reason = f"{total} connections open (max_connections)"
                else:
                    self._pending[ip] += 1
                    return None
            self.refused_connections += 1
            return reason

    def connection_started(self, ip: str, thread: threading.Thread | None) -> None:
        """The reserved connection of ``ip`` now lives in ``thread`` (``None``: it failed)."""
        with self._lock:
            self._pending[ip] = max(0, self._pending[ip] - 1)
            if not self._pending[ip]:
                del self._pending[ip]
            if thread is not None:
                self._connections[ip].append(thread)

    def admit(self, association: threading.Thread) -> bool:
        """Give ``association`` a slot; ``False`` when all ``max_associations`` are taken."""
        with self._lock:
            self._prune()
            if len(self._admitted) >= self.max_associations:
                return False
            self._admitted.append(association)
            return True


class AdmissionRequestHandler(RequestHandler):
    """pynetdicom's request handler, with the TLS handshake and the admission bookkeeping."""

    server: AdmissionServer

    def handle(self) -> None:
        ip = str(self.client_address[0])
        started: threading.Thread | None = None
        try:
            sock: Any = self.request
            sock.settimeout(self.server.handshake_timeout_s)
            if self.server.deferred_ssl_context is not None:
                try:
                    sock = self.server.deferred_ssl_context.wrap_socket(sock, server_side=True)
                    # node.tls contexts defer the handshake to the first read; do it here,
                    # bounded by the handshake timeout, so a failure is logged at once.
                    sock.do_handshake()
                except (OSError, ValueError) as exc:
                    logger.warning("TLS handshake with %s failed: %s", ip, exc)
                    _close(sock)  # the SSL socket once wrapped (it owns the descriptor then)
                    return
                self.request = sock
            # Data is read only after select() says it is there; the timeout ends a peer that
            # stops in the middle of a PDU (and a send to a peer that stopped reading).
            sock.settimeout(self.server.socket_timeout_s)
            assoc = self._create_association()
            evt.trigger(assoc, evt.EVT_CONN_OPEN, {"address": self.client_address})
            assoc.start()
            started = assoc
        finally:
            self.server.admission.connection_started(ip, started)


def _close(sock: Any) -> None:
    try:
        sock.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
    try:
        sock.close()
    except OSError:
        pass


class _QuickCopyContexts(list[Any]):
    """The server's supported presentation contexts, copied cheaply for each association.

    pynetdicom gives every association a ``deepcopy`` of them; with every storage SOP class
    and all transfer syntaxes (about 170 x 30) that took about 0.25 s of CPU per association on
    the 2-core machine, a quarter of a 4-association ingest run (py-spy). A context holds only
    immutable values (UIDs, ints, bools) and one list of UIDs, so a shallow copy with that list
    copied is the same.
    """

    def __deepcopy__(self, memo: dict[int, Any]) -> list[Any]:
        copies = []
        for context in self:
            clone = copy.copy(context)
            clone._transfer_syntax = list(context._transfer_syntax)  # noqa: SLF001
            copies.append(clone)
        return copies


class AdmissionServer(ThreadedAssociationServer):
    """pynetdicom's threaded server with :class:`AdmissionControl` at accept.

    Build it with ``ae.make_server(..., server_class=AdmissionServer)`` and then call
    :meth:`configure` before serving.
    """

    admission: AdmissionControl
    deferred_ssl_context: Any = None
    handshake_timeout_s: float = 10.0
    socket_timeout_s: float | None = 30.0

    def configure(
        self,
        admission: AdmissionControl,
        *,
        handshake_timeout_s: float,
        socket_timeout_s: float | None,
    ) -> None:
        """Attach the admission control; the TLS handshake moves to the connection's thread."""
        self.admission = admission
        self.handshake_timeout_s = handshake_timeout_s
        self.socket_timeout_s = socket_timeout_s
        self.deferred_ssl_context = self.ssl_context
        self.ssl_context = None
        self.RequestHandlerClass = AdmissionRequestHandler
        self.contexts = _QuickCopyContexts(self.contexts)

    def verify_request(self, request: Any, client_address: Any) -> bool:
        ip = str(client_address[0])
        reason = self.admission.connection_refusal(ip)
        if reason is None:
            return True
        logger.warning("closed a connection from %s at accept: %s", ip, reason)
        return False

    def process_request(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request(request, client_address)
        except Exception:
            # Thread could not start (e.g. out of threads): release the reservation.
            self.admission.connection_started(str(client_address[0]), None)
            raise
