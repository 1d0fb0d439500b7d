"""Shared per-model rate limits: under the limit in every 60 s window, close to it, paused by 429s."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from conftest import SIM_CONFIG, RedisDbs, Stack, start_worker, stop_worker

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import load_config
from workers.ratelimit import Admission, RateLimiter


def limited_config(tmp_path: Path, rpm: int) -> Path:
    text = SIM_CONFIG.read_text().replace('[models."sim-nano"]\n', f'[models."sim-nano"]\nrpm = {rpm}\n', 1)
    path = tmp_path / "limited.toml"
    path.write_text(text)
    return path


def test_a_429_pauses_the_model_for_every_caller(redis_dbs: RedisDbs, tmp_path: Path) -> None:
    config = load_config(limited_config(tmp_path, 60_000))
    url = redis_dbs.url(4)
    redis.Redis.from_url(url).flushdb()

    async def scenario() -> tuple[Admission, Admission, Admission]:
        clients = [aioredis.Redis.from_url(url) for _ in range(2)]
        first, second = RateLimiter(clients[0], config, 5.0), RateLimiter(clients[1], config, 0.5)  # two workers
        try:
            assert (await first.admit("sim-nano", 10)).granted
            await first.pause("sim-nano", 0.8)
            within = await first.admit("sim-nano", 10)  # a slot after the pause, within its 5 s horizon
            beyond = await second.admit("sim-nano", 10)  # beyond its 0.5 s horizon: come back later
            other = await second.admit("sim-mini", 10)  # another model is not held back
            return within, beyond, other
        finally:
            for client in clients:
                await client.aclose()

    within, beyond, other = asyncio.run(scenario())
    assert within.granted and 0.7 <= within.delay_s <= 0.81
    assert not beyond.granted and beyond.delay_s >= 0.2
    assert other.granted and other.delay_s == 0


@pytest.mark.slow
def test_two_workers_stay_under_a_shared_limit_and_close_to_it(clean: Stack, tmp_path: Path) -> None:
    rpm = 1200
    broker = clean.dbs.url(4)
    redis.Redis.from_url(broker).flushdb()
    config_path = limited_config(tmp_path, rpm)
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_CONFIG": str(config_path)}
    clean.simulate({"latency_ms": 50, "models": {"sim-nano": {"rpm": rpm}}})
    workers = [
        start_worker(env, tmp_path / f"w{n}.log", queues="classify,hot,warm,cold", name=f"rl{n}") for n in (1, 2)
    ]
    try:
        settings = clean.settings.model_copy(update={"broker_url": broker, "redis_url": broker, "config": config_path})
        with Tierq(settings, load_config(config_path)) as tq:
            batch = tq.submit([{"prompt": f"ticket {n}: where is my parcel?"} for n in range(1500)],
                              BatchOptions(force_tier="hot", use_cache=False))
            status = tq.wait(batch.batch_id, timeout=150, poll_s=1)
        assert status.done
    finally:
        for proc in workers:
            stop_worker(proc)
    stats: dict[str, Any] = clean.sim_stats()
    times = sorted(c["at"] for c in stats["calls"] if c["model"] == "sim-nano")
    assert stats["models"]["sim-nano"]["status"].get("429", 0) == 0
    busiest = max(_in_window(times, start) for start in times)
    assert busiest <= rpm
    assert _in_window(times, times[0]) >= 0.9 * rpm


def _in_window(times: list[float], start: float) -> int:
    return sum(1 for t in times if start <= t < start + 60)
