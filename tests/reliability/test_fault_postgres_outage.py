"""Postgres unreachable for ~10 s in the middle of a batch: tasks retry, the batch completes, and no cost
row is lost or written twice.

The workers reach Postgres through a TCP proxy in this process; the outage drops every proxied connection
and refuses new ones, which is what clients see when the database restarts or the network fails. The
producer keeps the direct connection, and submits a second batch during the outage, so the classify
step meets the outage too.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import redis
from conftest import Stack
from fault_services import TcpProxy
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
from sqlalchemy.engine import make_url

JOBS = 300
OUTAGE_S = 10


def records(n: int, prefix: str = "t") -> list[dict[str, str]]:
    """Distinct tickets; every tenth is refused by the hot tier's model, so it escalates."""
    return [{"id": f"{prefix}{i}", "prompt": f"ticket {prefix}{i}: where is my parcel?"
             + (" [[sim:refuse@sim-nano]]" if i % 10 == 0 else "")} for i in range(n)]


@pytest.mark.slow
def test_a_database_outage_mid_batch_loses_and_doubles_no_cost_row(clean: Stack, tmp_path: Path) -> None:
    direct = make_url(clean.env["TIERQ_DATABASE_URL"])
    proxy = TcpProxy(direct.port or 5432, direct.host or "127.0.0.1")
    proxy.start()
    broker = clean.dbs.url(2)
    redis.Redis.from_url(broker).flushdb()
    config = fault_config(tmp_path / "outage.toml", worker={"tier_chunk": 10, "classify_chunk": 50})
    clean.simulate({"latency_ms": 100, "latency_jitter_ms": 1400})
    proxied = direct.set(host="127.0.0.1", port=proxy.port).render_as_string(hide_password=False)
    try:
        with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker,
                        TIERQ_DATABASE_URL=proxied) as run, run.client() as tq:
            run.start("classify", "router")
            run.start("hot,warm,cold", "tiers")
            first = tq.submit(records(JOBS)).batch_id

            def exposed() -> bool:  # tasks hold answered calls whose cost rows are not written yet
                states = job_states(clean, first)
                return final(states) >= JOBS // 5 and states["running"] > 0 and ledger(clean, run.config).unrecorded > 0

            wait_until(exposed, 60, lambda: job_states(clean, first))
            proxy.cut()
            second = tq.submit(records(50, "late")).batch_id  # routed while the database is away
            time.sleep(OUTAGE_S)
            assert final(job_states(clean, first)) < JOBS and final(job_states(clean, second)) == 0
            proxy.resume()
            wait_final(clean, first, JOBS, 120)
            wait_final(clean, second, 50, 60)
            assert_one_result_per_job(clean, tq, first, [r["id"] for r in records(JOBS)])
            assert_one_result_per_job(clean, tq, second, [r["id"] for r in records(50, "late")])
    finally:
        proxy.close()
    # The outage was met where it matters: writes of paid calls waited, claims and routing retried.
    assert "failed (OperationalError); retrying" in run.log("tiers").read_text(errors="replace")
    assert "Retry in" in run.log("router").read_text(errors="replace")
    bill = ledger(clean, run.config)
    # Nothing was killed: every request has exactly one cost row, and the rows cost what was billed.
    assert (bill.requests, bill.recorded, bill.recorded_usd) == (bill.rows, bill.billed, bill.billed_usd), bill
