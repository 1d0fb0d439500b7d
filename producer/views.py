"""What people read on a terminal: a batch's status and the bill as aligned text."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC
from decimal import Decimal
from typing import TYPE_CHECKING, Any

from models.enums import JobStatus
from producer.status import BatchStatus
from tierq.money import dollars
from tierq.presence import EVICTION_FIX

if TYPE_CHECKING:  # the bill's queries (and SQLAlchemy) load only for `tierq report`
    from producer.bill.build import Bill

# Counts older than this say how old they are (tiers look every batch_poll_s, 30 s by default): a poll message
# lost with a killed worker stops the looks until the reconciler sends it again, after stuck_after_s.
POLL_LATE_S = 60
STATE_ORDER = ("succeeded", "failed", "cancelled", "running", "waiting", "queued", "pending")


def money(value: Decimal) -> str:
    """Dollars to the millionth for tables (JSON keeps every digit)."""
    return dollars(value, 6)


def duration(seconds: float | None) -> str:
    """'1h 02m', '3m 05s', '12s', or '?' when unknown."""
    if seconds is None:
        return "?"
    whole = int(round(seconds))
    hours, rest = divmod(whole, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}h {minutes:02d}m" if hours else f"{minutes}m {secs:02d}s" if minutes else f"{secs}s"


def _held_until(status: BatchStatus, countdown: bool = True) -> str:
    """By when every held job is tried again, and how many are due already (their messages wait for a worker
    to take them, not for the provider); `countdown` adds how long from now (not for a line per change)."""
    due = "all due" if status.held_due == status.held else f"{status.held_due:,} due"
    due = f"; {due} now, waiting for a worker to take them" if status.held_due else ""
    if status.held_until is None or status.held_left_s is None:
        return due
    left = f" (in {duration(status.held_left_s)})" if countdown else ""
    rest = "the rest" if status.held_due else "all"
    return f"{due}; {rest} tried again by {status.held_until.astimezone(UTC):%H:%M:%S} UTC{left}"


def _held_apart(status: BatchStatus) -> bool:
    """Whether the held jobs wait in more than one queue for reasons that differ."""
    return len({why for _, _, _, why in status.held_queues}) > 1


def _doctor_hint(reason: str) -> str:
    # A provider no call reaches may be a typo in its base_url as much as an outage: say how to tell.
    if reason.startswith("connection:"):
        return "; if it should be up, `tierq doctor` tries each provider's base_url"
    return ""


def status_lines(status: BatchStatus, tiers: Sequence[str] = ()) -> list[str]:
    """A batch's state in a few lines (tiers in `tiers` order); the first one alone is a usable summary."""
    d = status.as_dict()
    done = status.total - status.pending
    state = "cancelled" if status.cancelled else "done" if status.done else "running"
    rate = f"{status.rate_per_s:,.1f} jobs/s" if status.rate_per_s is not None else "rate ?"
    eta = "" if status.done else f", ETA {duration(status.eta_s)}"
    lines = [f"batch {d['batch_id']}: {done:,}/{status.total:,} done, {state}, {duration(status.elapsed_s)}, "
             f"{rate}{eta}, {money(status.cost_usd)} spent"]
    lines.append(
        "  jobs:  "
        + _counts(status.by_status)
        + (f"; {status.rejected:,} rejected at submit" if status.rejected else "")
    )
    rank = {name: n for n, name in enumerate(tiers)}
    for tier, counts in sorted(status.by_tier_status.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0])):
        lines.append(f"  {tier + ':':<6} {sum(counts.values()):>7,}  ({_counts(counts)})")
    lines.append(f"  escalations {status.escalations:,}, calls {status.calls:,}, cache hits {status.cache_hits:,}, "
                 f"cost {money(status.cost_usd)}")
    if status.redis_evicts:
        # A worker's record evicted looks like no worker at all: say that it may be only that.
        lines.append(f"  PROBLEM: Redis at {status.redis_url} evicts keys at maxmemory ({status.redis_evicts}): it "
                     "may drop queued messages and the records of live messages and workers, so jobs wait for the "
                     f"reconciler and a queue's worker may look gone; {EVICTION_FIX}")
    evicted = " (or its record was evicted: see above)" if status.redis_evicts else ""
    for queue, waiting in status.unserved.items():
        lines.append(f"  PROBLEM: no worker consumes queue {queue}{evicted} ({waiting:,} jobs wait there); start one: "
                     f"celery -A workers worker -Q {queue} -n {queue}@%h")
        for worker, (why, ago) in sorted(status.not_started.get(queue, {}).items()):
            lines.append(f"    worker {worker} did not start for it {duration(ago)} ago: {why}")
    for queue, workers in status.refused.items():
        for worker, reason in sorted(workers.items()):
            lines.append(f"  PROBLEM: worker {worker} gives the messages of queue {queue} back, for a worker that can "
                         f"run them: {reason}; start it with the deployment's TOML (TIERQ_CONFIG)")
    failed = status.count(JobStatus.FAILED)
    if failed and status.failed_reason:
        lines.append(f"  failed: {failed:,}, most with: {status.failed_reason} (`tierq results {d['batch_id']}` "
                     "gives each job's reason)")
    for warning in status.warnings:
        lines.append(f"  warning: {warning}; `tierq report {d['batch_id']}` shows every outcome")
    for batch, state, at_tier, count in status.following[:3] if not status.done else ():
        where = "this batch" if batch == status.batch_id else f"batch {batch}"
        at = f" at {at_tier}" if at_tier else ""
        waits = "job waits" if count == 1 else "jobs wait"
        lines.append(f"  waiting: {count:,} {waits} for the answer to the same question from {where}, {state}{at}"
                     + ("" if batch == status.batch_id else f"; `tierq status {batch}` shows how that one goes"))
    if status.held and not status.done and _held_apart(status):
        # Each queue's own reason: the one most jobs share would be told of the others too.
        waits = "job waits" if status.held == 1 else "jobs wait"
        lines.append(f"  held: {status.held:,} {waits} (the longest for {duration(status.held_s)})"
                     f"{_held_until(status)}")
        for queue, count, longest, given in status.held_queues:
            reason = f"{given}{_doctor_hint(given)}" if given else "a provider outage, a rate limit or the budget"
            lines.append(f"    at {queue}: {count:,} (the longest for {duration(longest)}): {reason}")
    elif status.held and not status.done and status.held_reason:
        waits = "job waits" if status.held == 1 else "jobs wait"
        lines.append(f"  held: {status.held:,} {waits} (the longest for {duration(status.held_s)}): "
                     f"{status.held_reason}{_doctor_hint(status.held_reason)}{_held_until(status)}")
    elif status.held and not status.done:
        waits = "job waits" if status.held == 1 else "jobs wait"
        lines.append(f"  held: {status.held:,} {waits} out a provider outage, a rate limit or the budget (the "
                     f"longest for {duration(status.held_s)}); the workers' log says which, `tierq doctor` checks "
                     f"the providers{_held_until(status)}")
    if status.quality is not None:
        lines.append(f"  {status.quality.line()}")
    if status.provider_batches:
        pb = status.provider_batches
        filling = f"{pb['filling']:,} still filling; " if pb.get("filling") else ""
        if pb.get("unsent"):
            why = f"it last answered {pb['unsent_error']}" if pb.get("unsent_error") else "the workers' log says why"
            filling += (f"{pb['unsent']:,} not accepted by the provider yet, trying for {duration(pb['unsent_s'])} "
                        f"({why}); ")
        looked = ""
        if pb.get("polled_s", 0) >= POLL_LATE_S:
            looked = f" when last looked at, {duration(pb['polled_s'])} ago"
            if pb.get("look_error"):  # why the counts stand still: the provider refuses the looks
                looked += f"; since then it answered {pb['look_error']}"
        lines.append(f"  in provider batches: {pb['requests']:,} jobs in {pb['batches']:,} ({filling}the provider "
                     f"reports {pb['completed']:,} completed, {pb['failed']:,} failed{looked})")
    if status.orphaned and not status.stuck:
        whose = "running job's" if status.orphaned == 1 else "running jobs'"
        lines.append(f"  stopped worker: {status.orphaned:,} {whose} worker stopped renewing their lease "
                     f"{duration(status.orphaned_s)} ago (it died or hangs); they are sent again once they have been "
                     f"still for [worker] stuck_after_s (`tierq recover {d['batch_id']} --older-than 0m` does it now)")
    if status.resent and not status.stuck:
        whose = "running job's" if status.resent == 1 else "running jobs'"
        lines.append(f"  sent again: {status.resent:,} {whose} worker stopped renewing their lease, and their "
                     "message has been published again since; a worker of their queue takes them up")
    if status.stuck:
        lines.append(f"  stuck: {status.stuck:,} jobs have no live message; the workers' reconciler publishes them "
                     f"again (`tierq recover {d['batch_id']} --older-than 0m` does it now)")
    return lines


