"""Outages: which errors are worth waiting for, and riding out a short database outage inside a task, so
answers already paid for are not thrown away."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import OutOfMemoryError as RedisFull
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout

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
            log.warning("%s failed (%s); retrying in %.1f s", what, name(exc), delay)
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 10.0)
