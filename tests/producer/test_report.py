"""The bill: totals equal the cost rows, the baseline is recomputed here independently, and the plot is a PNG."""

from __future__ import annotations

import json
import math
import subprocess
import sys
import uuid
from collections import defaultdict
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import matplotlib.pyplot as plt
import pytest
from conftest import Stack, insert_job
from PIL import Image
from sqlalchemy import text

from producer.bill.build import Bill, Spend
from producer.bill.plot import draw_bill, render_bill
from producer.bill.quality import read_quality
from producer.bill.queries import Scope
from producer.submit import BatchOptions
from producer.views import bill_lines
from tierq.money import usd

PARCEL = "Where is my parcel? I ordered it on Monday."
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture()
def billed(clean: Stack) -> tuple[Stack, uuid.UUID, uuid.UUID]:
    """Two batches of two tenants: a plain answer, an escalation, a failure on every tier, a warm start, a
    repeated prompt that the provider reports as partly cached."""
    clean.simulate({"latency_ms": 5, "latency_jitter_ms": 20, "cached_fraction": 0.5})
    with clean.client() as tq:
        first = tq.submit([
            {"id": "plain", "prompt": PARCEL},
            {"id": "escalated", "prompt": f"Ticket 2: {PARCEL} [[sim:refuse@sim-nano]]"},
            {"id": "doomed", "prompt": f"Ticket 3: {PARCEL} [[sim:refuse]]"},
            {"id": "code", "prompt": "My script raises an exception when it calls your API.", "task_type": "triage"},
        ], BatchOptions(tenant="acme", task_type="support", use_cache=False))
        clean.wait(tq, first.batch_id)
        second = tq.submit([{"id": "again", "prompt": PARCEL}], BatchOptions(tenant="bolt", use_cache=False))
        clean.wait(tq, second.batch_id)
    return clean, first.batch_id, second.batch_id


def cost_rows(stack: Stack, batch_id: uuid.UUID | None) -> list[Any]:
    where = "WHERE c.batch_id = :b" if batch_id else ""
    with stack.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT c.job_id, c.attempt, c.created_at, c.tier, c.model, c.outcome, c.prompt_tokens, c.cached_tokens, "
            f"c.completion_tokens, c.cost_usd, c.saved_usd, c.latency_ms, j.task_type, j.tenant FROM calls c "
            f"JOIN jobs j ON j.id = c.job_id {where}"), {"b": batch_id}))


def baseline_by_hand(stack: Stack, rows: list[Any]) -> Decimal:
    """Each job's kept call (its answer, else its last call with tokens) at the top tier's first model's prices."""
    model = stack.config.models[stack.config.tiers[-1].models[0]]
    cached_price = (
        model.cached_input_usd_per_mtok if model.cached_input_usd_per_mtok is not None else model.input_usd_per_mtok
    )
    per_job: dict[int, list[Any]] = defaultdict(list)
    for row in rows:
        per_job[row.job_id].append(row)
    total = Decimal(0)
    for calls in per_job.values():
        calls.sort(key=lambda r: (r.attempt, r.created_at))
        answers = [r for r in calls if r.outcome in ("ok", "cache_hit")]
        with_tokens = [r for r in calls if r.prompt_tokens or r.completion_tokens]
        kept = answers[-1] if answers else with_tokens[-1] if with_tokens else None
        if kept is None:
            continue
        cached = min(kept.cached_tokens, kept.prompt_tokens)
        total += ((kept.prompt_tokens - cached) * model.input_usd_per_mtok + cached * cached_price
                  + kept.completion_tokens * model.output_usd_per_mtok) / Decimal(1_000_000)
    return total


def percentile_disc(values: list[int], fraction: float) -> int:
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]


def check_totals(stack: Stack, bill: Bill, rows: list[Any]) -> None:
    report = bill.as_dict()
    totals = report["totals"]
    calls = [r for r in rows if r.outcome != "cache_hit"]
    assert totals["cost_usd"] == usd(sum((r.cost_usd for r in rows), Decimal(0)))
    assert totals["calls"] == len(calls)
    assert totals["prompt_tokens"] == sum(r.prompt_tokens for r in calls)
    assert totals["tokens"] == sum(r.prompt_tokens + r.completion_tokens for r in calls)
    assert totals["saved_usd"] == usd(sum((r.saved_usd for r in rows), Decimal(0)))
    baseline = baseline_by_hand(stack, rows)
    assert baseline > 0 and totals["baseline_cost_usd"] == usd(baseline)
    cost = sum((r.cost_usd for r in rows), Decimal(0))
    assert Decimal(str(totals["savings_pct"])) == ((baseline - cost) / baseline * 100).quantize(Decimal("0.01"))
    for key in ("by_model", "by_tier", "by_task", "by_tenant"):
        assert sum(Decimal(g["cost_usd"]) for g in report[key]) == cost, key
        assert sum(g["calls"] for g in report[key]) == len(calls), key
        assert all(isinstance(g["cost_usd"], str) for g in report[key])
    for group in report["by_model"]:
        latencies = [r.latency_ms for r in calls if r.model == group["model"]]
        assert (group["latency_ms_p50"], group["latency_ms_p95"]) == (
            percentile_disc(latencies, 0.5), percentile_disc(latencies, 0.95))


