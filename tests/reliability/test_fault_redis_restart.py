"""Redis (broker and cache) restarted twice for 5 s in the middle of a batch: workers and the producer
reconnect, the batch completes, no job is lost, the cache keeps its answers, and both workers (started as
users start them) are still running at the end.

The Redis is a throwaway server with an append-only file fsynced on every write, as a production broker's
Redis must be: without persistence a restart empties the queues and every queued job is lost.
"""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from conftest import Stack
from fault_services import RedisServer
from fault_support import (
    assert_one_result_per_job,
    deployment,
    fault_config,
    final,
    job_states,
    ledger,
    wait_final,
    wait_until,
)
from sqlalchemy import text

JOBS = 300
DOWN_S = 5
# A message a worker popped just before the server stopped, and had not recorded as unacknowledged yet, is
# gone after the restart; the reconciler must find its jobs and publish it again within the test's wait.
RECONCILE = {"stuck_after_s": 10, "reconcile_every_s": 2}


def records(n: int) -> list[dict[str, str]]:
    """Distinct tickets (the ticket number keeps the cache from matching them); every tenth escalates."""
    return [
        {
            "id": f"t{i}",
            "prompt": f"ticket {i}: where is my parcel?" + (" [[sim:refuse@sim-nano]]" if i % 10 == 0 else ""),
        }
        for i in range(n)
    ]


@pytest.mark.slow
def test_a_redis_restart_mid_batch_loses_no_job(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    config = fault_config(tmp_path / "restart.toml", worker={"tier_chunk": 10, **RECONCILE})
    clean.simulate({"latency_ms": 100, "latency_jitter_ms": 1400})
    try:
        with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=server.url, TIERQ_REDIS_URL=server.url,
                        TIERQ_VISIBILITY_TIMEOUT_S="10") as run, run.client() as tq:
            workers = [run.start("classify", "router"), run.start("hot,warm,cold", "tiers")]
            first = tq.submit(records(JOBS)).batch_id
            wait_until(lambda: len(_answered(clean, first)) >= JOBS // 5, 60, lambda: job_states(clean, first))
            server.stop()
            answered = _answered(clean, first)
            assert final(job_states(clean, first)) < JOBS
            time.sleep(DOWN_S)
            server.start()
            # Once more, while the workers are busy reconnecting and redelivering.
            wait_until(lambda: len(_answered(clean, first)) > len(answered) + 10, 60, lambda: job_states(clean, first))
            server.stop()
            time.sleep(DOWN_S)
            server.start()
            again = [r for r in records(JOBS) if r["id"] in answered]
            second = tq.submit(again).batch_id  # the producer's pooled broker connection died with the server
            wait_final(clean, first, JOBS, 90)
            wait_final(clean, second, len(again), 30)
            assert_one_result_per_job(clean, tq, first, [r["id"] for r in records(JOBS)])
            repeated = assert_one_result_per_job(clean, tq, second, [r["id"] for r in again])
            assert [proc.poll() for proc in workers] == [None, None]  # both rode out the restarts
            logs = run.log("router").read_text(errors="replace") + run.log("tiers").read_text(errors="replace")
    finally:
        server.stop()
    assert "Unrecoverable error" not in logs and "Error on restarting" not in logs
    assert all(r["status"] == "succeeded" and r["cached"] for r in repeated), [r for r in repeated if not r["cached"]][
        :3
    ]
    bill = ledger(clean, run.config)
    # Nothing was killed, so every request made has its cost row and every answered one is one billed call.
    assert (bill.requests, bill.recorded) == (bill.rows, bill.billed), bill


def _answered(stack: Stack, batch: uuid.UUID) -> set[str]:
    """Jobs answered half a second ago or more, so their answers are in the cache too."""
    with stack.engine.connect() as conn:
        return set(conn.execute(text(
            "SELECT custom_id FROM jobs WHERE batch_id = :b AND status = 'succeeded' "
            "AND finished_at < now() - interval '0.5 second'"), {"b": batch}).scalars())