def status_line(status: BatchStatus, tiers: Sequence[str] = ()) -> str:
    """The batch's state on one line (for logs and pipes): progress, each tier's counts, any problem."""
    done = status.total - status.pending
    state = "cancelled" if status.cancelled else "done" if status.done else "running"
    rank = {name: n for n, name in enumerate(tiers)}
    parts = [f"batch {status.batch_id}: {done:,}/{status.total:,} done, {state}, {money(status.cost_usd)} spent"]
    parts += [f"{tier}: {_counts(counts)}" for tier, counts in
              sorted(status.by_tier_status.items(), key=lambda kv: (rank.get(kv[0], len(rank)), kv[0]))]
    parts += [f"PROBLEM: no worker consumes queue {q} (start one: celery -A workers worker -Q {q})"
              + "".join(f"; worker {w} did not start for it: {why}" for w, (why, _) in
                        sorted(status.not_started.get(q, {}).items()))
              for q in status.unserved]
    parts += [f"PROBLEM: worker {w} gives the messages of queue {q} back (start it with the deployment's TOML)"
              for q, ws in status.refused.items() for w in sorted(ws)]
    if status.held and not status.done:
        # Why and until when, as the block says it, but without the countdown: a pipe gets a line per change.
        until = _held_until(status, countdown=False)
        if _held_apart(status):
            queue, count, _, reason = status.held_queues[0]
            others = status.held - count
            why = f" ({count:,} at {queue}: {reason or 'reason not recorded'}; {others:,} at other queues{until})"
        else:
            why = f" ({status.held_reason}{until})" if status.held_reason else f" ({until[2:]})" if until else ""
        parts.append(f"held {status.held:,}{why}")
    parts += [f"stuck {status.stuck:,}"] if status.stuck else []
    return "; ".join(parts)


