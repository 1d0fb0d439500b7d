"""A tier in mode "batch" or "deadline": its jobs are answered through the provider's batch API, at its batch
prices, when their batch allows it (TierConfig.uses_batch_api).

Each delivery of a batch-mode tier message claims the message's jobs (models/lifecycle.py), does one step
and, unless the provider batch has ended, parks them again (`queued` under the same message) and
publishes the message again due in `batch_poll_s`; no thread waits on a provider batch.

- First delivery: jobs whose batch keeps this tier interactive (mode "deadline" without a long enough
  `--deadline`, or a deadline shorter than `batch_window`) and jobs that need more than one plain call
  (under audit, under a budget, too long for the model) are answered interactively now; the rest move
  into the batch's provider file being filled at this tier (a "collecting" row of `provider_batches`, with
  every request's call id; models/provider_batch.py `collect`), which is closed when it reaches
  `batch_max_requests` or `batch_max_bytes`, or when its timer message comes due after `batch_max_wait_s`.
  A closed file's message carries all its jobs, so jobs escalated a few at a time share one provider batch.
- "creating": the input file is uploaded and the batch created, each id written as soon as it is known
  ("sending" just before the batch is created); a later delivery that finds "sending" without a batch id
  first looks for a provider batch carrying the message id in its metadata, so a worker killed between the
  provider's answer and the write never sends twice.
- "open": the batch is looked at; once it has ended, its output and error files are read, every line
  becomes a call (its call id, usage and batch-price cost) judged exactly like an interactive answer,
  and the chunk is finished by the same code as an interactive one (workers/process.py: cost rows,
  validators, escalation, cache fill, followers). Requests the batch did not answer (it expired, failed
  or was cancelled) go to the tier's models interactively or to the next tier (`batch_fallback`). A line
  that failed for a reason that may pass is sent again at this tier, up to `max_retries` times
  (workers/batch_retry.py); a line that matches no request is billed on its own (workers/batch_lines.py).
- The batch's jobs all cancelled (`tierq cancel`): the provider batch is cancelled, looked at until it has
  stopped, and each request it answered before it did is a cost row of its job (paid for, though no job
  takes the answer); so are the lines of jobs cancelled while the rest of their batch ran on.
"""

from __future__ import annotations

import json
import logging
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import openai
from sqlalchemy import text

from models import lifecycle
from models import provider_batch as pb
from models.costs import record_calls
from models.enums import CallOutcome
from models.lifecycle import Lease, Outbox
from models.provider_batch import ProviderBatch
from tierq.config import ModelConfig, TierConfig, batch_deadline
from tierq.contract import tier_message
from tierq.messages import estimated_prompt_tokens
from tierq.money import ZERO, Usage
from tierq.params import PASSED_PARAMS
from workers import batch_retry
from workers.batch_lines import read_lines
from workers.calls import JobWork, TierResult, messages_for, params_for, take
from workers.context import WorkerContext
from workers.llm import CallRecord
from workers.store import ClaimedJob, claimed_jobs

log = logging.getLogger(__name__)
ENDED_STATUSES = {"completed", "failed", "expired", "cancelled"}
CANCELLING = "cancelling"  # a cancelled batch until it stops: it may still answer requests it had started
METADATA_KEY = "tierq_message"
LOOKUP_LIMIT = 500  # recent provider batches searched for a message id before creating another


@dataclass(frozen=True, slots=True)
class BatchStep:
    """What one delivery did: jobs it answered or finished (`finished`), whether it comes back."""

    claimed: int
    finished: int
    requeued: bool


def call_id(message: uuid.UUID, job_id: int) -> uuid.UUID:
    """The id of a job's request in its message's provider batch: the same on every delivery."""
    return uuid.uuid5(message, str(job_id))


