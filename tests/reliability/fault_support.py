"""What the fault tests share: a deployment of their own, polling, and the checks every fault must pass.

Each fault test runs its own workers on its own broker (a spare Redis database of the session, a RabbitMQ
vhost or a throwaway server), so killing or starving them never touches the session's worker.
"""

from __future__ import annotations

import json
import os
import re
import signal
import subprocess
import time
import tomllib
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

from conftest import SIM_CONFIG, Stack, start_worker, stop_worker
from sqlalchemy import text

from producer.api import Tierq
from tierq.config import Config, load_config
from tierq.money import Usage

# Outcomes of calls the provider did not answer, so did not bill.
UNBILLED = ("error", "connection", "http_4xx", "http_5xx", "rate_limited", "timeout", "cache_hit")


def fault_config(path: Path, *, worker: Mapping[str, Any] | None = None,
                 tiers: Mapping[str, Mapping[str, Any]] | None = None,
                 models: Mapping[str, Mapping[str, Any]] | None = None,
                 simulator: Mapping[str, Any] | None = None) -> Path:
    """A copy of sim.toml at `path` with [worker] settings, per-tier and per-model settings replaced, and
    with `simulator` as the whole [simulator] table (for a simulator the test starts with this file)."""
    raw = tomllib.loads(SIM_CONFIG.read_text(), parse_float=Decimal)
    if simulator is not None:
        raw["simulator"] = dict(simulator)
    raw["worker"] = {**raw.get("worker", {}), **(worker or {})}
    for name, settings in (models or {}).items():
        raw["models"][name].update(settings)
    for tier in raw["tiers"]:
        tier.update((tiers or {}).get(tier["name"], {}))
    path.write_text(_toml(raw))
    load_config(path)  # a mistake here should fail as a config error, not as a worker that never starts
    return path


def audited_as_users_are(config: Path) -> Path:
    """`config` (a `fault_config`) auditing 2% of answers, at least 5 per stratum, as a user's config has
    them: the tests' sim.toml audits nothing."""
    toml = config.read_text()
    assert '"audit_rate" = 0\n' in toml
    config.write_text(toml.replace('"audit_rate" = 0\n', '"audit_rate" = 0.02\n"min_per_stratum" = 5\n'))
    return config


def _toml(table: Mapping[str, Any], prefix: str = "") -> str:
    """Just enough of a TOML writer for sim.toml's shapes: scalars, lists, tables, arrays of tables."""
    lines: list[str] = []
    nested: list[str] = []
    for key, value in table.items():
        name = f"{prefix}{json.dumps(key)}"
        if isinstance(value, Mapping):
            nested.append(f"\n[{name}]\n" + _toml(value, f"{name}."))
        elif isinstance(value, list) and value and isinstance(value[0], Mapping):
            nested.extend(f"\n[[{name}]]\n" + _toml(item, f"{name}.") for item in value)
        else:
            lines.append(f"{json.dumps(key)} = {_scalar(value)}")
    return "\n".join(lines) + "\n" + "".join(nested)


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, Decimal, float)):
        return str(value)
    if isinstance(value, list):
        return "[" + ", ".join(_scalar(v) for v in value) + "]"
    return json.dumps(value)


@dataclass
class Deployment:
    """Settings and worker processes of one fault test; `close` stops whatever is still running."""

    stack: Stack
    env: dict[str, str]
    config: Config
    logs: Path
    workers: list[subprocess.Popen[bytes]] = field(default_factory=list)

    def start(self, queues: str, name: str, *args: str) -> subprocess.Popen[bytes]:
        """Start a worker for `queues` (with more `celery worker` arguments); its log is `<logs>/<name>.log`."""
        proc = start_worker(self.env, self.log(name), queues=queues, name=name, args=args)
        self.workers.append(proc)
        return proc

    def log(self, name: str) -> Path:
        """The log file of the worker called `name`."""
        return self.logs / f"{name}.log"

    def kill(self, proc: subprocess.Popen[bytes]) -> None:
        """SIGKILL the worker and every process of its session: no shutdown, no acknowledgement."""
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)

    def client(self, **settings: Any) -> Tierq:
        """A producer whose settings match the workers' (but for the database, which the producer reaches
        directly unless `database_url=` says otherwise: the Postgres outage test cuts only the workers')."""
        update: dict[str, Any] = {
            "broker_url": self.env["TIERQ_BROKER_URL"], "redis_url": self.env["TIERQ_REDIS_URL"],
            "config": Path(self.env["TIERQ_CONFIG"]),
            "visibility_timeout_s": float(self.env["TIERQ_VISIBILITY_TIMEOUT_S"])
            if "TIERQ_VISIBILITY_TIMEOUT_S" in self.env else None,
        }
        return Tierq(self.stack.settings.model_copy(update={**update, **settings}), self.config)

    def close(self) -> None:
        """Stop the workers still running."""
        for proc in self.workers:
            stop_worker(proc)


@contextmanager
def deployment(stack: Stack, logs: Path, config_path: Path = SIM_CONFIG, **env: str) -> Iterator[Deployment]:
    """A deployment with the session's services overridden by `env`; it needs a broker of its own."""
    assert "TIERQ_BROKER_URL" in env and "TIERQ_REDIS_URL" in env
    merged = {**stack.env, "TIERQ_CONFIG": str(config_path), **env}
    run = Deployment(stack, merged, load_config(config_path), logs)
    try:
        yield run
    finally:
        run.close()


