"""A worker's start-up check: can it serve the queues it was asked to consume? If not, it must not start.

A worker that consumed messages it cannot run would fail them one by one and leave their jobs behind,
so everything a task needs is checked before the first message is taken: the queues exist in its TOML,
the API keys of the providers those queues call are set, Postgres answers and is migrated, Redis
answers. Then the process's context is made (its connection pool sized from the concurrency, its model
clients and request templates built) and the reconciler starts.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

import redis
from celery import Celery, signals
from sqlalchemy import text
from sqlalchemy.exc import SQLAlchemyError

from migrations import head_revision, known_revision
from tierq import parent
from tierq.broker import check_login
from tierq.config import check_keys, providers_for
from tierq.contract import CLASSIFY_QUEUE
from tierq.errors import ConfigError, TierqError, Unavailable
from tierq.presence import EVICTION_FIX, Presence, eviction_policy
from tierq.redact import masked_url, scrubbed, shown_broker_url, shown_redis_url
from tierq.settings import apply_log_level, get_settings
from workers.context import WorkerContext, get_context
from workers.reconcile import Reconciler

log = logging.getLogger(__name__)
WARM_TIMEOUT_S = 60.0  # making the model clients: no network, tens of milliseconds each


class StartupError(TierqError):
    """The worker cannot serve its queues; the message says why and how to fix it."""


def check_queues(queues: Sequence[str], known: Sequence[str], config_path: str) -> None:
    """Refuse queues the TOML does not define: their messages would fail here, one by one."""
    unknown = [q for q in queues if q not in known]
    if unknown:
        raise ConfigError(
            f"{config_path} defines no queue {', '.join(repr(q) for q in unknown)} (its queues: {', '.join(known)}); "
            "start the worker with the deployment's TOML (TIERQ_CONFIG) or -Q with queues it defines")


def check_database(ctx: WorkerContext) -> None:
    """Postgres answers and is at the migration this code needs."""
    shown = masked_url(ctx.settings.database_url)
    try:
        with ctx.engine.connect() as conn:
            current = conn.execute(text("SELECT version_num FROM alembic_version")).scalar()
    except SQLAlchemyError as exc:
        first = scrubbed(str(getattr(exc, "orig", None) or exc).strip().splitlines()[0], ctx.settings.database_url)
        if "alembic_version" in first:
            raise StartupError(f"{shown} has no tierq tables; run: tierq db upgrade") from None
        raise Unavailable(f"cannot reach Postgres at {shown} ({first}); start it or fix TIERQ_DATABASE_URL") from None
    head = head_revision()
    if current is not None and current != head and not known_revision(current):
        # `tierq db upgrade` would not help: a newer tierq migrated it (an older worker restarted mid-upgrade).
        raise StartupError(f"{shown} is at migration {current}, newer than this worker knows (its newest is {head}); "
                           "run the worker from the tierq version that migrated it")
    if current != head:
        raise StartupError(f"{shown} is at migration {current}, this worker needs {head}; run: tierq db upgrade")


def check_redis(ctx: WorkerContext) -> None:
    """The Redis of the cache, the rate limits and the live-message registry answers."""
    shown = shown_redis_url(ctx.settings.redis_url)
    try:
        ctx.vault.r.ping()
        policy = eviction_policy(ctx.vault.r)
    except redis.RedisError as exc:
        raise Unavailable(f"cannot reach Redis at {shown} ({exc}); start it or fix TIERQ_REDIS_URL") from None
    if policy is not None:  # it can serve, but loses work a restart would lose: the reconciler brings it back
        log.warning("Redis at %s evicts keys at maxmemory (%s): it drops queued messages and the records of live "
                    "messages and workers, so jobs wait for the reconciler; %s", shown, policy, EVICTION_FIX)


def check_broker(broker_url: str) -> None:
    """A RabbitMQ broker accepts the login (one that is down is left to Celery, which waits for it)."""
    refused = check_login(broker_url)
    if refused is not None:
        raise StartupError(f"the broker at {shown_broker_url(broker_url)} {refused[0]}; {refused[1]}")


def prepare(app: Celery, queues: Sequence[str], concurrency: int, name: str = "worker") -> WorkerContext:
    """Check that this worker can serve `queues`, then make its context, start its reconciler and
    announce it (`name`, its queues and its configuration) to the producers."""
    settings = get_settings()
    apply_log_level(settings.log_level)
    parent.follow()  # a worker a run started (tests, demo, benchmarks) does not outlive it
    config = settings.load_config()
    check_queues(queues, [CLASSIFY_QUEUE, *config.tier_names], str(settings.config))
    providers = providers_for(config, queues)
    check_keys(config, settings.env, providers)
    check_broker(settings.broker)
    ctx = get_context(app, concurrency)
    check_database(ctx)
    check_redis(ctx)
    ctx.loop.run(ctx.client.warm(providers), timeout=WARM_TIMEOUT_S)
    Reconciler(ctx).start()
    presence = Presence(ctx.vault.r)
    try:
        presence.started(name, queues)
        withdraw = presence.keep_announcing(name, queues, config.digest)
    except redis.RedisError as exc:  # not an outage (those are waited out): a replica, an ACL without SET
        shown = shown_redis_url(ctx.settings.redis_url)
        raise StartupError(f"Redis at {shown} refuses writes ({type(exc).__name__}: {exc}); point TIERQ_REDIS_URL "
                           "at a primary this user may write to") from None
    # On SIGTERM or Ctrl-C the worker takes no new message: from then on `tierq status` should say that its
    # queues may have no worker, not only once its last task has ended.
    signals.worker_shutting_down.connect(lambda **_: withdraw(), weak=False)
    return ctx
