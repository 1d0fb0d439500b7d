"""Fixtures that start or reuse the real services: Postgres, Redis, the simulated provider, Celery workers.

Each test session gets a fresh database migrated with Alembic and a flushed Redis database; each test
starts from empty tables and a simulator with default behaviour. Sessions running at once each claim
their own Redis databases. On a laptop without a service the
tests that need it skip; in CI (CI=true) they fail instead.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import tempfile
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from fakellm.testing import SimServer, running_server
from models import make_engine
from models.db import libpq_url
from models.enums import JobStatus
from producer import claims, localstack
from producer.api import Tierq
from producer.services import ServiceUnavailable
from producer.status import BatchStatus
from tierq.config import Config, load_config
from tierq.queues import queue_names
from tierq.settings import Settings
from workers.context import WorkerContext

ROOT = Path(__file__).resolve().parent.parent
SHIPPED_SIM_CONFIG = ROOT / "tierq" / "configs" / "sim.toml"


def _test_config() -> Path:
    """The shipped sim.toml with audits off: most tests count calls exactly, and an audit is one more call.
    The audit tests (tests/workers/test_audits.py) turn them on in configs of their own.

    Its workers run 12 task threads rather than 32 (600 calls open each, more than any test needs): a worker's
    Postgres pool is sized from its threads (workers.context.pool_size) and keeps what it opened, and three
    sessions, each with its own worker and a test's two more, must fit in Postgres's 100 connections."""
    path = Path(tempfile.gettempdir()) / f"tierq-test-sim-{os.getpid()}.toml"
    path.write_text(SHIPPED_SIM_CONFIG.read_text() + "\n[quality]\naudit_rate = 0\n\n[worker]\nthreads = 12\n")
    return path


SIM_CONFIG = _test_config()
POSTGRES_URL = os.environ.get("TIERQ_TEST_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
REDIS_SERVER = os.environ.get("TIERQ_TEST_REDIS", "redis://127.0.0.1:6379")
DBS_PER_SESSION = 5  # the broker and cache database, and four spare ones for tests that need their own
QUEUES = ",".join(queue_names(load_config(SIM_CONFIG)))  # a worker serving everything the session's TOML has
os.environ.setdefault("TIERQ_CONFIG", str(SIM_CONFIG))


def _unavailable(what: str, exc: BaseException) -> None:
    message = f"{what} is not reachable ({type(exc).__name__}: {exc})"
    if os.environ.get("CI"):
        pytest.fail(message + "; CI must start it (.ci/run)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def database_url() -> Iterator[str]:
    """A fresh database for this session, migrated to head with Alembic, dropped at the end."""
    with ExitStack() as exits:
        try:
            url = exits.enter_context(localstack.throwaway_database(POSTGRES_URL, "tierq_test"))
        except ServiceUnavailable as exc:
            _unavailable("PostgreSQL", exc)
        yield url


@dataclass(frozen=True)
class RedisDbs:
    """The Redis databases this test session holds: `url(0)` is the broker and cache, 1-4 are spare."""

    dbs: tuple[int, ...]

    def url(self, index: int = 0) -> str:
        """URL of database `index` of this session."""
        assert 0 <= index < DBS_PER_SESSION
        return f"{REDIS_SERVER}/{self.dbs[index]}"


# 1-12 first: the demo's (15) and the benchmarks' (13, 14) only when a third session needs them.
CANDIDATE_DBS = range(1, 16)
SESSIONS_AT_MOST = 2  # what `-n auto` (make test) runs where they fit
CONNECTIONS_PER_SESSION = 40  # Postgres connections a session may hold at once (measured: 23-27 at its peak)
PLAN = "TIERQ_TEST_SESSION_DBS"  # the databases `-n auto` claimed, per session: "1,2,3,4,5;6,7,8,9,10"


def _free_connections() -> int | None:
    """Connections the Postgres of the tests can still take (None when it does not answer: the sessions say so)."""
    try:
        with psycopg.connect(libpq_url(POSTGRES_URL), connect_timeout=3, autocommit=True) as conn:
            row = conn.execute("SELECT current_setting('max_connections')::int"
                               " - current_setting('superuser_reserved_connections')::int"
                               " - (SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'client backend')"
                               ).fetchone()
    except psycopg.Error:
        return None
    return int(row[0]) if row else None


def pytest_xdist_auto_num_workers(config: pytest.Config) -> int:
    """How many sessions `-n auto` runs: up to SESSIONS_AT_MOST, as many as the free Redis databases and
    Postgres connections allow; 0 (this process alone) when that is one.

    The databases are claimed here, by this process, before any session starts, and handed to the sessions
    (their processes are this one's children, so the claims count as theirs): two runs started at the same
    moment cannot both count on the same free ones. Postgres connections are only counted, so runs started
    at once can still ask for more than it has: CONNECTIONS_PER_SESSION is what one session needs at most."""
    client = claims.registry(REDIS_SERVER)
    config.add_cleanup(client.close)
    try:
        held, _ = claims.claim_free(client, CANDIDATE_DBS, SESSIONS_AT_MOST * DBS_PER_SESSION, "a tierq test run")
    except redis.exceptions.RedisError:
        return 0  # one session, whose fixtures say what is missing
    free = _free_connections()
    sessions = len(held) // DBS_PER_SESSION
    if free is not None:
        sessions = min(sessions, free // CONNECTIONS_PER_SESSION)
    keep = sessions * DBS_PER_SESSION
    for db, value in held[keep:]:
        claims.release(client, db, value)
    kept = held[:keep]

    def release() -> None:
        for db, value in kept:
            claims.release(client, db, value)

    config.add_cleanup(release)
    if kept:
        dbs = [str(db) for db, _ in kept]
        os.environ[PLAN] = ";".join(",".join(dbs[i:i + DBS_PER_SESSION]) for i in range(0, keep, DBS_PER_SESSION))
    if sessions < SESSIONS_AT_MOST:
        short = (f"{len(held)} free Redis databases, {DBS_PER_SESSION} a session"
                 if len(held) < SESSIONS_AT_MOST * DBS_PER_SESSION
                 else f"{free} free Postgres connections, {CONNECTIONS_PER_SESSION} a session")
        print(f"tierq tests: one session instead of {SESSIONS_AT_MOST}: other runs are using the services "
              f"(only {short})")
    return sessions if sessions > 1 else 0


def _planned_dbs() -> list[int] | None:
    """This session's share of the databases `-n auto` claimed (None when it claimed none)."""
    plan = os.environ.get(PLAN)
    if not plan:
        return None
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0")
    shares = plan.split(";")
    index = int(worker.removeprefix("gw"))
    return [int(db) for db in shares[index].split(",")] if index < len(shares) else None


@pytest.fixture(scope="session")
def redis_dbs() -> Iterator[RedisDbs]:
    """This session's Redis databases, claimed (producer/claims.py: sessions running at once, the demo and
    the benchmarks never share one), flushed at the start and released at the end."""
    planned = _planned_dbs()
    try:
        with ExitStack() as held:
            if planned is None:
                dbs = held.enter_context(claims.claimed_any(REDIS_SERVER, DBS_PER_SESSION, CANDIDATE_DBS,
                                                            "a tierq test session"))
            else:  # claimed for this session by the run (pytest_xdist_auto_num_workers); checked again here
                urls = [held.enter_context(claims.claimed(f"{REDIS_SERVER}/{db}", "a tierq test session"))
                        for db in planned]
                dbs = [claims.database_of(url) for url in urls]
            for db in dbs:
                redis.Redis.from_url(f"{REDIS_SERVER}/{db}").flushdb()
            yield RedisDbs(tuple(dbs))
    except redis.exceptions.ConnectionError as exc:
        _unavailable("Redis", exc)
    except claims.DatabaseInUse as exc:
        pytest.fail(f"{exc}; wait for a run to finish, or run this one on a Redis of its own "
                    "(TIERQ_TEST_REDIS=redis://HOST:PORT)")


@pytest.fixture(scope="session")
def redis_url(redis_dbs: RedisDbs) -> str:
    """The session's broker and cache database."""
    return redis_dbs.url(0)


@pytest.fixture(scope="session")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[SimServer]:
    """The simulated provider as a real HTTP server."""
    workdir = tmp_path_factory.mktemp("sim")
    with running_server(SIM_CONFIG, stderr_path=workdir / "stderr") as server:
        yield server


@dataclass
class Stack:
    """A running tierq deployment: settings, configuration, simulator and worker processes."""

    dbs: RedisDbs
    settings: Settings
    config: Config
    sim: SimServer
    env: dict[str, str]
    engine: Engine

    def client(self) -> Tierq:
        """A producer API client for this deployment."""
        return Tierq(self.settings, self.config)

    def wait(self, tq: Tierq, batch_id: uuid.UUID, timeout: float = 90) -> BatchStatus:
        """Wait for a batch to finish; fail with its counts when it does not."""
        status = tq.wait(batch_id, timeout=timeout, poll_s=0.2)
        assert status.done, f"batch not done after {timeout} s: {status.as_dict()}"
        return status

    def simulate(self, behaviour: dict[str, Any]) -> None:
        """Replace the simulator's behaviour (the [simulator] table) and zero its counters."""
        self.sim.configure(behaviour)

    def sim_stats(self) -> dict[str, Any]:
        """The simulator's counters and the list of billed calls."""
        return self.sim.stats()


def start_worker(
    env: dict[str, str], log_path: Path, queues: str = QUEUES, name: str = "w", loglevel: str = "INFO",
    args: tuple[str, ...] = (),
) -> subprocess.Popen[bytes]:
    """Start `celery -A workers worker` for `queues` (and `args`) and wait until it says it is ready."""
    try:
        worker = localstack.start_worker(env, log_path, queues, name=name, loglevel=loglevel, args=args, cwd=ROOT)
    except localstack.WorkerDidNotStart as exc:
        pytest.fail(str(exc))
    return worker.proc


def stop_worker(proc: subprocess.Popen[bytes]) -> None:
    """Warm shutdown, then kill if it hangs."""
    localstack.stop_worker(proc)


@pytest.fixture(scope="session")
def stack_env(database_url: str, redis_url: str, sim: SimServer) -> dict[str, str]:
    """Environment of every tierq process of the session (this process's, TIERQ_ variables too)."""
    return localstack.service_env(database_url, redis_url, SIM_CONFIG, sim.base_url, inherit=os.environ,
                                  pythonpath=ROOT)


@pytest.fixture(scope="session")
def stack(
    stack_env: dict[str, str], sim: SimServer, redis_dbs: RedisDbs, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    """Simulator plus one worker process serving every queue, for the whole session."""
    env = stack_env
    settings = Settings(redis_url=env["TIERQ_REDIS_URL"], database_url=env["TIERQ_DATABASE_URL"], config=SIM_CONFIG)
    engine = make_engine(settings.database_url)
    proc = start_worker(env, tmp_path_factory.mktemp("worker") / "worker.log")
    try:
        yield Stack(redis_dbs, settings, load_config(SIM_CONFIG), sim, env, engine)
    finally:
        stop_worker(proc)
        engine.dispose()


@pytest.fixture()
def clean(stack: Stack) -> Stack:
    """Empty tables and a well-behaved simulator (no latency, no failures) for one test."""
    with stack.engine.begin() as conn:
        conn.execute(text("TRUNCATE routers, labels, calls, jobs, batches, provider_batches"))
    cache = redis.Redis.from_url(stack.settings.redis_url)
    # The cache, and the vault's texts (`tierq.vault`: a test that leaves an answer there must not be taken
    # for another test's leak).
    stale = [key for prefix in (stack.config.cache.prefix, "tq:v")
             for key in cache.scan_iter(match=f"{prefix}:*", count=1000)]
    if stale:
        cache.delete(*stale)
    cache.delete("tq:unstarted", "tq:refused")  # workers' notes of why they refused (tierq.presence)
    cache.close()
    stack.simulate({"latency_ms": 0})
    return stack


def insert_job(
    stack: Stack, prompt: str, *, status: str, tier: str | None, handoff: uuid.UUID, age_s: int = 0,
    params: dict[str, Any] | None = None,
) -> int:
    """A job written straight into Postgres, with no message published for it (as if it was lost), and
    with whatever `params` a test likes (submit would have checked them)."""
    batch = uuid.uuid4()
    with stack.engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                          "VALUES (:id, 't', 'default', '{}', 1, 0, false)"), {"id": batch})
        return int(conn.execute(
            text("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, prompt_chars, "
                 "status, tier, start_tier, handoff, attempts, escalations, updated_at, finished_at) VALUES (:b, 1, "
                 "'j', 't', 'default', CAST(:m AS jsonb), CAST(:p AS jsonb), 10, :status, :tier, :tier, :h, 0, 0, "
                 "now() - make_interval(secs => :age), CASE WHEN :final THEN now() END) RETURNING id"),
            {"b": batch, "m": json.dumps([{"role": "user", "content": prompt}]), "status": status, "tier": tier,
             "h": handoff, "age": age_s, "p": json.dumps(params or {}), "final": status in JobStatus.final()},
        ).scalar_one())


