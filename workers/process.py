"""The tier step: answer a chunk of jobs concurrently, record every call, then finish, escalate or hold each.

A delivery claims its message's jobs under a lease (models/lifecycle.py) that a process-wide thread
renews while the calls run. A second delivery of the same message while that lease is alive makes no
call: it puts a copy of the message back, due when the lease would run out, and ends.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import logging
import queue
import random
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from models import following, lifecycle
from models.costs import record_calls
from models.lifecycle import Lease, Outbox
from tierq.config import TierConfig, batch_deadline
from tierq.contract import tier_message
from workers.audits import Finding, examine, pick, write_labels
from workers.calls import JobWork, TierResult, answer_at_tier
from workers.context import WorkerContext
from workers.dbretry import REDIS_OUTAGE, is_transient, redis_trouble, with_db_retry, with_redis_retry
from workers.gates import Hold, HoldKind
from workers.outcome import Outcome, sort
from workers.private import EXPIRED, reveal_claimed, seal_answers, seal_audits
from workers.provider_batches import TierWork, run_batch_tier
from workers.sharing import answer_followers
from workers.store import ClaimedJob, claimed_jobs

log = logging.getLogger(__name__)
TIDY_WAIT_S = 30.0  # how long a chunk whose jobs are recorded waits for Redis to tidy the cache


@dataclass(frozen=True, slots=True)
class TierSummary:
    """What became of a chunk's jobs at one tier."""

    claimed: int
    succeeded: int
    escalated: int
    failed: int
    calls: int
    shared: int = 0
    held: int = 0
    requeued: bool = False  # another delivery holds the jobs; a copy of this message comes back later


def process_chunk(ctx: WorkerContext, tier_name: str, job_ids: Sequence[int], message_id: uuid.UUID) -> TierSummary:
    """Answer the jobs this message owns at `tier_name`; safe to run again for the same message."""
    tier = ctx.config.tier(tier_name)
    if tier.mode != "interactive":  # the step answers interactively the jobs whose batch's deadline is too short
        return _batch_step(ctx, tier, job_ids, message_id)
    lease = Lease(message_id)
    outbox = Outbox()
    busy: float | None = None
    with ctx.engine.begin() as conn:
        if lifecycle.resend(conn, outbox, job_ids, message_id):
            log.warning("re-sending the hand-offs of redelivered %s message %s", tier.name, message_id)
        rows = lifecycle.claim(conn, job_ids, tier.name, lease, ctx.config.worker.lease_s)
        abandoned: list[int] = []
        if len(rows) < len(job_ids):  # not on the common path, where every job of the message is claimed
            dropped, answered = lifecycle.cancel_abandoned(conn, job_ids, tier.name, message_id)
            abandoned = dropped + answered
            busy = lifecycle.leased_elsewhere(conn, job_ids, lease)
    if abandoned:  # final now: a --no-store-text prompt leaves Redis (a no-op for the others)
        ctx.vault.forget_prompts(abandoned)
    ctx.publish(outbox)
    if busy is not None:
        # Another delivery of this message is answering these jobs; come back when its lease would end.
        ctx.publish([tier_message(tier.name, list(job_ids), None, message_id, min(busy + 1, ctx.longest_countdown_s))])
    jobs = claimed_jobs(rows)
    if not jobs:
        return TierSummary(0, 0, 0, 0, 0, requeued=busy is not None)
    with ctx.leases.holding(lease.owner, [job.id for job in jobs], {job.batch_id for job in jobs}):
        if any(job.private for job in jobs):
            jobs = _reveal(ctx, jobs, lease)
        if jobs:
            ctx.learned.refresh()  # here, in the task's thread: the event loop never waits on Postgres for it
            summary = _answer_in_parts(ctx, tier, jobs, lease)
        else:
            summary = _finish(ctx, tier, jobs, [], {}, lease)
    return summary if busy is None else TierSummary(**{**_fields(summary), "requeued": True})


