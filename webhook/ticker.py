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
from typing import Any


class Ticker:
    """Calls `method(target)` every `interval` seconds, from a thread started by `ensure`."""

    def __init__(self, target: Any, method: Callable[[Any], object], interval: float, name: str) -> None:
        self._target = weakref.ref(target)
        self._method = method
        self.interval = interval
        self.name = name
        self._pid = 0

    def ensure(self) -> None:
        """Start this process's thread unless it runs already: cheap enough for every call."""
        if self._pid != os.getpid():
            self._pid = os.getpid()
            threading.Thread(target=self._run, name=self.name, daemon=True).start()

    def _run(self) -> None:
        while True:
            time.sleep(self.interval)
            target = self._target()
            if target is None:
                return
            self._method(target)
            del target
