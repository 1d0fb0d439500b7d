"""`tierq doctor`: is every part of a deployment reachable and ready, and if not, what to do about it.

Checks, in order: the settings and the TOML file, Redis, the broker (when it is not that Redis),
Postgres, the migrations, every configured provider, and a worker on every queue. A check that needs
a failed one is reported as skipped rather than failing a second time.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, cast

import redis
from amqp.exceptions import AMQPError
from kombu.connection import Connection
from kombu.exceptions import KombuError
from sqlalchemy import create_engine, pool
from sqlalchemy.exc import SQLAlchemyError

from migrations import current_revision, head_revision, known_revision
from models import stale
from producer.broker import make_sender
from tierq.broker import REDIS_SCHEMES, lengths_or_unknown, queue_lengths, refusal
from tierq.config import Config, ProviderConfig
from tierq.contract import CLASSIFY_QUEUE
from tierq.errors import ConfigError
from tierq.live import LiveMessages
from tierq.redact import masked_url, scrubbed, shown_broker_url, shown_redis_url
from tierq.settings import Settings, get_settings


class State(StrEnum):
    """The verdict of one check."""

    OK = "ok"
    PROBLEM = "problem"
    SKIPPED = "skipped"


@dataclass(frozen=True, slots=True)
class Check:
    """One check: what was looked at, what was found and, for a problem, how to fix it."""

    name: str
    state: State
    detail: str
    fix: str | None = None
    answers: bool = False  # a problem with a service that answers all the same: the checks that need it run

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready form."""
        return {"name": self.name, "state": self.state.value, "detail": self.detail, "fix": self.fix}


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0] if lines else type(exc).__name__


def check_redis(name: str, url: str, variable: str, timeout: float) -> Check:
    """PING the Redis server at `url`."""
    shown = shown_redis_url(url)
    client = redis.Redis.from_url(url, socket_connect_timeout=timeout, socket_timeout=timeout)
    try:
        client.ping()
        memory = client.info("memory")
    except redis.AuthenticationError as exc:
        return Check(name, State.PROBLEM, f"{shown} refused the login: {_first_line(exc)}",
                     f"put the right password in {variable} (redis://:PASSWORD@HOST:PORT/DB)")
    except redis.RedisError as exc:
        return Check(name, State.PROBLEM, f"{shown} does not answer: {_first_line(exc)}",
                     f"start Redis there, or set {variable} to a running server (redis://HOST:PORT/DB)")
    finally:
        client.close()
    used, limit, policy = int(memory.get("used_memory", 0)), int(memory.get("maxmemory", 0)), \
        str(memory.get("maxmemory_policy", "noeviction"))
    if limit and policy != "noeviction":
        # Redis would evict tierq's queued messages, live-message records, leases and claims with the cache.
        return Check(name, State.PROBLEM, f"{shown} answers PING, but evicts keys at maxmemory ({policy})",
                     "set maxmemory-policy noeviction (the cache bounds itself: [cache] max_entries, ttl_s)",
                     answers=True)
    if limit and used >= limit:
        return Check(name, State.PROBLEM, f"{shown} is full: {used} bytes used of maxmemory {limit}; writes refused",
                     "raise its maxmemory (redis-cli CONFIG SET maxmemory ...), or free memory: tierq cache clear")
    return Check(name, State.OK, f"{shown} answers PING")


def check_broker(url: str, timeout: float) -> Check:
    """Connect to a broker that is not Redis (RabbitMQ, ...)."""
    shown = shown_broker_url(url)
    conn: Any = cast(Any, Connection)(url, connect_timeout=timeout)  # kombu has no type hints
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout)
    except (KombuError, OSError, AMQPError, *conn.connection_errors) as exc:
        refused = refusal(exc)
        if refused is not None:
            return Check("broker", State.PROBLEM, f"{shown} {refused[0]}", refused[1])
        return Check("broker", State.PROBLEM, f"{shown} does not answer: {_first_line(exc)}",
                     "start the broker there, or set TIERQ_BROKER_URL to a running one (or unset it to use Redis)")
    finally:
        conn.release()
    return Check("broker", State.OK, f"{shown} accepts connections")


def check_database(url: str, timeout: float) -> list[Check]:
    """Connect to Postgres, then compare the database's migration revision with the code's."""
    shown = masked_url(url)
    engine = create_engine(url, poolclass=pool.NullPool, connect_args={"connect_timeout": max(1, round(timeout))})
    try:
        with engine.connect():
            pass
    except SQLAlchemyError as exc:
        message = scrubbed(_first_line(getattr(exc, "orig", None) or exc), url)
        if "database" in message and "does not exist" in message:
            fix = "create it with its tables: tierq db upgrade"
        elif "authentication" in message or "role" in message:
            fix = "put the right user and password in TIERQ_DATABASE_URL"
        else:
            fix = "start PostgreSQL there, or set TIERQ_DATABASE_URL to a running server"
        return [Check("postgres", State.PROBLEM, f"{shown}: {message}", fix),
                Check("migrations", State.SKIPPED, "needs Postgres")]
    finally:
        engine.dispose()
    head, current = head_revision(), current_revision(url)
    postgres = Check("postgres", State.OK, f"{shown} accepts connections")
    if current == head:
        return [postgres, Check("migrations", State.OK, f"database at head revision {head}")]
    if current is not None and not known_revision(current):
        return [postgres, Check("migrations", State.PROBLEM,
                                f"database at revision {current}, newer than this tierq knows (head {head})",
                                "install the tierq version that migrated it on this machine")]
    return [postgres, Check("migrations", State.PROBLEM,
                            f"database at revision {current or 'none (no tables)'}, this tierq needs {head}",
                            "run tierq db upgrade")]


