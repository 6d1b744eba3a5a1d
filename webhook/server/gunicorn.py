"""`serve`: the Flask app under gunicorn, TLS only, started programmatically.

- gthread workers with keep-alive: the API server keeps connections open, and sync
  workers over TLS pay a handshake per request (about a tenth of the rate).
- TLS 1.2 minimum with forward-secret AEAD ciphers only.
- The certificate and key are re-read when their files change on disk (a Secret
  update, cert-manager renewing): the check is a `stat` per new connection; a pair
  that does not load (a half-written rotation) keeps the previous context in use.
- SIGTERM: gunicorn stops accepting and lets in-flight reviews finish
  (`graceful_timeout`).
"""

from __future__ import annotations

import logging
import os
import select
import ssl
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any, Final

from gunicorn import glogging
from gunicorn.app.base import BaseApplication

# gthread's own "park this connection on the poller" answer from `handle`, compared by
# identity: no public name exists. tests/test_faults.py (idle and stalled connections)
# fails if a gunicorn release changes what it means; gunicorn is pinned.
from gunicorn.workers.gthread import _DEFER as DEFER
from gunicorn.workers.gthread import ThreadWorker
from prometheus_client import multiprocess

from webhook.server.pool import OneAtATimePool
from webhook.server.settings import ServeSettings
from webhook.telemetry.logs import logging_config
from webhook.telemetry.multiproc import MULTIPROC_ENV

log = logging.getLogger("multihome.server")

# ECDHE key exchange with AEAD ciphers for TLS 1.2; TLS 1.3 suites are fixed by OpenSSL.
TLS12_CIPHERS: Final = "ECDHE+AESGCM:ECDHE+CHACHA20"
KEEPALIVE_SECONDS: Final = 75  # above the API server's idle timeout for webhook connections
GRACEFUL_TIMEOUT_SECONDS: Final = 25  # inside the default 30 s terminationGracePeriodSeconds


# A connection that has sent nothing (no TLS hello, or no request after the handshake)
# goes back to the poller after this long instead of holding one of the few threads.
FIRST_BYTES_WAIT: Final = 0.05
# A client that stops sending in the middle of a request frees its thread after this.
READ_TIMEOUT: Final = 10.0
# After a review, the thread waits this long for the next one on the same connection
# before handing the connection back to the poller (only while no other connection waits).
LINGER_SECONDS: Final = 0.002


class TimedSSLSocket(ssl.SSLSocket):
    """An SSLSocket whose blocking mode still times out: gunicorn reads requests in blocking mode."""

    def setblocking(self, flag: bool) -> None:
        if flag:
            self.settimeout(READ_TIMEOUT)
        else:
            super().setblocking(False)


class WebhookWorker(ThreadWorker):  # type: ignore[misc]
    """gthread, with idle connections parked on the poller and reviews on one thread at a time.

    gunicorn defers a new connection to its poller only if it sends nothing for 5 s,
    and not at all once the TLS handshake is done: a few hundred idle connections
    (or connections that only shake hands) would occupy every thread. Here both
    waits are short and both defer; the connection is picked up again when data
    arrives.

    Every worker polls the one listening socket, and whichever wakes first accepts,
    as in stock gthread: with several workers, the API server's few keep-alive
    connections, opened together, can all land on one. multihome runs one worker
    per replica and lets Kubernetes spread replicas and connections. Two ways of
    spreading them over workers were tried and dropped:

    - pausing the accepts of a worker that held more connections put every TLS
      handshake behind the pause. `hey`, a Go client as the API server is, dropped
      1,757 connections mid-handshake in a 12 s run in which it used 24, and under
      a burst of new connections those queued ahead of the rest: first requests
      waited 3.5-3.9 s. Without the pause, none took over 0.3 s;
    - a listening socket per worker (SO_REUSEPORT) spread them without a pause, but
      a worker that exits takes the connections waiting on its socket with it: a
      worker restarted under load lost reviews (tests/test_faults.py).

    Reviews run on one thread at a time (`OneAtATimePool`, webhook/server/pool.py), and a
    thread that has answered a review waits briefly for the next one on the same
    connection instead of handing the connection back to the poller.

    Relies on gunicorn 27's gthread internals (`TConn.initialized`, `data_ready`,
    `tpool`, the parser's unreader), pinned in requirements.txt.
    """

    def get_thread_pool(self) -> OneAtATimePool:
        return OneAtATimePool(self.cfg.threads, name="review")

    def wait_for_and_dispatch_events(self, timeout: float) -> None:
        pool: OneAtATimePool = self.tpool
        if pool.waiting():
            timeout = min(timeout, pool.rescue_after)  # back in time to let a second thread in
        super().wait_for_and_dispatch_events(timeout)
        if pool.waiting():  # the pool's lock only when a review waits, not at every event
            pool.rescue()

    def handle(self, conn: Any) -> Any:
        if not conn.initialized:
            if not conn.data_ready and not conn.wait_for_data(FIRST_BYTES_WAIT):
                return DEFER
            conn.sock.setblocking(True)
            conn.init()  # the TLS handshake
            conn.data_ready = False
            if not (conn.sock.pending() or conn.wait_for_data(FIRST_BYTES_WAIT)):
                return DEFER
        result = super().handle(conn)
        while result is True and self.alive and self._next_request_soon(conn):
            result = super().handle(conn)
        return result

    def _next_request_soon(self, conn: Any) -> bool:
        """Whether the connection's next request is here, or comes within LINGER_SECONDS.

        The API server (and any client under load) sends the next review on a kept-alive
        connection at once; answering it on this thread saves the trip through the poller,
        the pipe to the main thread and back: a third of a review's latency on one connection. Not while
        another connection waits for a thread.
        """
        if conn.parser.unreader.buf.getvalue() or conn.sock.pending():
            return True
        if self.tpool.waiting():
            return False
        poll = select.poll()
        poll.register(conn.sock, select.POLLIN)
        return bool(poll.poll(LINGER_SECONDS * 1000))


