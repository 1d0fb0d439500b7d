"""The shared cache end to end: one model call per distinct question, across batches and workers."""

from __future__ import annotations

import os
import signal
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import Stack, insert_job, own_worker, run_batch, start_worker, stop_worker
from sqlalchemy import text

from producer.submit import BatchOptions
from workers.classify import classify_chunk
from workers.context import WorkerContext

PARCEL = "Where is my parcel? I ordered it on Monday and it has not arrived yet."
REFUND = "I was charged twice for the same order. Please refund one of the charges."
PASSWORD = "How do I reset the password of my account? The reset e-mail never arrives."


def run(stack: Stack, records: list[Any], options: BatchOptions | None = None) -> dict[str, dict[str, Any]]:
    with stack.client() as tq:
        batch = tq.submit(records, options)
        stack.wait(tq, batch.batch_id)
        return {r["id"]: r for r in tq.results(batch.batch_id)}


def calls(stack: Stack) -> int:
    return int(stack.sim_stats()["requests"])


def test_exact_and_near_duplicates_make_one_call_per_question(clean: Stack) -> None:
    records = []
    for n, question in enumerate((PARCEL, REFUND, PASSWORD)):
        records += [{"id": f"q{n}-exact{i}", "prompt": question} for i in range(3)]
        records += [{"id": f"q{n}-near-case", "prompt": question.upper()},
                    {"id": f"q{n}-near-space", "prompt": question.replace(" ", "  ").rstrip(".") + "!"}]
    results = run(clean, records)
    assert calls(clean) == 3
    assert all(r["status"] == "succeeded" for r in results.values())
    for n in range(3):
        answers = {r["content"] for k, r in results.items() if k.startswith(f"q{n}-")}
        assert len(answers) == 1
    cached = [r for r in results.values() if r["cached"]]
    assert len(cached) == 12
    assert all(r["cost_usd"] == "0" and r["attempts"][0]["outcome"] == "cache_hit" for r in cached)
    with clean.engine.connect() as conn:
        saved = conn.execute(text("SELECT sum(saved_usd) FROM calls WHERE outcome = 'cache_hit'")).scalar_one()
        paid = conn.execute(text("SELECT sum(cost_usd) FROM calls WHERE outcome = 'ok'")).scalar_one()
    assert saved > paid > 0  # each of the 3 answers was reused 4 times


def test_a_question_that_says_more_is_not_answered_with_a_shorter_ones_answer(clean: Stack, tmp_path: Path) -> None:
    # A threshold so low that the vectors alone would match all of these, and index bands of two rows, so that
    # the index finds entries that far too: the content-word guard is what tells the questions that say more
    # apart, in one classify chunk (batch 1) and against the cache's entries (batch 2); the names guard, the
    # two questions about two people.
    loose = '[cache]\nembedder = "hashing"\nthreshold = 0.3\nrows = 2\n'
    short = "How do I close my account?"
    moving = "How do I close my account and move the balance to my wife's savings account in another bank?"
    estate = "How do I close my late father's account as executor of his estate and pay out his heirs?"
    with own_worker(clean, tmp_path, "", "guard",
                    edit=lambda body: body.replace('[cache]\nembedder = "hashing"\n', loose)) as (tq, _):
        first = run_batch(clean, tq, [{"id": "short", "prompt": short}, {"id": "moving", "prompt": moving},
                                      {"id": "same", "prompt": "How  do I close my account??"},
                                      {"id": "obama", "prompt": "What did Obama say about Syria?"},
                                      {"id": "trump", "prompt": "What did Trump say about Syria?"}], use_cache=True)
        later = run_batch(clean, tq, [{"id": "estate", "prompt": estate}, {"id": "same", "prompt": short + "!"},
                                      {"id": "moving", "prompt": moving + " Thanks"}], use_cache=True)
    assert not first["short"]["cached"] and not first["moving"]["cached"]
    assert first["same"]["cached"] and first["same"]["content"] == first["short"]["content"]
    assert not later["estate"]["cached"]  # says more than either entry: its own call
    assert later["same"]["cached"] and later["same"]["content"] == first["short"]["content"]
    assert later["moving"]["cached"] and later["moving"]["content"] == first["moving"]["content"]
    assert len({first["short"]["content"], first["moving"]["content"], later["estate"]["content"]}) == 3
    # A person swapped for another (the names guard, between jobs of one chunk too).
    assert not first["obama"]["cached"] and not first["trump"]["cached"]


def test_a_later_batch_is_answered_from_the_cache(clean: Stack) -> None:
    run(clean, [{"id": "first", "prompt": PARCEL}])
    later = run(
        clean, [{"id": "again", "prompt": PARCEL}, {"id": "typo", "prompt": PARCEL.replace("parcel", "parcell")}]
    )
    assert calls(clean) == 1
    assert later["again"]["cached"] and later["typo"]["cached"]


def test_duplicates_in_two_concurrent_batches_coalesce(clean: Stack) -> None:
    clean.simulate({"latency_ms": 1500})
    with clean.client() as tq:
        first = tq.submit([{"id": "a", "prompt": REFUND}])
        second = tq.submit([{"id": "b", "prompt": REFUND}])
        clean.wait(tq, first.batch_id)
        clean.wait(tq, second.batch_id)
        results = [*tq.results(first.batch_id), *tq.results(second.batch_id)]
    assert calls(clean) == 1
    assert sorted(r["cached"] for r in results) == [False, True]
    assert results[0]["content"] == results[1]["content"]


