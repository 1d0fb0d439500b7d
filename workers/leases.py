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
from sqlalchemy.exc import DBAPIError

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
        self._cancelled: set[int] = set()  # held jobs whose batch was cancelled, as the last renewal found
        self._cancelled_batches: set[uuid.UUID] = set()  # as the last check found
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
                self._cancelled.difference_update(self._held.pop(owner, ()))
                self._batches.pop(owner, None)

    def renew_now(self) -> int:
        """Renew every lease held, and learn which of the jobs' batches were cancelled; returns how many jobs
        were renewed."""
        with self._lock:
            held = {owner: list(ids) for owner, ids in self._held.items()}
        if not held:
            return 0
        with self.engine.begin() as conn:
            renewed, cancelled = renew(conn, held, self.lease_s)
        with self._lock:
            still = {job_id for ids in self._held.values() for job_id in ids}
            self._cancelled.update(job_id for job_id in cancelled if job_id in still)
        return renewed

    def check_cancels(self) -> None:
        """Learn which of the held jobs' batches were cancelled."""
        with self._lock:
            batches = set().union(*self._batches.values())
        found = set()
        if batches:
            with self.engine.connect() as conn:
                found = cancelled_batches(conn, batches)
        with self._lock:
            self._cancelled_batches = found

    def cancelled(self, job_id: int, batch_id: uuid.UUID | None = None) -> bool:
        """Whether the job's batch was cancelled while this process answers it (known within CANCEL_CHECK_S
        for a job held with its batch, else within a third of the lease): its running calls end, but no new
        call is made for it."""
        return job_id in self._cancelled or (batch_id is not None and batch_id in self._cancelled_batches)

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
                except DBAPIError as exc:
                    # The database is away; the next round tries again, before the leases run out if it is back.
                    log.warning("could not renew leases (%s); retrying in %.0f s", type(exc.orig).__name__,
                                renew_every)
            try:
                self.check_cancels()
            except DBAPIError as exc:  # the renewal above says the database is away; this only waits for it
                log.debug("could not ask whether batches were cancelled (%s)", type(exc.orig).__name__)
