"""RabbitMQ drops a worker's connections while its tasks run (a broker restart, a failover, a network blip).

The worker reconnects; the tasks that were running finish and their acknowledgements fail (the channel is
gone), so RabbitMQ hands those messages out again and the leases make the second delivery call nothing.
Celery's "prefetch count reduction" after a reconnect restores the prefetch count from the thread that
acknowledged a task, with a synchronous basic.qos on the consumer's connection, which the worker's main
thread reads at the same time: py-amqp is not thread-safe, and the two reads could split a frame. Before
2026-12-01 a `rabbitmqctl stop_app; sleep 20; rabbitmqctl start_app` in the middle of a batch left a
worker spinning at 100% CPU in py-amqp's `_read` (a frame header read as a length of 1,006,979,211 bytes),
taking no message, for good: 657 of 4,000 jobs never ended, and `tierq status` showed nothing wrong
(2 hangs in 4 such restarts). The test closes the connections from the broker's side, in the test's own vhost
(other users of the broker see nothing), and checks that no reduction runs, since the hang itself needs the
two threads to meet inside one frame.
"""

from __future__ import annotations

import shutil
import subprocess
import time
from pathlib import Path

import pytest
import redis
from conftest import Stack
from fault_services import rabbitmq_vhost
from fault_support import assert_one_result_per_job, deployment, fault_config, ledger, wait_final, wait_until

JOBS = 300


def close_connections(vhost: str) -> int:
    """Close every client connection of `vhost` from the broker's side; how many there were."""
    ctl = shutil.which("rabbitmqctl")
    assert ctl is not None
    listed = subprocess.run([ctl, "list_connections", "-q", "-p", vhost, "pid"], capture_output=True, text=True,
                            timeout=60, check=True).stdout.split()
    pids = [pid for pid in listed if pid.startswith("<")]
    for pid in pids:
        subprocess.run([ctl, "close_connection", pid, "tierq fault test"], capture_output=True, timeout=60,
                       check=False)  # one may have closed on its own in between
    return len(pids)


@pytest.mark.slow
def test_a_worker_whose_rabbitmq_connections_drop_mid_batch_takes_messages_again_and_pays_once(
    clean: Stack, tmp_path: Path
) -> None:
    cache = clean.dbs.url(2)
    redis.Redis.from_url(cache).flushdb()
    clean.simulate({"latency_ms": 800, "latency_jitter_ms": 400})
    config = fault_config(tmp_path / "tierq.toml", worker={"tier_chunk": 5})
    with rabbitmq_vhost() as broker, deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker,
                                                TIERQ_REDIS_URL=cache) as run, run.client() as tq:
        run.start("classify,hot,warm,cold", "w", "-c", "4")
        batch = tq.submit([{"id": f"t{n}", "prompt": f"ticket {n}: where is parcel {n}?"}
                           for n in range(JOBS)]).batch_id
        wait_until(lambda: tq.status(batch).count_final() >= 20, 60, lambda: tq.status(batch).as_dict())
        vhost = broker.rsplit("/", 1)[1]
        for _ in range(3):  # each time while the worker's four threads wait on calls
            assert close_connections(vhost) > 0
            time.sleep(4)
        wait_final(clean, batch, JOBS, 120)
        assert_one_result_per_job(clean, tq, batch, [f"t{n}" for n in range(JOBS)])
    log = run.log("w").read_text(errors="replace")
    assert log.count("Connected to amqp://") >= 2, "the connections were not dropped"
    assert "Temporarily reducing the prefetch count" not in log  # basic.qos from the acknowledging thread
    bill = ledger(clean, run.config)
    assert (bill.requests, bill.recorded, bill.recorded_usd) == (bill.rows, bill.billed, bill.billed_usd), bill
