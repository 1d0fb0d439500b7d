"""Redis (broker and cache) reaches maxmemory with `noeviction` while a chunk's calls are out, and refuses
every write until memory is freed: the answers paid for meanwhile are recorded once, and the batch ends once
Redis takes writes again.

Before 2026-12-01 Redis's OutOfMemoryError was not taken for an outage: the audit choice between a chunk's
answers and its cost rows failed the task, and its redelivered message paid for every answered call again
(200 of 1,000 calls paid twice in a banking77 batch); a job whose calls met it failed for good.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
import redis
from conftest import SIM_CONFIG, Stack
from fault_services import RedisServer
from fault_support import audited_as_users_are, deployment, fault_config, ledger, wait_final, wait_until

JOBS = 90
FULL_S = 5  # longer than the slowest call (2.5 s), so every call comes back while Redis is full


@pytest.mark.slow
def test_calls_answered_while_redis_is_full_are_paid_once(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    config = audited_as_users_are(fault_config(tmp_path / "full.toml", worker={"tier_chunk": 30}))
    clean.simulate({"latency_ms": 2000, "latency_jitter_ms": 500})  # under the hot tier's timeout
    admin = redis.Redis.from_url(server.url)
    try:
        with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=server.url, TIERQ_REDIS_URL=server.url) as run, \
                run.client() as tq:
            run.start("classify", "router")
            tiers = run.start("hot,warm,cold", "tiers")
            batch = tq.submit([{"id": f"t{i}", "prompt": f"ticket {i}: where is parcel {i}?"}
                               for i in range(JOBS)]).batch_id
            wait_until(lambda: clean.sim_stats()["in_flight"] >= JOBS, 60, clean.sim_stats)
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")  # every write refused: "OOM command not allowed ..."
            time.sleep(FULL_S)
            assert clean.sim_stats()["in_flight"] == 0  # every call came back while Redis was full
            admin.config_set("maxmemory", "0")
            wait_final(clean, batch, JOBS, 120)
            logs = run.log("tiers").read_text(errors="replace") + run.log("router").read_text(errors="replace")
            assert tiers.poll() is None, logs[-3000:]
    finally:
        admin.close()
        server.stop()
    bill = ledger(clean, run.config)
    hot = run.config.tier("hot").models  # each job's call made once there (an audit adds a reference call)
    assert sum(bill.billed[model] for model in hot) == JOBS, (bill, logs[-3000:])
    assert (bill.requests, bill.recorded) == (bill.rows, bill.billed), bill
    assert "Redis is full" in logs  # the audit choice met it, said so, and let the answers through
    assert "Traceback" not in logs, logs[-3000:]  # the libraries' outage tracebacks are one line each


@pytest.mark.slow
def test_a_worker_started_while_redis_is_full_waits_for_it(clean: Stack, tmp_path: Path) -> None:
    # Before 2026-12-01 a full Redis refused the consumer's first MULTI (a delivery, an acknowledgement, a
    # queue's binding) and Celery stopped the worker: "Unrecoverable error: OutOfMemoryError".
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")
    server.start()
    admin = redis.Redis.from_url(server.url)
    try:
        with deployment(clean, tmp_path, SIM_CONFIG, TIERQ_BROKER_URL=server.url, TIERQ_REDIS_URL=server.url) as run, \
                run.client() as tq:
            batch = tq.submit([{"id": f"t{i}", "prompt": f"where is parcel {i}?"} for i in range(20)]).batch_id
            admin.config_set("maxmemory-policy", "noeviction")
            admin.config_set("maxmemory", "1")
            with ThreadPoolExecutor(2) as pool:  # each start returns once its worker is ready
                starting = [pool.submit(run.start, "classify", "router"),
                            pool.submit(run.start, "hot,warm,cold", "tiers")]
                time.sleep(6)
                admin.config_set("maxmemory", "0")
                workers = [future.result() for future in starting]  # a worker that stopped fails the test here
            wait_final(clean, batch, 20, 90)
            logs = run.log("tiers").read_text(errors="replace") + run.log("router").read_text(errors="replace")
            assert [w.poll() for w in workers] == [None, None], logs[-3000:]
    finally:
        admin.close()
        server.stop()
    assert "Unrecoverable error" not in logs, logs[-3000:]
    # Before 2026-12-01 each process said "Cannot connect ... Trying to reconnect" about twice a second, with
    # a traceback of Celery's "Frequent restarts detected" every second; now once per 30 s each, no traceback.
    assert logs.count("Trying to reconnect") <= 2 and "Traceback" not in logs, logs[-3000:]