def _answer_in_parts(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], lease: Lease) -> TierSummary:
    """Answer the chunk and write its answered jobs as they come back, a few at a time, so that a job is
    finished without waiting for the chunk's slowest call. The jobs that escalate, are held or fail are
    written once, with the last answered ones, when every call has ended: their hand-offs keep whole
    chunks. Each part is one transaction of `_finish`, guarded by the lease like a whole chunk."""
    ready: queue.SimpleQueue[int | None] = queue.SimpleQueue()
    results: list[TierResult | None] = [None] * len(jobs)
    findings: dict[int, Finding] = {}

    def done(index: int, result: TierResult) -> None:  # on the loop's thread
        results[index] = result
        ready.put(index)

    future = ctx.loop.start(_answer_all(ctx, tier, jobs, findings, done))
    # None follows every index in the queue: the loop's thread puts them before the coroutine ends.
    future.add_done_callback(lambda _: ready.put(None))
    parts: list[TierSummary] = []
    rest: list[int] = []
    failed: Exception | None = None  # the error of a part's write; the chunk's other calls still end first
    left = len(jobs)
    try:
        while left:
            first = _next_answer(ready, future, None)
            assert first is not None  # without a timeout it waits for one
            part = [first]
            deadline = time.monotonic() + ctx.config.worker.flush_ms / 1000
            while len(part) < left:
                index = _next_answer(ready, future, max(0.0, deadline - time.monotonic()))
                if index is None:
                    break
                part.append(index)
            left -= len(part)
            answered = [i for i in part if _result(results, i).answer is not None]
            rest.extend(i for i in part if i not in answered)
            if not (answered and left and failed is None):
                rest.extend(answered)
                continue
            try:
                parts.append(_finish(ctx, tier, [jobs[i] for i in answered], [_result(results, i) for i in answered],
                                     findings, lease))
            except Exception as exc:
                # The calls still out are paid for: they end and are written with the rest (this part again,
                # which its rows' ids and the lease guard against writing twice), then the task fails.
                log.warning("writing %d answered jobs failed (%s); the chunk's other calls end first",
                            len(answered), type(exc).__name__)
                failed = exc
                rest.extend(answered)
        future.result()
    finally:
        future.cancel()  # only when the coroutine itself failed: the calls still waiting for a slot are not made
    rest.sort()
    parts.append(_finish(ctx, tier, [jobs[i] for i in rest], [_result(results, i) for i in rest], findings, lease))
    if failed is not None:
        raise failed
    return TierSummary(**{name: sum(getattr(p, name) for p in parts) for name in _fields(parts[0])
                          if name != "requeued"})


def _next_answer(ready: queue.SimpleQueue[int | None], future: concurrent.futures.Future[Any],
                 timeout: float | None) -> int | None:
    """The next job whose calls ended, or None when none did within `timeout`; raises what stopped the
    chunk's coroutine if it ended first. The coroutine's end is the None its future puts after the last
    index, not `future.done()`: that can turn true between a wait timing out and a look at the queue,
    while an index is already there (the task then failed with its answered jobs unwritten, left running)."""
    try:
        index = ready.get(timeout=timeout)
    except queue.Empty:
        return None
    if index is None:
        ready.put(None)  # for the next call
        future.result()
        raise RuntimeError("the chunk's calls ended without every job's result")
    return index


def _result(results: list[TierResult | None], index: int) -> TierResult:
    result = results[index]
    assert result is not None
    return result


def _batch_step(ctx: WorkerContext, tier: TierConfig, job_ids: Sequence[int], message_id: uuid.UUID) -> TierSummary:
    """One step of a batch-mode tier message (workers/provider_batches.py), finished by the same code."""
    done: list[TierSummary] = []

    def interactive(jobs: list[ClaimedJob], lease: Lease) -> None:
        ctx.learned.refresh()
        findings: dict[int, Finding] = {}
        results = ctx.loop.run(_answer_all(ctx, tier, jobs, findings))
        done.append(_finish(ctx, tier, jobs, results, findings, lease))

    def finish(jobs: list[ClaimedJob], results: list[TierResult], lease: Lease) -> None:
        done.append(_finish(ctx, tier, jobs, results, {}, lease))

    def prepare(jobs: list[ClaimedJob], lease: Lease) -> list[ClaimedJob]:
        return _reveal(ctx, jobs, lease) if any(job.private for job in jobs) else jobs

    step = run_batch_tier(ctx, tier, job_ids, message_id, TierWork(prepare, interactive, finish))
    total = {name: sum(getattr(s, name) for s in done) for name in _fields(TierSummary(0, 0, 0, 0, 0))
             if name != "requeued"}
    return TierSummary(**{**total, "claimed": step.claimed, "requeued": step.requeued})


