"""Flower with the project as it is: real per-tier workers, a real `celery -A workers flower`, a real batch.

Flower's HTTP API must show a worker on every tier's queue and every task with its tier, job ids and
batch id, and never an API key: the workers run with a canary key that must appear in no response.
"""

from __future__ import annotations

import ast
import base64
import contextlib
import json
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from conftest import ROOT, Stack, start_worker, stop_worker
from deploy_support import closed_port, sim_variant
from sqlalchemy import text

CANARY = "sk-canary-flower-7d41e0b2c9"
LOGIN = "ops:flower-test-password"
TIERS = ("hot", "warm", "cold")
RECORDS = [
    {"id": "simple", "prompt": "Where is my parcel? I ordered it on Monday."},
    {"id": "code", "prompt": "My script gets a traceback from your API: KeyError 'sku'."},
    {"id": "design", "prompt": "What architecture would you suggest for syncing stock, and the trade-offs?"},
]


class Flower:
    """A running Flower process and a client for its HTTP API that keeps every body it read."""

    def __init__(self, port: int) -> None:
        self.root = f"http://127.0.0.1:{port}"
        self.bodies: list[str] = []

    def get(self, path: str, login: str | None = LOGIN) -> tuple[int, str]:
        request = urllib.request.Request(self.root + path)
        if login is not None:
            request.add_header("Authorization", "Basic " + base64.b64encode(login.encode()).decode())
        try:
            with urllib.request.urlopen(request, timeout=10) as response:
                status, body = response.status, response.read().decode()
        except urllib.error.HTTPError as error:
            status, body = error.code, error.read().decode()
        self.bodies.append(body)
        return status, body

    def json(self, path: str) -> Any:
        status, body = self.get(path)
        assert status == 200, (path, status, body)
        return json.loads(body)


@contextlib.contextmanager
def running_flower(env: dict[str, str], log_path: Path) -> Iterator[Flower]:
    """`celery -A workers flower` on a free port, as the compose file and the README run it."""
    port = closed_port()
    command = [sys.executable, "-m", "celery", "-A", "workers", "flower", f"--port={port}", "--address=127.0.0.1"]
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            command, env=env, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, start_new_session=True
        )
    flower = Flower(port)
    try:
        wait_for(lambda: _answers(flower), 30, lambda: f"Flower did not start:\n{log_path.read_text()[-3000:]}")
        yield flower
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


def _answers(flower: Flower) -> bool:
    try:
        return flower.get("/healthcheck", login=None)[0] == 200
    except OSError:
        return False


def wait_for(condition: Callable[[], Any], timeout: float, message: Callable[[], str]) -> Any:
    """Poll `condition` until it returns something truthy; fail with `message()` after `timeout` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = condition()
        if found:
            return found
        time.sleep(0.3)
    pytest.fail(message())


def tier_consumers(flower: Flower) -> dict[str, list[str]]:
    """Queue name -> workers consuming it, as Flower's worker API reports them."""
    consumers: dict[str, list[str]] = {}
    for worker, info in flower.json("/api/workers?refresh=1").items():
        for queue in info.get("active_queues") or []:
            consumers.setdefault(queue["name"], []).append(worker)
    return consumers


def finished_tier_tasks(flower: Flower) -> dict[str, dict[str, Any]] | None:
    """Every tierq.tier task Flower knows, by tier, once each tier has a succeeded one."""
    tasks = flower.json("/api/tasks?limit=1000")
    done = {t["args"]: t for t in tasks.values() if t["name"] == "tierq.tier" and t["state"] == "SUCCESS"}
    by_tier = {ast.literal_eval(args)[0]: task for args, task in done.items()}
    return by_tier if set(by_tier) >= set(TIERS) else None


@pytest.mark.slow
def test_flower_shows_every_tier_worker_queue_and_task(clean: Stack, tmp_path: Path) -> None:
    config = sim_variant(tmp_path / "canary.toml", provider='api_key_env = "TIERQ_CANARY_KEY"')
    env = {**clean.env, "TIERQ_CONFIG": str(config), "TIERQ_CANARY_KEY": CANARY, "FLOWER_BASIC_AUTH": LOGIN}
    workers: list[subprocess.Popen[bytes]] = []
    with running_flower(env, tmp_path / "flower.log") as flower:
        try:
            for tier in TIERS:
                workers.append(start_worker(env, tmp_path / f"{tier}.log", queues=tier, name=tier))
            assert flower.get("/api/workers", login=None)[0] == 401
            assert flower.get("/api/workers", login="ops:wrong")[0] == 401

            consumers = wait_for(
                lambda: (
                    (c := tier_consumers(flower))
                    and all(any(w.startswith(f"{t}-") for w in c.get(t, [])) for t in TIERS)
                    and c
                ),
                30,
                lambda: f"Flower does not see a worker per tier: {tier_consumers(flower)}",
            )
            assert set(consumers) >= {"classify", *TIERS}

            with clean.client() as tq:
                batch = tq.submit(RECORDS)
                clean.wait(tq, batch.batch_id)
            with clean.engine.connect() as conn:
                started = dict(
                    conn.execute(
                        text("SELECT id, start_tier FROM jobs WHERE batch_id = :b"), {"b": batch.batch_id}
                    ).all()
                )
            assert sorted(started.values()) == sorted(TIERS)

            by_tier = wait_for(lambda: finished_tier_tasks(flower), 20, lambda: f"tasks: {flower.json('/api/tasks')}")
            for job_id, tier in started.items():
                task = by_tier[tier]
                assert ast.literal_eval(task["args"]) == [tier, [job_id]]
                assert ast.literal_eval(task["kwargs"]) == {"batch": str(batch.batch_id)}
                assert flower.json(f"/api/task/info/{task['uuid']}")["name"] == "tierq.tier"

            lengths = {q["name"]: q["messages"] for q in flower.json("/api/queues/length")["active_queues"]}
            assert set(lengths) >= {"classify", *TIERS} and all(n == 0 for n in lengths.values())
            status, metrics = flower.get("/metrics", login=None)
            assert status == 200 and 'flower_events_total{' in metrics and 'task="tierq.tier"' in metrics
        finally:
            for proc in workers:
                stop_worker(proc)
    logs = "".join(path.read_text(errors="replace") for path in tmp_path.glob("*.log"))
    assert not any(CANARY in body for body in flower.bodies), "an API key reached Flower"
    assert CANARY not in logs, "an API key reached a log"
