"""Ctrl-C twice on a worker (Celery's cold shutdown) in the middle of a batch: the worker says once that its
running tasks cannot be killed and stops when they end, without a traceback; every job still ends once.
Before, Celery's thread pool raised NotImplementedError ("does not implement kill_job") with a traceback.
"""

from __future__ import annotations

import signal
import time
from collections import Counter
from pathlib import Path

import pytest
import redis
from conftest import Stack
from fault_support import assert_one_result_per_job, deployment, job_states, wait_final, wait_until
from sqlalchemy import text

from producer.submit import BatchOptions

JOBS = 60


@pytest.mark.slow
def test_a_cold_shutdown_leaves_running_tasks_to_end_and_no_job_twice(clean: Stack, tmp_path: Path) -> None:
    broker = clean.dbs.url(2)
    redis.Redis.from_url(broker).flushdb()
    clean.simulate({"latency_ms": 2000})
    with deployment(clean, tmp_path, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker) as run, run.client() as tq:
        first = run.start("classify,hot,warm,cold", "first")
        records = [{"id": f"t{n}", "prompt": f"ticket {n}: where is my parcel?"} for n in range(JOBS)]
        batch = tq.submit(records, BatchOptions(force_tier="hot", use_cache=False)).batch_id
        wait_until(lambda: job_states(clean, batch)["running"] > 0, 60, lambda: job_states(clean, batch))
        first.send_signal(signal.SIGINT)  # warm shutdown ...
        time.sleep(0.3)
        first.send_signal(signal.SIGINT)  # ... and, pressed again, cold
        first.wait(timeout=60)
        log = run.log("first").read_text(errors="replace")
        run.start("classify,hot,warm,cold", "second")
        wait_final(clean, batch, JOBS, 120)
        results = assert_one_result_per_job(clean, tq, batch, [r["id"] for r in records])
    assert "Traceback" not in log and "NotImplementedError" not in log, log[-3000:]
    assert log.count("a running task cannot be killed in a thread pool: it runs to its end") == 1, log[-3000:]
    assert Counter(r["status"] for r in results) == {"succeeded": JOBS}
    with clean.engine.connect() as conn:
        paid = conn.execute(text("SELECT count(*) FROM calls WHERE batch_id = :b AND outcome = 'ok'"),
                            {"b": batch}).scalar_one()
    assert paid == JOBS  # one answered call per job: none made twice
