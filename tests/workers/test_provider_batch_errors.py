"""A provider batch the provider accepted, then errors of the provider while it runs or has ended
(workers/provider_batches.py): the batch is not given up while it may still answer and bill, and every line it
answered is one cost row, its request never sent a second time. And lines of its files the provider got
wrong: a line that matches no request is still billed (or logged), and a line failed for a reason that may
pass is sent again in the next provider batch, within the tier's max_retries.

The tier task's plain function runs in this process against the real database and simulator; the batch is
created at the simulator by the test, as a worker would have.
"""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable

import openai
import pytest
from conftest import Stack, insert_job
from provider_batch_support import MODEL, TIER, polls, provider_batch, provider_status, row, sdk, set_sim, wait_for
from sqlalchemy import text

from models import provider_batch as pb
from producer.views import status_lines
from tierq.money import Usage
from workers.context import WorkerContext
from workers.process import process_chunk
from workers.provider_batches import call_id

KEY = "sk-test"  # the key the test's own client sends; the workers' configuration names none


@pytest.fixture()
def ctx(worker_ctx: Callable[..., WorkerContext]) -> WorkerContext:
    return worker_ctx()


def jobs_by_status(stack: Stack, jobs: list[int]) -> dict[str, int]:
    with stack.engine.connect() as conn:
        return dict(conn.execute(text("SELECT status, count(*) FROM jobs WHERE id = ANY(:ids) GROUP BY status"),
                                 {"ids": jobs}).all())


def test_a_key_refused_while_a_provider_batch_runs_keeps_the_batch_and_pays_each_line_once(
        clean: Stack, ctx: WorkerContext) -> None:
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    poll = (str(message), jobs, True)

    set_sim(clean, {"latency_ms": 0, "api_key": KEY})  # the workers' key is refused from now on (HTTP 401)
    process_chunk(ctx, TIER, jobs, message)
    # Not taken for a refusal of the batch: it stays open, its jobs wait in it, looked at again next poll.
    assert row(clean, message) == ("open", "in_progress") and polls(ctx) == [poll]
    assert jobs_by_status(clean, jobs) == {"queued": 2}
    stats = clean.sim_stats()
    assert (stats["requests"], stats["unauthorized"]) == (0, 0)  # no interactive call instead
    with clean.engine.begin() as conn:  # looked at last two minutes ago: status says what the provider answers
        conn.execute(text("UPDATE provider_batches SET updated_at = now() - interval '2 minutes'"))
        batch_id = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": jobs[0]}).scalar_one()
    waiting = clean.client().status(batch_id)
    assert waiting.provider_batches["look_error"].startswith("HTTP 401: "), waiting.provider_batches
    assert any(line.startswith("  in provider batches: 2 jobs in 1 (the provider reports 0 completed, 0 failed when "
                               "last looked at, 2m 00s ago; since then it answered HTTP 401: ")
               for line in status_lines(waiting)), status_lines(waiting)

    set_sim(clean, {"latency_ms": 0})  # the key works again
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("ended", "completed") and jobs_by_status(clean, jobs) == {"succeeded": 2}
    with clean.engine.connect() as conn:  # the look that worked cleared the error
        assert conn.execute(text("SELECT last_error FROM provider_batches")).scalar_one() is None
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id, id, via_batch, outcome FROM calls ORDER BY job_id")).all()
    assert [tuple(r) for r in rows] == [(job, call_id(message, job), True, "ok") for job in sorted(jobs)]
    stats = clean.sim_stats()
    assert stats["requests"] == 0 and stats["batch"]["seen"] == {batch: {str(call_id(message, j)): 1 for j in jobs}}


