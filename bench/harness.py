"""The services every benchmark runs against, started for one run and removed after it, even on failure.

A throwaway database on the local Postgres, migrated with Alembic and dropped at the end; Redis
database 15 (flushed before and after, and locked against a second run on this machine); the
simulated provider as a real HTTP server; Celery worker processes started as the tests start them
(`python -m celery -A workers worker -Q ...`), each stopped by its own process id.
"""

from __future__ import annotations

import contextlib
import fcntl
import functools
import hashlib
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery
from simconfigs import SHIPPED
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from fakellm.testing import SimServer, running_server
from migrations import upgrade
from models import make_engine
from tierq.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/15"
WORKER_START_S = 60.0
WORKER_STOP_S = 20.0


class BenchError(RuntimeError):
    """A benchmark could not run (a service is missing, a worker died, a wait ran out)."""


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Poll `check` until it is true; the seconds it took. Raises BenchError after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started


@dataclass(frozen=True)
class Worker:
    """A running Celery worker process and the node name that remote control addresses it by."""

    proc: subprocess.Popen[bytes]
    nodename: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The worker's process id (the thread pool runs in this one process)."""
        return self.proc.pid


@dataclass
class Stack:
    """One run's services: the database, the Redis database, the simulator and the workers started so far."""

    workdir: Path
    database_url: str
    redis_url: str
    sim: SimServer
    engine: Engine
    workers: list[Worker] = field(default_factory=list)

    @functools.cached_property
    def control(self) -> Celery:
        """A Celery app on the broker, for remote control of the workers (ping, add_consumer)."""
        return Celery("tierq-bench-control", broker=self.redis_url)

    def settings(self, config: Path) -> Settings:
        """Settings for a client in this process (every field given, so no TIERQ_ variable leaks in)."""
        return Settings(database_url=self.database_url, redis_url=self.redis_url, broker_url=self.redis_url,
                        config=config)

    def env(self, config: Path) -> dict[str, str]:
        """Environment of a worker process: this run's services only, whatever the shell exports."""
        base = {k: v for k, v in os.environ.items() if not k.startswith("TIERQ_")}
        return {**base, "TIERQ_DATABASE_URL": self.database_url, "TIERQ_REDIS_URL": self.redis_url,
                "TIERQ_CONFIG": str(config), "TIERQ_SIM_URL": self.sim.base_url, "PYTHONPATH": str(ROOT)}

    def reset(self, behaviour: dict[str, Any] | None = None) -> None:
        """Empty tables, an empty Redis database, and a simulator with `behaviour` (default: no latency)."""
        if any(w.proc.poll() is None for w in self.workers):
            raise BenchError("reset while workers still run; stop them first")
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE labels, calls, jobs, batches"))
        with redis.Redis.from_url(self.redis_url) as client:
            client.flushdb()
        self.simulate(behaviour or {"latency_ms": 0})

    def simulate(self, behaviour: dict[str, Any]) -> None:
        """Replace the simulator's behaviour (a `[simulator]`-shaped table) and zero its counters."""
        for method, path, body in (("POST", "/_sim/config", behaviour), ("POST", "/_sim/reset", None)):
            code, _, answer = self.sim.call(method, path, body)
            if code != 200:
                raise BenchError(f"simulator {path} answered {code}: {answer}")

    def sim_stats(self, calls: bool = False) -> dict[str, Any]:
        """The simulator's counters (with the list of billed calls and their times when `calls`)."""
        code, _, body = self.sim.call("GET", f"/_sim/stats?calls={1 if calls else 0}")
        if code != 200:
            raise BenchError(f"simulator stats answered {code}")
        return body  # type: ignore[no-any-return]

    def start_worker(self, queues: str, config: Path, name: str, *, app: str = "workers",
                     extra: Sequence[str] = ()) -> Worker:
        """`celery -A <app> worker -Q <queues>`, returned once it answers a ping over the broker."""
        suffix = uuid.uuid4().hex[:6]
        log_path = self.workdir / f"{name}-{suffix}.log"
        nodename = f"{name}-{suffix}@{socket.gethostname()}"
        with open(log_path, "wb") as log:
            proc = subprocess.Popen(
                [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queues, "--loglevel", "WARNING",
                 "-n", nodename, "--without-gossip", "--without-mingle", *extra],
                env=self.env(config), stdout=log, stderr=subprocess.STDOUT, cwd=ROOT, start_new_session=True,
            )
        worker = Worker(proc, nodename, log_path)
        self.workers.append(worker)

        def ready() -> bool:
            if proc.poll() is not None:
                raise BenchError(f"worker {name} exited:\n{log_path.read_text(errors='replace')[-3000:]}")
            # Asked over the broker: the "ready." line is logged at INFO, and the workers log at WARNING
            # so that per-task log lines do not weigh on the measurements.
            return bool(self.control.control.ping(destination=[nodename], timeout=0.5))

        wait_for(ready, WORKER_START_S, f"worker {name} to start (log: {log_path})", poll_s=0.2)
        return worker

    def stop_worker(self, worker: Worker) -> None:
        """Warm shutdown; killed (by its own process id) when it hangs."""
        proc = worker.proc
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=WORKER_STOP_S)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if worker in self.workers:
            self.workers.remove(worker)

    def stop_workers(self) -> None:
        """Stop every worker this run started."""
        for proc in list(self.workers):
            self.stop_worker(proc)


@contextlib.contextmanager
def throwaway_database(admin_url: str) -> Iterator[str]:
    """A fresh database migrated to head, dropped afterwards."""
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise BenchError(f"PostgreSQL at {admin_url} is not reachable: {exc}; start it (.ci/run does)") from None
    name = f"tierq_bench_{uuid.uuid4().hex[:10]}"
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def redis_database(url: str) -> Iterator[str]:
    """The benchmarks' Redis database, flushed before and after; one run at a time on this machine."""
    lock_path = Path(tempfile.gettempdir()) / f"tierq-bench-{hashlib.sha1(url.encode()).hexdigest()[:10]}.lock"
    with open(lock_path, "w") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise BenchError(f"another benchmark run uses {url}; wait for it to finish") from None
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        try:
            client.flushdb()
        except redis.exceptions.ConnectionError as exc:
            raise BenchError(f"Redis at {url} is not reachable: {exc}") from None
        try:
            yield url
        finally:
            client.flushdb()
            client.close()


@contextlib.contextmanager
def open_stack(postgres_url: str = POSTGRES_URL, redis_url: str = REDIS_URL) -> Iterator[Stack]:
    """Every service a benchmark needs; all of it stopped, dropped and flushed on the way out."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="tierq-bench-")))
        database_url = stack.enter_context(throwaway_database(postgres_url))
        stack.enter_context(redis_database(redis_url))
        sim = stack.enter_context(running_server(SHIPPED, stderr_path=workdir / "sim.log"))
        engine = make_engine(database_url)
        stack.callback(engine.dispose)
        services = Stack(workdir, database_url, redis_url, sim, engine)
        stack.callback(services.stop_workers)
        stack.callback(lambda: services.control.close())
        services.simulate({"latency_ms": 0})
        yield services
