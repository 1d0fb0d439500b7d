"""Policy (d) end to end: the test split through tierq's real workers, answered by the replaying simulator.

Everything is started for the run and removed after it, even on failure: a redis-server of its own on
a free loopback port (so no shared Redis database is touched), a throwaway database on the local
Postgres (TIERQ_EVAL_POSTGRES_URL, default the local server) migrated with Alembic, the simulator
replaying the recorded answers, and one Celery worker on every queue, stopped by its process id.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import redis
from gsm8k_data import CHEAP, STRONG, Question
from policies import Result
from sqlalchemy.engine import make_url

from fakellm.testing import free_port, running_server
from migrations import upgrade
from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
POSTGRES_URL = os.environ.get("TIERQ_EVAL_POSTGRES_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")


@contextlib.contextmanager
def private_redis() -> Iterator[str]:
    """A redis-server without persistence on a free loopback port, for this run only."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("--pipeline needs redis-server on PATH (apt-get install redis-server)")
    port = free_port()
    process = subprocess.Popen([binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        client = redis.Redis(port=port)
        deadline = time.monotonic() + 10
        while True:
            try:
                client.ping()
                break
            except redis.exceptions.ConnectionError:
                if time.monotonic() > deadline or process.poll() is not None:
                    raise SystemExit("redis-server did not start") from None
                time.sleep(0.05)
        client.close()
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        process.terminate()
        process.wait(timeout=10)


@contextlib.contextmanager
def throwaway_database() -> Iterator[str]:
    """A new database migrated to head, dropped afterwards."""
    admin = make_url(POSTGRES_URL).set(drivername="postgresql").render_as_string(hide_password=False)
    name = f"tierq_eval_{uuid.uuid4().hex[:10]}"
    url = make_url(POSTGRES_URL).set(database=name).render_as_string(hide_password=False)
    try:
        psycopg.connect(admin, connect_timeout=3).close()
    except psycopg.OperationalError as exc:
        raise SystemExit(f"--pipeline needs Postgres at {POSTGRES_URL} ({exc}); set TIERQ_EVAL_POSTGRES_URL") from None
    upgrade(url)
    try:
        yield url
    finally:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@contextlib.contextmanager
def worker(env: dict[str, str], log: Path) -> Iterator[None]:
    """One Celery worker on every queue of the evaluation's TOML."""
    with log.open("wb") as sink:
        process = subprocess.Popen(
            [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "classify,cheap,strong",
             "-n", f"eval-{uuid.uuid4().hex[:6]}@%h", "--without-gossip", "--without-mingle", "--loglevel", "INFO"],
            env=env, cwd=ROOT, stdout=sink, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while b"ready." not in log.read_bytes():
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"the worker did not start:\n{log.read_text(errors='replace')[-2000:]}")
            time.sleep(0.2)
        yield
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def run_cascade(
    config_path: Path, data: Path, test: list[Question], offline: Result, report: dict[str, Any]
) -> list[str]:
    """Submit the test split, wait, score what came back, and compare it with the offline policy (d)."""
    with tempfile.TemporaryDirectory(prefix="tierq-eval-") as folder, private_redis() as redis_url, \
            throwaway_database() as database_url:
        toml = Path(folder) / "gsm8k.toml"
        replay = {"file": str(data.resolve()), "models": {CHEAP: CHEAP, STRONG: STRONG}}
        toml.write_text(config_path.read_text() + "\n[simulator.replay]\n"
                        f"file = {json.dumps(replay['file'])}\nmodels = {{ {json.dumps(CHEAP)} = {json.dumps(CHEAP)}, "
                        f"{json.dumps(STRONG)} = {json.dumps(STRONG)} }}\n")
        with running_server(toml, stderr_path=Path(folder) / "sim.log") as sim:
            env = {**{k: v for k, v in os.environ.items() if not k.startswith("TIERQ_")},
                   "TIERQ_DATABASE_URL": database_url, "TIERQ_REDIS_URL": redis_url, "TIERQ_CONFIG": str(toml),
                   "TIERQ_SIM_URL": sim.base_url, "PYTHONPATH": str(ROOT)}
            settings = Settings(database_url=database_url, redis_url=redis_url, broker_url=redis_url, config=toml)
            with worker(env, Path(folder) / "worker.log"), Tierq(settings, load_config(toml)) as tq:
                started = time.monotonic()
                # --max-tier cheap: every job starts at the cheap tier, whatever the routing rules say.
                batch = tq.submit([{"id": str(q.index), "prompt": q.prompt, "task_type": "gsm8k"} for q in test],
                                  BatchOptions(max_tier="cheap", use_cache=False, source="eval/gsm8k.py"))
                tq.wait(batch.batch_id, timeout=900, poll_s=0.5)
                seconds = time.monotonic() - started
                results = list(tq.results(batch.batch_id))
                bill = tq.report(batch.batch_id).as_dict()
    return _compare(test, results, bill, offline, seconds, report)


def _compare(test: list[Question], results: list[dict[str, Any]], bill: dict[str, Any], offline: Result,
             seconds: float, report: dict[str, Any]) -> list[str]:
    by_id = {str(q.index): q for q in test}
    correct = strong = replayed = 0
    for r in results:
        q = by_id[r["id"]]
        strong += r["model"] == STRONG
        correct += (q.cheap_correct if r["model"] == CHEAP else q.strong_correct) if r["status"] == "succeeded" else 0
        replayed += r["content"] == (q.cheap_answer if r["model"] == CHEAP else q.strong_answer)
    cost = Decimal(bill["totals"]["cost_usd"])
    same = (cost, strong, correct) == (offline.cost, offline.strong_calls, offline.correct)
    report["pipeline"] = {"jobs": len(results), "strong": strong, "correct": correct, "cost_usd": str(cost),
                          "seconds": seconds, "matches_offline": same}
    return [
        f"Pipeline run of (d) on the test split: {len(results)} jobs through a real worker and the replaying "
        f"simulator in {seconds:.1f} s; {replayed} answers are the recorded texts; {strong} answered by the strong "
        f"model, {correct} right ({correct / len(results):.1%}); billed ${cost:.6f} against ${offline.cost:.6f} "
        f"offline: {'identical' if same else 'DIFFERENT'} cost, escalations and accuracy.",
        "",
    ]