def run_batch_tier(ctx: WorkerContext, tier: TierConfig, job_ids: Sequence[int], message: uuid.UUID,
                   tier_work: TierWork) -> BatchStep:
    """One step for a batch-mode tier message, with the interactive tier's own code for the rest."""
    lease = Lease(message)
    outbox = Outbox()
    busy: float | None = None
    with ctx.engine.begin() as conn:
        found = pb.find(conn, message)
        if found is not None and found.state == pb.COLLECTING:
            # A provider file being filled: its timer (a message without jobs) closes it once it has waited
            # batch_max_wait_s, and so does any delivery with jobs (the reconciler's, a resent hand-off).
            left = tier.batch_max_wait_s - pb.waited_s(conn, message)
            if not job_ids and left > 0:
                ctx.publish([tier_message(tier.name, [], found.batch_id, message, min(left, ctx.longest_countdown_s))])
                return BatchStep(0, 0, True)
            pb.close(conn, message)
            found = pb.find(conn, message)
        elif not job_ids:
            # A timer that came after its file filled up and was sent: the file's own message carries it on.
            return BatchStep(0, 0, found is not None and found.state != pb.ENDED)
        # Every job of the message's provider file, whatever this copy of the message lists: two deliveries
        # then compete for all of them, and only one can create the provider batch.
        ids = sorted(set(job_ids) | set(found.requests.values())) if found is not None else list(job_ids)
        lifecycle.resend(conn, outbox, ids, message)
        rows = lifecycle.claim(conn, ids, tier.name, lease, ctx.config.worker.lease_s)
        abandoned: list[int] = []
        if len(rows) < len(ids):
            dropped, answered = lifecycle.cancel_abandoned(conn, ids, tier.name, message)
            abandoned = dropped + answered
            busy = lifecycle.leased_elsewhere(conn, ids, lease)
    if abandoned:  # final now: a --no-store-text prompt leaves Redis (a no-op for the others)
        ctx.vault.forget_prompts(abandoned)
    ctx.publish(outbox)
    if busy is not None:
        # Another delivery holds these jobs (or held them and died): come back when its lease would end.
        ctx.publish([tier_message(tier.name, ids, None, message, min(busy + 1, ctx.longest_countdown_s))])
    jobs = claimed_jobs(rows)
    if not jobs:
        if busy is None and found is not None and found.state != pb.ENDED:
            _abandon(ctx, found)
        elif busy is None and found is not None and not _still_open(ctx, found) and _bill_ended(ctx, found):
            # Its jobs are final: a delivery that finished them and stopped before deleting the files (a
            # failed publish, a crash) left them at the provider. Deleting again costs a 404 at most. Or a
            # delivery died after the batch ended, and its jobs were cancelled since (`cancel_abandoned`):
            # their lines were billed first (rows keyed by call id: a line recorded already adds nothing).
            _delete_files(ctx, found)
        return BatchStep(0, 0, busy is not None)
    with ctx.leases.holding(lease.owner, [job.id for job in jobs], {job.batch_id for job in jobs}):
        jobs = tier_work.prepare(jobs, lease)
        if found is None:
            now, later = _split(ctx, tier, jobs)
            step = ctx.config.worker.tier_chunk  # answered as an interactive tier would, a chunk at a time
            for start in range(0, len(now), step):
                tier_work.interactive(now[start:start + step], lease)
            if later:
                _collect(ctx, tier, later, lease)
            return BatchStep(len(jobs), len(now), busy is not None)
        if found.state == pb.CREATING and busy is not None:
            # The other delivery may be creating the provider batch right now: wait for it (the message
            # published above comes back when its lease would end).
            _park_and_return(ctx, tier, found, jobs, lease, poll=False)
            return BatchStep(len(jobs), 0, True)
        try:
            if found.state == pb.CREATING:
                sent = set(found.requests.values())
                found = _create(ctx, tier, found, [job for job in jobs if job.id in sent])
            if found.state == pb.OPEN:
                found = _look(ctx, found)
        except openai.APIStatusError as exc:
            private = any(job.private for job in jobs)
            if _transient(exc) or _runs_on(ctx, found, exc):
                _failed_once(ctx, tier, found, _brief(ctx, exc), private)
                _park_and_return(ctx, tier, found, jobs, lease)
                return BatchStep(len(jobs), 0, True)
            # The provider refuses the file or the batch: its requests go where an expired batch's would.
            why = _brief(ctx, exc)
            log.error("provider batch of message %s refused: %s", message, why)
            kept = _kept(why, private)
            with ctx.engine.begin() as conn:
                pb.record(conn, message, provider_status=f"refused: {kept}"[:40], state=pb.ENDED)
                pb.note_error(conn, message, kept)
            found = _again(ctx, found)
        except openai.APIError as exc:  # not reached, a timeout: the provider may be back next time
            _failed_once(ctx, tier, found, _brief(ctx, exc), any(job.private for job in jobs))
            _park_and_return(ctx, tier, found, jobs, lease)
            return BatchStep(len(jobs), 0, True)
        if found.state != pb.ENDED:
            _park_and_return(ctx, tier, found, jobs, lease)
            return BatchStep(len(jobs), 0, True)
        lines = _ended_lines(ctx, tier, found, jobs)
        if lines is None:
            _park_and_return(ctx, tier, found, jobs, lease)
            return BatchStep(len(jobs), 0, True)
        _finish_ended(ctx, tier, found, jobs, lease, tier_work, lines)
    return BatchStep(len(jobs), len(jobs), busy is not None)


