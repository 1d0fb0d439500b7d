"""What became of each job of a tier chunk: answered (or picked for an audit), settled after an audit,
escalated, held on its queue, or failed; and the cost rows of every call."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime

from models.costs import CostRow
from models.lifecycle import Candidate
from tierq.config import TierConfig
from tierq.money import ZERO
from workers.audits import Finding
from workers.calls import TierResult
from workers.context import WorkerContext
from workers.gates import HoldKind
from workers.llm import CallRecord
from workers.sharing import SharedAnswer
from workers.store import ClaimedJob


@dataclass(frozen=True, slots=True)
class Audited:
    """An audited job whose reference answered: what was compared and what was found."""

    job: ClaimedJob
    candidate: Candidate
    reference: CallRecord
    finding: Finding


@dataclass(slots=True)
class Outcome:
    """A chunk's jobs sorted by what happens to them next."""

    rows: list[CostRow] = field(default_factory=list)
    answers: list[tuple[int, str | None, str, int]] = field(default_factory=list)
    audits: list[Candidate] = field(default_factory=list)  # answered here, to be asked at the reference tier
    settled: list[tuple[Candidate, bool]] = field(default_factory=list)  # audited: the answer kept, replaced?
    audited: list[Audited] = field(default_factory=list)
    misses: list[tuple[int, str, int]] = field(default_factory=list)  # no usable answer here: escalate or fail
    jumps: dict[str, list[tuple[int, str, int]]] = field(default_factory=dict)  # a router sends them to that tier
    stopped: list[tuple[int, str, int]] = field(default_factory=list)  # failed here for good
    held: list[tuple[int, str, int]] = field(default_factory=list)  # back to this tier's queue, later
    hold_kinds: dict[int, str] = field(default_factory=dict)  # the held jobs: what holds each
    cancelled: list[tuple[int, str, int]] = field(default_factory=list)  # their batch was cancelled mid-way
    again: list[tuple[int, str, int]] = field(default_factory=list)  # to this tier again, under a new message
    hold_after_s: float = 0.0
    fills: list[tuple[ClaimedJob, SharedAnswer]] = field(default_factory=list)


def sort(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], results: list[TierResult],
         findings: dict[int, Finding], picks: set[int]) -> Outcome:
    """Sort the chunk's jobs by what their calls came to."""
    out = Outcome()
    now = datetime.now(UTC)
    for job, result in zip(jobs, results, strict=True):
        calls = len(result.records)
        out.rows.extend(r.cost_row(job_id=job.id, batch_id=job.batch_id, attempt=job.attempts + n, tier=tier.name)
                        for n, r in enumerate(result.records, start=1))
        if job.audit:
            _sort_audited(out, tier, job, result, findings.get(job.id), calls,
                          _waited_too_long(ctx, job, result, now))
        elif result.answer is not None:
            answer = result.answer
            if job.id in picks:
                out.audits.append(Candidate(job.id, answer.content or "", answer.model, tier.name, calls,
                                            logprobs=answer.logprobs))
            else:
                out.answers.append((job.id, answer.content or "", answer.model, calls))
                _fill(out, job, answer, tier.name)
        elif result.cancelled:
            out.cancelled.append((job.id, result.reason or "cancelled", calls))
        elif result.again:
            out.again.append((job.id, f"{tier.name}: {result.reason}", calls))
        elif result.hold is not None:
            _sort_held(ctx, out, tier, job, result, calls, now)
        elif result.final or _pointless(ctx, tier, result):
            out.stopped.append((job.id, result.reason or "stopped", calls))
        elif result.jump_to is not None:
            out.jumps.setdefault(result.jump_to, []).append((job.id, f"{tier.name}: {result.reason}", calls))
        else:
            out.misses.append((job.id, f"{tier.name}: {result.reason or 'no usable answer'}", calls))
    return out


