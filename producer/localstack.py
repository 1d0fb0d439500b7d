"""A tierq deployment on this machine for one run, as `tierq demo`, the benchmarks, the evaluation and the
tests start it.

- `throwaway_database`: a new database on a running PostgreSQL, migrated with Alembic, dropped afterwards.
- Redis: `producer.services` (the configured server, or a redis-server of the run's own).
- The simulated provider as a real HTTP server: `fakellm.testing.running_server`.
- `start_worker` / `stop_worker`: `celery -A workers worker` for a configuration's queues
  (`tierq.queues.queue_names`), returned once it is ready and stopped through its own process group.
- `service_env`: the environment of the run's processes, so they reach the run's services and no others.

`open_stack` puts them together for the benchmarks and the evaluation. The demo (the user's own services) and
the tests (a Redis slot per test session) put the pieces together with their own policies. Each piece removes
what it made on the way out, even on failure.
"""

from __future__ import annotations

import contextlib
import functools
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psycopg
import redis
from celery import Celery
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from fakellm.testing import SimServer, running_server
from migrations import upgrade
from models import make_engine
from producer.services import ServiceUnavailable, throwaway_redis
from tierq import parent
from tierq.redact import masked_url, scrubbed
from tierq.settings import Settings

WORKER_START_S = 60.0
WORKER_STOP_S = 30.0
_LOG_TAIL = 3000  # characters of a worker's log in the error when it does not start


class WorkerDidNotStart(ServiceUnavailable):
    """A worker process exited, or was not ready in time; the message ends with its log."""


@contextlib.contextmanager
def throwaway_database(admin_url: str, prefix: str = "tierq") -> Iterator[str]:
    """A new database `<prefix>_<random>` on the server of `admin_url`, migrated to head, dropped afterwards."""
    admin = make_url(admin_url).set(drivername="postgresql").render_as_string(hide_password=False)
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise ServiceUnavailable(f"PostgreSQL at {masked_url(admin_url)} is not reachable: "
                                 f"{scrubbed(str(exc), admin_url)}") from None
    name = f"{prefix}_{uuid.uuid4().hex[:10]}"
    url = make_url(admin_url).set(database=name).render_as_string(hide_password=False)
    try:
        upgrade(url)
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def service_env(database_url: str, redis_url: str, config: Path, sim_url: str, *,
                inherit: Mapping[str, str] | None = None, pythonpath: Path | None = None) -> dict[str, str]:
    """The environment of a worker or `tierq` command of the run: its services, its TOML, and everything else
    from `inherit`; by default this process's environment without its TIERQ_ variables, so that what a shell
    exports cannot point the run at other services. `pythonpath`: a checkout to import tierq from."""
    if inherit is None:
        inherit = {k: v for k, v in os.environ.items() if not k.startswith("TIERQ_")}
    env = {**inherit, "TIERQ_DATABASE_URL": database_url, "TIERQ_REDIS_URL": redis_url,
           "TIERQ_CONFIG": str(config), "TIERQ_SIM_URL": sim_url}
    if pythonpath is not None:
        env["PYTHONPATH"] = str(pythonpath)
    return env


@dataclass(frozen=True)
class Worker:
    """A running Celery worker process, the node name remote control addresses it by, and its log."""

    proc: subprocess.Popen[bytes]
    nodename: str
    log_path: Path

    @property
    def pid(self) -> int:
        """The worker's process id (the thread pool runs in this one process)."""
        return self.proc.pid


def start_worker(env: Mapping[str, str], log_path: Path, queues: str | Sequence[str], *, name: str = "w",
                 loglevel: str = "INFO", app: str = "workers", args: Sequence[str] = (), cwd: Path | None = None,
                 broker_url: str | None = None, timeout_s: float = WORKER_START_S) -> Worker:
    """`celery -A <app> worker -Q <queues>` in a process group of its own, returned once it is ready: once it
    answers a ping over `broker_url` when one is given (any log level), else once its log says "ready." (which
    Celery logs at INFO). WorkerDidNotStart, the process killed, if it exits or is not ready in `timeout_s`."""
    queue_list = queues if isinstance(queues, str) else ",".join(queues)
    nodename = f"{name}-{uuid.uuid4().hex[:6]}@{socket.gethostname()}"
    with open(log_path, "wb") as log:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", app, "worker", "-Q", queue_list, "--loglevel", loglevel,
             "-n", nodename, "--without-mingle", *args],
            env={**env, **parent.started_by_me()}, stdout=log, stderr=subprocess.STDOUT, cwd=cwd,
            start_new_session=True,
        )
    worker = Worker(proc, nodename, log_path)
    try:
        _wait_until_ready(worker, broker_url, timeout_s)
    except BaseException:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()
        raise
    return worker


def _wait_until_ready(worker: Worker, broker_url: str | None, timeout_s: float) -> None:
    control = Celery("tierq-localstack-control", broker=broker_url) if broker_url else None

    def ready() -> bool:
        if control is not None:
            # Asked over the broker: a worker logging at WARNING never writes the "ready." line.
            return bool(control.control.ping(destination=[worker.nodename], timeout=0.5))
        return b"ready." in worker.log_path.read_bytes()

    deadline = time.monotonic() + timeout_s
    try:
        while not ready():
            code = worker.proc.poll()
            if code is not None or time.monotonic() > deadline:
                why = f"exited with code {code}" if code is not None else f"was not ready after {timeout_s:g} s"
                tail = worker.log_path.read_text(errors="replace")[-_LOG_TAIL:]
                raise WorkerDidNotStart(f"worker {worker.nodename} {why} (log: {worker.log_path}):\n{tail}")
            time.sleep(0.2)
    finally:
        if control is not None:
            control.close()


