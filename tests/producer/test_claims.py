"""Claims on Redis databases (producer/claims.py): the demo, the benchmarks and test sessions share a Redis
server but never a database, and a run that finds its database held says by whom, in one line."""

from __future__ import annotations

import json
import os
import random
import socket
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from producer import claims
from tests.conftest import REDIS_SERVER, Stack
from tests.producer.test_cli import tierq

ROOT = Path(__file__).resolve().parents[2]


@pytest.fixture()
def registry() -> Iterator[redis.Redis]:
    client = claims.registry(REDIS_SERVER)
    yield client
    client.close()


@pytest.fixture()
def sleeper() -> Iterator[subprocess.Popen[bytes]]:
    """A live process that is not this one nor one of its ancestors: another run's stand-in."""
    proc = subprocess.Popen(["sleep", "120"])
    yield proc
    proc.kill()
    proc.wait()


def _number() -> int:
    """A database number no real run uses: a claim is only a key, so it need not be a database Redis has."""
    return random.randrange(10**6, 10**7)


def _claim_as(client: redis.Redis, db: int, pid: int, owner: str = "a benchmark run (bench_x.py)") -> str:
    value = json.dumps({"owner": owner, "host": socket.gethostname(), "pid": pid, "since": time.time()})
    client.set(claims.KEY.format(db=db), value, ex=60)
    return value


def test_a_database_another_live_run_holds_is_refused_naming_the_holder(
        registry: redis.Redis, sleeper: subprocess.Popen[bytes]) -> None:
    db = _number()
    held = _claim_as(registry, db, sleeper.pid)
    try:
        with pytest.raises(claims.DatabaseInUse) as refused, claims.claimed(f"{REDIS_SERVER}/{db}", "a tierq demo"):
            pytest.fail("the body must not run")
        assert str(refused.value).startswith(
            f"Redis database {db} is in use by a benchmark run (bench_x.py) (pid {sleeper.pid}, since ")
        assert registry.get(claims.KEY.format(db=db)) == held.encode(), "and its claim stays"
    finally:
        registry.delete(claims.KEY.format(db=db))


def test_a_claim_whose_process_has_ended_is_taken_over_and_given_back(registry: redis.Redis) -> None:
    gone = subprocess.Popen(["true"])
    gone.wait()
    db = _number()
    _claim_as(registry, db, gone.pid)
    key = claims.KEY.format(db=db)
    with claims.claimed(f"{REDIS_SERVER}/{db}", "a tierq demo"):
        holder = json.loads(registry.get(key) or b"{}")
        assert (holder["owner"], holder["pid"]) == ("a tierq demo", os.getpid())
        assert 0 < registry.ttl(key) <= claims.CLAIM_TTL_S
    assert registry.get(key) is None, "released at the end of the block"


def test_a_run_started_by_the_holder_works_inside_its_claim_and_leaves_it(registry: redis.Redis) -> None:
    # A test session runs the demo on one of its own databases: the demo is its child process.
    db = _number()
    held = _claim_as(registry, db, os.getpid(), "a tierq test session")
    key = claims.KEY.format(db=db)
    try:
        child = subprocess.run(
            [str(ROOT / ".venv" / "bin" / "python"), "-c",
             "import sys; from producer import claims\n"
             f"with claims.claimed('{REDIS_SERVER}/{db}', 'a tierq demo'): print('inside')"],
            cwd=ROOT, capture_output=True, text=True, timeout=60, check=False)
        assert (child.returncode, child.stdout.strip()) == (0, "inside"), child.stderr[-2000:]
        assert registry.get(key) == held.encode(), "the holder's claim is neither replaced nor released"
    finally:
        registry.delete(key)


