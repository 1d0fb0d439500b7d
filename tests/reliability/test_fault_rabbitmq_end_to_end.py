"""The pipeline end to end with RabbitMQ as the broker (`TIERQ_BROKER_URL=amqp://...`): routing,
escalation, provider errors, the last tier's failure, the shared cache, and exact cost accounting.

The worker-kill test runs with RabbitMQ too (test_fault_worker_kill.py).
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from conftest import Stack
from fault_services import rabbitmq_vhost
from fault_support import assert_one_result_per_job, deployment, ledger, wait_final

SIMPLE = "Where is my parcel? I ordered it on Monday."
RECORDS = [
    {"id": "simple", "prompt": SIMPLE},
    {"id": "code", "prompt": "My script gets a traceback from your API: KeyError 'sku'."},
    {"id": "design", "prompt": "What architecture would you suggest for syncing stock, and the trade-offs?"},
    # Questions of their own: with SIMPLE's text they would share its cached answer.
    {"id": "refused", "prompt": "Can I still change the delivery address? [[sim:refuse@sim-nano]]"},
    {"id": "down", "prompt": "Do you ship to Norway, and how long does it take? [[sim:500@sim-nano]]"},
    {"id": "doomed", "prompt": "Why was my account locked after one login? [[sim:refuse]]"},
    {"id": "dup1", "prompt": "I was charged twice for the same order. Please refund one of the charges."},
    {"id": "dup2", "prompt": "I was charged twice for the same order. Please refund one of the charges."},
    *({"id": f"t{n}", "prompt": f"ticket {n}: {SIMPLE}"} for n in range(200)),
]


@pytest.mark.slow
def test_the_pipeline_runs_end_to_end_on_rabbitmq(clean: Stack, tmp_path: Path) -> None:
    cache = clean.dbs.url(2)
    redis.Redis.from_url(cache).flushdb()
    clean.simulate({"latency_ms": 50, "latency_jitter_ms": 100})
    with rabbitmq_vhost() as broker, deployment(clean, tmp_path, TIERQ_BROKER_URL=broker,
                                                TIERQ_REDIS_URL=cache) as run, run.client() as tq:
        run.start("classify", "router")
        run.start("hot,warm,cold", "tiers")
        batch = tq.submit(RECORDS).batch_id
        wait_final(clean, batch, len(RECORDS), 60)
        results = {r["id"]: r for r in assert_one_result_per_job(clean, tq, batch, [r["id"] for r in RECORDS])}
        again = tq.submit([{"id": "later", "prompt": SIMPLE}]).batch_id
        wait_final(clean, again, 1, 30)
        (later,) = list(tq.results(again))
    assert "amqp://" in run.log("tiers").read_text(errors="replace")  # the banner names the transport
    assert {k: (results[k]["tier"], results[k]["model"]) for k in ("simple", "code", "design", "refused", "down")} == {
        "simple": ("hot", "sim-nano"), "code": ("warm", "sim-mid"), "design": ("cold", "sim-flagship"),
        "refused": ("warm", "sim-mid"), "down": ("hot", "sim-mini"),
    }
    assert results["doomed"]["status"] == "failed" and results["doomed"]["error"].startswith(
        "cold: sim-flagship: refusal"
    )
    assert [results[k]["cached"] for k in ("dup1", "dup2")].count(True) == 1  # one call for the two
    assert later["cached"] and later["content"] == results["simple"]["content"]
    bill = ledger(clean, run.config)
    assert (bill.requests, bill.recorded, bill.recorded_usd) == (bill.rows, bill.billed, bill.billed_usd), bill