def _collect(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob], lease: Lease) -> None:
    """Move the jobs into the provider file their batch is filling at this tier; send the files that filled
    up now, and start the timer (batch_max_wait_s) of each file this step opened. Jobs of a batch cancelled
    meanwhile are cancelled here."""
    name = tier.models[0]
    model = ctx.config.models[name]
    limits = pb.Limits(tier.batch_max_requests, tier.batch_max_bytes)
    by_batch: dict[uuid.UUID, list[ClaimedJob]] = {}
    for job in jobs:  # one message may carry several batches' jobs (followers released together)
        by_batch.setdefault(job.batch_id, []).append(job)
    messages = []
    for batch, group in by_batch.items():
        sizes = [(job.id, len(_line(model.model or name, str(call_id(lease.message, job.id)), job, tier, model)) + 1)
                 for job in group]
        with ctx.engine.begin() as conn:
            done = pb.collect(conn, lease.message, lease.owner, batch, tier.name, name, model.provider, sizes, limits,
                              call_id)
            if done.moved < len(group):
                lifecycle.cancel_leftovers(conn, lease, [job.id for job in group])
        due = min(tier.batch_max_wait_s, ctx.longest_countdown_s)
        messages += [tier_message(tier.name, [], batch, row, due) for row in done.opened]
        messages += [tier_message(tier.name, ids, batch, row, None) for row, ids in done.closed.items()]
    ctx.publish(messages)


@dataclass(frozen=True, slots=True)
class TierWork:
    """The interactive tier's code the batch steps use: `prepare(jobs, lease)` (private texts from the
    vault), `interactive(jobs, lease)` (answer and finish them), `finish(jobs, results, lease)`."""

    prepare: Callable[[list[ClaimedJob], Lease], list[ClaimedJob]]
    interactive: Callable[[list[ClaimedJob], Lease], None]
    finish: Callable[[list[ClaimedJob], list[TierResult], Lease], None]


def _ended_lines(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch,
                 jobs: list[ClaimedJob]) -> list[tuple[int, dict[str, Any]]] | None:
    """The ended batch's output and error lines, or None when the provider could not hand them over now (a
    5xx, a 429, a timeout): its jobs wait for the next poll, which reads them again."""
    if not (found.output_file_id or found.error_file_id):
        return []
    try:
        return read_lines(ctx, found)
    except openai.APIStatusError as exc:
        if not _transient(exc):
            raise
        why = _brief(ctx, exc)
    except openai.APIError as exc:  # not reached, a timeout
        why = _brief(ctx, exc)
    _failed_once(ctx, tier, found, why, any(job.private for job in jobs))
    return None


def _finish_ended(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, jobs: list[ClaimedJob], lease: Lease,
                  tier_work: TierWork, lines: list[tuple[int, dict[str, Any]]]) -> None:
    """Answer the jobs from the ended batch's lines; what it did not answer goes to `batch_fallback`."""
    answered = _read_results(ctx, tier, found, jobs, lines)
    _bill_moved_on(ctx, found, lines, {job.id for job in jobs})
    unanswered = [job for job in jobs if job.id not in answered]
    if unanswered and tier.batch_fallback == "interactive":
        log.warning("provider batch %s ended %s with %d requests unanswered; calling them directly",
                    found.provider_batch_id, found.provider_status, len(unanswered))
        tier_work.interactive(unanswered, lease)
        unanswered = []
    done = [job for job in jobs if job.id in answered]
    results = [answered[job.id] for job in done]
    again = [result for result in results if batch_retry.passing(result)]
    for job in unanswered:
        results.append(TierResult(job.id, reason=f"provider batch {found.provider_status}: no answer"))
        done.append(job)
        if found.provider_status == "expired" and ctx.config.next_tier(tier.name) is None:
            again.append(results[-1])  # "next", and there is none: this tier tries again (a refusal fails)
    batch_retry.try_again(ctx, tier, found, again)
    if done:
        tier_work.finish(done, results, lease)
    if not _still_open(ctx, found):
        _delete_files(ctx, found)


