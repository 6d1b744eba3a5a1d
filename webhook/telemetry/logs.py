"""Structured logs: one JSON object per line (python-json-logger), on stderr, written in batches.

A review's line is formatted and written with the next batch, at most
`FLUSH_SECONDS` later, in one `write` with the lines logged meanwhile. Under load, a
`write` per line cost 6% of an injecting review (each one let another thread take
the interpreter lock), and formatting between requests cost more than formatting
a batch at once. Warnings and errors are written at once, with whatever came before
them; so is everything at exit and before a fork. A process killed outright
(SIGKILL, the OOM killer) loses at most the last `FLUSH_SECONDS` of info lines.
"""

from __future__ import annotations

import logging
import os
import time
import weakref
from collections.abc import Callable, Hashable
from typing import Any, Final, TextIO

from pythonjsonlogger.orjson import OrjsonFormatter

from webhook.admission import wire
from webhook.telemetry.ticker import Ticker

FLUSH_SECONDS: Final = 0.1
# Past this many waiting lines the logging thread writes them itself: bounded memory.
MAX_PENDING_LINES: Final = 2_000

# Every line: when, how bad, which logger, what; then the fields passed with `extra=`.
_FIELDS: Final = ["levelname", "name", "message"]
_RENAMED: Final = {"levelname": "level", "name": "logger", "exc_info": "error"}


class JsonFormatter(OrjsonFormatter):
    """python-json-logger's formatter, writing the lines multihome has always written.

    `{"time": "...Z", "level": "info", "logger": ..., "message": ..., <extra fields>}`:
    the time in UTC to the millisecond, the level in lower case, and for an exception
    only its type and text (`error`), since a traceback can quote request data. Lines
    are encoded by `wire.encode_loose`, which writes what orjson refuses (huge integers,
    lone surrogates) instead of dropping the line.
    """

    # (second, its text): one tuple, replaced whole, so threads never see a torn pair.
    _second: tuple[int, str] = (-1, "")

    def __init__(self) -> None:
        super().__init__(_FIELDS, rename_fields=dict(_RENAMED))

    def _time(self, record: logging.LogRecord) -> str:
        # One line per review: the date part is formatted once a second, not once a line.
        second, text = self._second
        if second != int(record.created):
            second = int(record.created)
            text = time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(second))
            self._second = (second, text)
        return f"{text}.{int(record.msecs):03d}Z"

    def add_fields(
        self, log_data: dict[str, Any], record: logging.LogRecord, message_dict: dict[str, Any]
    ) -> None:
        log_data["time"] = self._time(record)
        super().add_fields(log_data, record, message_dict)
        log_data["level"] = record.levelname.lower()

    def formatException(self, ei: Any) -> str:
        exc = ei[1]
        return f"{type(exc).__name__}: {exc}"

    def jsonify_log_record(self, log_data: dict[str, Any]) -> str:
        return wire.encode_loose(log_data)


class BatchingStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A StreamHandler that writes its lines in batches (see the module's docstring).

    The records wait in a list guarded by the handler's own lock; a `Ticker`
    thread writes them every `FLUSH_SECONDS`.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        super().__init__(stream)
        self._pending: list[logging.LogRecord] = []
        self._ticker = Ticker(self, BatchingStreamHandler.flush, FLUSH_SECONDS, "log-flush")
        ref = weakref.ref(self)

        def before_fork() -> None:
            handler = ref()
            if handler is not None:
                handler.flush()

        def in_child() -> None:
            # Anything another thread logged after the flush is the parent's to write.
            handler = ref()
            if handler is not None:
                handler._pending = []

        # The parent's lines are written by the parent, once.
        os.register_at_fork(before=before_fork, after_in_child=in_child)

    def emit(self, record: logging.LogRecord) -> None:
        # Called by Handler.handle with self.lock held. A plain line is formatted when its
        # batch is written: formatting a batch at once cost about half of formatting each line
        # between requests (measured in place). One with arguments or an exception is written
        # now, while those still say what they said when it was logged.
        if record.levelno >= logging.WARNING or record.args or record.exc_info:
            self._pending.append(record)
            self._write()
            return
        self._pending.append(record)
        if len(self._pending) >= MAX_PENDING_LINES:
            self._write()
        else:
            self._ticker.ensure()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._write()

    def _write(self) -> None:
        if not self._pending:
            return
        records, self._pending = self._pending, []
        lines = []
        for record in records:
            try:
                lines.append(self.format(record))
            except Exception:  # logging never raises into the code that logs
                self.handleError(record)
        if not lines:
            return
        try:
            self.stream.write("\n".join(lines) + "\n")
            self.stream.flush()
        except Exception:  # a closed or broken stream: the lines are dropped
            self.handleError(logging.makeLogRecord({"msg": "log batch not written"}))


class FieldsRecord(logging.LogRecord):
    """A record of a message and its fields, made without what a LogRecord takes from its caller.

    For the line logged at every review: `Logger.log` builds a record from the
    caller's frame, thread and process and copies `extra` into it (4.5 us in process,
    16 us of a review in place). This one sets the time, level, message and fields,
    and gives the other attributes a LogRecord has the values it gives when it knows
    none, so any formatter still finds them. Passed to `Logger.handle`, it meets the
    same filters and handlers as any record.
    """

    _UNKNOWN: Final[dict[str, object]] = {
        "pathname": "(unknown file)",
        "filename": "(unknown file)",
        "module": "(unknown module)",
        "lineno": 0,
        "funcName": "(unknown function)",
        "thread": None,
        "threadName": None,
        "process": None,
        "processName": None,
        "relativeCreated": 0.0,
    }

    def __init__(self, name: str, level: int, msg: str, fields: dict[str, Any]) -> None:
        # Not LogRecord.__init__: its work is what this record exists to skip.
        created = time.time()
        self.__dict__.update(self._UNKNOWN)
        self.__dict__.update(fields)
        self.name, self.msg, self.args = name, msg, ()
        self.levelno, self.levelname = level, logging.getLevelName(level)
        self.created, self.msecs = created, int((created - int(created)) * 1000) + 0.0
        self.exc_info = self.exc_text = self.stack_info = None


def log_fields(logger: logging.Logger, level: int, msg: str, fields: dict[str, Any]) -> None:
    """`logger.log(level, msg, extra=fields)`, by a `FieldsRecord`: for lines on the hot path."""
    if logger.isEnabledFor(level):
        logger.handle(FieldsRecord(logger.name, level, msg, fields))


class RepeatSampler:
    """Says which of a run of identical lines to write: the first in each `window` seconds.

    For the review line of an injection. A ReplicaSet's replicas are the same Pod when
    they are mutated (the API server names a Pod after the mutating webhooks), so
    their lines differ only in `uid` and `duration_ms`: scaling to 500 replicas wrote
    500 lines that said one thing, and writing them was most of what an injecting
    review cost over the floor. The first line of a run is written; the others
    within the window are not, and the next one written says how many were not
    (`repeats`). At most `max_keys` runs are remembered, then all are forgotten.
    """

    def __init__(
        self, window: float = 10.0, clock: Callable[[], float] = time.monotonic, max_keys: int = 10_000
    ) -> None:
        self.window, self.clock, self.max_keys = window, clock, max_keys
        self._runs: dict[Hashable, list[float]] = {}  # key: [when written, repeats not written since]

    def admit(self, key: Hashable) -> int | None:
        """None if a line like this was written within the window; else how many were not since."""
        now = self.clock()
        run = self._runs.get(key)
        if run is not None and now - run[0] < self.window:
            run[1] += 1
            return None
        if run is None and len(self._runs) >= self.max_keys:
            self._runs.clear()
        self._runs[key] = [now, 0]
        return int(run[1]) if run is not None else 0


def lean_records() -> None:
    """Records without what the JSON lines never show: the caller's frame, thread and process names.

    The logging HOWTO's "Optimization" section names these switches; a record is built
    a sixth faster without them (2.85 to 2.35 us in process). The review line skips
    record building altogether (`FieldsRecord`); these serve every other line.
    """
    logging._srcfile = None
    logging.logThreads = False
    logging.logProcesses = False
    logging.logMultiprocessing = False


def logging_config(level: str) -> dict[str, Any]:
    """A logging.config dict that sends every logger, gunicorn's included, through JsonFormatter."""
    handler = {
        "class": "webhook.telemetry.logs.BatchingStreamHandler",
        "formatter": "json",
        "stream": "ext://sys.stderr",
    }
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": handler},
        "root": {"level": level.upper(), "handlers": ["stderr"]},
        "loggers": {
            "gunicorn.error": {"level": level.upper(), "handlers": ["stderr"], "propagate": False},
            # Each review is logged once by the app, with its decision; access lines add nothing
            # (and `serve`'s WebhookLogger does not even build them).
            "gunicorn.access": {"level": "WARNING", "handlers": ["stderr"], "propagate": False},
        },
    }