def test_a_release_leaves_a_claim_that_has_passed_to_another_run(
        registry: redis.Redis, sleeper: subprocess.Popen[bytes]) -> None:
    db = _number()
    key = claims.KEY.format(db=db)
    mine = claims.claim(registry, db, "a tierq demo")
    try:
        theirs = _claim_as(registry, db, sleeper.pid)  # as if ours had expired and another run claimed it
        claims.release(registry, db, mine)
        assert registry.get(key) == theirs.encode()
    finally:
        registry.delete(key)


def test_claiming_several_skips_the_held_ones_and_says_when_too_few_are_free(
        registry: redis.Redis, sleeper: subprocess.Popen[bytes]) -> None:
    first = _number()
    numbers = [first, first + 1, first + 2]
    _claim_as(registry, first + 1, sleeper.pid)
    try:
        with claims.claimed_any(REDIS_SERVER, 2, numbers, "a tierq test session") as got:
            assert got == [first, first + 2]
        assert registry.get(claims.KEY.format(db=first)) is None, "released at the end"
        with pytest.raises(claims.DatabaseInUse) as refused, \
                claims.claimed_any(REDIS_SERVER, 3, numbers, "a tierq test session"):
            pytest.fail("the body must not run")
        assert str(refused.value).startswith(
            f"only 2 of the 3 Redis databases needed are free (Redis database {first + 1} is in use by a "
            f"benchmark run (bench_x.py) (pid {sleeper.pid}, since ")
        assert registry.get(claims.KEY.format(db=first)) is None, "what it had claimed is given back"
    finally:
        for db in numbers:
            registry.delete(claims.KEY.format(db=db))


def test_the_demo_refuses_a_database_in_use_in_one_line(
        stack: Stack, tmp_path: Path, registry: redis.Redis, sleeper: subprocess.Popen[bytes]) -> None:
    url = stack.dbs.url(3)
    db = claims.database_of(url)
    key = claims.KEY.format(db=db)
    session_claim = registry.get(key)  # this session's: put back after
    assert session_claim is not None
    try:
        _claim_as(registry, db, sleeper.pid)
        done = tierq(stack, tmp_path, "demo", "--jobs", "5", "--redis-db", str(db), timeout=60)
    finally:
        registry.set(key, session_claim, ex=claims.CLAIM_TTL_S)
    assert done.returncode == 2
    assert done.stderr.startswith(f"error: Redis database {db} is in use by a benchmark run (bench_x.py) "
                                  f"(pid {sleeper.pid}, since ")
    assert done.stderr.rstrip().endswith(f"; wait for it to finish, or give the demo another database "
                                         f"(--redis-db, now {db})")
    assert len(done.stderr.strip().splitlines()) == 1 and "Traceback" not in done.stderr


def test_a_benchmark_cannot_run_on_a_database_in_use(
        registry: redis.Redis, sleeper: subprocess.Popen[bytes], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import harness  # bench/harness.py

    db = _number()
    _claim_as(registry, db, sleeper.pid, "a tierq demo")
    try:
        with pytest.raises(harness.CannotRun) as refused, harness.redis_database(f"{REDIS_SERVER}/{db}"):
            pytest.fail("the body must not run")
        assert str(refused.value).startswith(f"Redis database {db} is in use by a tierq demo (pid {sleeper.pid}")
        assert str(refused.value).endswith("; wait for it to finish, or pass --redis with a database of your own")
    finally:
        registry.delete(claims.KEY.format(db=db))


def test_a_claim_tierq_cannot_read_says_which_key_to_delete(registry: redis.Redis) -> None:
    db = _number()
    key = claims.KEY.format(db=db)
    registry.set(key, "not json", ex=60)
    try:
        with pytest.raises(claims.DatabaseInUse) as refused, claims.claimed(f"{REDIS_SERVER}/{db}", "a tierq demo"):
            pytest.fail("the body must not run")
        assert str(refused.value) == (f"Redis database {db} is claimed by a value tierq cannot read; if no run uses "
                                      f"the database, delete the key {key} (in database 0)")
    finally:
        registry.delete(key)