def test_the_bill_of_one_batch_adds_up_to_its_cost_rows(billed: tuple[Stack, uuid.UUID, uuid.UUID]) -> None:
    stack, first, _ = billed
    with stack.client() as tq:
        bill = tq.report(first)
    rows = cost_rows(stack, first)
    check_totals(stack, bill, rows)
    report = bill.as_dict()
    assert report["baseline"] == {"tier": "cold", "model": "sim-flagship"}
    assert report["totals"]["jobs"] == 4 and report["totals"]["jobs_by_status"] == {"succeeded": 3, "failed": 1}
    assert report["escalations"] == [
        {"from": "hot", "to": "warm", "jobs": 2},
        {"from": "warm", "to": "cold", "jobs": 1},
    ]
    assert report["totals"]["escalations"] == 3
    assert {t["task_type"]: t["jobs"] for t in report["by_task"]} == {"support": 3, "triage": 1}
    tiers = {t["tier"]: t for t in report["by_tier"]}
    assert {k: (v["started"], v["answered"], v["escalated"], v["failed"]) for k, v in tiers.items()} == {
        "hot": (3, 1, 2, 0), "warm": (1, 2, 1, 0), "cold": (0, 0, 0, 1)}
    assert report["cache"] == {"hits": 0, "saved_usd": "0"}
    lines = "\n".join(bill_lines(bill))
    assert "baseline" in lines and "sim-flagship" in lines and "hot -> warm 2" in lines


def test_the_bill_of_everything_and_since_a_date(billed: tuple[Stack, uuid.UUID, uuid.UUID]) -> None:
    stack, _, _ = billed
    with stack.client() as tq:
        everything = tq.report()
        future = tq.report(since=datetime.now(UTC) + timedelta(days=1))
        past = tq.report(since=datetime.now(UTC) - timedelta(days=1))
    rows = cost_rows(stack, None)
    assert any(r.cached_tokens > 0 for r in rows), "the repeated prompt should report cached tokens"
    check_totals(stack, everything, rows)
    assert {t["tenant"]: t["jobs"] for t in everything.as_dict()["by_tenant"]} == {"acme": 4, "bolt": 1}
    assert past.as_dict()["totals"] == everything.as_dict()["totals"]
    nothing = future.as_dict()["totals"]
    assert (nothing["jobs"], nothing["calls"], nothing["cost_usd"], nothing["savings_pct"]) == (0, 0, "0", None)


