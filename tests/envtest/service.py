"""A Service's virtual IP as kube-proxy makes it: each new connection goes to one Ready endpoint.

The tier has no cluster network, so this listens on a loopback port instead of a
ClusterIP. What it keeps of kube-proxy's rules: a connection is made to one endpoint,
chosen among the Pods that are Ready at that moment, and stays with it; a Pod that stops
being Ready (its readiness probe fails, or it is terminating) gets no new connections
but keeps the ones it has; with no Ready endpoint a connection is refused (kube-proxy's
REJECT). The API server's webhook client keeps connections alive, so a rolling update
is seen as it is in a cluster: old connections drain while new ones reach the new Pods.
"""

from __future__ import annotations

import contextlib
import itertools
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field


@dataclass
class Backend:
    """One Pod behind the Service: its port here, and whether the endpoints list it."""

    port: int
    ready: Callable[[], bool]
    terminating: bool = False

    def serving(self) -> bool:
        return not self.terminating and self.ready()


@dataclass
class ServiceProxy:
    """Listens on `port`; forwards each connection to one of the serving backends."""

    backends: list[Backend] = field(default_factory=list)
    connections: list[int] = field(default_factory=list)  # the backend port of each, in order
    refused: int = 0
    _listener: socket.socket = field(init=False)
    _turn: itertools.count[int] = field(default_factory=itertools.count)

    def __post_init__(self) -> None:
        self._listener = socket.create_server(("127.0.0.1", 0))
        self._stopped = threading.Event()
        threading.Thread(target=self._accept, name="service-proxy", daemon=True).start()

    @property
    def port(self) -> int:
        return int(self._listener.getsockname()[1])

    def close(self) -> None:
        self._stopped.set()
        self._listener.close()

    def _accept(self) -> None:
        while not self._stopped.is_set():
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            serving = [b for b in self.backends if b.serving()]
            if not serving:
                self.refused += 1
                client.close()
                continue
            backend = serving[next(self._turn) % len(serving)]
            try:
                upstream = socket.create_connection(("127.0.0.1", backend.port), timeout=5)
            except OSError:
                self.refused += 1
                client.close()
                continue
            upstream.settimeout(None)
            self.connections.append(backend.port)
            for source, sink in ((client, upstream), (upstream, client)):
                threading.Thread(target=_pipe, args=(source, sink), daemon=True).start()


def _pipe(source: socket.socket, sink: socket.socket) -> None:
    try:
        while chunk := source.recv(65536):
            sink.sendall(chunk)
    except OSError:
        pass
    finally:
        for end in (source, sink):
            with contextlib.suppress(OSError):
                end.shutdown(socket.SHUT_RDWR)