def check_provider(settings: Settings, name: str, provider: ProviderConfig, timeout: float) -> Check:
    """GET the provider's /models with its key; the key is sent, never shown."""
    label = f"provider {name}"
    url = settings.provider_url(provider).rstrip("/") + "/models"
    headers: dict[str, str] = {}
    if provider.api_key_env:
        key = settings.api_key(provider.api_key_env)
        if key is None:
            return Check(label, State.PROBLEM, f"${provider.api_key_env} is not set",
                         f"export {provider.api_key_env}=<your key> (or put it in .env)")
        headers["Authorization"] = f"Bearer {key.get_secret_value()}"
    where = f"${provider.base_url_env} or base_url" if provider.base_url_env else "base_url"
    try:
        with urllib.request.urlopen(urllib.request.Request(url, headers=headers), timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        status = exc.code
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return Check(label, State.PROBLEM, f"{url} does not answer: {reason}",
                     f"start the provider, or correct {where} of [providers.{name}]")
    if status < 300:
        return Check(label, State.OK, f"{url} answers (HTTP {status})")
    if status in (401, 403):
        return Check(label, State.PROBLEM, f"{url} rejected the key in ${provider.api_key_env} (HTTP {status})"
                     if provider.api_key_env else f"{url} wants a key (HTTP {status})",
                     f"put a valid key in ${provider.api_key_env}" if provider.api_key_env
                     else f"add api_key_env to [providers.{name}] and export that variable")
    if status == 404:
        return Check(label, State.PROBLEM, f"{url} is not found (HTTP 404)",
                     f"check {where} of [providers.{name}]; OpenAI-compatible APIs usually end in /v1")
    return Check(
        label, State.PROBLEM, f"{url} answered HTTP {status}", "check the provider's status and its server log"
    )


def check_workers(config: Config, broker_url: str, timeout: float) -> list[Check]:
    """Ask every worker which queues it consumes; each queue needs at least one."""
    queues = [CLASSIFY_QUEUE, *config.tier_names]
    app = make_sender(config, broker_url)
    try:
        # Every reply, not inspect()'s dict by name: two workers under one name are two replies.
        replies = app.control.broadcast("active_queues", reply=True, timeout=timeout) or []
        infos = app.control.broadcast("tierq_info", reply=True, timeout=timeout) or []
        waiting = queue_lengths(broker_url, queues, timeout)
    except (KombuError, OSError, redis.RedisError) as exc:
        return [Check("workers", State.PROBLEM, f"could not ask the workers: {_first_line(exc)}",
                      "check the broker (see above)")]
    finally:
        app.close()
    consumers: dict[str, list[str]] = {}
    for reply in replies:
        for worker, active in reply.items():
            for queue in active if isinstance(active, list) else []:
                consumers.setdefault(queue["name"], []).append(worker)
    checks = []
    for queue in queues:
        names = sorted(consumers.get(queue, []))
        backlog = f"{waiting.get(queue, 0)} messages waiting"
        if names:
            shown = ", ".join(names[:3]) + (f" and {len(names) - 3} more" if len(names) > 3 else "")
            checks.append(Check(f"queue {queue}", State.OK, f"{len(names)} worker(s): {shown}; {backlog}"))
        else:
            checks.append(Check(f"queue {queue}", State.PROBLEM, f"no worker consumes it; {backlog}",
                                f"start one: celery -A workers worker -Q {queue} -n {queue}@%h"))
    return [*checks, check_worker_configs(config, infos), check_worker_names(replies)]


def check_worker_names(replies: list[dict[str, Any]]) -> Check:
    """Every worker has a name of its own: two under one name count as one here, in Flower and in `tierq
    status`, and one stopping makes the other look gone (Celery only warns in their logs)."""
    name = "worker names"
    seen: dict[str, int] = {}
    for reply in replies:
        for worker in reply:
            seen[worker] = seen.get(worker, 0) + 1
    if not seen:
        return Check(name, State.SKIPPED, "no worker answered")
    shared = sorted(f"{worker} ({n} workers)" for worker, n in seen.items() if n > 1)
    if shared:
        return Check(name, State.PROBLEM, f"{len(shared)} name(s) used by more than one worker: {', '.join(shared)}",
                     "give every worker its own name: -n hot2@%h for a second worker of queue hot on one host")
    return Check(name, State.OK, f"{len(seen)} worker(s), each with a name of its own")


def check_worker_configs(config: Config, infos: list[dict[str, Any]]) -> Check:
    """Every worker runs the configuration this command reads (a worker with another TOML would take
    messages it runs differently, or not at all)."""
    name = "worker config"
    # A list, not a dict by name: a worker with another TOML must not hide behind another of the same name.
    answers = [(worker, info) for reply in infos for worker, info in reply.items() if isinstance(info, dict)]
    if not answers:
        return Check(name, State.SKIPPED, "no worker answered")
    others = sorted(f"{worker} ({info.get('config')}, digest {info.get('digest')})"
                    for worker, info in answers if info.get("digest") != config.digest)
    if others:
        shown = "; ".join(others[:3]) + (f" and {len(others) - 3} more" if len(others) > 3 else "")
        return Check(name, State.PROBLEM, f"{len(others)} worker(s) run another configuration than {config.source} "
                     f"(digest {config.digest}): {shown}",
                     "start every worker and every tierq command with the same TOML (TIERQ_CONFIG)")
    return Check(name, State.OK, f"{len(answers)} worker(s) run this configuration (digest {config.digest})")


def check_stuck(settings: Settings, config: Config, timeout: float) -> Check:
    """Jobs that are not final, have not changed for `stuck_after_s` and whose message is not live."""
    engine = create_engine(settings.database_url, poolclass=pool.NullPool,
                           connect_args={"connect_timeout": max(1, round(timeout))})
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
    age = config.worker.stuck_after_s
    try:
        with engine.connect() as conn:
            groups = stale.lost(conn, LiveMessages(client), age,
                                lengths=lambda queues: lengths_or_unknown(settings.broker, queues, timeout))
    except (SQLAlchemyError, redis.RedisError) as exc:
        return Check("stuck jobs", State.PROBLEM, f"could not look: {_first_line(exc)}", "see the checks above")
    finally:
        engine.dispose()
        client.close()
    jobs = sum(len(g.ids) for g in groups)
    if not jobs:
        return Check("stuck jobs", State.OK, f"none (no job unchanged for {age:.0f} s without a live message)")
    batches = sorted({str(g.batch_id) for g in groups})
    return Check("stuck jobs", State.PROBLEM,
                 f"{jobs} job(s) unchanged for over {age:.0f} s with no live message, in batch(es) "
                 f"{', '.join(batches[:3])}" + (" ..." if len(batches) > 3 else ""),
                 f"the workers' reconciler publishes them again every {config.worker.reconcile_every_s:.0f} s; "
                 "`tierq recover --older-than 0m` does it now")


def _load(settings: Settings) -> tuple[Check, Config | None]:
    try:
        config = settings.load_config()
    except ConfigError as exc:
        return Check("config", State.PROBLEM, str(exc), "fix the file, or point TIERQ_CONFIG at a valid one"), None
    tiers = ", ".join(config.tier_names)
    return Check("config", State.OK, f"{settings.config}: tiers {tiers}; {len(config.providers)} provider(s)"), config


def _usable(check: Check) -> bool:
    # An evicting Redis serves all the same: the stuck jobs and the workers are worth seeing beside it.
    return check.state is State.OK or check.answers


def run_checks(timeout: float = 3.0) -> list[Check]:
    """Every check, in order; later checks are skipped when what they need is down."""
    try:
        settings = get_settings()
    except ConfigError as exc:
        return [Check("settings", State.PROBLEM, str(exc), "fix the variables named above")]
    config_check, config = _load(settings)
    checks = [config_check, check_redis("redis", settings.redis_url, "TIERQ_REDIS_URL", timeout)]
    broker = checks[-1]
    if settings.broker != settings.redis_url:
        if settings.broker.startswith(REDIS_SCHEMES):
            broker = check_redis("broker", settings.broker, "TIERQ_BROKER_URL", timeout)
        else:
            broker = check_broker(settings.broker, timeout)
        checks.append(broker)
    checks += check_database(settings.database_url, timeout)
    if config is None:
        return [*checks, Check("providers", State.SKIPPED, "needs a valid config"),
                Check("workers", State.SKIPPED, "needs a valid config")]
    checks += [check_provider(settings, name, provider, timeout) for name, provider in config.providers.items()]
    if _usable(checks[1]) and all(c.state is State.OK for c in checks if c.name in ("postgres", "migrations")):
        stuck = check_stuck(settings, config, timeout)
    else:
        stuck = Check("stuck jobs", State.SKIPPED, "needs Redis and a migrated Postgres")
    if not _usable(broker):
        return [*checks, stuck, Check("workers", State.SKIPPED, "needs the broker")]
    return [*checks, stuck, *check_workers(config, settings.broker, timeout)]


def render(checks: list[Check]) -> list[str]:
    """Human-readable lines: one per check, and a fix under each problem."""
    width = max(len(check.name) for check in checks)
    lines = []
    for check in checks:
        mark = "PROBLEM" if check.state is State.PROBLEM else check.state.value
        lines.append(f"{mark:<8} {check.name:<{width}}  {check.detail}")
        if check.fix:
            lines.append(f"{'':<8} {'':<{width}}  fix: {check.fix}")
    problems = sum(check.state is State.PROBLEM for check in checks)
    lines.append(f"{problems} problem(s) found" if problems else "everything is ready")
    return lines