def test_a_key_refused_while_a_provider_file_is_sent_keeps_it_for_the_batch_api(
        clean: Stack, ctx: WorkerContext) -> None:
    message = uuid.uuid4()
    jobs = [insert_job(clean, prompt, status="queued", tier=TIER, handoff=message)
            for prompt in ["Where is my parcel?", "And my refund?"]]
    with clean.engine.begin() as conn:  # a closed provider file, as `collect` leaves it for its message
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": jobs[0]}).scalar_one()
        conn.execute(text("UPDATE jobs SET batch_id = :b, custom_id = 'j' || id WHERE id = ANY(:ids)"),
                     {"b": batch, "ids": jobs})
        pb.reserve(conn, message, batch, TIER, MODEL, "sim", {str(call_id(message, job)): job for job in jobs})
    poll = (str(message), jobs, True)

    set_sim(clean, {"latency_ms": 0, "api_key": KEY})
    process_chunk(ctx, TIER, jobs, message)
    # Tried again at the next poll, not refused: no interactive call, no second provider file for the same jobs.
    assert row(clean, message) == ("creating", "sending") and polls(ctx) == [poll]
    assert jobs_by_status(clean, jobs) == {"queued": 2}
    stats = clean.sim_stats()
    assert (stats["requests"], stats["unauthorized"], stats["batch"]["batches"]) == (0, 0, 0)

    set_sim(clean, {"latency_ms": 0})
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message)[0] == "open"
    wait_for(lambda: process_chunk(ctx, TIER, jobs, message) is not None and row(clean, message)[0] == "ended")
    assert jobs_by_status(clean, jobs) == {"succeeded": 2}
    with clean.engine.connect() as conn:
        assert set(conn.execute(text("SELECT via_batch FROM calls")).scalars()) == {True}
    assert clean.sim_stats()["requests"] == 0


def test_an_ended_batchs_files_the_provider_fails_to_hand_over_are_read_at_the_next_poll(
        clean: Stack, ctx: WorkerContext) -> None:
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    with clean.engine.begin() as conn:  # looked at and found ended, as by a delivery that stopped there
        conn.execute(text("UPDATE provider_batches SET state = 'ended', provider_status = 'completed', "
                          "output_file_id = :f WHERE message_id = :m"),
                     {"f": sdk(clean).batches.retrieve(batch).output_file_id, "m": message})
    poll = (str(message), jobs, True)

    set_sim(clean, {"latency_ms": 0, "batch_api_error_500_rate": 1})  # the download fails (HTTP 500)
    process_chunk(ctx, TIER, jobs, message)
    # The task does not fail (its jobs left running until the reconciler's recovery): they wait for the next poll.
    assert polls(ctx) == [poll] and jobs_by_status(clean, jobs) == {"queued": 2}
    assert clean.sim_stats()["batch"]["api_errors"] == 1

    set_sim(clean, {"latency_ms": 0})
    process_chunk(ctx, TIER, jobs, message)
    assert jobs_by_status(clean, jobs) == {"succeeded": 2}
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id, id, via_batch, outcome FROM calls ORDER BY job_id")).all()
    assert [tuple(r) for r in rows] == [(job, call_id(message, job), True, "ok") for job in sorted(jobs)]
    assert clean.sim_stats()["requests"] == 0  # nothing sent again interactively


def test_lines_of_jobs_cancelled_while_they_waited_for_their_ended_batchs_files_are_paid_for(
        clean: Stack, ctx: WorkerContext) -> None:
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    output = sdk(clean).batches.retrieve(batch).output_file_id
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE provider_batches SET state = 'ended', provider_status = 'completed', "
                          "output_file_id = :f WHERE message_id = :m"), {"f": output, "m": message})
        batch_id = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": jobs[0]}).scalar_one()
    set_sim(clean, {"latency_ms": 0, "batch_api_error_500_rate": 1})
    process_chunk(ctx, TIER, jobs, message)  # the download fails: the jobs wait for the next poll
    assert jobs_by_status(clean, jobs) == {"queued": 2}
    clean.client().cancel(batch_id)
    assert jobs_by_status(clean, jobs) == {"cancelled": 2}

    set_sim(clean, {"latency_ms": 0})
    process_chunk(ctx, TIER, jobs, message)  # the next poll: no job left to answer
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id, id, via_batch, outcome FROM calls ORDER BY job_id")).all()
    # The provider answered and billed both lines: each is a cost row of its (cancelled) job, and only then
    # are the files deleted.
    assert [tuple(r) for r in rows] == [(job, call_id(message, job), True, "ok") for job in sorted(jobs)]
    with pytest.raises(openai.NotFoundError):
        sdk(clean).files.retrieve(output)
    process_chunk(ctx, TIER, jobs, message)  # a copy of the poll: nothing twice
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 2


