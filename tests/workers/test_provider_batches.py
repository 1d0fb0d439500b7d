"""A tier in mode "batch": its jobs go through the provider's batch API (the simulator's) at batch prices,
and come out through the same judging, cost rows and escalation as interactive answers.

Each test runs its own worker on a spare Redis database, with the shipped sim.toml whose "warm" tier is
switched to batch mode and polled every half second.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import openai
import pytest
import redis
from conftest import Stack
from reliability.fault_services import RedisServer
from reliability.fault_support import Deployment, deployment, fault_config, job_states, wait_final, wait_until
from sqlalchemy import text

from producer.api import Tierq
from producer.metrics import TierqCollector
from producer.submit import BatchOptions
from producer.views import status_lines
from tierq.contract import tier_message
from tierq.money import Usage
from workers.provider_batches import call_id

BATCH_TIER = {"warm": {"mode": "batch", "batch_poll_s": 0.5, "batch_max_requests": 40, "batch_max_wait_s": 0.5}}


@contextmanager
def deployed(clean: Stack, tmp_path: Path, tiers: Mapping[str, Mapping[str, Any]] = BATCH_TIER,
             broker: str | None = None, worker: Mapping[str, Any] | None = None,
             **env: str) -> Iterator[tuple[Deployment, Tierq]]:
    """A deployment of sim.toml with `tiers` (and `[worker]`) changed, on a spare Redis database unless
    `broker` is given."""
    if broker is None:
        broker = clean.dbs.url(2)
        redis.Redis.from_url(broker).flushdb()
    config = fault_config(tmp_path / "batch.toml", tiers=tiers, worker=worker)
    with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker, **env) as dep, \
            dep.client() as tq:
        yield dep, tq


@pytest.fixture()
def run(clean: Stack, tmp_path: Path) -> Iterator[tuple[Deployment, Tierq]]:
    with deployed(clean, tmp_path) as pair:
        yield pair


def records(n: int, marker: str = "") -> list[dict[str, str]]:
    return [{"id": f"t{i}", "prompt": f"ticket {i}: where is my parcel?{marker if i % 5 == 0 else ''}"}
            for i in range(n)]


def calls(stack: Stack, batch: uuid.UUID) -> list[Any]:
    with stack.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT c.id, c.model, c.tier, c.outcome, c.prompt_tokens, c.completion_tokens, c.cached_tokens, "
            "c.cost_usd, c.via_batch, j.custom_id FROM calls c JOIN jobs j ON j.id = c.job_id "
            "WHERE c.batch_id = :b"), {"b": batch}).all())


def provider_batches(stack: Stack, batch: uuid.UUID) -> list[Any]:
    with stack.engine.connect() as conn:
        return list(conn.execute(text(
            "SELECT state, provider_status, provider_batch_id, request_counts, request_bytes, input_file_id, "
            "output_file_id, "
            "(SELECT count(*) FROM jsonb_object_keys(requests)) AS requests FROM provider_batches "
            "WHERE batch_id = :b ORDER BY created_at"), {"b": batch}).all())


@pytest.mark.slow
def test_2000_jobs_through_a_batch_mode_tier_end_once_at_batch_prices(clean: Stack, tmp_path: Path) -> None:
    jobs, most = 2000, 300
    with deployed(clean, tmp_path, {"warm": {**BATCH_TIER["warm"], "batch_max_requests": most}}) as (dep, tq):
        dep.start("classify,hot,warm,cold", "all")
        batch = tq.submit(records(jobs), BatchOptions(force_tier="warm", use_cache=False)).batch_id
        wait_final(clean, batch, jobs, 180)
        results = list(tq.results(batch))
        report = tq.report(batch).as_dict()
    assert len(results) == jobs and len({r["id"] for r in results}) == jobs
    assert Counter(r["status"] for r in results) == {"succeeded": jobs}
    assert {r["tier"] for r in results} == {"warm"}
    rows = calls(clean, batch)
    assert len(rows) == jobs and len({r.custom_id for r in rows}) == jobs
    assert all(r.via_batch and r.outcome == "ok" and r.model == "sim-mid" for r in rows)
    price = dep.config.models["sim-mid"].batch_price
    assert price.input == dep.config.models["sim-mid"].price.input / 2
    for r in rows:  # to the last digit: usage times the batch price
        assert r.cost_usd == price.cost(Usage(r.prompt_tokens, r.completion_tokens, r.cached_tokens)), r
    stats = clean.sim_stats()
    assert stats["calls"] == [] or all(c["model"] != "sim-mid" for c in stats["calls"])  # no interactive call
    seen = stats["batch"]["seen"]  # every request reached the provider exactly once
    assert sum(len(lines) for lines in seen.values()) == jobs
    assert all(n == 1 for lines in seen.values() for n in lines.values())
    billed = stats["batch"]["models"]["sim-mid"]
    assert (billed["prompt_tokens"], billed["completion_tokens"]) == (sum(r.prompt_tokens for r in rows),
                                                                      sum(r.completion_tokens for r in rows))
    opened = provider_batches(clean, batch)
    assert {(p.state, p.provider_status) for p in opened} == {("ended", "completed")}
    assert all(p.request_counts["total"] <= most for p in opened) and len(opened) >= jobs // most
    assert sum(p.request_counts["completed"] for p in opened) == jobs
    sdk = openai.OpenAI(base_url=clean.sim.base_url, api_key="sk-test", max_retries=0)
    for file_id in [p.input_file_id for p in opened] + [p.output_file_id for p in opened]:
        with pytest.raises(openai.NotFoundError):  # the provider's copies of the texts are gone once recorded
            sdk.files.retrieve(file_id)
    paid = sum((r.cost_usd for r in rows), Decimal(0))
    assert Decimal(report["totals"]["cost_usd"]) == paid
    api = report["batch_api"]  # the list price is twice the batch price, and linear in the tokens
    assert (api["calls"], Decimal(api["cost_usd"]), Decimal(api["list_cost_usd"])) == (jobs, paid, 2 * paid)
    assert Decimal(api["saved_usd"]) == paid and Decimal(api["interactive_cost_usd"]) == 0
    by_model = {m["model"]: m for m in report["by_model"]}  # a batch line has no latency of its own
    assert (by_model["sim-mid"]["latency_ms_p50"], by_model["sim-mid"]["latency_ms_p95"]) == (None, None)


@pytest.mark.slow
def test_a_batchs_deadline_chooses_between_the_batch_api_and_interactive_calls(clean: Stack, tmp_path: Path) -> None:
    # warm: the batch API only for a batch whose deadline fits its 24 h window; cold: always, unless a
    # batch's deadline is shorter than the window.
    tiers = {"warm": {**BATCH_TIER["warm"], "mode": "deadline"}, "cold": {**BATCH_TIER["warm"], "mode": "batch"}}
    day, hour = 86400.0, 3600.0
    cases = {("warm", None): False, ("warm", day): True, ("cold", hour): False, ("cold", None): True}
    with deployed(clean, tmp_path, tiers) as (dep, tq):
        dep.start("classify,hot,warm,cold", "all")
        batches = {case: tq.submit(records(6), BatchOptions(
            force_tier=case[0], use_cache=False, deadline_s=case[1])).batch_id for case in cases}
        for batch in batches.values():
            wait_final(clean, batch, 6, 90)
    for (tier, deadline), through_api in cases.items():
        batch = batches[(tier, deadline)]
        rows = calls(clean, batch)
        assert len(rows) == 6 and {r.tier for r in rows} == {tier}, (tier, deadline, rows)
        assert {r.via_batch for r in rows} == {through_api}, (tier, deadline)
        assert len(provider_batches(clean, batch)) == (1 if through_api else 0), (tier, deadline)


@pytest.mark.slow
def test_provider_files_fill_across_messages_until_full_in_requests_or_bytes_or_old_enough(
    clean: Stack, tmp_path: Path
) -> None:
    # warm: files of 10 requests, no timer within the test; cold: files of at most 10,000 bytes, a 1 s timer.
    tiers = {"warm": {**BATCH_TIER["warm"], "batch_max_requests": 10, "batch_max_wait_s": 300},
             "cold": {**BATCH_TIER["warm"], "batch_max_bytes": 10_000, "batch_max_wait_s": 1}}
    with deployed(clean, tmp_path, tiers, worker={"tier_chunk": 5}) as (dep, tq):
        dep.start("classify,hot,warm,cold", "all")
        # 30 jobs refused by the hot tier's model escalate five at a time (hot messages of 5) ...
        escalated = tq.submit([
            {"id": f"e{i}", "prompt": f"ticket {i}: where is my parcel? [[sim:refuse@sim-nano]]"} for i in range(30)],
            BatchOptions(force_tier="hot", use_cache=False)).batch_id
        # ... and 20 long prompts (about 1.7 kB per request line) go straight to cold.
        long = tq.submit([{"id": f"l{i}", "prompt": f"document {i}: " + "lorem ipsum dolor " * 85}
                          for i in range(20)], BatchOptions(force_tier="cold", use_cache=False)).batch_id
        wait_final(clean, escalated, 30, 90)
        wait_final(clean, long, 20, 90)
    rows = calls(clean, escalated)
    assert Counter((r.tier, r.via_batch) for r in rows if r.outcome == "ok") == {("warm", True): 30}
    # Six warm messages of five jobs each became three provider files of ten, each closed when it filled up.
    assert [p.requests for p in provider_batches(clean, escalated)] == [10, 10, 10]
    # 20 request lines of about 1.7 kB: five fit in 10,000 bytes, so the one message made four files; three
    # were closed when the next line would not fit, and the fourth, with no more jobs to come, by its timer.
    files = provider_batches(clean, long)
    assert [p.requests for p in files] == [5, 5, 5, 5], files
    assert all(8_000 < p.request_bytes <= 10_000 for p in files), files
    assert {p.provider_status for p in files} == {"completed"}
    assert {(r.tier, r.via_batch) for r in calls(clean, long)} == {("cold", True)}
    seen = clean.sim_stats()["batch"]["seen"]
    assert sum(len(lines) for lines in seen.values()) == 50 and all(n == 1 for v in seen.values() for n in v.values())


@pytest.mark.slow
def test_refusals_in_the_output_file_escalate_and_an_expired_batch_falls_back(
    clean: Stack, run: tuple[Deployment, Tierq]
) -> None:
    dep, tq = run
    dep.start("classify,hot,warm,cold", "all")
    # Every fifth line is refused, and two lines fail at the provider (HTTP 500 and 429 in the error file),
    # every time: those two are sent again in the next provider batches at warm, max_retries (2) times, and
    # only then escalate, as an interactive call's provider errors do.
    failing = {"t1": " [[sim:500@sim-mid]]", "t2": " [[sim:429@sim-mid]]"}
    tickets = [{**r, "prompt": r["prompt"] + failing.get(r["id"], "")} for r in records(20, " [[sim:refuse@sim-mid]]")]
    batch = tq.submit(tickets, BatchOptions(force_tier="warm", use_cache=False)).batch_id
    wait_final(clean, batch, 20, 90)
    results = {r["id"]: r for r in tq.results(batch)}
    assert all(r["status"] == "succeeded" for r in results.values())
    assert {i for i, r in results.items() if r["tier"] == "cold"} == {f"t{i}" for i in range(0, 20, 5)} | {"t1", "t2"}
    warm = [r for r in calls(clean, batch) if r.tier == "warm"]
    assert all(r.via_batch for r in warm) and len(warm) == 24  # none sent again interactively
    assert Counter(r.outcome for r in warm) == {"ok": 14, "refusal": 4, "http_5xx": 3, "rate_limited": 3}
    assert Counter(r.custom_id for r in warm if r.outcome != "ok") == {"t1": 3, "t2": 3, **{
        f"t{i}": 1 for i in range(0, 20, 5)}}
    assert all(r.cost_usd == 0 for r in warm if r.outcome in ("http_5xx", "rate_limited"))
    # A batch that expires before it answers: its requests go to the tier's models directly.
    clean.simulate({"batch": {"in_progress_s": 30, "window_s": 1, "progress": "at_end"}})
    late = tq.submit(records(10), BatchOptions(force_tier="warm", use_cache=False)).batch_id
    wait_final(clean, late, 10, 90)
    assert {r["tier"] for r in tq.results(late)} == {"warm"}
    rows = calls(clean, late)
    assert all(not r.via_batch and r.outcome == "ok" for r in rows) and len(rows) == 10
    assert [(p.state, p.provider_status) for p in provider_batches(clean, late)] == [("ended", "expired")]


@pytest.mark.slow
def test_cancel_during_a_provider_batch_cancels_it(clean: Stack, run: tuple[Deployment, Tierq]) -> None:
    dep, tq = run
    clean.simulate({"batch": {"in_progress_s": 60, "progress": "at_end"}})
    dep.start("classify,hot,warm,cold", "all")
    batch = tq.submit(records(10), BatchOptions(force_tier="warm", use_cache=False)).batch_id
    wait_until(lambda: any(p.provider_status == "in_progress" for p in provider_batches(clean, batch)), 60,
               lambda: provider_batches(clean, batch))
    status = tq.status(batch)
    assert status.provider_batches.pop("polled_s") < 10  # looked at every batch_poll_s
    assert status.provider_batches == {"batches": 1, "requests": 10, "completed": 0, "failed": 0, "filling": 0,
                                       "unsent": 0, "unsent_s": 0, "unsent_error": None}
    assert status.eta_s is None  # the provider batch's window, not the recent rate, says when these end
    assert any(line.startswith("  in provider batches: 10 jobs in 1") for line in status_lines(status))
    collector = TierqCollector(clean.engine, dep.env["TIERQ_BROKER_URL"], ["classify", "hot", "warm", "cold"])
    samples = {(s.name, tuple(sorted(s.labels.items()))): s.value for m in collector.collect() for s in m.samples}
    assert samples[("tierq_provider_batches_open", (("tier", "warm"), ("what", "batches")))] == 1
    assert samples[("tierq_provider_batches_open", (("tier", "warm"), ("what", "requests")))] == 10
    tq.cancel(batch)
    wait_until(lambda: [p.state for p in provider_batches(clean, batch)] == ["ended"], 30,
               lambda: provider_batches(clean, batch))
    assert job_states(clean, batch) == {"cancelled": 10}
    assert provider_batches(clean, batch)[0].provider_status == "cancelled"
    assert calls(clean, batch) == []  # it answered nothing before it stopped


@pytest.mark.slow
def test_what_a_cancelled_provider_batch_answered_before_it_stopped_is_paid_for(
        clean: Stack, run: tuple[Deployment, Tierq]) -> None:
    dep, tq = run
    # Lines are answered one by one over 8 s; cancelling takes 2 s more, in which the provider goes on.
    clean.simulate({"batch": {"in_progress_s": 8, "progress": "gradual", "cancelling_s": 2}})
    dep.start("classify,hot,warm,cold", "all")
    batch = tq.submit(records(20), BatchOptions(force_tier="warm", use_cache=False)).batch_id
    wait_until(lambda: any((p.request_counts or {}).get("completed", 0) >= 3 for p in provider_batches(clean, batch)),
               60, lambda: provider_batches(clean, batch))
    tq.cancel(batch)
    wait_until(lambda: [p.state for p in provider_batches(clean, batch)] == ["ended"], 60,
               lambda: provider_batches(clean, batch))
    report = tq.report(batch).as_dict()
    assert job_states(clean, batch) == {"cancelled": 20}
    [opened] = provider_batches(clean, batch)
    assert opened.provider_status == "cancelled" and opened.request_counts["completed"] >= 3
    rows = calls(clean, batch)
    billed = clean.sim_stats()["batch"]["models"]["sim-mid"]
    # Every line the provider answered, and so billed, is a cost row of its job, at the batch price.
    assert len(rows) == opened.request_counts["completed"] and len({r.custom_id for r in rows}) == len(rows)
    assert all(r.via_batch and r.outcome == "ok" and r.tier == "warm" for r in rows)
    assert (billed["prompt_tokens"], billed["completion_tokens"]) == (sum(r.prompt_tokens for r in rows),
                                                                      sum(r.completion_tokens for r in rows))
    price = dep.config.models["sim-mid"].batch_price
    paid = sum((price.cost(Usage(r.prompt_tokens, r.completion_tokens, r.cached_tokens)) for r in rows), Decimal(0))
    assert sum((r.cost_usd for r in rows), Decimal(0)) == paid > 0
    assert Decimal(report["totals"]["cost_usd"]) == paid and report["batch_api"]["calls"] == len(rows)


@pytest.mark.slow
def test_a_worker_killed_while_its_provider_batch_runs_loses_and_repeats_nothing(clean: Stack, tmp_path: Path) -> None:
    broker = clean.dbs.url(2)
    redis.Redis.from_url(broker).flushdb()
    config = fault_config(tmp_path / "batch.toml", tiers=BATCH_TIER)
    clean.simulate({"batch": {"in_progress_s": 4, "progress": "at_end"}})
    # The dead worker's poll message comes back once the visibility timeout (10 s) has passed.
    with deployment(clean, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker,
                    TIERQ_VISIBILITY_TIMEOUT_S="10") as dep, dep.client() as tq:
        doomed = dep.start("classify,hot,warm,cold", "first")
        batch = tq.submit(records(30), BatchOptions(force_tier="warm", use_cache=False)).batch_id
        wait_until(lambda: any(p.provider_status == "in_progress" for p in provider_batches(clean, batch)), 60,
                   lambda: provider_batches(clean, batch))
        dep.kill(doomed)
        dep.start("classify,hot,warm,cold", "second")
        wait_final(clean, batch, 30, 90)
        assert Counter(r["status"] for r in tq.results(batch)) == {"succeeded": 30}
    rows = calls(clean, batch)
    assert len(rows) == 30 and len({r.custom_id for r in rows}) == 30 and all(r.via_batch for r in rows)
    seen = clean.sim_stats()["batch"]["seen"]
    assert len(seen) == 1 and all(n == 1 for lines in seen.values() for n in lines.values())


@pytest.mark.slow
def test_a_redis_restart_while_a_provider_batch_runs_loses_and_repeats_nothing(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "redis").mkdir()
    server = RedisServer(tmp_path / "redis")  # the broker, with an append-only file as production needs
    server.start()
    clean.simulate({"batch": {"in_progress_s": 6, "progress": "at_end"}})
    try:
        with deployed(clean, tmp_path, broker=server.url, TIERQ_VISIBILITY_TIMEOUT_S="10") as (dep, tq):
            worker = dep.start("classify,hot,warm,cold", "all")
            batch = tq.submit(records(30), BatchOptions(force_tier="warm", use_cache=False)).batch_id
            wait_until(lambda: any(p.provider_status == "in_progress" for p in provider_batches(clean, batch)), 60,
                       lambda: provider_batches(clean, batch))
            server.stop()  # while the step's next poll waits in the broker
            time.sleep(3)
            server.start()
            wait_final(clean, batch, 30, 90)
            assert Counter(r["status"] for r in tq.results(batch)) == {"succeeded": 30}
            assert worker.poll() is None  # it rode out the restart
    finally:
        server.stop()
    rows = calls(clean, batch)
    assert len(rows) == 30 and len({r.custom_id for r in rows}) == 30 and all(r.via_batch for r in rows)
    seen = clean.sim_stats()["batch"]["seen"]
    assert len(seen) == 1 and all(n == 1 for lines in seen.values() for n in lines.values())


@pytest.mark.slow
def test_a_file_waits_its_whole_max_wait_and_a_cancel_ends_a_file_still_filling(clean: Stack, tmp_path: Path) -> None:
    # A 6 s visibility timeout lets a message be delayed by 3 s at most: the timer comes back until 7 s passed.
    tiers = {"warm": {**BATCH_TIER["warm"], "batch_max_wait_s": 7}, "cold": {**BATCH_TIER["warm"],
                                                                          "batch_max_wait_s": 300}}
    with deployed(clean, tmp_path, tiers, TIERQ_VISIBILITY_TIMEOUT_S="6") as (dep, tq):
        dep.start("classify,hot,warm,cold", "all")
        submitted = time.monotonic()
        waited = tq.submit(records(5), BatchOptions(force_tier="warm", use_cache=False)).batch_id
        wait_until(lambda: any(p.provider_batch_id for p in provider_batches(clean, waited)), 60,
                   lambda: provider_batches(clean, waited))
        assert time.monotonic() - submitted >= 7  # sent once it had waited batch_max_wait_s, not at the first 3 s
        wait_final(clean, waited, 5, 60)
        # A file that would wait 300 s: cancelled while it fills, its jobs end cancelled and nothing is sent.
        cancelled = tq.submit(records(5), BatchOptions(force_tier="cold", use_cache=False)).batch_id
        wait_until(lambda: job_states(clean, cancelled) == {"queued": 5}
                   and [p.state for p in provider_batches(clean, cancelled)] == ["collecting"], 60,
                   lambda: (job_states(clean, cancelled), provider_batches(clean, cancelled)))
        assert tq.status(cancelled).provider_batches["filling"] == 1
        tq.cancel(cancelled)
        assert job_states(clean, cancelled) == {"cancelled": 5}
        assert [(p.state, p.provider_status) for p in provider_batches(clean, cancelled)] == [("ended", "not sent")]
    assert Counter(r["status"] for r in tq.results(waited)) == {"succeeded": 5}
    assert len(clean.sim_stats()["batch"]["seen"]) == 1  # the waited file only


@pytest.mark.slow
def test_a_delivery_that_died_after_creating_its_provider_batch_is_not_sent_again(clean: Stack, tmp_path: Path) -> None:
    """The state a worker killed between `batches.create` and writing the batch id leaves: the row says
    "sending", the provider has the batch. The next delivery finds it by the message id in its metadata."""
    with deployed(clean, tmp_path) as (dep, tq):
        batch = tq.submit(records(4), BatchOptions(force_tier="warm", use_cache=False)).batch_id  # no worker yet
        message = uuid.uuid4()
        with clean.engine.begin() as conn:
            jobs = conn.execute(text("UPDATE jobs SET status = 'queued', tier = 'warm', start_tier = 'warm', "
                                     "handoff = :m WHERE batch_id = :b RETURNING id, messages"),
                                {"m": message, "b": batch}).all()
        requests = {str(call_id(message, job_id)): job_id for job_id, _ in jobs}
        lines = "".join(json.dumps({"custom_id": custom, "method": "POST", "url": "/v1/chat/completions",
                                    "body": {"model": "sim-mid", "messages": dict(jobs)[job_id]}}) + "\n"
                        for custom, job_id in requests.items())
        sdk = openai.OpenAI(base_url=clean.sim.base_url, api_key="sk-test", max_retries=0)
        uploaded = sdk.files.create(file=("in.jsonl", lines.encode()), purpose="batch")
        created = sdk.batches.create(input_file_id=uploaded.id, endpoint="/v1/chat/completions",
                                     completion_window="24h", metadata={"tierq_message": str(message)})
        with clean.engine.begin() as conn:
            conn.execute(text("INSERT INTO provider_batches (message_id, batch_id, tier, model, provider, requests, "
                              "state, input_file_id, provider_status) VALUES (:m, :b, 'warm', 'sim-mid', 'sim', "
                              "CAST(:r AS jsonb), 'creating', :f, 'sending')"),
                         {"m": message, "b": batch, "r": json.dumps(requests), "f": uploaded.id})
        dep.start("classify,hot,warm,cold", "all")
        tq.publisher.publish([tier_message("warm", [job_id for job_id, _ in jobs], batch, message)])
        wait_final(clean, batch, 4, 60)
        assert Counter(r["status"] for r in tq.results(batch)) == {"succeeded": 4}
        with pytest.raises(openai.NotFoundError):  # the provider's copy of the prompts went with the batch
            sdk.files.retrieve(uploaded.id)
        # A delivery that finished the jobs and stopped before deleting left a file: the message coming back
        # (a redelivery) finds every job final and deletes it.
        left = sdk.files.create(file=("in.jsonl", lines.encode()), purpose="batch")
        with clean.engine.begin() as conn:
            conn.execute(text("UPDATE provider_batches SET input_file_id = :f WHERE message_id = :m"),
                         {"f": left.id, "m": message})
        tq.publisher.publish([tier_message("warm", [job_id for job_id, _ in jobs], batch, message)])
        wait_until(lambda: left.id not in {f.id for f in sdk.files.list()}, 30, lambda: left.id)
    assert [p.provider_batch_id for p in provider_batches(clean, batch)] == [created.id]
    seen = clean.sim_stats()["batch"]["seen"]
    assert list(seen) == [created.id] and all(n == 1 for n in seen[created.id].values())
    rows = calls(clean, batch)
    assert len(rows) == 4 and all(r.via_batch for r in rows)


@pytest.mark.slow
def test_a_follower_from_a_batch_without_deadline_does_not_wait_for_a_leader_in_a_provider_batch(
    clean: Stack, tmp_path: Path
) -> None:
    clean.simulate({"batch": {"in_progress_s": 120, "progress": "at_end"}})
    tiers = {"warm": {**BATCH_TIER["warm"], "mode": "deadline"}}
    questions = [{"id": f"q{i}", "prompt": f"How do I change the address on order {i}?"} for i in range(3)]
    with deployed(clean, tmp_path, tiers) as (dep, tq):
        dep.start("classify,hot,warm,cold", "all")
        slow = tq.submit(questions, BatchOptions(force_tier="warm", deadline_s=86400)).batch_id
        wait_until(lambda: any(p.provider_status == "in_progress" for p in provider_batches(clean, slow)), 60,
                   lambda: provider_batches(clean, slow))
        # The same questions from a batch that must be done now: they may follow the leaders at first (the
        # cache coalesces identical questions in flight), but are answered without waiting for the provider.
        fast = tq.submit(questions, BatchOptions(force_tier="warm")).batch_id
        wait_final(clean, fast, 3, 60)
        assert Counter(r["status"] for r in tq.results(fast)) == {"succeeded": 3}
        # Still in the provider batch: each poll (every batch_poll_s) claims the jobs while it looks, so they
        # are queued or, for that moment, running; none is final and the provider batch is still open.
        states = job_states(clean, slow)
        assert sum(states.values()) == 3 and set(states) <= {"queued", "running"}, states
        assert [p.provider_status for p in provider_batches(clean, slow)] == ["in_progress"]
        tq.cancel(slow)
    assert {(r.tier, r.via_batch) for r in calls(clean, fast)} == {("warm", False)}


def test_status_says_when_the_provider_keeps_failing_to_accept_a_batch_and_when_it_refused_one(
        clean: Stack, tmp_path: Path) -> None:
    # warm: the provider (like OpenAI) refuses a 48 h completion window; cold: a batch tier whose provider
    # answers every Batch API request with HTTP 500 until the test lifts it.
    tiers = {"warm": {**BATCH_TIER["warm"], "batch_window": "48h"}, "cold": BATCH_TIER["warm"]}
    clean.simulate({"batch_api_error_500_rate": 1.0})
    with deployed(clean, tmp_path, tiers) as (dep, tq):
        dep.start("classify,hot,warm,cold", "all")
        refused = tq.submit(records(3), BatchOptions(force_tier="warm", use_cache=False)).batch_id
        failing = tq.submit(records(3), BatchOptions(force_tier="cold", use_cache=False)).batch_id
        # A worker began sending it (the row says "sending" from before the upload on), uploaded its file (the
        # simulator's errors are the Batch API's, not the Files API's) and so met the errors: what it writes
        # after this keeps updated_at, which the test moves back.
        wait_until(lambda: [(p.state, p.provider_status, p.input_file_id is not None)
                            for p in provider_batches(clean, failing)] == [("creating", "sending", True)],
                   60, lambda: provider_batches(clean, failing))
        assert tq.status(failing).provider_batches["unsent"] == 0  # not a minute yet
        with clean.engine.begin() as conn:  # as if the provider had been failing for five minutes
            conn.execute(text("UPDATE provider_batches SET updated_at = now() - interval '5 minutes' "
                              "WHERE batch_id = :b"), {"b": failing})
        unsent = tq.status(failing)
        clean.simulate({})
        wait_final(clean, refused, 3, 60)
        wait_final(clean, failing, 3, 60)
        done = tq.status(refused)
    assert (unsent.provider_batches["unsent"], unsent.provider_batches["unsent_s"] >= 300) == (1, True)
    # What the provider last answered, not only "see the log".
    assert unsent.provider_batches["unsent_error"].startswith("HTTP 500: "), unsent.provider_batches
    assert any("1 not accepted by the provider yet, trying for 5m" in line and
               f"(it last answered {unsent.provider_batches['unsent_error']})" in line
               for line in status_lines(unsent)), status_lines(unsent)
    (warning,) = [w for w in done.warnings if "refused" in w]
    # The provider's whole reason (the row's status keeps only its first 40 characters).
    assert warning.startswith("the provider refused a provider batch (HTTP 400: ") and "its 3 requests" in warning
    assert "48h" in warning, warning
    assert {r.via_batch for r in calls(clean, refused)} == {False}  # answered at list price, as it says


def test_a_private_batchs_provider_error_keeps_only_its_status_in_postgres() -> None:
    from workers.provider_batches import _kept

    why = "HTTP 400: line 3: 'my account number is 1234' is not valid"  # a provider may quote a request line
    assert _kept(why, private=False) == why
    assert _kept(why, private=True) == "HTTP 400 (the provider's message is in the workers' log)"
