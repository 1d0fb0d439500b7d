"""`tierq metrics`: one real scrape after a real batch matches Redis and Postgres; a dead source shows as 0."""

from __future__ import annotations

import os
import signal
import subprocess
import time
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from conftest import Stack
from deploy_support import TIERQ, closed_port, sim_variant
from kombu import Connection, Exchange, Queue
from prometheus_client.parser import text_string_to_metric_families
from sqlalchemy import text

from models import make_engine
from producer.broker import make_sender
from producer.metrics import TierqCollector
from tierq.broker import queue_lengths
from tierq.config import load_config
from tierq.contract import TIER_TASK

AMQP_URL = os.environ.get("TIERQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//")
FROZEN = '[[tiers]]\nname = "frozen"\nmodels = ["sim-flagship"]\n'
Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


def scrape(url: str) -> Samples:
    """Every sample of one scrape, keyed by name and sorted labels."""
    with urllib.request.urlopen(url, timeout=10) as response:
        body = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(body) for sample in family.samples
    }


@pytest.fixture()
def exporter(clean: Stack, tmp_path: Path) -> Iterator[tuple[str, Path]]:
    """`tierq metrics` on a free port, for a config with a tier ("frozen") that no worker serves."""
    config = sim_variant(tmp_path / "frozen.toml", append=FROZEN)
    port = closed_port()
    env = {**clean.env, "TIERQ_CONFIG": str(config)}
    proc = subprocess.Popen([*TIERQ, "metrics", "--port", str(port)], env=env, cwd=tmp_path,
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    url = f"http://127.0.0.1:{port}/metrics"
    deadline = time.monotonic() + 20
    while True:
        try:
            urllib.request.urlopen(url, timeout=5).close()
            break
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                proc.kill()
                pytest.fail(f"tierq metrics did not start: {proc.communicate()[1].decode()[-2000:]}")
            time.sleep(0.2)
    try:
        yield url, config
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=10) == 0, "tierq metrics stops cleanly on SIGTERM"
        if proc.stderr is not None:
            proc.stderr.close()


def test_a_scrape_shows_queue_lengths_jobs_and_spend_per_model(clean: Stack, exporter: tuple[str, Path]) -> None:
    url, config_path = exporter
    with clean.client() as tq:
        batch = tq.submit([{"id": "simple", "prompt": "Where is my parcel?"},
                           {"id": "design", "prompt": "Which architecture would you pick, and the trade-offs?"}])
        clean.wait(tq, batch.batch_id)
    sender = make_sender(load_config(config_path), clean.settings.broker)
    broker = redis.Redis.from_url(clean.settings.broker)
    try:
        # Two messages nobody consumes; one with a priority, which kombu keeps in a list of its own.
        sender.send_task(TIER_TASK, args=["frozen", [0]], queue="frozen")
        sender.send_task(TIER_TASK, args=["frozen", [0]], queue="frozen", priority=9)
        samples = scrape(url)
    finally:
        sender.close()
        broker.delete(*broker.keys("frozen*"))
        broker.close()
    assert samples[("tierq_queue_length", (("queue", "frozen"),))] == 2
    for queue in ("classify", "hot", "warm", "cold"):
        assert samples[("tierq_queue_length", (("queue", queue),))] == 0
    assert samples[("tierq_up", (("source", "broker"),))] == 1
    assert samples[("tierq_up", (("source", "postgres"),))] == 1
    with clean.engine.connect() as conn:
        spend = dict(conn.execute(text("SELECT model, sum(cost_usd) FROM calls GROUP BY model")).all())
        jobs = dict(conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all())
    assert spend and all(amount > 0 for amount in spend.values())
    for model, amount in spend.items():
        assert samples[("tierq_spend_usd_total", (("model", model),))] == pytest.approx(float(amount), rel=1e-9)
    exported_jobs: dict[str, float] = {}
    for (name, labels), value in samples.items():
        if name == "tierq_jobs":
            status = dict(labels)["status"]
            exported_jobs[status] = exported_jobs.get(status, 0) + value
    assert exported_jobs == {status: float(count) for status, count in jobs.items()} == {"succeeded": 2.0}


def test_a_source_that_is_down_reads_as_not_up() -> None:
    engine = make_engine(f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/tierq", pool_size=1)
    collector = TierqCollector(engine, f"redis://127.0.0.1:{closed_port()}/0", ["hot"], timeout=1)
    families = {family.name: family for family in collector.collect()}
    engine.dispose()
    assert set(families) == {"tierq_up"}
    assert {s.labels["source"]: s.value for s in families["tierq_up"].samples} == {"broker": 0, "postgres": 0}


def test_queue_lengths_on_a_rabbitmq_broker() -> None:
    name = f"tierq-test-{uuid.uuid4().hex[:8]}"
    try:
        # Confirmed publishes, so the messages are in the queue before it is measured.
        conn = Connection(AMQP_URL, connect_timeout=3, transport_options={"confirm_publish": True})
        conn.ensure_connection(max_retries=0)
    except OSError as exc:
        if os.environ.get("CI"):
            pytest.fail(f"RabbitMQ is not reachable at {AMQP_URL} ({exc}); .ci/run starts it")
        pytest.skip(f"RabbitMQ is not reachable at {AMQP_URL} ({exc})")
    queue = Queue(name, Exchange(name), routing_key=name, auto_delete=False)
    with conn:
        producer = conn.Producer()
        for _ in range(3):
            producer.publish({"n": 1}, exchange=queue.exchange, routing_key=name, declare=[queue])
        try:
            assert queue_lengths(AMQP_URL, [name, f"{name}-missing"]) == {name: 3, f"{name}-missing": 0}
        finally:
            queue.bind(conn.default_channel).delete()
            queue.exchange.bind(conn.default_channel).delete()
