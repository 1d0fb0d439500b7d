"""Redis (broker and cache) stops while a chunk's calls are out and starts again after they came back: the
answers paid for during the outage are recorded once, not thrown away and asked again.

Between the calls' answers and their cost rows a chunk asks Redis which answers to audit (and, for a
private batch, seals them in the vault). Before 2026-11-30 an outage there failed the task, and the
redelivered message paid for every answered call of the chunk a second time.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from conftest import Stack
from fault_services import RedisServer
from fault_support import audited_as_users_are, deployment, fault_config, ledger, wait_final, wait_until

JOBS = 90
DOWN_S = 4  # longer than the slowest call (2.5 s), so every call comes back while Redis is away


@pytest.mark.slow
def test_calls_answered_while_redis_is_down_are_paid_once(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    config = audited_as_users_are(fault_config(tmp_path / "outage.toml", worker={"tier_chunk": 30}))
    clean.simulate({"latency_ms": 2000, "latency_jitter_ms": 500})  # under the hot tier's timeout
    try:
        with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=server.url, TIERQ_REDIS_URL=server.url) as run, \
                run.client() as tq:
            run.start("classify", "router")
            run.start("hot,warm,cold", "tiers")
            batch = tq.submit([{"id": f"t{i}", "prompt": f"ticket {i}: where is parcel {i}?"}
                               for i in range(JOBS)]).batch_id
            wait_until(lambda: clean.sim_stats()["in_flight"] >= JOBS, 60, clean.sim_stats)
            server.stop()
            time.sleep(DOWN_S)
            assert clean.sim_stats()["in_flight"] == 0  # every call came back while Redis was away
            server.start()
            wait_final(clean, batch, JOBS, 90)
            logs = run.log("tiers").read_text(errors="replace")
    finally:
        server.stop()
    bill = ledger(clean, run.config)
    hot = run.config.tier("hot").models  # each job's call made once there (an audit adds a reference call)
    assert sum(bill.billed[model] for model in hot) == JOBS, (bill, logs[-3000:])
    assert (bill.requests, bill.recorded) == (bill.rows, bill.billed), bill
    assert "chosen by draw alone" in logs  # the audit choice met the outage and let the answers through
