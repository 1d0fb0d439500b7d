"""The safety net: jobs that no message will ever move are published again, or failed after a few tries.

Whatever the cause (a task that failed, a message lost by a broker, a publish that never happened, a
worker killed mid-call), a job that is not final, has not changed for `stuck_after_s`, and whose message
is not live or is overdue (tierq/live.py) gets its message published again, up to `max_recoveries` times;
then it fails with a reason that says so. Followers whose follow checks stopped are routed again.
Every worker process runs it every `reconcile_every_s`; a lock in Redis lets one run at a time.
"""

from __future__ import annotations

import logging
import random
import threading
import time
import uuid
from dataclasses import dataclass

from models import following, stale
from models.enums import JobStatus
from models.lifecycle import Outbox
from models.stale import Stale
from tierq.publish import BROKER_DOWN
from workers.context import WorkerContext
from workers.dbretry import is_transient

log = logging.getLogger(__name__)
_UNLOCK = "if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end return 0"


@dataclass(frozen=True, slots=True)
class Reconciled:
    """What one pass did."""

    republished: int
    failed: int
    released: int


def give_up_reason(group: Stale, tries: int) -> str:
    """Why a job the reconciler could not get going fails."""
    if group.status is JobStatus.RUNNING:
        return (f"stuck: the worker answering it stopped (killed or crashed) {tries + 1} times; it may be what "
                "stops them, so it is not tried again (tierq retry --failed does)")
    return (f"stuck: its message was lost or its task failed {tries + 1} times; see the worker logs, "
            "then tierq retry --failed")


def reconcile(ctx: WorkerContext) -> Reconciled:
    """One pass over the jobs that may be stuck."""
    rules = ctx.config.worker
    age = rules.stuck_after_s
    outbox = Outbox()
    republished = failed = released = 0
    ended: list[int] = []
    with ctx.engine.begin() as conn:
        for group in stale.lost(conn, ctx.live, age, lengths=ctx.queue_lengths):
            if group.recoveries >= rules.max_recoveries:
                gone, kept = stale.give_up(conn, group, give_up_reason(group, group.recoveries))
                ended += gone + kept
                failed += len(gone)
            else:
                republished += stale.recovered(conn, outbox, group, age)
        released = following.release_followers(conn, outbox, stale.stale_followers(
            conn, age + 3 * ctx.config.cache.lease_s), ctx.config.worker.classify_chunk)
    ctx.publish(outbox)
    ctx.live.prune()  # entries of deliveries whose worker died and that were never delivered again
    if ended:
        ctx.vault.forget_prompts(ended)
    if republished or failed or released:
        log.warning("reconciler: %d stuck jobs published again, %d failed after %d tries, %d followers released",
                    republished, failed, rules.max_recoveries, released)
    return Reconciled(republished, failed, released)


class Reconciler:
    """The thread that runs `reconcile` every `reconcile_every_s`, one process of a deployment at a time."""

    def __init__(self, ctx: WorkerContext) -> None:
        self.ctx = ctx
        self.key = f"{ctx.config.cache.prefix}:reconcile:lock"
        self._unlock = ctx.vault.r.register_script(_UNLOCK)

    def start(self) -> None:
        """Run in a daemon thread."""
        threading.Thread(target=self._loop, name="tierq-reconciler", daemon=True).start()

    def run_once(self) -> Reconciled | None:
        """One pass if no other process is running one; None when one is."""
        token = uuid.uuid4().hex
        every = self.ctx.config.worker.reconcile_every_s
        if not self.ctx.vault.r.set(self.key, token, nx=True, px=int(max(every, 60) * 1000)):
            return None
        try:
            return reconcile(self.ctx)
        finally:
            self._unlock(keys=[self.key], args=[token])

    def _loop(self) -> None:
        every = self.ctx.config.worker.reconcile_every_s
        while True:
            time.sleep(every * random.uniform(0.8, 1.2))
            try:
                self.ctx.publisher.resend()  # this process's messages that met a broker error, first
            except BROKER_DOWN as exc:
                log.warning("reconciler: %d messages wait for the broker (%s); trying again in %.0f s",
                            self.ctx.publisher.unsent, type(exc).__name__, every)
            try:
                self.run_once()
            except Exception as exc:
                # The thread must outlive any one pass: an outage is retried next time, anything else logged.
                if is_transient(exc):
                    log.warning("reconciler: %s; trying again in %.0f s", type(exc).__name__, every)
                else:
                    log.exception("reconciler pass failed")