class ReloadingTLSContext:
    """Hands out an SSLContext for the current certificate files, rebuilt when they change."""

    def __init__(self, cert: Path, key: Path) -> None:
        self.cert = cert
        self.key = key
        self._lock = threading.Lock()
        self._stamp: tuple[tuple[int, int, int], ...] | None = None
        self._context = self._build()  # fails loudly at start-up: no valid pair, no server
        self._stamp = self._stat()

    def _stat(self) -> tuple[tuple[int, int, int], ...]:
        stats = [os.stat(p) for p in (self.cert, self.key)]
        return tuple((s.st_ino, s.st_size, s.st_mtime_ns) for s in stats)

    def _build(self) -> ssl.SSLContext:
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.sslsocket_class = TimedSSLSocket
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.set_ciphers(TLS12_CIPHERS)
        context.options |= ssl.OP_NO_COMPRESSION | ssl.OP_CIPHER_SERVER_PREFERENCE
        context.load_cert_chain(certfile=self.cert, keyfile=self.key)
        return context

    def current(self) -> ssl.SSLContext:
        """The context for the files on disk now (or the last one that loaded)."""
        try:
            stamp = self._stat()
        except OSError:
            return self._context
        if stamp == self._stamp:
            return self._context
        with self._lock:
            if stamp != self._stamp:
                try:
                    self._context = self._build()
                    log.info("TLS certificate reloaded", extra={"cert": str(self.cert)})
                except (OSError, ssl.SSLError, ValueError) as err:
                    # Probably caught between writing the certificate and the key: next time.
                    log.warning("TLS certificate not reloaded yet", extra={"error": str(err)})
                    return self._context
                self._stamp = stamp
        return self._context


class WebhookLogger(glogging.Logger):  # type: ignore[misc]
    """gunicorn's logger, without access lines: the app logs each review once, with its decision.

    gunicorn builds an access line's atoms for every request once any logging config is
    given, before the logger drops it; that was a tenth of a review's time.
    """

    def access(self, resp: Any, req: Any, environ: Any, request_time: Any) -> None:
        return


class WebhookServer(BaseApplication):  # type: ignore[misc]
    """gunicorn, configured in code; the app is built in each worker after fork."""

    def __init__(
        self,
        settings: ServeSettings,
        app_factory: Callable[[], Any],
        *,
        on_worker_start: Callable[[], object] | None = None,
    ) -> None:
        self.settings = settings
        self.app_factory = app_factory
        self.on_worker_start = on_worker_start
        if settings.tls_cert is None or settings.tls_key is None:
            raise ValueError("the webhook serves HTTPS only: --tls-cert and --tls-key are required")
        self.tls = ReloadingTLSContext(settings.tls_cert, settings.tls_key)
        super().__init__()

    def load_config(self) -> None:
        settings, tls = self.settings, self.tls

        def ssl_context(_config: Any, _default: Callable[[], ssl.SSLContext]) -> ssl.SSLContext:
            return tls.current()

        options = {
            "bind": [settings.bind],
            "workers": settings.workers,
            "worker_class": "webhook.server.gunicorn.WebhookWorker",
            "threads": settings.threads,
            # Idle keep-alive connections beyond the threads; bounded so idle clients cannot
            # exhaust file descriptors.
            "worker_connections": 1000,
            "keepalive": KEEPALIVE_SECONDS,
            "timeout": 30,
            "graceful_timeout": GRACEFUL_TIMEOUT_SECONDS,
            "certfile": str(settings.tls_cert),
            "keyfile": str(settings.tls_key),
            "ssl_context": ssl_context,
            "limit_request_line": 4094,
            "limit_request_fields": 50,
            "limit_request_field_size": 8190,
            "logconfig_dict": logging_config(settings.log_level),
            "accesslog": None,
            "logger_class": "webhook.server.gunicorn.WebhookLogger",
            "proc_name": "multihome",
            "child_exit": _child_exit,
            "worker_tmp_dir": os.environ.get("MULTIHOME_TMP_DIR") or tempfile.gettempdir(),
            # gunicorn's control socket lives under $HOME, which a read-only root file system
            # refuses; nothing here drives gunicorn at run time, so no socket is opened at all.
            "control_socket_disable": True,
        }
        if self.on_worker_start is not None:
            start = self.on_worker_start
            options["post_worker_init"] = lambda _worker: start()
        for key, value in options.items():
            self.cfg.set(key, value)

    def load(self) -> Any:
        return self.app_factory()


def _child_exit(_server: Any, worker: Any) -> None:
    if os.environ.get(MULTIPROC_ENV):
        multiprocess.mark_process_dead(worker.pid)  # type: ignore[no-untyped-call]
