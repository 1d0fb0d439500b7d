"""Keeping the leases of the jobs a worker process is answering alive while their calls are in flight.

One thread per process renews every lease it holds in one UPDATE every third of the lease, so a
long call (or a slow database write) never lets another delivery of the same message take the jobs.
A process that dies stops renewing; its leases run out and the jobs can be claimed again.
"""

from __future__ import annotations

import logging
import os
import threading
import time
import uuid
from collections.abc import Iterable, Iterator, Sequence
from contextlib import contextmanager

from sqlalchemy import Engine
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from models.lifecycle import cancelled_batches, renew

log = logging.getLogger(__name__)


CANCEL_CHECK_S = 2.0  # how often the batches of the jobs held are asked whether they were cancelled


class LeaseKeeper:
    """The leases one process holds (owner -> job ids) and the thread that renews them; it also asks, every
    CANCEL_CHECK_S, whether the jobs' batches were cancelled (one small SELECT), so that no new call is made
    for them."""

    def __init__(self, engine: Engine, lease_s: float) -> None:
        self.engine, self.lease_s = engine, lease_s
        self._held: dict[uuid.UUID, list[int]] = {}
        self._batches: dict[uuid.UUID, set[uuid.UUID]] = {}  # owner -> the batches of its jobs
        self._cancelled: set[uuid.UUID] = set()  # those batches cancelled, as the last check found
        self._lock = threading.Lock()
        self._pid = 0

    @contextmanager
    def holding(self, owner: uuid.UUID, ids: Sequence[int], batches: Iterable[uuid.UUID] = ()) -> Iterator[None]:
        """Renew `owner`'s lease on `ids` (jobs of `batches`) until the block ends."""
        with self._lock:
            self._held[owner] = list(ids)
            self._batches[owner] = set(batches)
            if self._pid != os.getpid():
                self._pid = os.getpid()
                threading.Thread(target=self._run, name="tierq-leases", daemon=True).start()
        try:
            yield
        finally:
            with self._lock:
                self._held.pop(owner, None)
                self._batches.pop(owner, None)

    def renew_now(self) -> int:
        """Renew every lease held; returns how many jobs were renewed."""
        with self._lock:
            held = {owner: list(ids) for owner, ids in self._held.items()}
        if not held:
            return 0
        with self.engine.begin() as conn:
            return renew(conn, held, self.lease_s)

    def check_cancels(self) -> None:
        """Learn which of the held jobs' batches were cancelled."""
        with self._lock:
            batches = set().union(*self._batches.values())
        found = set()
        if batches:
            with self.engine.connect() as conn:
                found = cancelled_batches(conn, batches)
        with self._lock:
            self._cancelled = found

    def cancelled(self, batch_id: uuid.UUID) -> bool:
        """Whether a batch of the jobs held was cancelled while this process answers them (known within
        CANCEL_CHECK_S): their running calls end, but no new call is made for them."""
        return batch_id in self._cancelled

    def _run(self) -> None:
        renew_every = self.lease_s / 3
        tick = min(CANCEL_CHECK_S, renew_every)
        renewed = time.monotonic()
        while True:
            time.sleep(tick)
            if time.monotonic() - renewed >= renew_every - tick / 2:
                renewed = time.monotonic()
                try:
                    self.renew_now()
                except SQLAlchemyError as exc:
                    # The database is away, or the pool had no connection free; the next round tries again,
                    # before the leases run out if it is back.
                    log.warning("could not renew leases (%s); retrying in %.0f s", _why(exc), renew_every)
                except Exception:
                    # This thread must outlive anything: once it stops, every lease of the process lapses, and
                    # other deliveries take over jobs whose calls are already paid for and pay for them again.
                    log.exception("renewing leases failed; retrying in %.0f s", renew_every)
            try:
                self.check_cancels()
            except SQLAlchemyError as exc:  # the renewal above says the database is away; this only waits for it
                log.debug("could not ask whether batches were cancelled (%s)", _why(exc))
            except Exception:
                log.exception("asking whether batches were cancelled failed; asking again in %.0f s", tick)


def _why(exc: SQLAlchemyError) -> str:
    """The name of what went wrong: the driver's error, or SQLAlchemy's own (a pool with no connection free)."""
    return type(exc.orig).__name__ if isinstance(exc, DBAPIError) else type(exc).__name__