def _still_open(ctx: WorkerContext, found: ProviderBatch) -> bool:
    """Whether a job of the provider batch is still under its message and not final (another delivery took
    it over, say): that delivery reads the files again, and deletes them once it is done. A job the batch
    handed on (escalated, held, answered interactively) is under another message."""
    with ctx.engine.connect() as conn:
        return bool(conn.execute(text("SELECT EXISTS (SELECT 1 FROM jobs WHERE id = ANY(:ids) AND handoff = :m "
                                      "AND status IN ('queued', 'running'))"),
                                 {"ids": sorted(found.requests.values()), "m": found.message_id}).scalar_one())


def _delete_files(ctx: WorkerContext, found: ProviderBatch) -> None:
    """Delete the provider's copies of an ended batch's requests and answers once its lines are recorded:
    they hold the prompts and answers (a `--no-store-text` batch's too), and a provider keeps a file until
    it is deleted. One it does not have any more (a delivery that did this already) is fine."""
    client = ctx.client.provider_client(found.provider)
    for file_id in dict.fromkeys(f for f in (found.input_file_id, found.output_file_id, found.error_file_id) if f):
        try:
            ctx.loop.run(client.files.delete(file_id))
        except openai.NotFoundError:
            continue
        except openai.APIError as exc:
            log.warning("provider file %s of batch %s not deleted (%s); it holds the batch's texts: delete it at "
                        "the provider", file_id, found.provider_batch_id, _brief(ctx, exc))


def _brief(ctx: WorkerContext, exc: openai.APIError) -> str:
    """The provider's answer in a line, without any API key it may quote."""
    status = getattr(exc, "status_code", None)
    return ctx.client.scrub(f"HTTP {status}: {exc.message}")[:200] if status else f"{type(exc).__name__}"


def _failed_once(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, why: str, private: bool) -> None:
    """A provider error that may pass (a 5xx, a 429, a timeout): logged, and kept on the row for status."""
    log.warning("provider batch of message %s: %s; trying again in %.0f s", found.message_id, why, tier.batch_poll_s)
    with ctx.engine.begin() as conn:
        pb.note_error(conn, found.message_id, _kept(why, private))


def _kept(why: str, private: bool) -> str:
    """What Postgres keeps of a provider's error: all of it, but for a `--no-store-text` batch only its status
    (a provider's message may quote a request line, and such a batch keeps no texts there)."""
    if not private:
        return why
    return why.split(":", 1)[0] + " (the provider's message is in the workers' log)"


def _split(ctx: WorkerContext, tier: TierConfig, jobs: list[ClaimedJob]) -> tuple[list[ClaimedJob], list[ClaimedJob]]:
    """(answered interactively now, sent in a provider batch): jobs of a batch whose deadline (or lack of
    one) keeps the tier interactive, and audits, budgeted jobs and prompts too long for the tier's first
    model, which need more than one plain call."""
    model = ctx.config.models[tier.models[0]]
    now: list[ClaimedJob] = []
    later: list[ClaimedJob] = []
    for job in jobs:
        plain = (tier.uses_batch_api(batch_deadline(job.params)) and not job.audit and not job.budgeted
                 and estimated_prompt_tokens(job.messages) <= model.context_window)
        (later if plain else now).append(job)
    return now, later


def _line(model: str, custom_id: str, job: ClaimedJob, tier: TierConfig, config: ModelConfig) -> bytes:
    """One line of a provider input file: the job's chat-completions request, `custom_id` its call id."""
    params = params_for(job.params, tier, config)
    body = {"model": model, "messages": messages_for(job.messages, params),
            **{k: v for k, v in params.items() if k in PASSED_PARAMS}}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": body},
                      ensure_ascii=False).encode()


def _lines(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, jobs: list[ClaimedJob]) -> bytes:
    """The provider input file: one line per job."""
    model = ctx.config.models[found.model]
    by_job = {job_id: custom for custom, job_id in found.requests.items()}
    return b"".join(_line(model.model or found.model, by_job[job.id], job, tier, model) + b"\n"
                    for job in jobs)


