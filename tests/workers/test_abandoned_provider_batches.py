"""A provider batch whose jobs were all cancelled (workers/provider_batches.py `_abandon`): it is cancelled at
the provider and looked at every `batch_poll_s` until it has stopped, then what it answered is billed. A
provider error on the way is tried again at the next look; a batch still not stopped long after its window
is left.

The tier task's plain function runs in this process against the real database and simulator; the batch is
created at the simulator by the test, as a worker would have, and its jobs are cancelled in the database.
"""

from __future__ import annotations

import socket
import uuid
from collections.abc import Callable

import pytest
from conftest import Stack
from provider_batch_support import (
    TIER,
    answered,
    cancelled_provider_batch,
    polls,
    provider_status,
    row,
    sdk,
    set_sim,
    wait_for,
)
from sqlalchemy import text

from workers.context import WorkerContext
from workers.process import process_chunk
from workers.provider_batches import call_id

ERRORS = {"latency_ms": 0, "batch_api_error_500_rate": 1}  # every Batch API request fails with HTTP 500
NO_ERRORS = {"latency_ms": 0}


@pytest.fixture()
def ctx(worker_ctx: Callable[..., WorkerContext]) -> WorkerContext:
    return worker_ctx()


def test_provider_errors_while_a_cancelled_batch_is_polled_are_tried_again(clean: Stack, ctx: WorkerContext) -> None:
    # The first line is answered at once, the second never: the batch is cancelled with one line paid for.
    message, jobs, batch = cancelled_provider_batch(
        clean, ["Where is my parcel?", "And my refund? [[sim:hang]]"], in_progress_s="0", cancelling_s="1")
    wait_for(lambda: answered(clean, batch) == 1)
    poll = (str(message), jobs, True)

    set_sim(clean, ERRORS)  # the cancel fails
    assert process_chunk(ctx, TIER, jobs, message).claimed == 0
    assert row(clean, message) == ("open", "in_progress") and polls(ctx) == [poll]
    set_sim(clean, NO_ERRORS)
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("open", "cancelling") and polls(ctx) == [poll] * 2
    wait_for(lambda: provider_status(clean, batch) == "cancelled")
    set_sim(clean, ERRORS)  # the look at the stopped batch fails
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("open", "cancelling") and polls(ctx) == [poll] * 3
    assert clean.sim_stats()["batch"]["api_errors"] == 2
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 0

    set_sim(clean, NO_ERRORS)  # the provider answers again: the batch has stopped, its one answer is billed
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("ended", "cancelled") and polls(ctx) == [poll] * 3
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id, id, via_batch, outcome, cost_usd FROM calls")).all()
        states = set(conn.execute(text("SELECT status FROM jobs WHERE id = ANY(:ids)"), {"ids": jobs}).scalars())
    assert [(r.job_id, r.id, r.via_batch, r.outcome) for r in rows] == [
        (jobs[0], call_id(message, jobs[0]), True, "ok")] and rows[0].cost_usd > 0
    assert states == {"cancelled"}  # paid for, though no job takes the answer


def test_a_cancelled_batch_that_never_stops_is_left_two_windows_after_it_was_created(
        clean: Stack, ctx: WorkerContext) -> None:
    window_h = ctx.config.tier(TIER).window_s / 3600
    message, jobs, batch = cancelled_provider_batch(
        clean, ["Where is my parcel?"], hours_ago=2 * window_h - 1, in_progress_s="60", cancelling_s="3600")
    poll = (str(message), jobs, True)
    process_chunk(ctx, TIER, jobs, message)  # cancelled at the provider, which keeps it "cancelling"
    assert row(clean, message) == ("open", "cancelling") and polls(ctx) == [poll]
    assert provider_status(clean, batch) == "cancelling"
    with clean.engine.begin() as conn:  # two hours later: past two windows since it was created
        conn.execute(text("UPDATE provider_batches SET created_at = created_at - interval '2 hours' "
                          "WHERE message_id = :m"), {"m": message})
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("ended", "cancelling") and polls(ctx) == [poll]  # left, not polled again
    looked = clean.sim_stats()["batch"]["api_requests"]
    process_chunk(ctx, TIER, jobs, message)  # a copy of the last poll still in the broker
    assert polls(ctx) == [poll] and clean.sim_stats()["batch"]["api_requests"] == looked


