"""Shared per-model rate limits: under the limit in every 60 s window, close to it, paused by 429s."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Sequence
from datetime import UTC
from pathlib import Path
from typing import Any

import pytest
import redis
import redis.asyncio as aioredis
from conftest import SIM_CONFIG, RedisDbs, Stack, age_holds, start_worker, stop_worker
from sqlalchemy import text

from producer.api import Tierq
from producer.submit import BatchOptions
from producer.views import duration, status_line, status_lines
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


def test_a_429_asking_for_a_longer_wait_holds_the_job_at_its_tier_rather_than_escalating(clean: Stack) -> None:
    hot = clean.config.tier("hot")
    # Longer than a task waits between tries, and long enough that the job is still on its queue when the
    # test lifts the limit, however slowly a loaded machine gets there.
    _refuse(clean, hot.models, hot.retry_max_s + 10)
    with clean.client() as tq:
        batch = tq.submit([{"id": "j", "prompt": "Where is my parcel? I ordered it on Monday."}],
                          BatchOptions(force_tier="hot"))
        _wait_for_hold(clean, batch.batch_id)
        asked = clean.sim_stats()["requests"]
        clean.simulate({})  # the provider's limit lifts while the job waits on its queue
        clean.wait(tq, batch.batch_id)
        (result,) = tq.results(batch.batch_id)
    # Each model asked once, not again within the task, and no dearer tier paid for the wait.
    assert asked == len(hot.models)
    assert result["status"] == "succeeded" and result["tier"] == "hot"
    assert [a["outcome"] for a in result["attempts"]] == ["rate_limited"] * len(hot.models) + ["ok"]
    assert {a["tier"] for a in result["attempts"]} == {"hot"}


def test_a_retry_after_given_as_an_http_date_holds_the_job_as_one_in_seconds_does(clean: Stack) -> None:
    hot = clean.config.tier("hot")
    # RFC 9110's other form of Retry-After: "Tue, 01 Dec 2026 07:02:11 GMT". Read as none at all, each model
    # was asked again at once, max_retries times, and the job escalated to warm and paid for it there.
    clean.simulate({"models": {name: {"error_429_rate": 1.0, "retry_after_s": hot.retry_max_s + 10,
                                      "retry_after_date": True} for name in hot.models}})
    with clean.client() as tq:
        batch = tq.submit([{"id": "j", "prompt": "Where is my parcel? I ordered it on Monday."}],
                          BatchOptions(force_tier="hot"))
        _wait_for_hold(clean, batch.batch_id)
        asked = clean.sim_stats()["requests"]
        held = tq.status(batch.batch_id)
        clean.simulate({})
        clean.wait(tq, batch.batch_id)
        (result,) = tq.results(batch.batch_id)
    assert asked == len(hot.models)
    assert held.held_reason is not None and held.held_reason.startswith(f"rate limit: {hot.models[-1]} asked to wait ")
    assert result["status"] == "succeeded" and result["tier"] == "hot"
    assert [a["outcome"] for a in result["attempts"]] == ["rate_limited"] * len(hot.models) + ["ok"]


def test_status_says_until_when_a_batch_waits_for_a_providers_retry_after(clean: Stack) -> None:
    hot = clean.config.tier("hot")
    # Every model of the tier: come back in 20 s (the session's worker keeps sim-nano paused that long).
    _refuse(clean, hot.models, 20)
    with clean.client() as tq:
        batch = tq.submit([{"id": "j", "prompt": "Where is my parcel? I ordered it on Monday."}],
                          BatchOptions(force_tier="hot"))
        _wait_for_hold(clean, batch.batch_id)
        status = tq.status(batch.batch_id)
        with clean.engine.begin() as conn:  # as if its message were due, and waited for a worker to take it
            conn.execute(text("UPDATE jobs SET held_until = now() WHERE batch_id = :b"), {"b": batch.batch_id})
        due = tq.status(batch.batch_id)
        clean.simulate({})
        # Waited out, so that no test after this one meets the pause (the job comes back in 20-30 s).
        assert clean.wait(tq, batch.batch_id).held_until is None
    assert status.held == 1 and status.held_reason == f"rate limit: {hot.models[-1]} asked to wait 20 s (HTTP 429)"
    # When its message is due: the wait the provider asked for, with jitter (20-30 s).
    assert status.held_left_s is not None and 10 < status.held_left_s <= 30, status.as_dict()
    assert status.as_dict()["held_until"] == status.held_until.isoformat()  # type: ignore[union-attr]
    (line,) = [line for line in status_lines(status) if line.startswith("  held:")]
    until = status.held_until.astimezone(UTC)  # type: ignore[union-attr]
    assert line.endswith(f"(HTTP 429); all tried again by {until:%H:%M:%S} UTC (in {duration(status.held_left_s)})")
    # And `submit --wait` / `status --watch` into a pipe, which said only "held 1".
    assert status_line(status).endswith(f"; held 1 ({status.held_reason}; all tried again by {until:%H:%M:%S} UTC)")
    # Due, the job waits for a worker, not for the provider: no time long past, and not nothing at all.
    assert (due.held, due.held_due, due.held_until) == (1, 1, None)
    assert status_lines(due)[-1].endswith("(HTTP 429); all due now, waiting for a worker to take them")


def test_a_job_a_provider_keeps_refusing_with_429s_goes_on_to_the_next_tier_after_rate_limit_wait_s(
        clean: Stack) -> None:
    hot = clean.config.tier("hot")
    _refuse(clean, hot.models, hot.retry_max_s + 1)  # a used-up quota: every call refused, come back later
    with clean.client() as tq:
        batch = tq.submit([{"id": "j", "prompt": "Where is my parcel? I ordered it on Monday."}],
                          BatchOptions(force_tier="hot"))
        _wait_for_hold(clean, batch.batch_id)
        past = clean.config.worker.rate_limit_wait_s + 60
        age_holds(clean, past, batch.batch_id)  # as if it had been held that long
        clean.wait(tq, batch.batch_id)
        (result,) = tq.results(batch.batch_id)
    assert result["status"] == "succeeded" and result["tier"] == clean.config.next_tier("hot")
    tiers = [a["tier"] for a in result["attempts"]]
    assert tiers == ["hot"] * (2 * len(hot.models)) + [result["tier"]]  # held once, refused again, then on
    assert all(a["outcome"] == "rate_limited" for a in result["attempts"][:-1])


def _refuse(stack: Stack, models: Sequence[str], retry_after_s: float) -> None:
    stack.simulate({"models": {name: {"error_429_rate": 1.0, "retry_after_s": retry_after_s} for name in models}})


def _wait_for_hold(stack: Stack, batch: uuid.UUID) -> None:
    deadline = time.monotonic() + 60
    while _holds(stack, batch) == 0:
        assert time.monotonic() < deadline, "the job was never held"
        time.sleep(0.1)


def _holds(stack: Stack, batch: uuid.UUID) -> int:
    with stack.engine.connect() as conn:
        return int(conn.execute(text("SELECT holds FROM jobs WHERE batch_id = :b"), {"b": batch}).scalar_one())


def test_a_429_pauses_a_model_without_limits_in_the_worker_that_got_it(redis_dbs: RedisDbs) -> None:
    config = load_config(SIM_CONFIG)  # no rpm or tpm anywhere: no schedule in Redis

    async def scenario() -> tuple[Admission, Admission, Admission, Admission]:
        client = aioredis.Redis.from_url(redis_dbs.url(4))
        try:
            near, far = RateLimiter(client, config, 60.0), RateLimiter(client, config, 5.0)
            for limiter in (near, far):
                await limiter.pause("sim-nano", 30.0)
            return (await near.admit("sim-nano", 10), await far.admit("sim-nano", 10),
                    await near.admit("sim-mini", 10), await RateLimiter(client, config, 60.0).admit("sim-nano", 10))
        finally:
            await client.aclose()

    within, beyond, other, elsewhere = asyncio.run(scenario())
    assert within.granted and 20 <= within.delay_s <= 30  # a slot after the pause, within the 60 s horizon
    assert not beyond.granted and beyond.delay_s >= 20  # beyond the 5 s horizon: come back later
    assert other == elsewhere == Admission(True, 0.0)  # another model, and another worker process, are not held
