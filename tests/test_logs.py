"""Log lines: JSON, written in batches, never twice, never late for a warning."""

from __future__ import annotations

import io
import json
import logging
import os
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from webhook.telemetry.logs import (
    FLUSH_SECONDS,
    BatchingStreamHandler,
    FieldsRecord,
    JsonFormatter,
    RepeatSampler,
    log_fields,
)

Logged = tuple[logging.Logger, BatchingStreamHandler, io.StringIO]


@pytest.fixture
def logger() -> Iterator[Logged]:
    stream = io.StringIO()
    handler = BatchingStreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    log = logging.getLogger(f"test-logs-{time.monotonic_ns()}")
    log.propagate = False
    log.setLevel(logging.DEBUG)
    log.addHandler(handler)
    yield log, handler, stream
    log.removeHandler(handler)


def lines(stream: io.StringIO) -> list[dict[str, object]]:
    return [json.loads(line) for line in stream.getvalue().splitlines()]


def test_info_lines_wait_for_the_batch_and_keep_their_order(logger: Logged) -> None:
    log, handler, stream = logger
    for index in range(3):
        log.info("review", extra={"index": index})
    handler.flush()
    assert [(line["message"], line["index"]) for line in lines(stream)] == [("review", i) for i in range(3)]


def test_the_ticker_writes_a_batch_without_being_asked(logger: Logged) -> None:
    log, _, stream = logger
    log.info("review", extra={"uid": "u-1"})
    deadline = time.monotonic() + 10 + FLUSH_SECONDS
    while not stream.getvalue() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert [line["uid"] for line in lines(stream)] == ["u-1"]


def test_a_warning_is_written_at_once_after_the_lines_before_it(logger: Logged) -> None:
    log, _, stream = logger
    log.info("first")
    log.warning("second")  # no flush, no wait
    assert [(line["message"], line["level"]) for line in lines(stream)] == [
        ("first", "info"),
        ("second", "warning"),
    ]


def test_a_line_with_arguments_says_what_they_were_when_logged(logger: Logged) -> None:
    log, _, stream = logger
    workers = [1]
    log.info("workers %s", workers)
    workers.append(2)
    assert [line["message"] for line in lines(stream)] == ["workers [1]"]


def test_errors_carry_the_exception_without_a_traceback(logger: Logged) -> None:
    log, _, stream = logger
    try:
        raise KeyError("metadata")
    except KeyError:
        log.exception("handler failed")
    (line,) = lines(stream)
    assert line["level"] == "error" and line["error"] == "KeyError: 'metadata'"
    assert "Traceback" not in stream.getvalue()


def test_a_fork_writes_the_parents_lines_once(tmp_path: Path) -> None:
    out = tmp_path / "log"
    with out.open("a") as stream:
        handler = BatchingStreamHandler(stream)
        handler.setFormatter(JsonFormatter())
        record = logging.makeLogRecord(
            {"msg": "before the fork", "levelno": logging.INFO, "levelname": "INFO"}
        )
        handler.handle(record)
        pid = os.fork()
        if pid == 0:  # the child writes whatever it holds, as it would at exit
            handler.flush()
            os._exit(0)
        os.waitpid(pid, 0)
        handler.flush()
    assert [json.loads(line)["message"] for line in out.read_text().splitlines()] == ["before the fork"]


def test_a_fields_record_is_the_line_logger_log_writes(logger: Logged) -> None:
    log, handler, stream = logger
    fields = {"path": "/mutate/pods", "uid": "u-1", "decision": "patched", "warnings": 0, "duration_ms": 0.3}
    log.info("review", extra=fields)
    log_fields(log, logging.INFO, "review", fields)
    handler.flush()
    by_logger_log, by_fields = lines(stream)
    assert str(by_logger_log.pop("time")) <= str(by_fields.pop("time"))
    assert by_fields == by_logger_log == {"level": "info", "logger": log.name, "message": "review", **fields}


def test_a_fields_record_meets_levels_filters_and_plain_formatters(logger: Logged) -> None:
    log, handler, stream = logger
    log.setLevel(logging.INFO)
    log_fields(log, logging.DEBUG, "below the level", {})
    log.addFilter(lambda record: getattr(record, "uid", "") != "filtered")
    log_fields(log, logging.INFO, "review", {"uid": "filtered"})
    log_fields(log, logging.INFO, "review", {"uid": "kept"})
    handler.flush()
    assert [line["uid"] for line in lines(stream)] == ["kept"]
    # What the record does not carry, a formatter still finds (pytest's own format, say).
    plain = logging.Formatter(
        "%(levelname)s %(name)s:%(filename)s:%(lineno)d %(funcName)s %(process)s %(message)s"
    )
    record = FieldsRecord(log.name, logging.WARNING, "review", {"uid": "u"})
    assert plain.format(record) == f"WARNING {log.name}:(unknown file):0 (unknown function) None review"


class Clock:
    def __init__(self) -> None:
        self.now = 100.0

    def __call__(self) -> float:
        return self.now


def test_a_run_of_identical_lines_is_written_once_a_window_with_its_count() -> None:
    clock = Clock()
    sampler = RepeatSampler(window=10, clock=clock)
    assert sampler.admit("replica") == 0
    assert [sampler.admit("replica") for _ in range(3)] == [None, None, None]
    assert sampler.admit("another") == 0  # runs are counted apart
    clock.now += 9.9
    assert sampler.admit("replica") is None
    clock.now += 0.1
    assert sampler.admit("replica") == 4  # written again, saying how many were not
    assert sampler.admit("replica") is None
    assert RepeatSampler(window=0, clock=clock).admit("x") == 0


def test_the_sampler_forgets_every_run_when_it_holds_too_many() -> None:
    sampler = RepeatSampler(window=10, clock=Clock(), max_keys=3)
    for key in "abc":
        assert sampler.admit(key) == 0
    assert sampler.admit("a") is None
    assert sampler.admit("d") == 0  # the fourth: the three before are forgotten
    assert sampler.admit("a") == 0
