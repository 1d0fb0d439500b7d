"""Riding out a short database outage inside a task, so answers already paid for are not thrown away."""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from typing import TypeVar

from sqlalchemy.exc import DBAPIError, OperationalError

T = TypeVar("T")
log = logging.getLogger(__name__)


def is_disconnect(exc: BaseException) -> bool:
    """True for errors that mean the database went away, not that the statement was wrong."""
    return isinstance(exc, OperationalError) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def with_db_retry(work: Callable[[], T], *, deadline_s: float = 120.0, what: str = "database write") -> T:
    """Run `work` (one transaction) until it succeeds or `deadline_s` passes; other errors propagate."""
    started = time.monotonic()
    delay = 0.5
    while True:
        try:
            return work()
        except DBAPIError as exc:
            if not is_disconnect(exc) or time.monotonic() - started > deadline_s:
                raise
            log.warning("%s failed (%s); retrying in %.1f s", what, type(exc.orig).__name__, delay)
        time.sleep(delay * random.uniform(0.5, 1.0))
        delay = min(delay * 2, 10.0)