def wait_until(check: Callable[[], bool], timeout: float, what: Callable[[], object]) -> None:
    """Poll `check` until it holds; fail with `what()` (the state worth seeing) after `timeout` seconds."""
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"still not done after {timeout} s: {what()}"
        time.sleep(0.1)


def job_states(stack: Stack, batch_id: uuid.UUID) -> Counter[str]:
    """How many of the batch's jobs are in each state."""
    with stack.engine.connect() as conn:
        rows = conn.execute(text("SELECT status, count(*) FROM jobs WHERE batch_id = :b GROUP BY status"),
                            {"b": batch_id}).all()
    return Counter({status: n for status, n in rows})


def final(states: Counter[str]) -> int:
    """Jobs that reached a state they never leave."""
    return states["succeeded"] + states["failed"] + states["cancelled"]


def wait_final(stack: Stack, batch_id: uuid.UUID, jobs: int, timeout: float) -> None:
    """Wait until all `jobs` of the batch are final; fail with the batch's states and its unfinished jobs
    after `timeout` seconds."""
    wait_until(lambda: final(job_states(stack, batch_id)) == jobs, timeout,
               lambda: (job_states(stack, batch_id), unfinished(stack, batch_id)))


def unfinished(stack: Stack, batch_id: uuid.UUID, limit: int = 5) -> list[dict[str, Any]]:
    """A few of the batch's jobs that are not final, with what says who should move them."""
    with stack.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT id, status, tier, handoff, handoff_from, lease_until, recoveries, attempts, holds, "
            "now() - updated_at AS unchanged FROM jobs WHERE batch_id = :b "
            "AND status NOT IN ('succeeded', 'failed', 'cancelled') ORDER BY id LIMIT :n"),
            {"b": batch_id, "n": limit}).mappings().all()
    return [dict(row) for row in rows]


def concurrency(log: Path) -> int:
    """The pool size a worker reports in its start-up banner."""
    found = re.search(r"concurrency: (\d+)", log.read_text(errors="replace"))
    assert found, f"no concurrency in {log}"
    return int(found.group(1))


def assert_one_result_per_job(stack: Stack, tq: Tierq, batch_id: uuid.UUID, ids: list[str]) -> list[dict[str, Any]]:
    """Every job is final with exactly one result line; one 'ok' cost row per answer, none for a failure;
    the attempts a job counts are the cost rows it has. Returns the result lines."""
    results = list(tq.results(batch_id))
    assert sorted(r["id"] for r in results) == sorted(ids)
    assert {r["status"] for r in results} <= {"succeeded", "failed"}, Counter(r["status"] for r in results)
    assert all(r["content"] for r in results if r["status"] == "succeeded")
    with stack.engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT j.custom_id, j.status, j.attempts, count(c.id), count(c.id) FILTER (WHERE c.outcome IN "
            "('ok', 'cache_hit')) FROM jobs j LEFT JOIN calls c ON c.job_id = j.id WHERE j.batch_id = :b "
            "GROUP BY j.id"), {"b": batch_id}).all()
    wrong = [r for r in rows if r[4] != (1 if r[1] == "succeeded" else 0) or r[2] != r[3]]
    assert not wrong, f"(id, status, attempts, rows, answers) that do not add up: {wrong[:10]}"
    return results


@dataclass(frozen=True)
class Ledger:
    """The provider's bill beside the cost table."""

    billed: Counter[str]  # calls the provider answered (HTTP 200), by model
    recorded: Counter[str]  # cost rows of answered calls, by model
    requests: int  # every request the provider received, answered or not
    rows: int  # every cost row of a real call
    billed_usd: Decimal
    recorded_usd: Decimal

    @property
    def unrecorded(self) -> int:
        """Answered calls that have no cost row."""
        return sum((self.billed - self.recorded).values())


def ledger(stack: Stack, config: Config) -> Ledger:
    """Compare the simulator's billed calls with the cost rows (all batches of this test)."""
    stats = stack.sim_stats()
    billed = Counter(c["model"] for c in stats["calls"])
    billed_usd = sum((config.price(c["model"]).cost(Usage(c["prompt_tokens"], c["completion_tokens"],
                                                           c["cached_tokens"])) for c in stats["calls"]), Decimal(0))
    with stack.engine.connect() as conn:
        rows = conn.execute(text("SELECT model, outcome, cost_usd FROM calls WHERE outcome <> 'cache_hit'")).all()
    recorded = Counter(model for model, outcome, _ in rows if outcome not in UNBILLED)
    return Ledger(billed, recorded, int(stats["requests"]), len(rows), billed_usd,
                  sum((cost for _, _, cost in rows), Decimal(0)))


def task_runtimes(log: Path, task: str) -> list[float]:
    """Seconds each run of `task` took, from the worker's 'succeeded in' log lines."""
    pattern = re.compile(rf"Task {re.escape(task)}\[[^\]]+\] succeeded in ([0-9.]+)s")
    return [float(m.group(1)) for m in pattern.finditer(log.read_text(errors="replace"))]