def test_tenants_never_share_answers(clean: Stack) -> None:
    run(clean, [{"id": "a", "prompt": PARCEL}], BatchOptions(tenant="acme"))
    other = run(clean, [{"id": "b", "prompt": PARCEL}], BatchOptions(tenant="globex"))
    assert calls(clean) == 2
    assert not other["b"]["cached"]
    system = run(clean, [{"id": "c", "prompt": PARCEL}], BatchOptions(tenant="acme", system_prompt="Answer in French."))
    assert not system["c"]["cached"] and calls(clean) == 3


def test_refused_or_failed_answers_are_never_served(clean: Stack) -> None:
    doomed = f"{PASSWORD} [[sim:refuse]]"
    first = run(clean, [{"id": "x", "prompt": doomed}])
    assert first["x"]["status"] == "failed"
    before = calls(clean)
    again = run(clean, [{"id": "y", "prompt": doomed}])
    assert again["y"]["status"] == "failed" and not again["y"]["cached"]
    assert calls(clean) == 2 * before
    escalated = run(clean, [{"id": "e", "prompt": f"{REFUND} [[sim:refuse@sim-nano]]"}])
    reused = run(clean, [{"id": "r", "prompt": f"{REFUND} [[sim:refuse@sim-nano]]"}])
    assert reused["r"]["cached"] and reused["r"]["content"] == escalated["e"]["content"]
    assert reused["r"]["model"] == "sim-mid"  # the validated warm answer, not the hot refusal


def test_no_cache_batches_neither_read_nor_fill_the_cache(clean: Stack) -> None:
    run(clean, [{"id": "a", "prompt": PARCEL}])
    fresh = run(clean, [{"id": "b", "prompt": PARCEL}, {"id": "c", "prompt": PARCEL}], BatchOptions(use_cache=False))
    assert calls(clean) == 3 and not any(r["cached"] for r in fresh.values())


def test_the_same_questions_after_a_cancel_lead_rather_than_wait_on_the_cancelled_jobs(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    ctx = worker_ctx()  # classify in this process; what it queues goes to a broker no worker reads

    def classified(*prompts: str) -> list[int]:
        message = uuid.uuid4()
        ids = [insert_job(clean, prompt, status="pending", tier=None, handoff=message) for prompt in prompts]
        classify_chunk(ctx, ids, message)
        return ids

    def jobs(*ids: int) -> list[tuple[str, int | None, int | None]]:
        with clean.engine.connect() as conn:
            return [tuple(r) for r in conn.execute(text("SELECT status, follows, cache_entry FROM jobs WHERE "
                                                        "id = ANY(:ids) ORDER BY id"), {"ids": list(ids)})]

    def cancel(job: int) -> None:
        with clean.engine.connect() as conn:
            batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": job}).scalar_one()
        with clean.client() as tq:
            assert tq.cancel(batch).cancelled == 1  # cancelled while queued: its entry never gets an answer

    [cancelled] = classified(PARCEL)
    cancel(cancelled)
    # The same question twice and nearly the same once: the first leads a new entry, the others follow it
    # (not the cancelled job), as misses of one chunk do.
    first, second, near = classified(PARCEL, PARCEL, PARCEL + " Thanks!")
    (_, _, old), (status, follows, new), *followed = jobs(cancelled, first, second, near)
    assert (status, follows) == ("queued", None) and new is not None and new != old
    assert followed == [("waiting", first, new), ("waiting", first, new)]
    # A leader that is alive is still followed, by the same words or nearly the same.
    again, near = classified(PARCEL, PARCEL.upper())
    assert jobs(again, near) == [("waiting", first, new), ("waiting", first, new)]
    # Found by meaning rather than by the same words: the same.
    [gone] = classified(REFUND)
    cancel(gone)
    [lone] = classified(REFUND + " Thanks!")
    [(status, follows, entry)] = jobs(lone)
    assert (status, follows) == ("queued", None) and entry is not None


@pytest.mark.slow
def test_a_follower_completes_when_its_leaders_worker_is_killed(clean: Stack, tmp_path: Any) -> None:
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker}
    router = start_worker(env, tmp_path / "router.log", queues="classify,warm,cold", name="router")
    doomed = start_worker(env, tmp_path / "hot1.log", queues="hot", name="hot1")
    rescuer = None
    try:
        clean.simulate({"latency_ms": 60_000})
        settings = clean.settings.model_copy(update={"broker_url": broker})
        from producer.api import Tierq

        with Tierq(settings, clean.config) as tq:
            batch = tq.submit([{"id": "leader", "prompt": PARCEL}, {"id": "follower", "prompt": PARCEL}])
            deadline = time.monotonic() + 30
            while _states(clean) != {"leader": "running", "follower": "waiting"}:
                assert time.monotonic() < deadline, _states(clean)
                time.sleep(0.2)
            os.killpg(doomed.pid, signal.SIGKILL)
            doomed.wait()
            clean.simulate({"latency_ms": 0})
            rescuer = start_worker(env, tmp_path / "hot2.log", queues="hot", name="hot2")
            deadline = time.monotonic() + 60
            while _states(clean)["follower"] != "succeeded":
                assert time.monotonic() < deadline, _states(clean)
                time.sleep(0.3)
            results = {r["id"]: r for r in tq.results(batch.batch_id)}
        assert results["follower"]["status"] == "succeeded" and results["follower"]["content"]
    finally:
        for proc in (router, doomed, rescuer):
            if proc is not None:
                stop_worker(proc)


def _states(stack: Stack) -> dict[str, str]:
    with stack.engine.connect() as conn:
        return dict(conn.execute(text("SELECT custom_id, status FROM jobs")).all())