def test_output_lines_that_match_no_request_are_billed_on_their_own_or_logged(
        clean: Stack, ctx: WorkerContext, caplog: pytest.LogCaptureFixture) -> None:
    # The provider's output file holds, after the two answers, a line cut short, a billed answer without a
    # custom_id and one under a custom_id tierq never sent.
    set_sim(clean, {"latency_ms": 0, "batch_stray_lines": ["malformed", "no_custom_id", "unknown_custom_id"]})
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    output = sdk(clean).batches.retrieve(batch).output_file_id

    with caplog.at_level(logging.WARNING, logger="workers"):
        process_chunk(ctx, TIER, jobs, message)
    # Every matched line is read and its job finished; nothing raised.
    assert row(clean, message) == ("ended", "completed") and jobs_by_status(clean, jobs) == {"succeeded": 2}
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, job_id, outcome, via_batch, prompt_tokens, completion_tokens, "
                                 "cached_tokens, cost_usd, error FROM calls ORDER BY error NULLS FIRST, id")).all()
    answered, strays = rows[:2], rows[2:]
    assert sorted((r.id, r.job_id, r.outcome) for r in answered) == sorted(
        (call_id(message, job), job, "ok") for job in jobs)
    # The two lines with usage are a cost row each, at the batch price, with a reason naming the line.
    assert [(r.job_id, r.outcome, r.via_batch) for r in strays] == [(min(jobs), "error", True)] * 2
    assert sorted(r.error.split(" matches no request ")[0] for r in strays) == [
        f"provider batch {batch}: file {output} line 4", f"provider batch {batch}: file {output} line 5"]
    assert any("(no custom_id)" in r.error for r in strays)
    assert any("was never sent in this batch" in r.error for r in strays)
    price = ctx.config.models[MODEL].batch_price
    for r in strays:
        assert r.prompt_tokens > 0 and r.cost_usd == price.cost(Usage(r.prompt_tokens, r.completion_tokens,
                                                                      r.cached_tokens))
    billed = clean.sim_stats()["batch"]["models"][MODEL]  # every token the provider billed is on a row
    assert (billed["prompt_tokens"], billed["completion_tokens"]) == (
        sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows))
    # The line cut short reports no usage: one log line naming the batch, the line and the problem.
    cut = [r.getMessage() for r in caplog.records if "line 3 " in r.getMessage()]
    assert len(cut) == 1 and cut[0].startswith(f"provider batch {batch}: file {output} line 3 matches no request: "
                                               "not JSON"), cut
    assert not any(r.exc_info for r in caplog.records)

    process_chunk(ctx, TIER, jobs, message)  # a copy of the message: no row twice
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 4


LONG_DEADLINE = {"_tierq": {"deadline_at": time.time() + 30 * 86400}}  # cold uses the batch API for these jobs


def handoffs(stack: Stack, jobs: list[int]) -> set[uuid.UUID]:
    with stack.engine.connect() as conn:
        return set(conn.execute(text("SELECT handoff FROM jobs WHERE id = ANY(:ids)"), {"ids": jobs}).scalars())


def errors(stack: Stack, jobs: list[int]) -> set[str]:
    with stack.engine.connect() as conn:
        return set(conn.execute(text("SELECT error FROM jobs WHERE id = ANY(:ids)"), {"ids": jobs}).scalars())


def next_provider_batch(stack: Stack, ctx: WorkerContext, jobs: list[int]) -> uuid.UUID:
    """Run the jobs' new cold message as the workers would: its first step puts them in a provider file, the
    file is sent, and looked at until it has ended and its lines are read. Returns the file's message."""
    (retry,) = handoffs(stack, jobs)
    assert row_of(stack, retry) is None  # a message of its own, not a provider batch's poll
    process_chunk(ctx, TIER, jobs, retry)
    (filled,) = handoffs(stack, jobs)
    assert row_of(stack, filled) == "collecting"
    wait_for(lambda: process_chunk(ctx, TIER, jobs, filled) is not None and row(stack, filled)[0] == "ended")
    return filled


