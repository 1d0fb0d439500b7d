"""Batch budgets: many workers racing for the last dollars never spend past the cap."""

from __future__ import annotations

import subprocess
import sys
from decimal import Decimal
from pathlib import Path

from conftest import Stack, start_worker, stop_worker
from sqlalchemy import text

from producer.submit import BatchOptions
from producer.views import bill_lines, money, status_lines

BUDGET = Decimal("0.004")


def test_concurrent_workers_never_spend_past_the_budget(clean: Stack, tmp_path: Path) -> None:
    clean.simulate({"latency_ms": 100})
    extra = [start_worker(clean.env, tmp_path / f"b{n}.log", queues="hot,warm,cold", name=f"budget{n}") for n in (1, 2)]
    try:
        with clean.client() as tq:
            batch = tq.submit([{"id": str(n), "prompt": f"ticket {n}: where is my parcel?"} for n in range(600)],
                              BatchOptions(budget_usd=BUDGET, use_cache=False, params={"max_tokens": 64}))
            clean.wait(tq, batch.batch_id, timeout=120)
            results = list(tq.results(batch.batch_id))
    finally:
        for proc in extra:
            stop_worker(proc)
    with clean.engine.connect() as conn:
        paid = conn.execute(text("SELECT COALESCE(sum(cost_usd), 0) FROM calls")).scalar_one()
        spent, reserved = conn.execute(text("SELECT spent_usd, reserved_usd FROM batches")).one()
    assert paid <= BUDGET
    assert spent == paid and reserved == 0
    failed = [r for r in results if r["status"] == "failed"]
    succeeded = [r for r in results if r["status"] == "succeeded"]
    assert failed and succeeded
    assert all(r["error"].startswith("budget:") for r in failed)
    worst = Decimal("0.00004")  # about the worst case of one call here
    assert paid > BUDGET - 3 * worst  # calls wait for money held by calls in flight rather than fail early


def test_a_retry_leaves_the_jobs_the_budget_stopped_and_says_so(clean: Stack, tmp_path: Path) -> None:
    clean.simulate({"latency_ms": 0})
    with clean.client() as tq:
        batch = tq.submit([{"id": str(n), "prompt": f"ticket {n}: where is my parcel?"} for n in range(60)],
                          BatchOptions(budget_usd=Decimal("0.0004"), use_cache=False,
                                       params={"max_tokens": 64})).batch_id
        stopped = clean.wait(tq, batch, timeout=120).by_status.get("failed", 0)
        assert stopped > 0
        done = subprocess.run([str(Path(sys.executable).parent / "tierq"), "retry", str(batch), "--failed"],
                              env=clean.env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
        shown = tq.status(batch)
        after = shown.by_status.get("failed", 0)
    assert done.returncode == 0, done.stderr
    assert done.stdout == f"batch {batch}: 0 failed jobs queued again\n"
    assert done.stderr == (f"{stopped:,} failed jobs stay failed: the batch's budget could not cover them, and a "
                           "batch's budget cannot be raised; submit them again as a new batch with a larger "
                           f"--budget-usd (`tierq results {batch}` lists them)\n")
    assert after == stopped  # nothing ran again to fail on the same budget
    assert shown.failed_reason is not None and shown.failed_reason.startswith(
        "budget: what is left of the batch's budget cannot cover a call to ")
    assert any(line.startswith(f"  failed: {stopped:,}, most with: budget: ") for line in status_lines(shown))


def test_the_bill_says_which_jobs_the_budget_stopped_after_paid_calls(clean: Stack) -> None:
    clean.simulate({"latency_ms": 0})
    with clean.client() as tq:
        # Enough for the hot call, which is refused and escalates, not for the worst case of a warm one.
        batch = tq.submit([{"id": "j", "prompt": "[[sim:refuse@sim-nano]] where is my parcel?"}],
                          BatchOptions(budget_usd=Decimal("0.00005"), use_cache=False,
                                       params={"max_tokens": 64})).batch_id
        clean.wait(tq, batch)
        bill = tq.report(batch)
        (result,) = tq.results(batch)
    assert result["status"] == "failed" and result["error"].startswith("budget: ")
    paid = sum(Decimal(a["cost_usd"]) for a in result["attempts"])
    assert [a["outcome"] for a in result["attempts"]] == ["refusal"] and paid > 0
    totals = bill.as_dict()["totals"]
    assert (totals["budget_failed_jobs"], totals["budget_failed_paid_jobs"]) == (1, 1)
    assert Decimal(totals["budget_failed_paid_usd"]) == paid
    # Before: "1 jobs failed without a call", of a job whose refused answer was paid for.
    assert f"  1 jobs failed: the batch budget could not cover their next call (0 without any call, 1 after calls " \
           f"that cost {money(paid)})" in bill_lines(bill)
