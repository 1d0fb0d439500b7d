"""Thin Celery tasks: decode ids, call the plain functions, map database and broker outages to retries."""

from __future__ import annotations

import logging
import sys
import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from celery import Task
from celery.exceptions import Reject
from redis.exceptions import RedisError

from tierq.contract import CLASSIFY_TASK, FOLLOW_TASK, TIER_TASK
from tierq.errors import ConfigError
from tierq.presence import Presence
from workers.celery_app import app
from workers.classify import classify_chunk
from workers.context import get_context
from workers.dbretry import is_transient
from workers.follow import check_followers
from workers.process import process_chunk

log = logging.getLogger(__name__)
RETRY = {"max_retries": 30, "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True}
CONFIG_RETRY_S = 30  # a worker whose configuration cannot run a message gives it back for this long


def _retry(task: Task, exc: Exception, countdown: float | None = None) -> Exception:
    """Retry `task` under its id (Celery raises the Retry); when the broker cannot take the retry either,
    put the message back instead. Celery would drop it (Reject without requeue), and the jobs it owns, or
    has committed as handed off but not yet sent, would then wait forever; run again, it re-sends them."""
    try:
        wait = countdown if countdown is not None else min(60, 2 ** task.request.retries)
        # A give-back (countdown) has no limit: Celery reads max_retries=None as "the task's own" (30 rounds,
        # a quarter of an hour), after which the jobs failed for a lost message, the real reason unsaid.
        retry: Exception = task.retry(exc=exc, countdown=wait,
                                      max_retries=sys.maxsize if countdown else task.max_retries)
    except Reject as rejected:
        requeue: Exception = Reject(rejected.reason, requeue=True)
        return requeue
    return retry


def _note_refusal(task: Task, exc: ConfigError) -> None:
    """Tell `tierq status` why the message's jobs wait, and keep the message live, due again when it comes
    back: the reconciler would otherwise take the given-back message for a lost one, publish it again and,
    after `max_recoveries` such rounds, fail its jobs."""
    ctx = get_context(app)
    queue = (task.request.delivery_info or {}).get("routing_key") or task.name
    batch = (task.request.kwargs or {}).get("batch")
    try:
        message = uuid.UUID(task.request.id)
        ctx.live.add([(message, CONFIG_RETRY_S)])  # first: whoever reads the note finds the message due later
        ctx.live.sent([message])
        Presence(ctx.vault.r).refuse(task.request.hostname or "worker", queue, str(exc), ctx.config.digest, batch)
    except RedisError as error:  # the message still goes back; only the note is missing
        log.warning("could not note why %s %s was given back: %s", task.name, task.request.id, error)


def _run(task: Task, work: Callable[[], Any]) -> dict[str, Any]:
    """Run a task's plain function; outages become retries, a configuration this worker cannot run the
    message with gives it back (for a worker that can), anything else fails the task as it is (the
    reconciler then publishes its jobs' message again, a bounded number of times)."""
    try:
        summary = work()
    except ConfigError as exc:
        log.error("cannot run %s %s here: %s; giving it back for %d s", task.name, task.request.id, exc,
                  CONFIG_RETRY_S)
        _note_refusal(task, exc)
        raise _retry(task, exc, CONFIG_RETRY_S) from exc
    except Exception as exc:
        if is_transient(exc):
            raise _retry(task, exc) from exc
        raise
    return asdict(summary)


@app.task(name=CLASSIFY_TASK, bind=True, **RETRY)
def classify(self: Task, job_ids: list[int], batch: str | None = None) -> dict[str, Any]:
    """Route a chunk of jobs to their starting tiers."""
    return _run(self, lambda: classify_chunk(get_context(app), job_ids, uuid.UUID(self.request.id)))


@app.task(name=TIER_TASK, bind=True, **RETRY)
def run_tier(self: Task, tier: str, job_ids: list[int], batch: str | None = None) -> dict[str, Any]:
    """Answer a chunk of jobs at one tier; failures escalate to the next tier's queue."""
    return _run(self, lambda: process_chunk(get_context(app), tier, job_ids, uuid.UUID(self.request.id)))


@app.task(name=FOLLOW_TASK, bind=True, **RETRY)
def follow(self: Task, job_ids: list[int], checks: int = 0, batch: str | None = None) -> dict[str, Any]:
    """Check on jobs waiting for another job's answer to the same question."""
    return _run(self, lambda: check_followers(get_context(app), job_ids, checks))