def row_of(stack: Stack, message: uuid.UUID) -> str | None:
    with stack.engine.connect() as conn:
        state = conn.execute(text("SELECT state FROM provider_batches WHERE message_id = :m"),
                             {"m": message}).scalar()
    return None if state is None else str(state)


def batch_calls(stack: Stack) -> list[tuple[int, uuid.UUID, str, bool]]:
    with stack.engine.connect() as conn:
        return [(int(r[0]), r[1], str(r[2]), bool(r[3])) for r in conn.execute(text(
            "SELECT job_id, id, outcome, via_batch FROM calls ORDER BY created_at, job_id")).all()]


def test_a_line_failed_with_http_500_at_the_last_tier_is_sent_again_in_the_next_provider_batch(
        clean: Stack, ctx: WorkerContext) -> None:
    set_sim(clean, {"latency_ms": 0, "error_500_rate": 1})  # the provider fails every line of this batch
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          params=LONG_DEADLINE, in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    set_sim(clean, {"latency_ms": 0})
    with clean.engine.begin() as conn:  # held before (by a rate limit, say): sent again, they are not held
        conn.execute(text("UPDATE jobs SET held_since = now(), held_until = now() WHERE id = ANY(:ids)"),
                     {"ids": jobs})

    process_chunk(ctx, TIER, jobs, message)
    # cold is the last tier: the jobs are not failed, but queued there again under a new message.
    assert jobs_by_status(clean, jobs) == {"queued": 2}
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM jobs WHERE id = ANY(:ids) AND (held_since IS NOT NULL "
                                 "OR held_until IS NOT NULL)"), {"ids": jobs}).scalar_one() == 0
    assert errors(clean, jobs) == {"cold: sim-flagship: HTTP 500: The server had an error while processing your "
                                   "request. Sorry about that!; sent again in a new provider batch (try 2 of 3)"}
    (retry,) = handoffs(clean, jobs)
    assert (str(retry), jobs, False) in polls(ctx)

    again = next_provider_batch(clean, ctx, jobs)
    assert jobs_by_status(clean, jobs) == {"succeeded": 2}
    # One failed line (no cost) and one answer per job, both through the batch API; nothing interactive.
    rows = batch_calls(clean)
    assert sorted(rows) == sorted([(job, call_id(message, job), "http_5xx", True) for job in jobs]
                                  + [(job, call_id(again, job), "ok", True) for job in jobs])
    assert clean.sim_stats()["requests"] == 0


def test_a_line_that_keeps_failing_with_http_429_fails_once_max_retries_are_used(
        clean: Stack, ctx: WorkerContext) -> None:
    set_sim(clean, {"latency_ms": 0, "error_429_rate": 1})  # every line, every time
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?"], "queued", params=LONG_DEADLINE,
                                          in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    process_chunk(ctx, TIER, jobs, message)
    sent = [message]
    tries = ctx.config.tier(TIER).max_retries + 1
    for _ in range(tries - 1):
        assert jobs_by_status(clean, jobs) == {"queued": 1}
        sent.append(next_provider_batch(clean, ctx, jobs))
    assert jobs_by_status(clean, jobs) == {"failed": 1}
    (reason,) = errors(clean, jobs)
    assert reason.startswith("cold: sim-flagship: HTTP 429: ") and reason.endswith(
        f"; failed in {tries} provider batches, and max_retries ({tries - 1}) allows no more"), reason
    assert batch_calls(clean) == [(jobs[0], call_id(m, jobs[0]), "rate_limited", True) for m in sent]
    assert clean.sim_stats()["requests"] == 0