def _fields(summary: TierSummary) -> dict[str, Any]:
    return {name: getattr(summary, name) for name in TierSummary.__dataclass_fields__}


def _reveal(ctx: WorkerContext, jobs: list[ClaimedJob], lease: Lease) -> list[ClaimedJob]:
    jobs, expired = reveal_claimed(ctx.vault, jobs)
    if expired:
        with ctx.engine.begin() as conn:
            lifecycle.fail(conn, lease.message, [(job_id, EXPIRED, 0) for job_id in expired], final=True,
                           owner=lease.owner)
    return jobs


async def _answer_all(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], findings: dict[int, Finding],
                      done: Callable[[int, TierResult], None] | None = None) -> list[TierResult]:
    """Every job's calls, each job in one of the process's open-call slots while it runs; `done` hears
    of each job (its index in `jobs`) as soon as its calls ended."""
    leaders = [job.id for job in jobs if job.cache_entry is not None]
    heartbeat = asyncio.create_task(_keep_cache_leases(ctx, leaders)) if leaders else None
    slots = ctx.loop.slots(ctx.config.worker.open_calls)

    async def one(index: int, job: ClaimedJob) -> TierResult:
        async with slots:  # before the gates: a rate-limit slot or a budget reservation is not held while waiting
            result = _isolate(await _answer(ctx, tier, job, findings))
        if done is not None:
            done(index, result)
        return result

    try:
        return await asyncio.gather(*(one(n, job) for n, job in enumerate(jobs)))
    finally:
        if heartbeat is not None:
            heartbeat.cancel()


async def _answer(ctx: WorkerContext, tier: TierConfig, job: ClaimedJob, findings: dict[int, Finding]) -> TierResult:
    """One job's calls at this tier; for a job under audit, the comparison with its candidate too."""
    work = JobWork(job.id, job.messages, job.params, job.batch_id, job.budgeted,
                   None if job.audit else ctx.checks.for_job(job.task_type, job.params),
                   None if job.audit else ctx.learned.second_look(job.task_type, tier.name, job.messages),
                   lambda: ctx.leases.cancelled(job.batch_id))
    result = await answer_at_tier(ctx.client, ctx.config, tier, work, ctx.gates)
    if job.audit and result.answer is not None and result.failure is None:
        try:
            finding = await examine(ctx, tier, job, result)
        except Exception as exc:
            result.failure = exc  # the reference's answer is kept (it is paid for); the audit has no label
            return result
        if finding is not None:
            findings[job.id] = finding
            result.records.extend(finding.judge_calls)
    return result


def _isolate(result: TierResult) -> TierResult:
    """One job's failure stays its own: an outage holds it for a while, anything else fails it alone; the
    calls it made are recorded either way."""
    failure = result.failure
    if failure is None:
        return result
    if result.answer is not None:  # the answer came before the error: it is paid for, keep it
        log.warning("job %s: %s after its answer: %s", result.job_id, type(failure).__name__, failure)
        return result
    if is_transient(failure):
        log.warning("job %s held for a while: %s: %s", result.job_id, type(failure).__name__, failure)
        result.hold = Hold(HoldKind.OUTAGE, 5.0, f"outage: {type(failure).__name__}")
        return result
    log.error("job %s failed with an unexpected error", result.job_id, exc_info=failure)
    result.answer, result.hold, result.final = None, None, True
    result.reason = f"error: {type(failure).__name__}: {str(failure)[:200]}"
    return result


