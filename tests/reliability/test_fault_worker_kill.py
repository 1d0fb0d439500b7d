"""A tier worker SIGKILLed in the middle of a batch, then started again: no job lost or answered twice,
and the only cost rows missing are those of calls the dead worker had in flight.

Runs with the Redis broker and with RabbitMQ. RabbitMQ redelivers a dead consumer's messages as soon as
its connection drops. Redis puts them back in a "restore sweep" once they are older than the visibility
timeout (10 s here); kombu sweeps when a worker starts and then only every ~100 s (its defaults
`unacked_restore_interval` 10 s x `unacked_restore_throttle` 10), so the replacement worker is started
once the timeout has passed and its start-up sweep brings them back.
"""

from __future__ import annotations

import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import Stack
from fault_services import rabbitmq_vhost
from fault_support import (
    Deployment,
    assert_one_result_per_job,
    concurrency,
    deployment,
    fault_config,
    final,
    job_states,
    ledger,
    wait_final,
    wait_until,
)

from producer.submit import BatchOptions

TIER_CHUNK = 10  # small chunks, so a batch is many tasks and the kill lands between and inside them
JOBS = 300
VISIBILITY_S = 10
LEASE_S = 4  # a dead worker's jobs are taken over this long after the kill
# The Redis transport loses a message a worker popped from its queue but had not yet recorded as
# unacknowledged when it was killed; the reconciler must find such a job and publish it again.
RECONCILE = {"stuck_after_s": 10, "reconcile_every_s": 2}


@pytest.fixture(params=["redis", "rabbitmq"])
def broker(request: pytest.FixtureRequest, clean: Stack) -> Iterator[str]:
    """The broker URL of one test: a spare Redis database of the session, or a vhost of its own."""
    if request.param == "redis":
        url = clean.dbs.url(2)
        redis.Redis.from_url(url).flushdb()
        yield url
    else:
        with rabbitmq_vhost() as url:
            yield url


def records(n: int) -> list[dict[str, str]]:
    """Distinct tickets; every tenth is refused by the hot tier's model, so it escalates mid-batch."""
    return [
        {
            "id": f"t{i}",
            "prompt": f"ticket {i}: where is my parcel?" + (" [[sim:refuse@sim-nano]]" if i % 10 == 0 else ""),
        }
        for i in range(n)
    ]


@pytest.mark.slow
def test_a_killed_worker_loses_no_job_and_at_most_its_in_flight_cost_rows(
    clean: Stack, broker: str, tmp_path: Path
) -> None:
    cache = clean.dbs.url(2)
    redis.Redis.from_url(cache).flushdb()
    config = fault_config(tmp_path / "kill.toml", worker={"tier_chunk": TIER_CHUNK, "lease_s": LEASE_S, **RECONCILE})
    # Latencies spread over 0.1-2.5 s: a task writes its answered jobs' cost rows up to `flush_ms` after they
    # came back and its refusals' once the slowest call is back, so for most of its life it holds answered
    # calls not yet recorded, and the kill lands among them.
    clean.simulate({"latency_ms": 100, "latency_jitter_ms": 2400})
    with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=cache,
                    TIERQ_VISIBILITY_TIMEOUT_S=str(VISIBILITY_S)) as run, run.client() as tq:
        run.start("classify", "router")
        doomed = run.start("hot,warm,cold", "tiers1")
        batch = tq.submit(records(JOBS), BatchOptions(use_cache=False)).batch_id
        _kill_mid_batch(clean, run, doomed, batch)
        # Started at once: with the Redis broker the dead worker's messages come back after the
        # visibility timeout, in the next sweep of unacknowledged messages (every few seconds).
        run.start("hot,warm,cold", "tiers2")
        wait_final(clean, batch, JOBS, 60)
        results = assert_one_result_per_job(clean, tq, batch, [r["id"] for r in records(JOBS)])
        threads = concurrency(run.log("tiers1"))
    assert sum(r["tier"] == "warm" for r in results) >= JOBS // 10  # the escalations went through too
    bill = ledger(clean, run.config)
    assert all(bill.recorded[m] <= bill.billed[m] for m in bill.recorded), (bill.billed, bill.recorded)
    assert bill.recorded_usd <= bill.billed_usd
    # The one allowed gap: calls answered while their worker died, before it wrote them. A billed call
    # ends a job's turn at a tier, so it is at most one call per job the dead worker held.
    assert 0 < bill.unrecorded <= threads * TIER_CHUNK, bill
    assert bill.requests - bill.rows <= threads * TIER_CHUNK, bill


def _kill_mid_batch(stack: Stack, run: Deployment, doomed: subprocess.Popen[bytes], batch: uuid.UUID) -> None:
    """SIGKILL the tier worker once part of the batch is done and it holds answered, unrecorded calls."""
    def exposed() -> bool:
        states = job_states(stack, batch)
        if final(states) < JOBS // 5 or not states["running"]:
            return False
        return ledger(stack, run.config).unrecorded >= TIER_CHUNK  # more than one task's worth

    wait_until(exposed, 60, lambda: (job_states(stack, batch), ledger(stack, run.config)))
    run.kill(doomed)
    assert final(job_states(stack, batch)) < JOBS
