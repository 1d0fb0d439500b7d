"""End to end with real Postgres, Redis, a Celery worker and the simulated provider."""

from __future__ import annotations

import time
import uuid
from decimal import Decimal
from typing import Any

import pytest
from conftest import Stack
from sqlalchemy import text

from producer.submit import BatchOptions


def run(stack: Stack, records: list[dict[str, Any]], options: BatchOptions | None = None) -> dict[str, dict[str, Any]]:
    """Submit, wait, and return the results keyed by id."""
    with stack.client() as tq:
        batch = tq.submit(records, options)
        assert batch.rejected == 0, batch.rejections
        stack.wait(tq, batch.batch_id)
        return {r["id"]: r for r in tq.results(batch.batch_id)}


def start_tiers(stack: Stack) -> dict[str, str]:
    with stack.engine.connect() as conn:
        return dict(conn.execute(text("SELECT custom_id, start_tier FROM jobs")).all())


SIMPLE = "Where is my parcel? I ordered it on Monday."


def test_jobs_start_at_the_tier_the_rules_choose(clean: Stack) -> None:
    records = [
        {"id": "simple", "prompt": SIMPLE},
        {"id": "code", "prompt": "My script gets a traceback from your API: KeyError 'sku'."},
        {"id": "design", "prompt": "What architecture would you suggest for syncing stock, and the trade-offs?"},
        {"id": "steps", "prompt": "Please:\n1. cancel it\n2. refund me\n3. close my account"},
        {"id": "long", "prompt": "My parcel is late. " * 250},
    ]
    results = run(clean, records)
    assert start_tiers(clean) == {"simple": "hot", "code": "warm", "design": "cold", "steps": "warm", "long": "warm"}
    assert {k: r["tier"] for k, r in results.items()} == start_tiers(clean)
    assert all(r["status"] == "succeeded" for r in results.values())


@pytest.mark.parametrize(
    ("options", "expected"),
    [
        (BatchOptions(force_tier="cold"), {"simple": "cold", "code": "cold"}),
        (BatchOptions(min_tier="warm"), {"simple": "warm", "code": "warm"}),
        (BatchOptions(max_tier="hot"), {"simple": "hot", "code": "hot"}),
    ],
)
def test_a_batch_can_force_or_bound_the_tier(clean: Stack, options: BatchOptions, expected: dict[str, str]) -> None:
    run(clean, [{"id": "simple", "prompt": SIMPLE}, {"id": "code", "prompt": "An SQL exception in my script"}], options)
    assert start_tiers(clean) == expected


def test_a_prompt_too_long_for_a_tier_starts_at_one_that_fits(clean: Stack) -> None:
    huge = "Please summarise this delivery log. " + "parcel scanned at depot " * 6000  # ~36k tokens > 32k
    results = run(clean, [{"id": "huge", "prompt": huge}])
    assert start_tiers(clean) == {"huge": "warm"}
    assert results["huge"]["status"] == "succeeded"
    capped = run(clean, [{"id": "capped", "prompt": huge}], BatchOptions(max_tier="hot"))
    assert capped["capped"]["status"] == "failed"
    assert capped["capped"]["error"].startswith("context:")
    assert capped["capped"]["attempts"] == []


@pytest.mark.parametrize(
    ("marker", "outcome"),
    [("refuse", "refusal"), ("empty", "empty"), ("truncate", "truncated")],
)
def test_bad_answers_escalate_to_the_next_tier(clean: Stack, marker: str, outcome: str) -> None:
    results = run(clean, [{"id": "j", "prompt": f"{SIMPLE} [[sim:{marker}@sim-nano]]"}])
    job = results["j"]
    assert job["status"] == "succeeded"
    assert (job["tier"], job["model"]) == ("warm", "sim-mid")
    assert [(a["tier"], a["model"], a["outcome"]) for a in job["attempts"]] == [
        ("hot", "sim-nano", outcome), ("warm", "sim-mid", "ok")
    ]


def test_every_refusal_form_escalates(clean: Stack) -> None:
    records = [{"id": str(n), "prompt": f"ticket {n}: {SIMPLE} [[sim:refuse@sim-nano]]"} for n in range(12)]
    results = run(clean, records)
    assert all(r["tier"] == "warm" and r["attempts"][0]["outcome"] == "refusal" for r in results.values())