async def _keep_cache_leases(ctx: WorkerContext, leaders: list[int]) -> None:
    """Renew the leaders' cache leases so their followers keep waiting while the calls run."""
    ctx.cache.renew_leases(leaders)
    loop = asyncio.get_running_loop()
    while True:
        await asyncio.sleep(ctx.config.cache.lease_s / 3)
        await loop.run_in_executor(None, ctx.cache.renew_leases, leaders)


def _finish(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], results: list[TierResult],
            findings: dict[int, Finding], lease: Lease) -> TierSummary:
    next_tier = ctx.config.next_tier(tier.name)
    picks = pick(ctx, tier.name, [job for job, r in zip(jobs, results, strict=True) if r.answer is not None
                                  and not job.audit])
    if picks:  # not a job whose batch was cancelled: an audit could not be queued for it, its answer lost
        picks -= _in_cancelled_batches(ctx, [job for job in jobs if job.id in picks])
    out = sort(ctx, tier, jobs, results, findings, picks)
    # The calls are paid for and not recorded yet: ride out a Redis outage here rather than fail the task,
    # whose redelivery would pay for them again.
    answers, digests = (with_redis_retry(lambda: seal_answers(ctx.vault, jobs, out.answers), what="sealing answers")
                        if any(j.private for j in jobs) else (out.answers, {}))
    audits, settled, settled_digests = with_redis_retry(lambda: seal_audits(ctx.vault, jobs, out.audits, out.settled),
                                                        what="sealing audited answers")
    reference = ctx.config.reference_tier
    final_ids = {m[0] for m in out.stopped} | ({m[0] for m in out.misses} if next_tier is None else set())
    failed_leaders = [job for job in jobs if job.cache_entry is not None and job.id in final_ids]
    outbox = Outbox()
    batch = jobs[0].batch_id if jobs else None
    chunk = ctx.config.tier_chunks_for(batch_deadline(jobs[0].params) if jobs else None)
    countdown = min(ctx.longest_countdown_s, max(0.5, out.hold_after_s) * random.uniform(1.0, 1.5))

    tries = 0

    def record() -> tuple[int, int, list[int], list[int]]:
        nonlocal tries
        tries += 1
        outbox.clear()
        with ctx.engine.begin() as conn:
            record_calls(conn, out.rows)
            done = lifecycle.succeed(conn, lease, answers, digests)
            lifecycle.audit(conn, outbox, lease, audits, reference, chunk, batch)
            done += lifecycle.settle_audits(conn, lease, settled, settled_digests)
            write_labels(conn, tier.name, [(a.job, a.candidate, a.reference, a.finding) for a in out.audited])
            shared = sum(answer_followers(conn, job.id, share) for job, share in out.fills)
            lifecycle.fail(conn, lease.message, out.misses, final=next_tier is None, owner=lease.owner)
            lifecycle.fail(conn, lease.message, out.stopped, final=True, owner=lease.owner)
            lifecycle.fail(conn, lease.message, out.held, final=False, owner=lease.owner)
            lifecycle.fail(conn, lease.message, out.cancelled, final=False, owner=lease.owner)  # cancelled below
            if next_tier is not None:
                lifecycle.escalate(conn, outbox, lease, [m[0] for m in out.misses], next_tier, chunk, batch)
            for target, jumps in out.jumps.items():
                lifecycle.fail(conn, lease.message, jumps, final=False, owner=lease.owner)
                lifecycle.escalate(conn, outbox, lease, [m[0] for m in jumps], target, chunk, batch)
            lifecycle.hold(conn, outbox, lease, out.hold_kinds, tier.name, chunk, batch, countdown)
            lifecycle.fail(conn, lease.message, out.again, final=False, owner=lease.owner)
            lifecycle.retry(conn, outbox, lease, [m[0] for m in out.again], tier.name, chunk, batch)
            # A job kept with its answer under audit is a leader that succeeded: the follow check gives its
            # followers that answer, as for any leader whose answer is not in the cache.
            cancelled, kept = lifecycle.cancel_leftovers(conn, lease, [job.id for job in jobs])
            following.release_followers(conn, outbox, [job.id for job in failed_leaders + _leaders(jobs, cancelled)],
                                        ctx.config.worker.classify_chunk)
            return done + len(kept), shared, cancelled, kept

    # The calls are paid for: keep their rows through a database outage instead of failing the task.
    done, shared, cancelled, kept = with_db_retry(record, what=f"recording {len(out.rows)} calls")
    if tries > 1:
        # An earlier try may have committed without hearing so: its hand-offs are what the database says.
        outbox.clear()
        with ctx.engine.connect() as conn:
            lifecycle.resend(conn, outbox, [job.id for job in jobs], lease.message)
    ended = final_ids | set(cancelled) | set(kept) | {c.job_id for c, _ in out.settled}
    failed_leaders += _leaders(jobs, cancelled)  # their entries get no answer either: dropped below
    try:
        ctx.publish(outbox)
    except BaseException:
        # A broker that is down (Redis, the cache's server too, say) still lets the cache be tidied; the
        # publish error is the one the task reports (and is retried for), whatever the tidying meets.
        try:
            _after_commit(ctx, jobs, out, failed_leaders, ended)
        except Exception:
            log.exception("tidying the cache after a failed publish failed too")
        raise
    _after_commit(ctx, jobs, out, failed_leaders, ended)
    if out.held:
        log.info("%d jobs held at %s for %.1f s: %s", len(out.held), tier.name, countdown, out.held[0][1])
    escalated = (len(out.misses) if next_tier is not None else 0) + sum(map(len, out.jumps.values()))
    failed = (len(out.misses) if next_tier is None else 0) + len(out.stopped)
    return TierSummary(len(jobs), done, escalated, failed, len(out.rows), shared, len(out.held))


