"""Faults under load against the real server: a worker restarted, idle and slow clients."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import ssl
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.server import Server, client_context, running_server
from tests.support import CLUSTER, make_request, make_review, pod


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    # Production's thread count: the slow-client test holds half of one worker's threads.
    with running_server(tmp_path_factory.mktemp("faults"), CLUSTER, "--threads", "8", workers=2) as running:
        yield running


def workers_of(server: Server) -> list[int]:
    return [
        int(pid)
        for pid in Path(f"/proc/{server.process.pid}/task/{server.process.pid}/children").read_text().split()
    ]


def review_once(server: Server) -> bool:
    conn = server.connect(timeout=15)
    try:
        request = make_request(pod(labels={"app": "upf"}))
        status, review = server.post(conn, "/mutate/pods", make_review(request))
        return status == 200 and review["response"]["uid"] == request["uid"]
    finally:
        conn.close()


def test_a_worker_restarted_under_load_loses_no_review(server: Server) -> None:
    failures: list[str] = []
    answered = 0
    stop = threading.Event()

    def traffic() -> None:
        nonlocal answered
        while not stop.is_set():
            try:
                if review_once(server):
                    answered += 1
                else:
                    failures.append("wrong answer")
            except Exception as err:
                failures.append(repr(err))

    threads = [threading.Thread(target=traffic) for _ in range(6)]
    for thread in threads:
        thread.start()
    time.sleep(0.5)
    victim = workers_of(server)[0]
    os.kill(victim, signal.SIGTERM)  # what a max-requests recycle or a scale-down does
    deadline = time.monotonic() + 30
    while (victim in workers_of(server) or len(workers_of(server)) < 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    time.sleep(1.0)
    stop.set()
    for thread in threads:
        thread.join()
    assert victim not in workers_of(server) and len(workers_of(server)) == 2, (
        "the master did not replace the worker"
    )
    assert answered > 50
    assert failures == []


def test_many_idle_connections_do_not_starve_reviews(server: Server) -> None:
    idle: list[socket.socket] = []
    try:
        for _ in range(150):  # connected, TLS done, never sending a request
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=5)
            idle.append(client_context(server.ca).wrap_socket(raw, server_hostname="127.0.0.1"))
        for _ in range(100):  # connected, not even a TLS handshake
            idle.append(socket.create_connection(("127.0.0.1", server.port), timeout=5))
        started = time.monotonic()
        assert all(review_once(server) for _ in range(20))
        assert time.monotonic() - started < 10, "reviews waited behind idle connections"
    finally:
        for sock in idle:
            sock.close()


@contextlib.contextmanager
def stalled(server: Server, clients: int) -> Iterator[None]:
    """Clients that start a request and never finish its headers: each holds a thread."""
    slow: list[ssl.SSLSocket] = []
    try:
        for _ in range(clients):
            raw = socket.create_connection(("127.0.0.1", server.port), timeout=30)
            tls = client_context(server.ca).wrap_socket(raw, server_hostname="127.0.0.1")
            tls.sendall(b"POST /mutate/pods HTTP/1.1\r\nHost: x\r\n")
            slow.append(tls)
        yield
    finally:
        for sock in slow:
            sock.close()


def review_times(server: Server, reviews: int = 20) -> list[float]:
    timings = []
    for _ in range(reviews):
        started = time.monotonic()
        assert review_once(server)
        timings.append(round(time.monotonic() - started, 3))
    return timings


def test_slow_clients_hold_no_more_than_their_own_threads(server: Server) -> None:
    with stalled(server, 4):  # fewer than one worker's threads: each holds one for at most READ_TIMEOUT
        timings = review_times(server)
    assert max(timings) < 2, timings


def test_stalled_clients_do_not_stop_one_worker_with_the_default_threads(tmp_path: Path) -> None:
    # The chart's defaults: one worker, four threads, reviews served one at a time. A client
    # stalled on the serving thread stops counting as busy after 20 ms, not after the 10 s
    # read timeout; three of them still leave a thread for everyone else.
    with running_server(tmp_path, CLUSTER, workers=1) as server, stalled(server, 3):
        timings = review_times(server)
    assert max(timings) < 2, timings
