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
from workers.dbretry import CONSUMER_LOGGER, OutageLines


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
def kept() -> Iterator[tuple[Clock, Kept, logging.Logger, logging.Logger]]:
    """A library's logger and Celery's consumer logger, each with the filter on a clock of the test's, whose
    records are kept instead of written; both as they were afterwards."""
    clock = Clock()
    handler = Kept()
    loggers = logging.getLogger("tierq.test.library"), logging.getLogger(CONSUMER_LOGGER)
    saved = [(lg.filters[:], lg.handlers[:], lg.propagate) for lg in loggers]
    for logger in loggers:
        logger.filters[:] = [OutageLines(Repeats(30.0, clock=clock))]
        logger.handlers[:] = [handler]
        logger.propagate = False
    yield clock, handler, loggers[0], loggers[1]
    for logger, (filters, handlers, propagate) in zip(loggers, saved, strict=True):
        logger.filters[:], logger.handlers[:], logger.propagate = filters, handlers, propagate


Kept4 = tuple[Clock, Kept, logging.Logger, logging.Logger]


def test_an_outage_traceback_becomes_one_line_said_once_per_interval(kept: Kept4) -> None:
    clock, handler, library, _ = kept
    full = OutOfMemoryError("command not allowed when used memory > 'maxmemory'.")
    for _ in range(5):
        library.error("Error in timer: %r", full, exc_info=raised(full))
    clock.now = 31.0
    library.error("Error in timer: %r", full, exc_info=raised(full))
    said = handler.records
    assert len(said) == 2
    assert all(r.exc_info is None for r in said)
    assert "Redis is full" in said[0].getMessage() and "maxmemory" in said[0].getMessage()
    assert said[1].getMessage().endswith("(4 more like it in the last 30 s)")


def test_an_outage_behind_a_reject_loses_its_traceback_and_a_real_error_keeps_it(kept: Kept4) -> None:
    _, handler, library, _ = kept
    away = RedisConnectionError("Connection refused")
    library.warning("Task x %s", "reject", exc_info=raised(Reject(away, requeue=True)))
    wrong = ValueError("a bug")
    for _ in range(3):
        library.error("Task y failed", exc_info=raised(wrong))
    said = handler.records
    assert said[0].exc_info is None and "Redis unreachable" in said[0].getMessage()
    assert len(said) == 4 and all(r.exc_info is not None for r in said[1:])  # bugs are never held back


def test_the_consumers_reconnection_lines_are_held_back_and_others_are_not(kept: Kept4) -> None:
    _, handler, library, consumer = kept
    for _ in range(4):
        consumer.error("Cannot connect to %s: %s.\n%s", "redis://", "refused", "Trying to reconnect...")
        library.warning("something else")
    messages = [r.getMessage() for r in handler.records]
    assert messages.count("something else") == 4
    assert sum("Cannot connect" in m for m in messages) == 1
