"""OneAtATimePool: one thread at a time, a second only when the first is stuck."""

from __future__ import annotations

import threading
import time

import pytest

from webhook.server.pool import OneAtATimePool


class Gauge:
    """How many calls run at once, and the most seen."""

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.now = 0
        self.most = 0

    def work(self, seconds: float) -> None:
        with self.lock:
            self.now += 1
            self.most = max(self.most, self.now)
        time.sleep(seconds)  # releases the interpreter lock: a second thread could run now
        with self.lock:
            self.now -= 1


def test_calls_run_one_at_a_time_in_order() -> None:
    pool = OneAtATimePool(4, rescue_after=1.0)  # no call here comes near: none is stuck
    gauge = Gauge()
    order: list[int] = []

    def call(index: int) -> None:
        gauge.work(0.002)
        order.append(index)

    futures = [pool.submit(call, i) for i in range(40)]
    for future in futures:
        future.result(timeout=10)
    pool.shutdown()
    assert gauge.most == 1
    assert order == list(range(40))


def test_a_stuck_call_lets_the_calls_after_it_run_on_other_threads() -> None:
    pool = OneAtATimePool(4, rescue_after=0.5)
    release, second_ran = threading.Event(), threading.Event()
    stuck = pool.submit(release.wait, 30)
    waiting = pool.submit(second_ran.set)
    assert not second_ran.wait(0.1), "a second thread ran while the first was busy, not stuck"
    assert pool.waiting() and not pool.rescue()  # busy for well under rescue_after
    time.sleep(0.5)  # now the first call has run rescue_after: stuck
    assert pool.rescue()
    waiting.result(timeout=5)
    # Still stuck: every later call runs at once, with no rescue() between them.
    assert [pool.submit(lambda i=i: i).result(timeout=5) for i in range(5)] == list(range(5))
    release.set()
    assert stuck.result(timeout=5) is True
    pool.shutdown()


def test_calls_go_back_to_one_at_a_time_once_the_stuck_one_is_done() -> None:
    pool = OneAtATimePool(3, rescue_after=0.3)
    release = threading.Event()
    stuck = pool.submit(release.wait, 30)
    time.sleep(0.5)
    release.set()
    stuck.result(timeout=5)
    gauge = Gauge()
    for future in [pool.submit(gauge.work, 0.002) for _ in range(15)]:
        future.result(timeout=5)
    pool.shutdown()
    assert gauge.most == 1


def test_rescue_with_nothing_waiting_wakes_nobody() -> None:
    pool = OneAtATimePool(2, rescue_after=0)
    assert not pool.waiting()
    assert not pool.rescue()
    pool.shutdown()


def test_results_and_exceptions_reach_the_futures() -> None:
    pool = OneAtATimePool(2)
    assert pool.submit(lambda a, b: a + b, 2, 3).result(timeout=5) == 5
    failing = pool.submit(lambda: 1 / 0)
    with pytest.raises(ZeroDivisionError):
        failing.result(timeout=5)
    assert pool.submit(lambda: "still serving").result(timeout=5) == "still serving"
    pool.shutdown()


def test_shutdown_finishes_queued_work_unless_cancelled() -> None:
    pool = OneAtATimePool(1)
    release = threading.Event()
    pool.submit(release.wait, 10)
    queued = [pool.submit(lambda i=i: i) for i in range(3)]
    release.set()
    pool.shutdown(wait=True)
    assert [f.result(timeout=1) for f in queued] == [0, 1, 2]
    with pytest.raises(RuntimeError):
        pool.submit(lambda: None)

    pool = OneAtATimePool(1)
    release = threading.Event()
    running = pool.submit(release.wait, 10)
    time.sleep(0.05)
    dropped = pool.submit(lambda: "never")
    pool.shutdown(wait=False, cancel_futures=True)
    release.set()
    assert running.result(timeout=5) is True
    assert dropped.cancelled()


def test_a_pool_needs_a_thread() -> None:
    with pytest.raises(ValueError, match="at least one thread"):
        OneAtATimePool(0)