def _create(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, jobs: list[ClaimedJob]) -> ProviderBatch:
    """Upload the input file and create the provider batch, unless an earlier delivery already did: when
    the row says a delivery got as far as creating it ("sending"), the provider is asked first."""
    client = ctx.client.provider_client(found.provider)
    with ctx.engine.begin() as conn:
        look_first = found.provider_batch_id is None and not pb.mark_sending(conn, found.message_id)
    existing = ctx.loop.run(_lookup(client, found.message_id)) if look_first else None
    if existing is not None:
        log.warning("provider batch %s of message %s was created by an earlier delivery; not sending it again",
                    existing, found.message_id)
        with ctx.engine.begin() as conn:
            pb.record(conn, found.message_id, provider_batch_id=existing, state=pb.OPEN)
        return _again(ctx, found)
    file_id = found.input_file_id
    if file_id is None:
        data = _lines(ctx, tier, found, jobs)
        uploaded = ctx.loop.run(client.files.create(file=(f"tierq-{found.message_id}.jsonl", data), purpose="batch"))
        file_id = uploaded.id
        with ctx.engine.begin() as conn:
            pb.record(conn, found.message_id, input_file_id=file_id)
    window: Any = tier.batch_window  # the SDK's type says "24h" only; other providers take other windows
    batch = ctx.loop.run(client.batches.create(
        input_file_id=file_id, endpoint="/v1/chat/completions", completion_window=window,
        metadata={METADATA_KEY: str(found.message_id)}))
    with ctx.engine.begin() as conn:
        pb.record(conn, found.message_id, provider_batch_id=batch.id, provider_status=batch.status, state=pb.OPEN)
    log.info("provider batch %s: %d requests to %s at tier %s", batch.id, len(found.requests), found.model, tier.name)
    return _again(ctx, found)


async def _lookup(client: Any, message: uuid.UUID) -> str | None:
    """The provider batch already created for `message`, found by its metadata among recent batches."""
    seen = 0
    async for batch in client.batches.list(limit=100):
        if (batch.metadata or {}).get(METADATA_KEY) == str(message):
            return str(batch.id)
        seen += 1
        if seen >= LOOKUP_LIMIT:
            break
    return None


def _look(ctx: WorkerContext, found: ProviderBatch, end: bool = True) -> ProviderBatch:
    """Ask the provider how the batch is doing; record its status, counts and result files (and, with
    `end`, that it ended, when it did)."""
    client = ctx.client.provider_client(found.provider)
    batch = ctx.loop.run(client.batches.retrieve(found.provider_batch_id or ""))
    counts = batch.request_counts.model_dump() if batch.request_counts is not None else None
    fields: dict[str, Any] = {"provider_status": batch.status, "request_counts": counts,
                              "output_file_id": batch.output_file_id, "error_file_id": batch.error_file_id,
                              "last_error": None}  # the provider answers again: an earlier error is over
    if batch.status in ENDED_STATUSES and end:
        fields["state"] = pb.ENDED
    with ctx.engine.begin() as conn:
        pb.record(conn, found.message_id, **fields)
    return _again(ctx, found)


def _again(ctx: WorkerContext, found: ProviderBatch) -> ProviderBatch:
    with ctx.engine.connect() as conn:
        row = pb.find(conn, found.message_id)
    assert row is not None
    return row


def _park_and_return(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, jobs: list[ClaimedJob],
                     lease: Lease, poll: bool = True) -> None:
    """Give the jobs back to the provider batch and look again in `batch_poll_s` (jobs of a batch cancelled
    meanwhile are cancelled instead; the next look finds the provider batch without them)."""
    with ctx.engine.begin() as conn:
        parked = pb.park(conn, lease.message, lease.owner, [job.id for job in jobs])
        if len(parked) < len(jobs):
            lifecycle.cancel_leftovers(conn, lease, [job.id for job in jobs])
    if parked and poll:
        due = min(tier.batch_poll_s, ctx.longest_countdown_s)
        ctx.publish([tier_message(tier.name, parked, found.batch_id, lease.message, due)])


def _line_call(ctx: WorkerContext, found: ProviderBatch, line: dict[str, Any],
               messages: list[dict[str, Any]]) -> CallRecord | None:
    """The call a line reports (answered or failed, at the batch price), or None for a request never run."""
    response = line.get("response") if isinstance(line.get("response"), dict) else None
    if response is None:
        return None  # never run (expired, cancelled): the fallback's, or nobody's
    model = ctx.config.models[found.model]
    record = CallRecord(uuid.UUID(str(line["custom_id"])), found.model, found.provider, Usage(0, 0), ZERO, 0,
                        CallOutcome.OK, via_batch=True)
    if response.get("status_code") == 200:
        ctx.client.answered(response.get("body"), record, model, messages, ctx.config.answers, model.batch_price)
    else:
        status = response.get("status_code")
        ctx.client.failed(record, status if isinstance(status, int) else None, _line_error(line))
    return record


