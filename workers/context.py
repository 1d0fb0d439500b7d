"""Everything a worker process needs, built once per process from the settings and the TOML file."""

from __future__ import annotations

import threading
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import redis
from celery import Celery
from sqlalchemy import Engine

from models import make_engine
from tierq.cache import CacheStore, Embedder
from tierq.cache.factory import make_cache, make_embedder
from tierq.config import Config
from tierq.queues import CLASSIFY_QUEUE, CLASSIFY_TASK, FOLLOW_TASK, TIER_TASK
from tierq.settings import Settings, get_settings
from tierq.vault import TextVault
from workers.budget import BudgetGate
from workers.llm import ModelClient
from workers.loop import LoopThread
from workers.routing import Router
from workers.store import Handoff


@dataclass
class WorkerContext:
    """Settings, configuration, database, model client and event loop of one worker process."""

    settings: Settings
    config: Config
    app: Celery

    @cached_property
    def engine(self) -> Engine:
        """The process's connection pool (threads of the pool share it)."""
        return make_engine(self.settings.database_url, pool_size=20)

    @cached_property
    def client(self) -> ModelClient:
        """Model clients, one per provider."""
        return ModelClient(self.settings, self.config)

    @cached_property
    def loop(self) -> LoopThread:
        """The event loop that runs every model call of this process."""
        return LoopThread()

    @cached_property
    def embedder(self) -> Embedder:
        """The cache's embedder (the semantic layer compares its vectors)."""
        return make_embedder(self.settings, self.config)

    @cached_property
    def cache(self) -> CacheStore:
        """The shared Redis cache."""
        return make_cache(self.settings, self.config, self.embedder)

    @cached_property
    def vault(self) -> TextVault:
        """Texts of private batches (the Redis at TIERQ_REDIS_URL)."""
        return TextVault(redis.Redis.from_url(self.settings.redis_url, socket_timeout=10, retry_on_timeout=True))

    @cached_property
    def budget(self) -> BudgetGate:
        """Reservations against batch budgets."""
        return BudgetGate(self.engine)

    @cached_property
    def router(self) -> Router:
        """The routing rules."""
        return Router(self.config)

    def send(self, handoffs: Sequence[Handoff]) -> None:
        """Publish one tier task per hand-off, under the message id the jobs were assigned."""
        for handoff in handoffs:
            if handoff.job_ids:
                self.app.send_task(
                    TIER_TASK,
                    args=[handoff.tier, handoff.job_ids],
                    kwargs={"batch": str(handoff.batch_id) if handoff.batch_id else None},
                    task_id=str(handoff.message_id),
                    queue=handoff.tier,
                )


    def send_classify(self, job_ids: Sequence[int], batch_id: uuid.UUID | None, message_id: uuid.UUID) -> None:
        """Publish a classify message for jobs that were set pending under `message_id`."""
        self.app.send_task(CLASSIFY_TASK, args=[list(job_ids)], kwargs={"batch": str(batch_id) if batch_id else None},
                           task_id=str(message_id), queue=CLASSIFY_QUEUE)

    def send_follow(self, job_ids: Sequence[int], batch_id: uuid.UUID | None, checks: int = 0) -> None:
        """Check on waiting jobs after one lease period."""
        self.app.send_task(FOLLOW_TASK, args=[list(job_ids)], kwargs={"checks": checks,
                           "batch": str(batch_id) if batch_id else None},
                           countdown=self.config.cache.lease_s, queue=CLASSIFY_QUEUE)


_lock = threading.Lock()
_context: WorkerContext | None = None


def get_context(app: Celery) -> WorkerContext:
    """The process's context; the configuration is checked (API keys included) on first use."""
    global _context
    with _lock:
        if _context is None:
            settings = get_settings()
            _context = WorkerContext(settings, settings.load_config(require_keys=True), app)
        return _context