def age_holds(stack: Stack, seconds: float, batch: uuid.UUID | None = None) -> None:
    """Move every running hold clock (of the batch's jobs, or of all) `seconds` into the past: as if the
    jobs had been held that long for what holds them now."""
    with stack.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET hold_clocks = (SELECT jsonb_object_agg(key, value::text::float - :s) "
                          "FROM jsonb_each(hold_clocks)) WHERE hold_clocks <> '{}' "
                          "AND (CAST(:b AS uuid) IS NULL OR batch_id = :b)"), {"s": seconds, "b": batch})


@pytest.fixture()
def worker_ctx(clean: Stack, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[..., WorkerContext]]:
    """Make worker contexts whose tasks' plain functions run in this process, against the real database,
    Redis and simulator; their messages go to a spare Redis database no worker reads, so a test can look
    at what was published. `make(**worker)` overrides [worker] settings, and `make(tiers={name: {...}})`
    settings of the named tiers."""
    from celery import Celery

    from tierq.queues import celery_config
    from workers.context import WorkerContext

    monkeypatch.setenv("TIERQ_SIM_URL", clean.sim.base_url)
    broker = clean.dbs.url(1)
    redis.Redis.from_url(broker).flushdb()
    made: list[tuple[WorkerContext, Celery]] = []

    def make(tiers: Mapping[str, Mapping[str, Any]] | None = None, **worker: Any) -> WorkerContext:
        changed = tuple(tier.model_copy(update=dict((tiers or {}).get(tier.name, {}))) for tier in clean.config.tiers)
        config = clean.config.model_copy(update={"worker": clean.config.worker.model_copy(update=worker),
                                                 "tiers": changed})
        app = Celery("in-process-worker")
        app.conf.update(celery_config(config, broker))
        context = WorkerContext(clean.settings, config, app)
        made.append((context, app))
        return context

    yield make
    for context, app in made:
        context.loop.run(context.gates.close())
        context.loop.run(context.client.close())
        context.engine.dispose()
        app.close()