def _signal_group(proc: subprocess.Popen[bytes], sig: signal.Signals) -> None:
    # A worker leads its own process group (start_worker), so the signal reaches whatever it started too.
    with contextlib.suppress(ProcessLookupError):
        if os.getpgid(proc.pid) == proc.pid:
            os.killpg(proc.pid, sig)
        else:
            proc.send_signal(sig)


def stop_worker(proc: subprocess.Popen[bytes], timeout_s: float = WORKER_STOP_S) -> None:
    """Warm shutdown (SIGTERM to the worker's process group); the group is killed if it has not stopped in
    `timeout_s`."""
    if proc.poll() is not None:
        return
    _signal_group(proc, signal.SIGTERM)
    try:
        proc.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        _signal_group(proc, signal.SIGKILL)
        proc.wait()


@dataclass
class LocalStack:
    """One run's services: a database, a Redis database (the broker too), the simulator, and the workers
    started so far. `root`: the checkout the workers import from (their directory and PYTHONPATH), if any."""

    workdir: Path
    database_url: str
    redis_url: str
    sim: SimServer
    root: Path | None = None
    workers: list[Worker] = field(default_factory=list)

    @functools.cached_property
    def engine(self) -> Engine:
        """An engine on the run's database, disposed of when the stack closes."""
        return make_engine(self.database_url)

    @functools.cached_property
    def control(self) -> Celery:
        """A Celery app on the broker, for remote control of the workers (ping, add_consumer)."""
        return Celery("tierq-localstack-control", broker=self.redis_url)

    def settings(self, config: Path) -> Settings:
        """Settings for a client in this process (every field given, so no TIERQ_ variable leaks in)."""
        return Settings(database_url=self.database_url, redis_url=self.redis_url, broker_url=self.redis_url,
                        config=config)

    def env(self, config: Path) -> dict[str, str]:
        """Environment of a worker or `tierq` command: this run's services only, whatever the shell exports."""
        return service_env(self.database_url, self.redis_url, config, self.sim.base_url, pythonpath=self.root)

    def start_worker(self, queues: str | Sequence[str], config: Path, name: str, *, app: str = "workers",
                     args: Sequence[str] = (), loglevel: str = "WARNING") -> Worker:
        """A worker with `config` on `queues`, once it answers a ping. It logs at WARNING by default, so that
        per-task log lines do not weigh on measurements; without gossip, as the run's workers need none."""
        worker = start_worker(self.env(config), self.workdir / f"{name}-{uuid.uuid4().hex[:6]}.log", queues,
                              name=name, loglevel=loglevel, app=app, args=["--without-gossip", *args],
                              cwd=self.root, broker_url=self.redis_url)
        self.workers.append(worker)
        return worker

    def stop_worker(self, worker: Worker) -> None:
        """Stop one worker this run started."""
        stop_worker(worker.proc)
        if worker in self.workers:
            self.workers.remove(worker)

    def stop_workers(self) -> None:
        """Stop every worker this run started."""
        for worker in list(self.workers):
            self.stop_worker(worker)

    def reset(self, behaviour: dict[str, Any] | None = None) -> None:
        """Empty the tables a batch fills and the Redis database, and give the simulator `behaviour` (default:
        no latency). Only between workers: one still running would keep writing."""
        if any(w.proc.poll() is None for w in self.workers):
            raise RuntimeError("reset while workers still run; stop them first")
        with self.engine.begin() as conn:
            conn.execute(text("TRUNCATE labels, calls, jobs, batches"))
        with redis.Redis.from_url(self.redis_url) as client:
            client.flushdb()
        self.sim.configure(behaviour or {"latency_ms": 0})

    def close(self) -> None:
        """Stop the workers, and close the engine and control app if they were made."""
        self.stop_workers()
        if "control" in self.__dict__:
            self.control.close()
        if "engine" in self.__dict__:
            self.engine.dispose()


@contextlib.contextmanager
def open_stack(sim_config: Path, postgres_url: str, redis_url: str | None = None, *, prefix: str = "tierq",
               root: Path | None = None, log: Callable[[str], None] = lambda _: None) -> Iterator[LocalStack]:
    """Every service of a run: a throwaway database on the PostgreSQL of `postgres_url`, the Redis database
    `redis_url` (without one, a redis-server of the run's own), the simulator with `sim_config`; all of it
    stopped, dropped and removed on the way out. ServiceUnavailable when a service is missing."""
    with contextlib.ExitStack() as stack:
        workdir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix=f"{prefix}-")))
        database_url = stack.enter_context(throwaway_database(postgres_url, prefix.replace("-", "_")))
        if redis_url is None:
            redis_url = stack.enter_context(throwaway_redis(log=log))
        sim = stack.enter_context(running_server(sim_config, stderr_path=workdir / "sim.log"))
        services = LocalStack(workdir, database_url, redis_url, sim, root)
        stack.callback(services.close)
        yield services
