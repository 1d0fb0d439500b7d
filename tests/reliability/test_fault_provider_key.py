"""The provider refuses tierq's API key (wrong, revoked): every call gets HTTP 401. The jobs wait, as for an
outage, and `tierq status` and the workers' log say why and what to do; once the key works they all
succeed at their tier. Before, each job tried every model of every tier (five 401s), escalating on the way,
and the whole batch failed, with only "sim-nano: 60 of 60 calls failed (http_4xx 60)" to go on.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from collections import Counter
from decimal import Decimal
from pathlib import Path

import pytest
import redis
from conftest import SIM_CONFIG, Stack
from fault_support import assert_one_result_per_job, deployment, fault_config, job_states, wait_final, wait_until
from sqlalchemy import text

from fakellm.testing import running_server
from models.enums import CallOutcome
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.money import Usage
from workers.gates import Hold, HoldKind, key_refused
from workers.llm import CallRecord

JOBS = 40
REFUSAL = ("key: provider 'sim' refused a call without an API key (HTTP 401); name the variable that holds its key "
           "with api_key_env in [providers.sim] and restart the workers")


def _held(stack: Stack, batch: object) -> dict[str, int]:
    with stack.engine.connect() as conn:
        return dict(conn.execute(text("SELECT COALESCE(error, ''), count(*) FROM jobs WHERE batch_id = :b "
                                      "AND held_since IS NOT NULL GROUP BY 1"), {"b": batch}).all())


@pytest.mark.slow
def test_jobs_wait_while_the_provider_refuses_the_key_and_succeed_once_it_works(clean: Stack, tmp_path: Path) -> None:
    broker = clean.dbs.url(2)
    redis.Redis.from_url(broker).flushdb()
    config = fault_config(tmp_path / "key.toml", worker={"tier_chunk": 10, "breaker_failures": 3,
                                                         "breaker_open_s": 1, "breaker_max_open_s": 2,
                                                         "outage_limit_s": 600},
                          simulator={"api_key": "sk-test-the-right-one"})
    with (running_server(config, stderr_path=tmp_path / "sim.err") as sim,
          deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker,
                     TIERQ_SIM_URL=sim.base_url) as run, run.client() as tq):
        run.start("classify,hot,warm,cold", "all")
        records = [{"id": f"t{n}", "prompt": f"ticket {n}: where is my parcel?"} for n in range(JOBS)]
        batch = tq.submit(records, BatchOptions(use_cache=False)).batch_id
        wait_until(lambda: sum(_held(clean, batch).values()) == JOBS, 60,
                   lambda: (job_states(clean, batch), _held(clean, batch)))
        during = job_states(clean, batch)
        held = _held(clean, batch)
        shown = subprocess.run([str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "tierq"), "status",
                                str(batch), "--json"], env=run.env, capture_output=True, text=True, timeout=60,
                               check=False)
        refused_calls = sim.stats()["unauthorized"]
        sim.configure({"latency_ms": 0})  # the key is fixed (here: the provider stops asking for it)
        wait_final(clean, batch, JOBS, 90)
        results = assert_one_result_per_job(clean, tq, batch, [r["id"] for r in records])
        log = run.log("all").read_text(errors="replace")
    assert during.get("failed", 0) == 0 and during.get("succeeded", 0) == 0, during
    assert set(held) == {REFUSAL}, held
    status = json.loads(shown.stdout)
    assert (status["held"], status["held_reason"]) == (JOBS, next(iter(held))), shown.stderr[-2000:]
    # One refused call per job at most, and the breaker's probes: not the five models x jobs of before.
    assert 0 < refused_calls < 2 * JOBS, refused_calls
    assert Counter(r["status"] for r in results) == {"succeeded": JOBS}
    with clean.engine.connect() as conn:
        escalations = conn.execute(text("SELECT sum(escalations) FROM jobs WHERE batch_id = :b"),
                                   {"b": batch}).scalar_one()
        refused_rows = conn.execute(text("SELECT count(*), COALESCE(sum(cost_usd), 0) FROM calls WHERE batch_id = :b "
                                         "AND outcome = 'http_4xx'"), {"b": batch}).one()
    assert escalations == 0
    assert refused_rows[0] == refused_calls and refused_rows[1] == 0, refused_rows
    assert f"{REFUSAL.removeprefix('key: ')}; no call goes to it for" in log
    assert "sk-test-the-right-one" not in log


def test_only_a_401_is_a_refused_key_not_a_403_for_one_model_or_prompt() -> None:
    config = load_config(SIM_CONFIG)

    def record(status: int) -> CallRecord:
        return CallRecord(uuid.uuid4(), "sim-nano", "sim", Usage(0, 0), Decimal(0), 3, CallOutcome.HTTP_4XX,
                          f"HTTP {status}: no", status=status)

    assert key_refused(config, "sim", record(401)) == REFUSAL
    assert Hold(HoldKind.OUTAGE, 1.0, REFUSAL).refused_key
    # 403: the key may not use this model, or moderation flagged this prompt: an error of this call only.
    assert key_refused(config, "sim", record(403)) is None
    assert not Hold(HoldKind.OUTAGE, 1.0, "connection: provider 'sim' cannot be reached").refused_key
