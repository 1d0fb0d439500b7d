"""Everything a worker process needs, built once per process from the settings and the TOML file."""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from dataclasses import dataclass
from functools import cached_property

import redis
from celery import Celery
from sqlalchemy import Engine

from models import make_engine
from models.lifecycle import Outbox
from tierq.broker import lengths_or_unknown
from tierq.cache import CacheStore, Embedder
from tierq.cache.factory import make_cache, make_embedder
from tierq.config import Config
from tierq.contract import Message
from tierq.live import LiveMessages
from tierq.publish import Publisher
from tierq.queues import longest_countdown_s, visibility_s
from tierq.settings import Settings, get_settings
from tierq.vault import TextVault
from workers.budget import BudgetGate
from workers.gates import Gates
from workers.learned import LearnedRoutes
from workers.leases import LeaseKeeper
from workers.llm import ModelClient
from workers.loop import LoopThread
from workers.routing import Router
from workers.validators import Checks


@dataclass
class WorkerContext:
    """Settings, configuration, database, model client and event loop of one worker process."""

    settings: Settings
    config: Config
    app: Celery
    concurrency: int = 32

    @cached_property
    def engine(self) -> Engine:
        """The process's connection pool: one connection per thread that may hold one at a time (the
        pool's threads, the budget threads, the lease keeper and the reconciler), and a small overflow."""
        return make_engine(self.settings.database_url, pool_size=pool_size(self.concurrency), max_overflow=OVERFLOW,
                           name=f"tierq worker {os.getpid()}")

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
    def checks(self) -> Checks:
        """The answer validators, compiled once per process."""
        return Checks(self.config)

    @cached_property
    def router(self) -> Router:
        """The routing rules."""
        return Router(self.config)

    @cached_property
    def learned(self) -> LearnedRoutes:
        """The active learned routers, refreshed every `[router] poll_s`."""
        return LearnedRoutes(self.engine, self.config)

    @cached_property
    def live(self) -> LiveMessages:
        """The registry of live task messages (the Redis at TIERQ_REDIS_URL)."""
        return LiveMessages(self.vault.r)

    @cached_property
    def publisher(self) -> Publisher:
        """Sends task messages; call it only after the transaction that assigned their jobs committed."""
        return Publisher(self.app, self.live)

    @cached_property
    def leases(self) -> LeaseKeeper:
        """Renews the leases of the jobs this process is answering."""
        return LeaseKeeper(self.engine, self.config.worker.lease_s)

    @cached_property
    def gates(self) -> Gates:
        """Breakers, rate limits and budgets, which a call passes or is held by."""
        return Gates(self.settings.redis_url, self.config, self.budget, self.horizon_s)

    @property
    def horizon_s(self) -> float:
        """The longest a task waits in-process for a rate-limit slot or budget: a small share of the
        visibility timeout, so a message is never held until the broker hands it out again."""
        return min(self.config.worker.max_wait_s, visibility_s(self.config, self.settings.visibility_timeout_s) / 4)

    @property
    def longest_countdown_s(self) -> float:
        """The longest delay a message may carry (see tierq.queues.longest_countdown_s)."""
        return longest_countdown_s(self.config, self.settings.visibility_timeout_s)

    def queue_lengths(self, queues: Sequence[str]) -> dict[str, int]:
        """Messages waiting in each of `queues` at the broker (tierq.broker.UNKNOWN while it does not answer)."""
        return lengths_or_unknown(self.settings.broker, queues, timeout=10.0)

    def publish(self, outbox: Outbox | Sequence[Message]) -> None:
        """Send the messages of a committed transaction."""
        self.publisher.publish(outbox.messages if isinstance(outbox, Outbox) else outbox)


OVERFLOW = 2


def pool_size(concurrency: int) -> int:
    """Postgres connections one worker process may open: its task threads, its budget threads, the lease
    keeper and the reconciler (docs/deployment.md sizes max_connections from it)."""
    return concurrency + BudgetGate.THREADS + 2


_lock = threading.Lock()
_context: WorkerContext | None = None


def get_context(app: Celery, concurrency: int | None = None) -> WorkerContext:
    """The process's context, made on first use (the worker's start-up check makes it with its concurrency)."""
    global _context
    with _lock:
        if _context is None:
            settings = get_settings()
            config = settings.load_config()
            _context = WorkerContext(settings, config, app, concurrency or config.worker.threads)
        return _context
