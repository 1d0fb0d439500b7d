"""A provider that hangs (accepts the request, never answers): the tier's timeout fires, the call is
retried a bounded number of times, then the next model, tier, or a final failure takes over, and no task
is held longer than `task_budget_s`.

Celery's soft and hard time limits are not enforced by the thread pool the workers use, so the bound
comes from the calls themselves: every call has its tier's timeout and retries are bounded.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import redis
from conftest import SIM_CONFIG, Stack
from fault_support import deployment, fault_config, task_runtimes, wait_final
from sqlalchemy import text

from tierq.config import load_config
from tierq.queues import celery_config, task_budget_s

PARCEL = "Where is my parcel? I ordered it on Monday."


def test_time_limits_are_ordered_call_timeout_then_task_budget_then_visibility() -> None:
    config = load_config(SIM_CONFIG)
    budget = task_budget_s(config)
    for tier in config.tiers:
        for name in tier.models:
            timeout = tier.timeout_s or config.providers[config.models[name].provider].timeout_s
            assert timeout * (tier.max_retries + 1) < budget
    settings = celery_config(config, "redis://127.0.0.1:6379/0")
    # If time limits are ever set (they only bite in a prefork pool), they must not cut a call short.
    for limit in ("task_soft_time_limit", "task_time_limit"):
        assert settings.get(limit) is None or settings[limit] >= budget
    # A slow task must not be delivered to a second worker while it still runs.
    assert settings["broker_transport_options"]["visibility_timeout"] >= 2 * budget


@pytest.mark.slow
def test_a_hung_model_times_out_its_retries_then_the_next_model_answers(clean: Stack) -> None:
    hot = clean.config.tier("hot")
    assert hot.timeout_s is not None
    with clean.client() as tq:
        batch = tq.submit([{"id": "j", "prompt": f"{PARCEL} [[sim:hang@sim-nano]]"}]).batch_id
        clean.wait(tq, batch, timeout=60)
        (job,) = list(tq.results(batch))
    assert (job["status"], job["tier"], job["model"]) == ("succeeded", "hot", "sim-mini")
    assert [(a["model"], a["outcome"]) for a in job["attempts"]] == (
        [("sim-nano", "timeout")] * (hot.max_retries + 1) + [("sim-mini", "ok")])
    with clean.engine.connect() as conn:
        waited = conn.execute(text("SELECT latency_ms FROM calls WHERE outcome = 'timeout'")).scalars().all()
    assert all(hot.timeout_s * 1000 * 0.95 <= ms <= hot.timeout_s * 1000 + 1500 for ms in waited), waited


@pytest.mark.slow
def test_a_provider_that_never_answers_fails_the_job_within_the_task_budget(clean: Stack, tmp_path: Path) -> None:
    broker = clean.dbs.url(2)
    redis.Redis.from_url(broker).flushdb()
    fast = {"timeout_s": 1, "max_retries": 1, "retry_max_s": 0.5}  # the shipped 3-10 s timeouts, scaled down
    path = fault_config(tmp_path / "hang.toml", tiers={"hot": fast, "warm": fast, "cold": fast})
    with deployment(clean, tmp_path, path, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker) as run, run.client() as tq:
        run.start("classify,hot,warm,cold", "worker")
        batch = tq.submit([{"id": "j", "prompt": f"{PARCEL} [[sim:hang]]"}]).batch_id
        wait_final(clean, batch, 1, 60)
        (job,) = list(tq.results(batch))
    config = run.config
    assert job["status"] == "failed" and job["error"].startswith("cold: sim-flagship: timeout"), job
    calls = {t.name: len(t.models) * (t.max_retries + 1) for t in config.tiers}
    assert [(a["tier"], a["outcome"]) for a in job["attempts"]] == [
        (tier, "timeout") for tier in config.tier_names for _ in range(calls[tier])]
    assert all(a["cost_usd"] == "0" for a in job["attempts"])
    runtimes = task_runtimes(run.log("worker"), "tierq.tier")
    assert len(runtimes) == len(config.tiers)
    for tier, took in zip(config.tiers, runtimes, strict=True):
        waited = calls[tier.name] * (tier.timeout_s or 0)
        backoffs = len(tier.models) * tier.max_retries * tier.retry_max_s
        assert waited * 0.95 <= took <= waited + backoffs + 2.0, (tier.name, took)
        assert took < task_budget_s(config)
