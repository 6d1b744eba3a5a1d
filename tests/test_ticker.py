"""The Ticker: one thread per process, started again in a forked child."""

from __future__ import annotations

import os
import threading
import time

from webhook.telemetry.ticker import Ticker


class Counter:
    def __init__(self) -> None:
        self.calls = 0

    def tick(self) -> None:
        self.calls += 1


def _threads(name: str) -> int:
    return sum(1 for t in threading.enumerate() if t.name == name)


def test_ensure_starts_one_thread_however_often_it_is_called() -> None:
    counter = Counter()
    ticker = Ticker(counter, Counter.tick, 0.01, "test-ticker-once")
    for _ in range(100):
        ticker.ensure()
    assert _threads("test-ticker-once") == 1
    deadline = time.monotonic() + 10
    while counter.calls < 3 and time.monotonic() < deadline:
        time.sleep(0.01)
    assert counter.calls >= 3


def test_a_forked_child_starts_its_own_thread() -> None:
    counter = Counter()
    ticker = Ticker(counter, Counter.tick, 0.01, "test-ticker-fork")
    ticker.ensure()
    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: the parent's thread did not come along
        try:
            before, inherited = _threads("test-ticker-fork"), counter.calls
            ticker.ensure()
            deadline = time.monotonic() + 10
            while counter.calls < inherited + 3 and time.monotonic() < deadline:
                time.sleep(0.01)
            calls = counter.calls - inherited
            os.write(write, f"{before} {_threads('test-ticker-fork')} {calls}".encode())
        finally:
            os._exit(0)
    os.close(write)
    with os.fdopen(read) as pipe:
        before, after, calls = map(int, pipe.read().split())
    os.waitpid(pid, 0)
    assert (before, after) == (0, 1)
    assert calls >= 3