def test_a_line_the_provider_calls_a_bad_request_still_fails_at_once_at_the_last_tier(
        clean: Stack, ctx: WorkerContext) -> None:
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?"], "queued", params=LONG_DEADLINE,
                                          body={"max_tokens": 0}, in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    process_chunk(ctx, TIER, jobs, message)
    assert jobs_by_status(clean, jobs) == {"failed": 1}
    (reason,) = errors(clean, jobs)
    assert reason.startswith("cold: sim-flagship: HTTP 400: ") and "provider batch" not in reason, reason
    assert batch_calls(clean) == [(jobs[0], call_id(message, jobs[0]), "http_4xx", True)]


def test_requests_an_expired_batch_never_ran_are_sent_again_at_the_last_tier_when_the_fallback_is_next(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    ctx = worker_ctx(tiers={TIER: {"batch_fallback": "next"}})  # no next tier after cold
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          params=LONG_DEADLINE, in_progress_s="30", window_s="0.2",
                                          progress="at_end")
    wait_for(lambda: provider_status(clean, batch) == "expired")
    process_chunk(ctx, TIER, jobs, message)
    assert jobs_by_status(clean, jobs) == {"queued": 2}
    assert errors(clean, jobs) == {"cold: provider batch expired: no answer; sent again in a new provider batch "
                                   "(try 2 of 3)"}
    again = next_provider_batch(clean, ctx, jobs)
    assert jobs_by_status(clean, jobs) == {"succeeded": 2}
    assert batch_calls(clean) == [(job, call_id(again, job), "ok", True) for job in sorted(jobs)]
    assert clean.sim_stats()["requests"] == 0


def test_a_provider_batch_refused_at_the_last_tier_fails_its_jobs_when_the_fallback_is_next(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    # The simulator refuses a completion window other than 24h (HTTP 400) every time: sent again, the file
    # would be refused again, round after round (found by a review: 12 rounds, the job still queued).
    ctx = worker_ctx(tiers={TIER: {"batch_fallback": "next", "batch_window": "48h"}})
    message = uuid.uuid4()
    jobs = [insert_job(clean, "Where is my parcel?", status="queued", tier=TIER, handoff=message,
                       params=LONG_DEADLINE)]
    process_chunk(ctx, TIER, jobs, message)  # the first step puts the job in a provider file
    (filled,) = handoffs(clean, jobs)
    assert row_of(clean, filled) == "collecting"
    process_chunk(ctx, TIER, jobs, filled)  # the file's timer: sent, and refused
    assert row_of(clean, filled) == "ended"
    assert jobs_by_status(clean, jobs) == {"failed": 1}
    (reason,) = errors(clean, jobs)
    assert "no answer" in reason and "sent again" not in reason, reason
    assert handoffs(clean, jobs) == {filled}  # no new message for it


def test_a_second_line_for_one_request_is_billed_on_its_own_and_the_job_answered_once(
        clean: Stack, ctx: WorkerContext) -> None:
    # Before 2026-12-01 a second line under a custom_id already read was skipped: billed by the provider,
    # never recorded (found by a review).
    set_sim(clean, {"latency_ms": 0, "batch_stray_lines": ["duplicate"]})
    message, jobs, batch = provider_batch(clean, ["Where is my parcel?", "And my refund?"], "queued",
                                          in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    output = sdk(clean).batches.retrieve(batch).output_file_id
    process_chunk(ctx, TIER, jobs, message)
    assert jobs_by_status(clean, jobs) == {"succeeded": 2}
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT id, job_id, outcome, prompt_tokens, completion_tokens, error FROM calls "
                                 "ORDER BY error NULLS FIRST")).all()
    assert sorted((r.id, r.outcome) for r in rows[:2]) == sorted((call_id(message, job), "ok") for job in jobs)
    (copy,) = rows[2:]
    assert copy.outcome == "error" and copy.error.startswith(f"provider batch {batch}: file {output} line 3 "), copy
    assert f"again (first at file {output} line 1)" in copy.error
    billed = clean.sim_stats()["batch"]["models"][MODEL]
    assert (billed["prompt_tokens"], billed["completion_tokens"]) == (
        sum(r.prompt_tokens for r in rows), sum(r.completion_tokens for r in rows))
    process_chunk(ctx, TIER, jobs, message)  # a copy of the message: no row twice
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 3