def test_provider_errors_retry_then_use_the_next_model_then_escalate(clean: Stack) -> None:
    results = run(clean, [
        {"id": "one-model-down", "prompt": f"{SIMPLE} [[sim:500@sim-nano]]"},
        {"id": "tier-down", "prompt": f"{SIMPLE} [[sim:500@sim-nano]] [[sim:429@sim-mini]]"},
    ])
    retries = clean.config.tier("hot").max_retries + 1
    first = results["one-model-down"]
    assert first["tier"] == "hot" and first["model"] == "sim-mini"
    assert [a["outcome"] for a in first["attempts"]] == ["http_5xx"] * retries + ["ok"]
    second = results["tier-down"]
    assert second["tier"] == "warm"
    assert [a["outcome"] for a in second["attempts"]] == ["http_5xx"] * retries + ["rate_limited"] * retries + ["ok"]
    assert all(a["cost_usd"] == "0" for a in second["attempts"][:-1])


def test_a_job_failing_at_the_last_tier_fails_with_its_reason(clean: Stack) -> None:
    results = run(clean, [{"id": "doomed", "prompt": f"{SIMPLE} [[sim:refuse]]"}])
    job = results["doomed"]
    assert job["status"] == "failed"
    assert job["content"] is None
    assert job["error"].startswith("cold: sim-flagship: refusal")
    assert [a["tier"] for a in job["attempts"]] == ["hot", "warm", "cold"]
    assert Decimal(job["cost_usd"]) == sum(Decimal(a["cost_usd"]) for a in job["attempts"]) > 0


def test_one_worker_process_keeps_hundreds_of_calls_in_flight(clean: Stack) -> None:
    clean.simulate({"latency_ms": 1000})
    run(clean, [{"prompt": f"ticket {n}: {SIMPLE}"} for n in range(400)], BatchOptions(force_tier="hot"))
    assert clean.sim_stats()["max_in_flight"] >= 200


@pytest.mark.slow
def test_thousand_jobs_with_refusals_and_errors_end_once_and_cost_exactly_what_was_billed(clean: Stack) -> None:
    clean.simulate(
        {"latency_ms": 0, "models": {"sim-nano": {"refusal_rate": 0.1}, "sim-mid": {"error_500_rate": 0.05}}}
    )
    records = [{"id": f"t{n}", "prompt": f"ticket {n}: {SIMPLE}"} for n in range(700)]
    records += [{"id": f"c{n}", "prompt": f"ticket {n}: the API returns an exception"} for n in range(300)]
    with clean.client() as tq:
        batch = tq.submit(records)
        status = clean.wait(tq, batch.batch_id, timeout=180)
        results = list(tq.results(batch.batch_id))
    assert status.total == 1000 and status.count_final() == 1000
    assert sorted(r["id"] for r in results) == sorted(r["id"] for r in records)
    with clean.engine.connect() as conn:
        states = conn.execute(text("SELECT status, count(*) FROM jobs GROUP BY status")).all()
        rows = conn.execute(
            text("SELECT model, prompt_tokens, completion_tokens, cached_tokens, cost_usd, outcome FROM calls")
        ).all()
    assert sum(n for _, n in states) == 1000 and {s for s, _ in states} <= {"succeeded", "failed"}
    stats = clean.sim_stats()
    assert sum(m["requests"] for m in stats["models"].values()) == len(rows)
    billed = stats["calls"]
    assert len(billed) == sum(
        1 for r in rows if r.outcome not in ("error", "http_4xx", "http_5xx", "rate_limited", "timeout")
    )
    expected = sum(
        (clean.config.price(c["model"]).cost(_usage(c)) for c in billed), Decimal(0)
    )
    assert sum((r.cost_usd for r in rows), Decimal(0)) == expected
    refusals = sum(1 for r in rows if r.model == "sim-nano" and r.outcome == "refusal")
    assert 50 <= refusals <= 160


def _usage(call: dict[str, Any]) -> Any:
    from tierq.money import Usage

    return Usage(call["prompt_tokens"], call["completion_tokens"], call["cached_tokens"])


def test_unknown_batch_is_a_clear_error(clean: Stack) -> None:
    from tierq.errors import NotFound

    with clean.client() as tq, pytest.raises(NotFound, match="no batch"):
        tq.status(uuid.uuid4())


def test_a_job_running_when_its_batch_is_cancelled_does_not_escalate(clean: Stack) -> None:
    clean.simulate({"latency_ms": 1500})
    with clean.client() as tq:
        batch = tq.submit([{"id": "r", "prompt": f"{SIMPLE} [[sim:refuse@sim-nano]]"}], BatchOptions(use_cache=False))
        with clean.engine.connect() as conn:
            for _ in range(100):
                if conn.execute(text("SELECT status FROM jobs")).scalar_one() == "running":
                    break
                conn.rollback()
                time.sleep(0.1)
        tq.cancel(batch.batch_id)
        clean.wait(tq, batch.batch_id)
        (result,) = tq.results(batch.batch_id)
    assert result["status"] == "cancelled"
    assert [a["tier"] for a in result["attempts"]] == ["hot"]
    assert {m for m in clean.sim_stats()["models"]} == {"sim-nano"}