def test_report_command_prints_json_and_draws_a_png(billed: tuple[Stack, uuid.UUID, uuid.UUID], tmp_path: Path) -> None:
    stack, first, _ = billed
    done = subprocess.run(
        [str(Path(sys.executable).parent / "tierq"), "report", str(first), "--json", "--plot", "bill.png"],
        env=stack.env,
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["totals"]["cost_usd"] == usd(sum((r.cost_usd for r in cost_rows(stack, first)), Decimal(0)))
    png = tmp_path / "bill.png"
    assert png.read_bytes()[:8] == PNG_SIGNATURE and png.stat().st_size > 10_000
    with Image.open(png) as image:
        image.verify()
    with Image.open(png) as image:
        assert image.format == "PNG" and image.size[0] >= 800 and image.size[1] >= 400


def test_a_plot_that_cannot_be_written_is_one_line(billed: tuple[Stack, uuid.UUID, uuid.UUID], tmp_path: Path) -> None:
    stack, first, _ = billed
    target = tmp_path / "no-such-dir" / "bill.png"
    done = subprocess.run([str(Path(sys.executable).parent / "tierq"), "report", str(first), "--plot", str(target)],
                          env=stack.env, cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == (f"error: --plot {target}: cannot write it (No such file or directory); name a file in a "
                           "directory that exists and that you may write to\n")


def test_a_plot_of_an_empty_scope_is_still_a_picture(clean: Stack, tmp_path: Path) -> None:
    with clean.client() as tq:
        bill = tq.report()
    path = render_bill(bill, tmp_path / "empty.png", clean.config.tier_names)
    assert path.read_bytes()[:8] == PNG_SIGNATURE


def synthetic_bill(parts: list[tuple[str, str, str]], baseline: str) -> Bill:
    """A bill as the report would read it: (tier, model, cost) per model, and the baseline."""
    bill = Bill(Scope(uuid.uuid4()), "sim-flagship", "cold")
    for tier, model, cost in parts:
        bill.by_tier_model[(tier, model)] = Spend(calls=10, cost_usd=Decimal(cost))
        bill.totals.cost_usd += Decimal(cost)
    bill.baseline_cost_usd = Decimal(baseline)
    bill.escalations = {("hot", "warm"): 23}
    return bill


@pytest.mark.parametrize("savings", ["91%", "10%", "tiny"])
def test_the_plot_labels_fit_and_its_axis_has_one_money_format(savings: str) -> None:
    bill = synthetic_bill([("hot", "sim-nano", "0.00031"), ("cold", "sim-flagship", "0.00096")], "0.0017") if (
        savings == "tiny") else (
        synthetic_bill(
            [
                ("hot", "sim-nano", "0.0041"),
                ("hot", "sim-mini", "0.0003"),
                ("warm", "sim-mid", "0.0062"),
                ("cold", "sim-flagship", "0.0021"),
            ],
            "0.1520",
        )
        if savings == "91%"
        else synthetic_bill(
            [("hot", "sim-nano", "0.031"), ("warm", "sim-mid", "0.21"), ("cold", "sim-flagship", "0.66")], "1.00"
        )
    )
    fig = draw_bill(bill, ["hot", "warm", "cold"])
    try:
        fig.canvas.draw()
        renderer = fig.canvas.get_renderer()
        left = fig.axes[0]
        ticks = [t.get_text() for t in left.get_yticklabels() if t.get_text() not in ("", "$0")]
        assert len({len(t.split(".")[-1]) for t in ticks}) == 1, ticks  # every tick has as many decimals
        # ... and reads its value exactly: steps of $0.00025 are not shown as $0.0003, $0.0005, $0.0008.
        shown = [float(t.get_text().lstrip("$").replace(",", "")) for t in left.get_yticklabels()]
        values = [float(v) for v in left.get_yticks()]
        assert all(abs(a - v) < 1e-12 for a, v in zip(shown, values, strict=True)), (shown, values)
        for bar, label in _segment_labels(left):
            inside = bar.get_window_extent(renderer)
            box = label.get_window_extent(renderer)
            assert inside.x0 <= box.x0 and box.x1 <= inside.x1 and inside.y0 <= box.y0 and box.y1 <= inside.y1
        saved = [t for t in left.texts if t.get_text().startswith("saved ")]
        assert len(saved) == 1
        box = saved[0].get_window_extent(renderer)
        for patch in left.patches:  # the savings label crosses no bar (it overlapped the baseline's before)
            bar = patch.get_window_extent(renderer)
            assert box.x1 <= bar.x0 or bar.x1 <= box.x0 or box.y1 <= bar.y0 or bar.y1 <= box.y0, saved[0].get_text()
        assert "escalations: hot \u2192 warm 23" in "".join(t.get_text() for t in fig.texts)
    finally:
        plt.close(fig)


def _segment_labels(ax: Any) -> list[tuple[Any, Any]]:
    """Each tier segment of the paid bar with the label drawn inside it (by the label's y position)."""
    bars = [p for p in ax.patches if abs(p.get_x() + p.get_width() / 2) < 1e-9]
    pairs = []
    for text_item in ax.texts:
        x, y = text_item.get_position()
        owner = [b for b in bars if b.get_y() <= y <= b.get_y() + b.get_height()]
        if x == 0 and owner and text_item.get_text() in ("hot", "warm", "cold"):
            pairs.append((owner[0], text_item))
    return pairs


def test_an_audit_whose_reference_never_answered_measures_nothing(clean: Stack) -> None:
    # Flagged for audit, but the reference could not answer (held past its limit): it kept its answer, no label.
    job = insert_job(clean, "Where is my parcel?", status="succeeded", tier="hot", handoff=uuid.uuid4())
    with clean.engine.begin() as conn:
        batch = conn.execute(text("UPDATE jobs SET audited = true, content = 'on its way' WHERE id = :j "
                                  "RETURNING batch_id"), {"j": job}).scalar_one()
    with clean.client() as tq, clean.engine.connect() as conn:
        quality = read_quality(conn, Scope(batch), tq.outline)
    assert quality.answered == 1 and quality.share is None  # not "100% agree" from an audit that judged nothing
    assert quality.line().startswith("quality: not measured")