def _in_cancelled_batches(ctx: WorkerContext, jobs: list[ClaimedJob]) -> set[int]:
    """The ids of the `jobs` whose batch is cancelled, as the database says now (the lease keeper's word may
    be CANCEL_CHECK_S old); through a database outage, as the recording of the calls is."""
    def read() -> set[uuid.UUID]:
        with ctx.engine.connect() as conn:
            return lifecycle.cancelled_batches(conn, {job.batch_id for job in jobs})

    cancelled = with_db_retry(read, what="reading which batches were cancelled")
    return {job.id for job in jobs if job.batch_id in cancelled}


def _leaders(jobs: list[ClaimedJob], ids: list[int]) -> list[ClaimedJob]:
    """The jobs among `ids` that lead a cache entry."""
    chosen = set(ids)
    return [job for job in jobs if job.cache_entry is not None and job.id in chosen]


def _after_commit(ctx: WorkerContext, jobs: list[ClaimedJob], out: Outcome, failed_leaders: list[ClaimedJob],
                  ended: set[int]) -> None:
    """Tidy Redis after the chunk's jobs are recorded, through a short outage. Past it the jobs stay as
    recorded (failing the task would only bring its message back for nothing): the unfilled entries'
    leases run out, so later askers call again, and private prompts go at their time-to-live."""
    try:
        with_redis_retry(lambda: _tidy_cache(ctx, jobs, out, failed_leaders, ended), deadline_s=TIDY_WAIT_S,
                         what="filling the cache")
    except REDIS_OUTAGE as exc:
        log.warning("cache not filled for %d answered jobs (for %.0f s: %s); their answers are recorded",
                    len(out.fills), TIDY_WAIT_S, redis_trouble(exc))


def _tidy_cache(ctx: WorkerContext, jobs: list[ClaimedJob], out: Outcome, failed_leaders: list[ClaimedJob],
                ended: set[int]) -> None:
    """Fill the cache with the answers, drop the entries of leaders that failed, forget private prompts."""
    for job, share in out.fills:
        assert job.cache_entry is not None
        ctx.cache.fill(job.cache_entry, job.id, share.content, share.model, share.tier, share.saved_usd,
                       (share.prompt_tokens, share.completion_tokens, share.cached_tokens))
    for job in failed_leaders:
        assert job.cache_entry is not None
        ctx.cache.drop(job.cache_entry, job.id)
    ended |= {a[0] for a in out.answers}
    private_ended = [job.id for job in jobs if job.private and job.id in ended]
    if private_ended:
        ctx.vault.forget_prompts(private_ended)
