"""Thin Celery tasks: decode ids, call the plain functions, map database and broker outages to retries."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from celery import Task
from celery.exceptions import Reject
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from sqlalchemy.exc import DBAPIError, OperationalError

from tierq.queues import CLASSIFY_TASK, FOLLOW_TASK, TIER_TASK
from workers.celery_app import app
from workers.classify import classify_chunk
from workers.context import get_context
from workers.follow import check_followers
from workers.process import process_chunk

# Outages worth waiting for: the task is retried under the same id, so the jobs it owns stay its own.
TRANSIENT = (OperationalError, BrokerError, ConnectionError, RedisConnectionError, RedisTimeoutError)
RETRY = {"max_retries": 30, "retry_backoff": 2, "retry_backoff_max": 60, "retry_jitter": True}


def _is_transient(exc: BaseException) -> bool:
    return isinstance(exc, TRANSIENT) or (isinstance(exc, DBAPIError) and exc.connection_invalidated)


def _retry(task: Task, exc: Exception) -> Exception:
    """Retry `task` under its id (Celery raises the Retry); when the broker cannot take the retry either,
    put the message back instead. Celery would drop it (Reject without requeue), and the jobs it owns, or
    has committed as handed off but not yet sent, would then wait forever; run again, it re-sends them."""
    try:
        retry: Exception = task.retry(exc=exc, countdown=min(60, 2 ** task.request.retries))
    except Reject as rejected:
        requeue: Exception = Reject(rejected.reason, requeue=True)
        return requeue
    return retry


def _run(task: Task, work: Callable[[], Any]) -> dict[str, Any]:
    """Run a task's plain function; outages become retries, anything else fails the task as it is."""
    try:
        summary = work()
    except Exception as exc:
        if _is_transient(exc):
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