def _read_results(ctx: WorkerContext, tier: TierConfig, found: ProviderBatch, jobs: list[ClaimedJob],
                  lines: list[tuple[int, dict[str, Any]]]) -> dict[int, TierResult]:
    """Each claimed job's line, as its call at this tier."""
    ctx.learned.refresh()
    by_id = {job.id: job for job in jobs}
    results: dict[int, TierResult] = {}
    for job_id, line in lines:
        job = by_id.get(job_id)
        if job is None or job_id in results:
            continue  # moved on (cancelled: `_bill_moved_on`), or a line twice
        record = _line_call(ctx, found, line, job.messages)
        if record is None:
            continue
        work = JobWork(job.id, job.messages, job.params, job.batch_id, job.budgeted,
                       ctx.checks.for_job(job.task_type, job.params),
                       ctx.learned.second_look(job.task_type, tier.name, job.messages))
        result = TierResult(job.id)
        take(record, work, tier.name, result)
        if result.answer is None:
            result.reason = f"{found.model}: {record.error}"
        results[job_id] = result
    return results


def _bill_moved_on(ctx: WorkerContext, found: ProviderBatch, lines: list[tuple[int, dict[str, Any]]],
                   finished_here: set[int]) -> int:
    """Cost rows for the lines of jobs that moved on while the batch ran (cancelled): the provider answered
    and bills them, so they are paid for even though no job takes the answer. Idempotent (the rows carry
    the lines' call ids). Returns the rows written."""
    wanted = {job_id for job_id, _ in lines} - finished_here
    if not wanted:
        return 0
    with ctx.engine.connect() as conn:
        jobs = {row[0]: row for row in conn.execute(
            text("SELECT id, batch_id, attempts, messages FROM jobs WHERE id = ANY(:ids)"), {"ids": sorted(wanted)})}
    rows = []
    for job_id, line in lines:
        if job_id not in wanted or job_id not in jobs:
            continue
        _, batch_id, attempts, messages = jobs[job_id]
        record = _line_call(ctx, found, line, messages if isinstance(messages, list) else [])
        if record is not None:
            rows.append(record.cost_row(job_id=job_id, batch_id=batch_id, attempt=attempts + 1, tier=found.tier))
            wanted.discard(job_id)
    if rows:
        with ctx.engine.begin() as conn:
            record_calls(conn, rows)
        log.info("provider batch %s: %d answered requests of jobs cancelled meanwhile recorded as paid",
                 found.provider_batch_id, len(rows))
    return len(rows)


def _bill_ended(ctx: WorkerContext, found: ProviderBatch) -> bool:
    """Cost rows for every answered line of an ended batch whose jobs are final, unless its files are gone
    (whoever deleted them recorded the lines first: `_finish_ended`, `_abandon`). False when the provider
    could not be read: the files stay, the only copy of lines perhaps unbilled, and the message comes back
    in `batch_poll_s` (until two windows after the batch was created)."""
    if not (found.output_file_id or found.error_file_id):
        return True
    try:
        lines = read_lines(ctx, found)
    except openai.NotFoundError:
        return True
    except openai.APIError as exc:  # not reached, a timeout, a 5xx: the provider may answer next time
        if _overdue(ctx, found):
            log.warning("provider batch %s: %s, long after its window; its files are left unbilled",
                        found.provider_batch_id, _brief(ctx, exc))
            return False
        log.warning("provider batch %s: %s while billing what it answered; looking again in a while",
                    found.provider_batch_id, _brief(ctx, exc))
        _poll_again(ctx, found)
        return False
    _bill_moved_on(ctx, found, lines, set())
    return True


def _line_error(line: dict[str, Any]) -> str:
    """The message of an error line: its `error`, or the error body of its non-200 response."""
    error = line.get("error")
    if not isinstance(error, dict):
        body = line["response"].get("body")
        error = body.get("error") if isinstance(body, dict) else None
    if isinstance(error, dict):
        return str(error.get("message") or error.get("code") or "error")
    return "no answer in the provider batch"