def test_a_cancelled_batch_the_provider_keeps_failing_on_is_left_two_windows_after_it_was_created(
        clean: Stack, ctx: WorkerContext) -> None:
    window_h = ctx.config.tier(TIER).window_s / 3600
    message, jobs, _ = cancelled_provider_batch(
        clean, ["Where is my parcel?"], hours_ago=2 * window_h - 1, in_progress_s="60")
    set_sim(clean, ERRORS)
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("open", "in_progress") and len(polls(ctx)) == 1
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE provider_batches SET created_at = created_at - interval '2 hours' "
                          "WHERE message_id = :m"), {"m": message})
    process_chunk(ctx, TIER, jobs, message)
    assert row(clean, message) == ("ended", "in_progress") and len(polls(ctx)) == 1
    assert clean.sim_stats()["batch"]["api_errors"] == 2


def test_a_batch_that_ended_under_a_dead_delivery_whose_jobs_were_cancelled_since_is_billed(
        clean: Stack, ctx: WorkerContext, worker_ctx: Callable[..., WorkerContext],
        monkeypatch: pytest.MonkeyPatch) -> None:
    # A delivery saw its provider batch complete (`_look` recorded it ended), then died before it recorded the
    # answers; the user cancelled the batch meanwhile. Every line is paid for at the provider.
    message, jobs, batch = cancelled_provider_batch(clean, ["Where is my parcel?", "And my refund?"],
                                                    in_progress_s="0")
    wait_for(lambda: provider_status(clean, batch) == "completed")
    done = sdk(clean).batches.retrieve(batch)
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running', lease_owner = :o, finished_at = NULL, "
                          "lease_until = now() - interval '1 second' WHERE id = ANY(:ids)"),
                     {"o": uuid.uuid4(), "ids": jobs})
        conn.execute(text("UPDATE batches SET cancelled = true WHERE id = (SELECT batch_id FROM jobs WHERE id = :j)"),
                     {"j": jobs[0]})
        conn.execute(text("UPDATE provider_batches SET state = 'ended', provider_status = 'completed', "
                          "output_file_id = :f WHERE message_id = :m"), {"f": done.output_file_id, "m": message})
    # A worker that cannot reach the provider to read the answers: the files stay, looked at again later.
    unreached = worker_ctx()
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        closed = sock.getsockname()[1]
    monkeypatch.setenv("TIERQ_SIM_URL", f"http://127.0.0.1:{closed}/v1")
    unreached.client.provider_client("sim")  # made now, for the address where nothing answers
    monkeypatch.setenv("TIERQ_SIM_URL", clean.sim.base_url)
    assert process_chunk(unreached, TIER, jobs, message).claimed == 0  # the reconciler's copy of its message
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 0
    assert polls(unreached) == [(str(message), sorted(jobs), True)]
    assert process_chunk(ctx, TIER, jobs, message).claimed == 0  # that look
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT job_id, id, via_batch, outcome, cost_usd FROM calls ORDER BY job_id")).all()
        states = set(conn.execute(text("SELECT status FROM jobs WHERE id = ANY(:ids)"), {"ids": jobs}).scalars())
    assert states == {"cancelled"}
    assert [(r.job_id, r.id, r.via_batch, r.outcome) for r in rows] == [
        (job, call_id(message, job), True, "ok") for job in sorted(jobs)] and all(r.cost_usd > 0 for r in rows)
    process_chunk(ctx, TIER, jobs, message)  # once more: nothing is billed twice
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == len(jobs)