def _counts(counts: dict[str, int]) -> str:
    """`name n` pairs: states in STATE_ORDER, anything else (call outcomes) by count."""
    ordered = sorted(counts.items(), key=lambda kv: (STATE_ORDER.index(kv[0]) if kv[0] in STATE_ORDER else 99, -kv[1]))
    return ", ".join(f"{name} {n:,}" for name, n in ordered) or "none"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    """Columns aligned to their widest cell; the first column left-aligned, the others right-aligned."""
    cells = [[str(c) for c in headers]] + [[f"{c:,}" if isinstance(c, int) else str(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
    return ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(r, widths, strict=True)))
            for r in cells]


def bill_lines(bill: Bill) -> list[str]:
    """The bill as a person reads it: totals, then the cost by tier, model, task type and tenant."""
    t, d = bill.totals, bill.as_dict()
    scope = f"batch {d['scope']['batch_id']}" if bill.scope.batch_id else "all batches"
    if bill.scope.since:
        scope += f" since {bill.scope.since.isoformat(sep=' ', timespec='minutes')}"
    pct = bill.savings_pct
    saving = f"{money(bill.savings_usd)} ({pct}%)" if pct is not None else "n/a (no answered calls)"
    left_out = bill.baseline_unpriced_jobs
    unpriced = (f"; {left_out:,} cached job{'s' if left_out != 1 else ''} without token counts "
                f"{'are' if left_out != 1 else 'is'} not in the baseline" if left_out else "")
    stuck = f"; {bill.stuck:,} stuck (no live message)" if bill.stuck else ""
    lines = [f"tierq bill, {scope}",
             f"jobs {t.jobs:,} ({_counts(bill.jobs_by_status)}{stuck}), calls {t.calls:,}, tokens {t.tokens:,}",
             f"cost {money(t.cost_usd)}; baseline {money(bill.baseline_cost_usd)} (every job on "
             f"{bill.baseline_model}, tier {bill.baseline_tier}); savings {saving}{unpriced}", ""]
    lines += table(["tier", "started", "answered", "escalated", "failed", "replaced", "calls", "tokens", "cost"],
                   [[r["tier"], r["started"], r["answered"], r["escalated"], r["failed"], r["replaced"], r["calls"],
                     r["tokens"], money(Decimal(r["cost_usd"]))] for r in d["by_tier"]])
    if any(r["replaced"] for r in d["by_tier"]):
        lines.append("replaced: answered there, then replaced by an audit with the reference tier's answer "
                     "(`tierq status` counts those jobs at the reference tier)")
    lines.append("")
    lines += table(["model", "calls", "tokens", "cost", "p50 ms", "p95 ms"],
                   [[r["model"], r["calls"], r["tokens"], money(Decimal(r["cost_usd"])),
                     _ms(r["latency_ms_p50"]), _ms(r["latency_ms_p95"])] for r in d["by_model"]])
    for key, title in (("by_task", "task_type"), ("by_tenant", "tenant")):
        lines.append("")
        lines += table([title, "jobs", "calls", "tokens", "cost"],
                       [[r[title], r["jobs"], r["calls"], r["tokens"], money(Decimal(r["cost_usd"]))] for r in d[key]])
    lines += ["", "calls by outcome:"] + [
        f"  {model}: {_counts(outcomes)}" for model, outcomes in bill.outcomes.items()
    ]
    if bill.budget_failed:
        unpaid = bill.budget_failed - bill.budget_failed_paid
        paid = (f", {bill.budget_failed_paid:,} after calls that cost {money(bill.budget_failed_paid_usd)}"
                if bill.budget_failed_paid else "")
        lines.append(f"  {bill.budget_failed:,} jobs failed: the batch budget could not cover their next call "
                     f"({unpaid:,} without any call{paid})")
    pairs = ", ".join(f"{e['from']} -> {e['to']} {e['jobs']:,}" for e in d["escalations"]) or "none"
    lines += ["", f"escalations: {pairs}", f"cache: {t.cache_hits:,} hits, {money(t.saved_usd)} saved"]
    api = bill.batch_api
    if api.calls:
        lines.append(f"provider batch APIs: {api.calls:,} calls, {money(api.cost_usd)} at batch prices "
                     f"({money(api.list_cost_usd)} at list prices, {money(api.saved_usd)} saved); interactive calls "
                     f"{money(t.cost_usd - api.cost_usd)}")
    if bill.quality is not None:
        lines.append(bill.quality.line())
        for stratum in bill.quality.strata:
            low, high = stratum.as_dict()["interval"]
            where = "the cache" if stratum.source == "cache" else stratum.tier
            lines.append(f"  {stratum.task_type} at {where}: {stratum.agree:,} of {stratum.audited:,} audited answers "
                         f"agree ({low:.1%}-{high:.1%})")
    return lines


def _ms(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"
