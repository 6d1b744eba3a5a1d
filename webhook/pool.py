"""A thread pool that serves on one thread at a time, unless that thread is stuck.

CPython runs one thread's Python at a time. When two pool threads both have a
review to serve, they hand the interpreter lock to each other at every socket
call: under load, gunicorn's pool of 4 threads made 20 context switches per
review against 5 with one thread, and served 30% fewer reviews. One thread is
not safe on its own, though: a client that stalls in the middle of a request
would hold it, and every other review would wait.

So work goes to one thread at a time: a thread that finishes takes the next
item itself, and an idle thread is woken only when no thread is running. If
the oldest waiting item has waited `rescue_after` (the running thread is
blocked on a slow client, or on a long review), the owner calls `rescue()` and
one more thread is let in. A stalled client delays the others by that much, and
as many stalled clients as there are threads are needed to stop the worker, as
with gunicorn's own pool.

The interface is the part of `concurrent.futures.ThreadPoolExecutor` that
gunicorn's gthread worker uses: `submit` returning a Future, and `shutdown`.
"""

from __future__ import annotations

import threading
import time
from collections import deque
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, Final

RESCUE_AFTER: Final = 0.02


class _Item:
    __slots__ = ("args", "fn", "future", "queued_at")

    def __init__(self, fn: Callable[..., Any], args: tuple[Any, ...]) -> None:
        self.fn, self.args = fn, args
        self.future: Future[Any] = Future()
        self.queued_at = time.monotonic()


class OneAtATimePool:
    """`threads` threads that run submitted calls one at a time while none is stuck (see the module)."""

    def __init__(self, threads: int, rescue_after: float = RESCUE_AFTER, name: str = "pool") -> None:
        if threads < 1:
            raise ValueError("a pool needs at least one thread")
        self.rescue_after = rescue_after
        self._queue: deque[_Item] = deque()
        self._cond = threading.Condition(threading.Lock())
        self._running = 0  # threads running an item
        self._idle = 0  # threads waiting for one
        self._extra = 0  # threads let in by rescue() and not yet in
        self._rescued_at = 0.0
        self._shutdown = False
        self._threads = [
            threading.Thread(target=self._serve, name=f"{name}-{i}", daemon=True) for i in range(threads)
        ]
        for thread in self._threads:
            thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any) -> Future[Any]:
        item = _Item(fn, args)
        with self._cond:
            if self._shutdown:
                raise RuntimeError("cannot submit to a pool that was shut down")
            self._queue.append(item)
            if self._running == 0:
                self._cond.notify()
        return item.future

    def waiting(self) -> bool:
        """Whether any item waits for a thread: the owner should call rescue() within rescue_after."""
        return bool(self._queue)

    def rescue(self, now: float | None = None) -> bool:
        """Let one more thread in if the oldest item has waited rescue_after; True if one was."""
        now = time.monotonic() if now is None else now
        with self._cond:
            if not self._queue or not self._idle or self._extra:
                return False
            if now - max(self._queue[0].queued_at, self._rescued_at) < self.rescue_after:
                return False
            self._extra += 1
            self._rescued_at = now
            self._cond.notify_all()  # only a thread that finds the permit takes it
            return True

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        with self._cond:
            self._shutdown = True
            if cancel_futures:
                while self._queue:
                    self._queue.popleft().future.cancel()
            self._cond.notify_all()
        if wait:
            for thread in self._threads:
                thread.join()

    def _take(self) -> _Item | None:
        with self._cond:
            while True:
                if self._queue and (self._running == 0 or self._extra):
                    # Alone, a thread needs no permit, and one granted meanwhile is not needed.
                    self._extra = self._extra - 1 if self._running else 0
                    self._running += 1
                    return self._queue.popleft()
                if self._shutdown and not self._queue:
                    return None
                self._idle += 1
                self._cond.wait()
                self._idle -= 1

    def _serve(self) -> None:
        while (item := self._take()) is not None:
            if item.future.set_running_or_notify_cancel():
                try:
                    result = item.fn(*item.args)
                except BaseException as err:  # handed to the Future, as ThreadPoolExecutor does
                    item.future.set_exception(err)
                else:
                    item.future.set_result(result)
            del item
            with self._cond:
                self._running -= 1  # and, the queue not empty, this thread takes the next item
