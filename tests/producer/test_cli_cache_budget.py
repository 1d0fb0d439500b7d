"""The command line for the cache and budgets: `--no-cache`, `--budget-usd`, `tierq cache stats|clear`."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from conftest import Stack
from reliability.fault_services import RedisServer
from sqlalchemy import text

from producer.submit import BatchOptions
from tierq.errors import InputError


def tierq(stack: Stack, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer.cli", *args], env=stack.env, capture_output=True,
                          text=True, timeout=120)


def test_cache_commands_and_submit_options(clean: Stack, tmp_path: Path) -> None:
    source = tmp_path / "tickets.jsonl"
    source.write_text("\n".join(json.dumps({"id": str(n), "prompt": "Where is my parcel?"}) for n in range(3)))
    first = tierq(clean, "submit", str(source), "--tenant", "acme", "--wait", "--json")
    assert first.returncode == 0, first.stderr
    stats = json.loads(tierq(clean, "cache", "stats", "--json").stdout)
    assert stats["entries"] == 1 and stats["misses"] == 1 and stats["coalesced"] + stats["hits"] == 2
    # The text form says what the rate counts: coalesced jobs too, which `hits` alone leaves out.
    shown = dict(line.split(None, 1) for line in tierq(clean, "cache", "stats").stdout.splitlines())
    assert shown["hit_rate"] == f"{stats['hit_rate']}  (hits and coalesced, of all lookups)"

    uncached = tierq(clean, "submit", str(source), "--tenant", "acme", "--no-cache", "--budget-usd", "0.25",
                     "--wait", "--json")
    assert uncached.returncode == 0, uncached.stderr
    batch = json.loads(uncached.stdout.splitlines()[0])["batch_id"]
    with clean.engine.connect() as conn:
        budget, use_cache = conn.execute(text("SELECT budget_usd, use_cache FROM batches WHERE id = :b"),
                                         {"b": batch}).one()
    assert budget == Decimal("0.25") and use_cache is False
    assert "Batch API" not in uncached.stderr  # no deadline: no tier would have used one
    assert clean.sim_stats()["requests"] == 4  # one for the first batch, three for the uncached one

    cleared = json.loads(tierq(clean, "cache", "clear", "--tenant", "globex", "--json").stdout)
    assert cleared == {"removed": 0, "tenant": "globex"}
    cleared = json.loads(tierq(clean, "cache", "clear", "--tenant", "acme", "--json").stdout)
    assert cleared["removed"] == 1
    bad = tierq(clean, "submit", str(source), "--budget-usd", "-3")
    assert bad.returncode == 2 and "must be a positive amount in USD" in bad.stderr
    # NUMERIC(24, 12) holds neither: a trillion was psycopg's "numeric field overflow" as a traceback, and
    # 1e-13 was stored as a budget of 0 that failed every job.
    for value, problem in (("1e12", "is more than tierq stores (less than 10^12 USD)"),
                           ("0.0000000000001", "has more than 12 decimal places, which tierq does not keep")):
        bad = tierq(clean, "submit", str(source), "--budget-usd", value)
        assert bad.returncode == 2 and f"'{value}' {problem}" in bad.stderr and "Traceback" not in bad.stderr, \
            bad.stderr
    with clean.client() as tq, pytest.raises(InputError, match=r"^--budget-usd 1E\+13 is more than tierq stores"):
        tq.submit(["Where is my parcel?"], BatchOptions(budget_usd=Decimal("1e13")))


def test_a_library_callers_budget_is_taken_as_written_and_anything_else_refused() -> None:
    # A number worked before budgets were checked for what NUMERIC(24, 12) holds, then failed with an
    # AttributeError; a float is taken as it reads (0.1, not its binary expansion), never stored as one.
    assert [BatchOptions(budget_usd=v).budget_usd for v in (25, 0.1, "1.10", Decimal("2"))] == \
        [Decimal(25), Decimal("0.1"), Decimal("1.10"), Decimal(2)]
    for bad, problem in ((True, "not bool"), ([1], "not list"), ("ten", "'ten' is not an amount in USD")):
        with pytest.raises(InputError, match=problem):
            BatchOptions(budget_usd=bad)  # type: ignore[arg-type]


def test_submit_deadline_is_stored_with_the_batch_and_checked(clean: Stack, tmp_path: Path) -> None:
    source = tmp_path / "tickets.jsonl"
    source.write_text(json.dumps({"id": "1", "prompt": "Where is my parcel?"}) + "\n")
    submitted = time.time()
    done = tierq(clean, "submit", str(source), "--deadline", "1.5d", "--json")
    assert done.returncode == 0, done.stderr
    batch = json.loads(done.stdout.splitlines()[0])["batch_id"]
    with clean.engine.connect() as conn:
        params = conn.execute(text("SELECT params FROM batches WHERE id = :b"), {"b": batch}).scalar_one()
    assert submitted + 1.5 * 86400 <= params["_tierq"]["deadline_at"] <= time.time() + 1.5 * 86400  # when it falls
    assert "Batch API" not in done.stderr
    budgeted = tierq(clean, "submit", str(source), "--deadline", "1.5d", "--budget-usd", "1")
    assert budgeted.returncode == 0, budgeted.stderr
    assert budgeted.stderr.startswith("note: a batch with --budget-usd does not use the providers' Batch APIs "), \
        budgeted.stderr
    for value, problem in (("24", "is not a duration; use a number and a unit, e.g. 24h"),
                           ("soon", "is not a duration"), ("-2h", "must be a positive duration")):
        bad = tierq(clean, "submit", str(source), "--deadline", value)
        assert bad.returncode == 2 and problem in bad.stderr, (value, bad.stderr)
        assert "Traceback" not in bad.stderr


def test_cache_commands_and_submit_on_a_full_redis(clean: Stack, tmp_path: Path) -> None:
    # A Redis at maxmemory with noeviction refuses writes. `cache stats` and `cache clear` (the way to give it
    # memory back) wrote the cache's layout mark first and failed; every command said "start it or fix
    # TIERQ_REDIS_URL" of a server that was up; submit printed Redis's OutOfMemoryError and "submit the rest
    # of the file (after line 3)" of a file whose 3 lines were all stored.
    server = RedisServer(tmp_path)
    server.start()
    url = server.url
    admin = redis.Redis.from_url(url)
    try:
        env = {**clean.env, "TIERQ_REDIS_URL": url, "TIERQ_BROKER_URL": url}
        assert run(env, "cache", "stats").returncode == 0  # writes the layout mark while Redis has room
        admin.config_set("maxmemory-policy", "noeviction")
        admin.config_set("maxmemory", "1")
        stats = run(env, "cache", "stats", "--json")
        assert stats.returncode == 0 and json.loads(stats.stdout)["entries"] == 0, stats.stderr
        cleared = run(env, "cache", "clear", "--json")
        assert cleared.returncode == 0 and json.loads(cleared.stdout)["removed"] == 0, cleared.stderr
        source = tmp_path / "tickets.jsonl"
        source.write_text("\n".join(json.dumps({"id": str(n), "prompt": f"Where is parcel {n}?"}) for n in range(3)))
        submitted = run(env, "submit", str(source))
        line = submitted.stderr.strip()
        assert submitted.returncode == 1 and len(line.splitlines()) == 1 and "Traceback" not in line, line
        assert "all 3 jobs accepted" in line and "Redis is full and refuses writes" in line, line
        assert "raise its maxmemory" in line and "Nothing to submit again" in line, line
        assert "start it" not in line and "OutOfMemoryError" not in line, line
    finally:
        admin.close()
        server.stop()


def run(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "producer.cli", *args], env=env, capture_output=True, text=True,
                          timeout=120)
