"""Outages: which errors are worth waiting for, and riding out a short database outage inside a task, so
answers already paid for are not thrown away."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from billiard.exceptions import RestartFreqExceeded
from celery.exceptions import Reject, Retry
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisFull
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

from tierq.quietlog import Repeats, held_note

T = TypeVar("T")
log = logging.getLogger(__name__)
# Outages worth waiting for: the database, the broker or Redis is away (or the connection pool is full), or
# Redis is full: at maxmemory with `noeviction` it refuses writes until the cache's sweep or its operator
# frees memory, which a retry a little later gets past as it does a restart.
TRANSIENT = (OperationalError, PoolTimeout, BrokerError, ConnectionError, RedisConnectionError, RedisTimeoutError,
             RedisFull)


def is_disconnect(exc: BaseException) -> bool:
    """True for errors that mean the database went away, not that the statement was wrong."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def is_transient(exc: BaseException) -> bool:
    """True for errors a retry a little later can get past (an outage), not mistakes in the work itself."""
    return isinstance(exc, TRANSIENT) or is_disconnect(exc)


REDIS_OUTAGE = (RedisConnectionError, RedisTimeoutError, RedisFull)
# The libraries' loggers that tell an outage with a traceback, many times a second: kombu's event loop and
# timer (its Redis transport's sweep of unacknowledged messages), its Redis transport (a binding's expiry
# refreshed), Celery's consumer (its reconnections and restarts) and its task tracer (a task given back to
# the queue because of the outage).
CONSUMER_LOGGER = "celery.worker.consumer.consumer"
TRACE_LOGGER = "celery.app.trace"
LIBRARY_LOGGERS = ("kombu.asynchronous.hub", "kombu.asynchronous.timer", "kombu.transport.redis", CONSUMER_LOGGER,
                   TRACE_LOGGER)
# The consumer's lines while it reconnects to the broker (celery.worker.consumer.consumer's CONNECTION_ERROR
# and CONNECTION_RETRY), and the exceptions a task that gives its message back raises.
RECONNECTING = ("consumer: Cannot connect to", "consumer: Connection to broker lost")
GIVEN_BACK = (Reject, Retry)
_RETRIES = Repeats()  # each thread riding out one outage would say so at every retry
FULL_FIX = "raise its maxmemory, or lower [cache] max_entries so that the cache fits"


def redis_trouble(exc: BaseException) -> str:
    """What a Redis outage is, for a log line: a full Redis says what to do about it."""
    if isinstance(exc, RedisFull):
        return f"Redis is full (used memory over maxmemory, writes refused); {FULL_FIX}"
    return f"Redis unreachable ({type(exc).__name__})"


def with_redis_retry(work: Callable[[], T], *, deadline_s: float = 120.0, what: str = "Redis write") -> T:
    """Run `work` until Redis answers it or `deadline_s` passes (then its error propagates), for steps that
    must happen before paid calls are recorded; other errors propagate at once."""
    return _retried(work, lambda exc: isinstance(exc, REDIS_OUTAGE), redis_trouble, deadline_s, what)


def with_db_retry(work: Callable[[], T], *, deadline_s: float = 120.0, what: str = "database write") -> T:
    """Run `work` (one transaction) until it succeeds or `deadline_s` passes; other errors propagate."""
    return _retried(work, lambda exc: isinstance(exc, DBAPIError) and is_disconnect(exc),
                    lambda exc: type(getattr(exc, "orig", exc)).__name__, deadline_s, what)


def _retried(work: Callable[[], T], outage: Callable[[Exception], bool], name: Callable[[Exception], str],
             deadline_s: float, what: str) -> T:
    """`work` again, backing off (0.5 s doubling to 10 s, with jitter), while it fails with an `outage` error
    and `deadline_s` has not passed."""
    started = time.monotonic()
    delay = 0.5
    while True:
        try:
            return work()
        except Exception as exc:
            if not outage(exc) or time.monotonic() - started > deadline_s:
                raise
            held = _RETRIES.due(f"{what}: {name(exc)}")
            if held is not None:
                log.warning("%s failed (%s); retrying in %.1f s%s", what, name(exc), delay, held_note(held))
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 10.0)


class OutageLines(logging.Filter):
    """On the libraries' loggers, while an outage lasts (Redis, the broker or the database away, Redis full):
    - a record whose exception is the outage (or was caused by it), or Celery's "frequent restarts" that
      follow one, loses its traceback, says what the outage is, and is said once per `every_s` per kind;
    - the consumer's reconnection lines (no exception) are said once per `every_s` too;
    - a task given back to its queue because of the outage (Celery's Reject or Retry) loses its traceback
      but is never held back: each names its task.
    Anything else, errors that are not an outage and a task that failed for good among them, is left as the
    library tells it."""

    def __init__(self, repeats: Repeats | None = None) -> None:
        super().__init__()
        self._repeats = repeats or Repeats()

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno < logging.WARNING:
            return True
        exc = record.exc_info[1] if record.exc_info else None
        outage = _outage_in(exc)
        if record.name == TRACE_LOGGER:
            if outage is not None and isinstance(exc, GIVEN_BACK):
                self._one_line(record, outage, 0)
            return True
        if exc is None:
            text = record.getMessage()
            kind = next((start for start in RECONNECTING if text.startswith(start)), None)
            if record.name != CONSUMER_LOGGER or kind is None:
                return True
        elif outage is None and not isinstance(exc, RestartFreqExceeded):
            return True  # a real error: as the library tells it
        else:
            kind = f"{record.msg}:{type(outage).__name__}"
        held = self._repeats.due(f"{record.name}:{kind}")
        if held is None:
            return False
        self._one_line(record, outage, held)
        return True

    def _one_line(self, record: logging.LogRecord, outage: BaseException | None, held: int) -> None:
        text = record.getMessage()
        if outage is not None:
            trouble = redis_trouble(outage) if isinstance(outage, REDIS_OUTAGE) else type(outage).__name__
            text += f" [{trouble}; waiting for it to pass]"
        record.msg = text + held_note(held)
        record.args = None
        record.exc_info = None
        record.exc_text = None


def _outage_in(exc: BaseException | None) -> BaseException | None:
    """The outage `exc` is, or was caused by, or names as its reason (Celery's Reject), if any."""
    seen = 0
    while exc is not None and seen < 5:
        if is_transient(exc):
            return exc
        reason = getattr(exc, "reason", None)
        exc = reason if isinstance(reason, BaseException) else exc.__cause__
        seen += 1
    return None


def quiet_library_outages() -> None:
    """Install `OutageLines` on the libraries' loggers once per process."""
    for name in LIBRARY_LOGGERS:
        logger = logging.getLogger(name)
        if not any(isinstance(f, OutageLines) for f in logger.filters):
            logger.addFilter(OutageLines())
