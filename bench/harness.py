"""The services every benchmark runs against, started for one run and removed after it, even on failure.

The local stack (producer/localstack.py: a throwaway database on the local Postgres, the simulated provider
as a real HTTP server, Celery workers started as the tests start them) on Redis database 14 (the demo's
is 15), claimed for the run so that no test session, demo or second run shares it, flushed before and after.
"""

from __future__ import annotations

import contextlib
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import redis
from simconfigs import SHIPPED

from producer import claims, localstack
from producer.services import ServiceUnavailable

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"
REDIS_URL = "redis://127.0.0.1:6379/14"  # the demo has 15
Stack = localstack.LocalStack


class BenchError(RuntimeError):
    """A benchmark stopped without a result (a worker died, a wait ran out, the jobs did not succeed)."""


class CannotRun(BenchError):
    """A benchmark could not start: another run holds the benchmarks' Redis database, or a service is down."""


def cli(main: Callable[[], int]) -> int:
    """Run a benchmark's `main` and say in one line, without a traceback, why it gave no result: exit 2 when it
    could not start (fix the machine and run it again), 1 when it stopped on the way (a failure to look into)."""
    try:
        return main()
    except (CannotRun, ServiceUnavailable) as exc:
        print(f"{Path(sys.argv[0]).name}: cannot run: {exc}", file=sys.stderr)
        return 2
    except BenchError as exc:
        print(f"{Path(sys.argv[0]).name}: stopped: {exc}", file=sys.stderr)
        return 1


def wait_for(check: Callable[[], bool], timeout_s: float, what: str, poll_s: float = 0.1) -> float:
    """Poll `check` until it is true; the seconds it took. Raises BenchError after `timeout_s`."""
    started = time.monotonic()
    while not check():
        if time.monotonic() - started > timeout_s:
            raise BenchError(f"gave up after {timeout_s:.0f} s waiting for {what}")
        time.sleep(poll_s)
    return time.monotonic() - started


@contextlib.contextmanager
def redis_database(url: str) -> Iterator[str]:
    """The benchmarks' Redis database, claimed for this run (producer/claims.py: no demo, test session or
    second benchmark uses it meanwhile), flushed before and after."""
    with contextlib.ExitStack() as stack:
        client = redis.Redis.from_url(url, socket_connect_timeout=3)
        stack.callback(client.close)
        try:
            stack.enter_context(claims.claimed(url, f"a benchmark run ({Path(sys.argv[0]).name})"))
            client.flushdb()
        except claims.DatabaseInUse as exc:
            raise CannotRun(f"{exc}; wait for it to finish, or pass --redis with a database of your own") from None
        except redis.exceptions.ConnectionError as exc:
            raise CannotRun(f"Redis at {url} is not reachable: {exc}") from None
        stack.callback(client.flushdb)
        yield url


@contextlib.contextmanager
def open_stack(postgres_url: str = POSTGRES_URL, redis_url: str = REDIS_URL) -> Iterator[Stack]:
    """Every service a benchmark needs; all of it stopped, dropped and flushed on the way out."""
    with redis_database(redis_url), localstack.open_stack(SHIPPED, postgres_url, redis_url, prefix="tierq-bench",
                                                          root=ROOT) as services:
        services.sim.configure({"latency_ms": 0})
        yield services
