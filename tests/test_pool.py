"""OneAtATimePool: one thread at a time, a second only when the first is stuck."""

from __future__ import annotations

import threading
import time

import pytest

from webhook.pool import OneAtATimePool


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
    pool = OneAtATimePool(4)
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


def test_rescue_lets_a_second_thread_past_a_stuck_one() -> None:
    pool = OneAtATimePool(4, rescue_after=0.01)
    release, second_ran = threading.Event(), threading.Event()
    stuck = pool.submit(release.wait, 10)
    time.sleep(0.05)  # the first call is running and blocked
    waiting = pool.submit(second_ran.set)
    assert not second_ran.wait(0.1), "a second thread ran without being let in"
    assert pool.waiting()
    assert pool.rescue()
    assert second_ran.wait(5), "the rescued call did not run while the first was stuck"
    waiting.result(timeout=5)
    release.set()
    assert stuck.result(timeout=5) is True
    pool.shutdown()


def test_rescue_waits_for_the_oldest_call_to_have_waited_long_enough() -> None:
    pool = OneAtATimePool(2, rescue_after=60)
    release = threading.Event()
    pool.submit(release.wait, 10)
    time.sleep(0.05)
    queued = pool.submit(lambda: "done")
    assert not pool.rescue()  # waited well under a minute
    assert pool.rescue(now=time.monotonic() + 61)
    assert queued.result(timeout=5) == "done"
    release.set()
    pool.shutdown()


def test_rescue_with_nothing_waiting_lets_nobody_in() -> None:
    pool = OneAtATimePool(2, rescue_after=0)
    assert not pool.waiting()
    assert not pool.rescue(now=time.monotonic() + 60)
    gauge = Gauge()
    for future in [pool.submit(gauge.work, 0.001) for _ in range(10)]:
        future.result(timeout=5)
    pool.shutdown()
    assert gauge.most == 1  # no permit was left over from the empty rescue


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
