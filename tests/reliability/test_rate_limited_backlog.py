"""A rate-limited tier whose backlog waits many times the visibility timeout: every job ends once, the
provider bills exactly one call per job, and no task holds its worker thread (and its message) while it
waits for a slot, so the broker never hands a waiting message to a second worker.

Before leases and holds, a task slept in the rate limiter until the Redis broker redelivered its message
to another thread, whose claim took the jobs back and called the model again (45 of 200 jobs billed twice).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from conftest import Stack
from fault_support import assert_one_result_per_job, deployment, fault_config, ledger, task_runtimes, wait_final
from sqlalchemy import text

from producer.submit import BatchOptions

RPM = 60  # one call a second
JOBS = 40  # about 41 s of backlog
VISIBILITY_S = 6


@pytest.mark.slow
def test_a_backlog_far_longer_than_the_visibility_timeout_pays_each_call_once(clean: Stack, tmp_path: Path) -> None:
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    config = fault_config(tmp_path / "limited.toml", worker={"tier_chunk": 10}, models={"sim-nano": {"rpm": RPM}})
    clean.simulate({"latency_ms": 20})
    with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker,
                    TIERQ_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S)) as run, run.client() as tq:
        run.start("classify,hot,warm,cold", "all", "-c", "4")
        started = time.monotonic()
        records = [{"id": f"t{n}", "prompt": f"ticket {n}: where is my parcel?"} for n in range(JOBS)]
        batch = tq.submit(records, BatchOptions(force_tier="hot", use_cache=False)).batch_id
        wait_final(clean, batch, JOBS, 120)
        took = time.monotonic() - started
        assert_one_result_per_job(clean, tq, batch, [r["id"] for r in records])
        runtimes = task_runtimes(run.log("all"), "tierq.tier")
    assert took >= 5 * VISIBILITY_S  # the backlog really outlived the visibility timeout many times
    bill = ledger(clean, run.config)
    assert bill.billed["sim-nano"] == bill.recorded["sim-nano"] == JOBS, bill
    assert bill.requests == bill.rows == JOBS, bill
    # Waiting jobs went back to their queue instead of holding a thread: no task ran near the timeout.
    assert runtimes and max(runtimes) < VISIBILITY_S, sorted(runtimes)[-5:]
    with clean.engine.connect() as conn:
        holds = conn.execute(text("SELECT sum(holds) FROM jobs")).scalar_one()
    assert holds > 0
