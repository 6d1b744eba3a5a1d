"""A daemon thread per process that calls a method of an object every few seconds.

For work taken off the request path and done in batches (log lines, metric
samples). gunicorn forks its workers after the app is built, and threads do not
survive a fork, so the thread starts in whichever process first calls `ensure`.
It holds the object weakly and ends when the object is gone.
"""

from __future__ import annotations

import os
import threading
import time
import weakref
from collections.abc import Callable
from typing import Any, Final

# Every Ticker, so that a forked child knows none of their threads came with it.
_TICKERS: Final[weakref.WeakSet[Ticker]] = weakref.WeakSet()


class Ticker:
    """Calls `method(target)` every `interval` seconds, from a thread started by `ensure`."""

    def __init__(self, target: Any, method: Callable[[Any], object], interval: float, name: str) -> None:
        self._target = weakref.ref(target)
        self._method = method
        self.interval = interval
        self.name = name
        self._started = False
        self._lock = threading.Lock()
        _TICKERS.add(self)

    def ensure(self) -> None:
        """Start this process's thread unless it runs already: an attribute read once it does.

        It is called for every log line and metric sample; asking the process id each
        time, as this once did, was a system call per call.
        """
        if self._started:
            return
        with self._lock:
            if not self._started:
                threading.Thread(target=self._run, name=self.name, daemon=True).start()
                self._started = True

    def _forked(self) -> None:
        # In the child: the thread stayed with the parent, and the lock may have been held there.
        self._started = False
        self._lock = threading.Lock()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            target = self._target()
            if target is None:
                return
            self._method(target)
            del target


def _after_fork_in_child() -> None:
    for ticker in list(_TICKERS):
        ticker._forked()


os.register_at_fork(after_in_child=_after_fork_in_child)