def published(ctx: WorkerContext, queue: str) -> list[dict[str, Any]]:
    """The messages waiting on `queue` of an in-process context's broker."""
    client = redis.Redis.from_url(ctx.app.conf.broker_url)
    return [json.loads(m) for m in client.lrange(queue, 0, -1)]


@contextmanager
def own_worker(stack: Stack, tmp_path: Path, extra_toml: str, name: str,
               edit: Callable[[str], str] = lambda body: body) -> Iterator[tuple[Tierq, dict[str, str]]]:
    """A worker and a client whose TOML is the shipped simulator's (`edit`ed) plus `extra_toml`, on a broker and
    Redis of their own (spare database 3): (client, environment for `tierq` commands)."""
    config = tmp_path / f"{name}.toml"
    config.write_text(edit(SHIPPED_SIM_CONFIG.read_text()) + "\n" + extra_toml)
    url = stack.dbs.url(3)
    redis.Redis.from_url(url).flushdb()
    env = {**stack.env, "TIERQ_CONFIG": str(config), "TIERQ_BROKER_URL": url, "TIERQ_REDIS_URL": url}
    worker = start_worker(env, tmp_path / f"{name}-worker.log", name=name)
    try:
        settings = stack.settings.model_copy(update={"config": config, "broker_url": url, "redis_url": url})
        with Tierq(settings, load_config(config)) as tq:
            yield tq, env
    finally:
        stop_worker(worker)


@pytest.fixture()
def empty_database(stack: Stack) -> Iterator[str]:
    """A database that exists but was never migrated."""
    url = make_url(stack.settings.database_url)
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    name = f"tierq_empty_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{name}"')
    yield url.set(database=name).render_as_string(hide_password=False)
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture()
def silent_postgres() -> Iterator[str]:
    """The URL of a "Postgres" that accepts TCP connections and never answers, as a hung server or one behind a
    firewall that drops its packets: the socket listens, and the kernel completes the handshakes it never
    accepts."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"postgresql+psycopg://tierq:s3cret@127.0.0.1:{sock.getsockname()[1]}/tierq"


def run_batch(stack: Stack, tq: Tierq, records: list[Any], **options: Any) -> dict[str, dict[str, Any]]:
    """Submit `records` (no cache unless asked), wait for the batch, and return its results by record id."""
    from producer.submit import BatchOptions

    batch = tq.submit(records, BatchOptions(**{"use_cache": False, **options}))
    stack.wait(tq, batch.batch_id, timeout=120)
    return {r["id"]: r for r in tq.results(batch.batch_id)}