def _sort_audited(out: Outcome, tier: TierConfig, job: ClaimedJob, result: TierResult, finding: Finding | None,
                  calls: int, given_up: bool = False) -> None:
    """An audit ends with the candidate unless the reference answered and disagreed; a reference that could
    not answer leaves the candidate in place (no label), a held one waits on its queue, unless it has waited
    past its limit (`given_up`): then the candidate stays, as when the reference could not answer."""
    candidate = job.candidate
    assert candidate is not None
    reference = result.answer
    if reference is not None and finding is not None:
        out.audited.append(Audited(job, candidate, reference, finding))
        replaced = finding.agree is False
        kept = Candidate(job.id, reference.content or "", reference.model, tier.name, calls) if replaced else \
            Candidate(job.id, candidate.content, candidate.model, candidate.tier, calls)
        out.settled.append((kept, replaced))
        if kept.content is not None:
            _fill(out, job, reference if replaced else None, kept.tier, kept)
    elif result.hold is not None and not given_up:
        _hold(out, job, result, calls)
    else:
        out.settled.append((Candidate(job.id, candidate.content, candidate.model, candidate.tier, calls), False))
        if candidate.content is not None:
            _fill(out, job, None, candidate.tier, candidate)


def _fill(out: Outcome, job: ClaimedJob, answer: CallRecord | None, tier: str, kept: Candidate | None = None) -> None:
    """Fill the cache entry a leading job owns (with the answer it keeps); its followers get it too."""
    if job.cache_entry is None:
        return
    if answer is not None:
        usage = answer.usage
        out.fills.append((job, SharedAnswer(answer.content or "", answer.model, tier, answer.cost_usd,
                                            usage.prompt_tokens, usage.completion_tokens, usage.cached_tokens)))
    elif kept is not None and kept.content is not None:
        # What the candidate's own call cost is on another tier's rows; the entry records no saving for it.
        out.fills.append((job, SharedAnswer(kept.content, kept.model, tier, ZERO)))


def _held_for(ctx: WorkerContext, job: ClaimedJob, result: TierResult, now: datetime) -> tuple[float, float | None]:
    """(seconds the job has waited for what holds it now, the longest that kind of wait may last: None for
    no limit). Each limited kind has a clock of its own (`models.lifecycle.hold`): hours in tierq's own
    rate schedule do not make the first outage or 429 after them look hours long."""
    assert result.hold is not None
    since = (job.hold_clocks or {}).get(result.hold.kind.value) if job.held_since is not None else None
    waited = max(0.0, now.timestamp() - float(since)) if since is not None else 0.0
    return waited, {HoldKind.OUTAGE: ctx.config.worker.outage_limit_s,
                    HoldKind.BUDGET: ctx.config.worker.budget_wait_s,
                    HoldKind.PROVIDER_LIMIT: ctx.config.worker.rate_limit_wait_s}.get(result.hold.kind)


def _waited_too_long(ctx: WorkerContext, job: ClaimedJob, result: TierResult, now: datetime) -> bool:
    if result.hold is None:
        return False
    waited, limit = _held_for(ctx, job, result, now)
    return limit is not None and waited > limit


def _sort_held(ctx: WorkerContext, out: Outcome, tier: TierConfig, job: ClaimedJob, result: TierResult,
               calls: int, now: datetime) -> None:
    assert result.hold is not None
    waited, limit = _held_for(ctx, job, result, now)
    if limit is not None and waited > limit:
        why = f"{result.hold.reason}; held {waited:.0f} s, longer than {limit:.0f} s"
        if result.hold.kind is HoldKind.PROVIDER_LIMIT:  # the tier's provider keeps refusing: the next tier may not
            out.misses.append((job.id, f"{tier.name}: {why}", calls))
        else:
            out.stopped.append((job.id, why, calls))
    else:
        _hold(out, job, result, calls)


def _hold(out: Outcome, job: ClaimedJob, result: TierResult, calls: int) -> None:
    assert result.hold is not None
    out.held.append((job.id, result.hold.reason, calls))
    out.hold_kinds[job.id] = result.hold.kind.value
    out.hold_after_s = max(out.hold_after_s, result.hold.after_s)


def _pointless(ctx: WorkerContext, tier: TierConfig, result: TierResult) -> bool:
    """A request its provider called invalid goes to the next tier only when a model there is elsewhere."""
    if result.rejected_by is None:
        return False
    following = ctx.config.next_tier(tier.name)
    if following is None:
        return False
    return all(ctx.config.models[m].provider == result.rejected_by for m in ctx.config.tier(following).models)

