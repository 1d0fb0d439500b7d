"""Outage log lines: the libraries' tracebacks of an outage become one line, said once per interval with a
count of the ones held back; real errors keep their traceback."""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterator

import pytest
from celery.exceptions import Reject
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError

from tierq.quietlog import Repeats
from workers.dbretry import CONSUMER_LOGGER, TRACE_LOGGER, OutageLines


class Clock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Kept(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_a_repeat_is_said_once_per_interval_with_the_count_held_back() -> None:
    clock = Clock()
    repeats = Repeats(30.0, clock=clock)
    assert repeats.due("a") == 0
    assert [repeats.due("a") for _ in range(3)] == [None, None, None]
    assert repeats.due("b") == 0  # another kind is its own
    clock.now = 30.0
    assert repeats.due("a") == 3
    assert repeats.due("a") is None


def raised(exc: BaseException) -> tuple[type[BaseException], BaseException, object]:
    try:
        raise exc
    except BaseException:  # noqa: BLE001 (the test only wants its exc_info)
        info = sys.exc_info()
    assert info[0] is not None and info[1] is not None
    return info[0], info[1], info[2]


@pytest.fixture
def kept() -> Iterator[tuple[Clock, Kept, logging.Logger, logging.Logger, logging.Logger]]:
    """A library's logger, Celery's consumer logger and its task tracer's, each with the filter on a clock of
    the test's, whose records are kept instead of written; all as they were afterwards."""
    clock = Clock()
    handler = Kept()
    loggers = (logging.getLogger("tierq.test.library"), logging.getLogger(CONSUMER_LOGGER),
               logging.getLogger(TRACE_LOGGER))
    saved = [(lg.filters[:], lg.handlers[:], lg.propagate) for lg in loggers]
    for logger in loggers:
        logger.filters[:] = [OutageLines(Repeats(30.0, clock=clock))]
        logger.handlers[:] = [handler]
        logger.propagate = False
    yield clock, handler, *loggers
    for logger, (filters, handlers, propagate) in zip(loggers, saved, strict=True):
        logger.filters[:], logger.handlers[:], logger.propagate = filters, handlers, propagate


Kept4 = tuple[Clock, Kept, logging.Logger, logging.Logger, logging.Logger]


def test_an_outage_traceback_becomes_one_line_said_once_per_interval(kept: Kept4) -> None:
    clock, handler, library, _, _ = kept
    full = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    for _ in range(5):
        library.error("Error in timer: %r", full, exc_info=raised(full))
    clock.now = 31.0
    library.error("Error in timer: %r", full, exc_info=raised(full))
    said = handler.records
    assert len(said) == 2
    assert all(r.exc_info is None for r in said)
    assert "Redis is full" in said[0].getMessage() and "maxmemory" in said[0].getMessage()
    assert said[1].getMessage().endswith("(4 more like it since the last one)")


def test_a_task_given_back_for_an_outage_is_one_line_each_and_a_real_error_keeps_its_traceback(
        kept: Kept4) -> None:
    _, handler, library, _, trace = kept
    away = RedisConnectionError("Connection refused")
    for task in ("t1", "t2"):  # each names its task: none is held back
        trace.warning("Task %s reject requeue=True", task, exc_info=raised(Reject(away, requeue=True)))
    trace.error("Task t3 raised unexpected", exc_info=raised(away))  # failed for good: left as Celery says it
    wrong = ValueError("a bug")
    for _ in range(3):
        library.error("Task y failed", exc_info=raised(wrong))
    said = handler.records
    assert [r.exc_info is None for r in said] == [True, True, False, False, False, False]
    assert "Redis unreachable" in said[0].getMessage() and "t2" in said[1].getMessage()


def test_the_consumers_reconnection_lines_are_held_back_and_others_are_not(kept: Kept4) -> None:
    _, handler, library, consumer, _ = kept
    for n in range(4):
        consumer.error("consumer: Cannot connect to %s: %s.\n%s", "redis://", "refused", "Trying to reconnect...")
        consumer.warning("Received and deleted unknown message. body was: %s", f"body {n}")
        library.warning("something else")
    messages = [r.getMessage() for r in handler.records]
    assert messages.count("something else") == 4
    assert sum("Cannot connect" in m for m in messages) == 1
    assert sum("deleted unknown message" in m for m in messages) == 4  # its body is in no other place