def _abandon(ctx: WorkerContext, found: ProviderBatch) -> None:
    """The message's jobs moved on without the batch (all cancelled): cancel the provider batch. A batch
    stops answering only once its cancel has ended ("cancelling" until then), and what it answered before
    is billed: the message comes back every `batch_poll_s` until the batch has ended (or the provider's
    window and a margin have passed), and then each answered line is a cost row of its (cancelled) job.
    The row is marked ended only after that, so a delivery cut off on the way bills on the next one."""
    with ctx.engine.connect() as conn:
        if pb.waiting(conn, found.message_id, sorted(found.requests.values())):
            return  # claimed by another delivery right now
    billed = False
    status = found.provider_status
    batch_id = found.provider_batch_id
    client = ctx.client.provider_client(found.provider)
    try:
        if batch_id is None and status == pb.SENDING:  # a delivery may have created it before it died
            batch_id = ctx.loop.run(_lookup(client, found.message_id))
            if batch_id is not None:
                with ctx.engine.begin() as conn:
                    pb.record(conn, found.message_id, provider_batch_id=batch_id)
                found = _again(ctx, found)
        if batch_id is not None and status not in ENDED_STATUSES:
            if status != CANCELLING:
                try:
                    ctx.loop.run(client.batches.cancel(batch_id))
                    log.info("provider batch %s cancelled: its jobs were cancelled", batch_id)
                except openai.APIStatusError as exc:
                    if _transient(exc):
                        raise
                    # Refused (it ended meanwhile, say): what it is now says what is left to do.
                    log.warning("provider batch %s: cancel refused (%s)", batch_id, _brief(ctx, exc))
            found = _look(ctx, found, end=False)
            status = found.provider_status
        if batch_id is not None and status not in ENDED_STATUSES:
            if not _overdue(ctx, found):
                _poll_again(ctx, found)
                return
            log.warning("provider batch %s is still %r long after its window; left, and what it answered is not "
                        "billed", batch_id, status)
        elif batch_id is not None and (found.output_file_id or found.error_file_id):
            _bill_moved_on(ctx, found, read_lines(ctx, found), set())
            billed = True
    except openai.APIError as exc:  # not reached, a timeout, a 5xx: the provider may answer next time
        if not _overdue(ctx, found):
            log.warning("provider batch %s of cancelled jobs: %s; looking again in a while", batch_id, _brief(ctx, exc))
            _poll_again(ctx, found)
            return
        # An error every time, long after the window (the provider forgot the batch, say): not for ever either.
        log.warning("provider batch %s of cancelled jobs: %s, long after its window; left, and what it answered "
                    "is not billed", batch_id, _brief(ctx, exc))
    with ctx.engine.begin() as conn:
        pb.record(conn, found.message_id, provider_status=status, state=pb.ENDED)
    if billed or not (found.output_file_id or found.error_file_id):  # never the only copy of unbilled lines
        _delete_files(ctx, found)


def _transient(exc: openai.APIStatusError) -> bool:
    """An error that may pass: 408, 409, 429, a 5xx, or a 401 (a key wrong or revoked: it is fixed and the
    workers restarted, and the file is sent, or the batch looked at, then)."""
    return exc.status_code in (401, 408, 409, 429) or exc.status_code >= 500


def _runs_on(ctx: WorkerContext, found: ProviderBatch, exc: openai.APIStatusError) -> bool:
    """Whether a refused look leaves the provider batch running: once the provider accepted it, only its
    saying it has no such batch (404), or two windows gone by, end it. Ended on any refusal, its jobs were
    answered again through `batch_fallback` while the batch ran on at the provider and billed every line."""
    return found.provider_batch_id is not None and exc.status_code != 404 and not _overdue(ctx, found)


def _overdue(ctx: WorkerContext, found: ProviderBatch) -> bool:
    """Past the provider's completion window and as long again: it is not coming back."""
    window = ctx.config.tier(found.tier).window_s if found.tier in ctx.config.tier_names else 86400.0
    return (datetime.now(UTC) - found.created_at).total_seconds() > 2 * window


def _poll_again(ctx: WorkerContext, found: ProviderBatch) -> None:
    """The message again, due in the tier's `batch_poll_s`, with the provider batch's jobs."""
    poll = ctx.config.tier(found.tier).batch_poll_s if found.tier in ctx.config.tier_names else 60.0
    ctx.publish([tier_message(found.tier, sorted(found.requests.values()), found.batch_id, found.message_id,
                              min(poll, ctx.longest_countdown_s))])
