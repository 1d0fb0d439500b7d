"""Prompt compression end to end: long conversations summarised by the cheapest model, cached, and billed; a
summary the provider refuses the key for is skipped, and the job waits at its tier like any other."""

from __future__ import annotations

import json
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
import redis
from conftest import SIM_CONFIG, Stack, insert_job, start_worker, stop_worker
from sqlalchemy import text

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.config import RESERVED_PARAMS, load_config
from tierq.errors import ConfigError
from tierq.money import Usage
from workers.classify import ClassifySummary, classify_chunk
from workers.compress import COMPRESSION_TIER, NOTE_KEY, SUMMARY_PREFIX
from workers.context import WorkerContext
from workers.process import process_chunk

SYSTEM = "You are the support assistant of a parcel company."
REFUSAL = ("key: provider 'sim' refused a call without an API key (HTTP 401); name the variable that holds its key "
           "with api_key_env in [providers.sim] and restart the workers")


def conversation(turns: int, last: str = "So where is parcel 4411 now?") -> list[dict[str, Any]]:
    """A system prompt and `turns` alternating user and assistant turns, ending with the user's `last`."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": SYSTEM}]
    for n in range(turns - 1):
        role = "user" if n % 2 == 0 else "assistant"
        messages.append(
            {"role": role, "content": f"Turn {n}: my parcel 4411 was due on day {n}, " + "still waiting. " * 8}
        )
    messages.append({"role": "user", "content": last})
    return messages


def run(stack: Stack, records: list[dict[str, Any]], options: BatchOptions | None = None,
        broker: str | None = None) -> tuple[str, dict[str, dict[str, Any]]]:
    settings = stack.settings if broker is None else stack.settings.model_copy(update={"broker_url": broker})
    with Tierq(settings, stack.config) as tq:
        batch = tq.submit(records, options)
        assert batch.rejected == 0, batch.rejections
        stack.wait(tq, batch.batch_id)
        return str(batch.batch_id), {r["id"]: r for r in tq.results(batch.batch_id)}


def stored(stack: Stack) -> dict[str, tuple[list[dict[str, Any]], dict[str, Any]]]:
    with stack.engine.connect() as conn:
        rows = conn.execute(text("SELECT custom_id, messages, params FROM jobs")).all()
    return {custom_id: (messages, params) for custom_id, messages, params in rows}


def test_a_long_conversation_is_compressed_and_the_bill_shows_the_net_saving(clean: Stack) -> None:
    keep = clean.config.compression.keep_last
    batch, results = run(clean, [{"id": "long", "messages": conversation(21)},
                                 {"id": "short", "messages": conversation(5)}],
                          BatchOptions(compress=True, force_tier="cold"))
    long, short = results["long"], results["short"]
    assert long["status"] == short["status"] == "succeeded"
    assert [(a["tier"], a["model"], a["outcome"]) for a in long["attempts"]] == [
        (COMPRESSION_TIER, "sim-nano", "ok"), ("cold", "sim-flagship", "ok")]
    assert [a["tier"] for a in short["attempts"]] == ["cold"]
    messages, params = stored(clean)["long"]
    original = conversation(21)
    assert messages[0] == original[0] and messages[-keep:] == original[-keep:]
    assert len(messages) == 2 + keep and messages[1]["role"] == "user"
    assert messages[1]["content"].startswith(SUMMARY_PREFIX)
    note = params[NOTE_KEY]
    assert note["turns"] == 21 - keep and note["summary"] == "call" and note["tokens_before"] > 3 * note["tokens_after"]
    billed = clean.sim_stats()["calls"]
    assert len(billed) == 3  # the summary, and one answer per job
    bill = _report(clean, batch)["compression"]
    removed = note["tokens_before"] - note["tokens_after"]
    summary_cost = Decimal(long["attempts"][0]["cost_usd"])
    gross = clean.config.price("sim-flagship").cost(Usage(removed, 0))
    assert bill == {"jobs": 1, "summary_calls": 1, "summaries_reused": 0, "summary_cost_usd": str(summary_cost),
                    "tokens_removed": removed, "billed_calls": 1, "prompt_tokens_saved": removed,
                    "gross_saved_usd": str(gross.normalize()), "net_saved_usd": str((gross - summary_cost).normalize())}
    # Summarising with the cheapest model pays when a dearer one reads the shorter prompt; for a job the
    # cheapest model answers once, the summary costs about what it saves.
    assert gross > 5 * summary_cost


def test_the_same_older_turns_are_summarised_once(clean: Stack) -> None:
    first, _ = run(clean, [{"id": "a", "messages": conversation(21, "Can you resend the label?")},
                           {"id": "b", "messages": conversation(21, "And the invoice?")}], BatchOptions(compress=True))
    _, later = run(
        clean, [{"id": "c", "messages": conversation(21, "Who is the courier?")}], BatchOptions(compress=True)
    )
    models = [c["model"] for c in clean.sim_stats()["calls"]]
    assert models.count("sim-nano") == 4  # one summary, three answers
    assert [a["tier"] for a in later["c"]["attempts"]] == ["hot"]
    notes = {k: p[NOTE_KEY]["summary"] for k, (_, p) in stored(clean).items()}
    assert sorted(notes.values()) == ["cache", "cache", "call"]
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT count(*) FROM calls WHERE tier = :t"), {"t": COMPRESSION_TIER}).scalar_one()
    assert rows == 1
    assert _report(clean, first)["compression"]["summaries_reused"] == 1


def test_compression_is_off_unless_asked(clean: Stack) -> None:
    _, results = run(clean, [{"id": "long", "messages": conversation(21)}])
    assert [a["tier"] for a in results["long"]["attempts"]] == ["hot"]
    assert NOTE_KEY not in stored(clean)["long"][1]


def test_a_failed_summary_leaves_the_conversation_whole(clean: Stack) -> None:
    clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"refusal_rate": 1.0}}})
    _, results = run(clean, [{"id": "long", "messages": conversation(21)}], BatchOptions(compress=True))
    attempts = results["long"]["attempts"]
    assert attempts[0]["tier"] == COMPRESSION_TIER and attempts[0]["outcome"] == "refusal"
    assert results["long"]["status"] == "succeeded"
    messages, params = stored(clean)["long"]
    assert messages == conversation(21) and NOTE_KEY not in params


COMPRESSION = """
[compression]
max_turns = 6
keep_last = 2

[compression.task_types]
support = true
"""


@pytest.fixture(scope="module")
def toml_worker(stack: Stack, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A worker whose TOML compresses task type `support` only, on its own broker database."""
    folder = tmp_path_factory.mktemp("compression")
    config = folder / "tierq.toml"
    config.write_text(SIM_CONFIG.read_text() + COMPRESSION)
    broker = stack.dbs.url(4)
    redis.Redis.from_url(broker).flushdb()
    worker = start_worker({**stack.env, "TIERQ_CONFIG": str(config), "TIERQ_BROKER_URL": broker},
                          folder / "worker.log", name="compression")
    try:
        yield broker
    finally:
        stop_worker(worker)


def test_the_toml_turns_compression_on_per_task_type_and_a_batch_can_turn_it_off(
    clean: Stack, toml_worker: str
) -> None:
    records = [{"id": "support", "task_type": "support", "messages": conversation(9)},
               {"id": "billing", "task_type": "billing", "messages": conversation(9)}]
    run(clean, records, broker=toml_worker)
    notes = {k: p.get(NOTE_KEY) for k, (_, p) in stored(clean).items()}
    assert notes["billing"] is None and notes["support"]["turns"] == 7
    assert len(stored(clean)["support"][0]) == 1 + 1 + 2
    with clean.engine.begin() as conn:
        conn.execute(text("TRUNCATE routers, labels, calls, jobs, batches"))
    run(clean, records[:1], BatchOptions(compress=False), broker=toml_worker)
    assert NOTE_KEY not in stored(clean)["support"][1]


def test_keep_last_must_leave_room_below_max_turns(tmp_path: Path) -> None:
    config = tmp_path / "tierq.toml"
    config.write_text(SIM_CONFIG.read_text() + "\n[compression]\nmax_turns = 4\nkeep_last = 4\n")
    with pytest.raises(ConfigError, match=r"keep_last \(4\) must be below max_turns \(4\)"):
        load_config(config)


def test_a_refused_key_skips_the_summary_and_the_job_is_held_at_its_tier_for_it(
        clean: Stack, worker_ctx: Callable[..., WorkerContext]) -> None:
    spare = clean.dbs.url(3)  # breaker state of its own, apart from the session's worker
    redis.Redis.from_url(spare).flushdb()
    # The first refusal opens the provider's breaker, for longer than the test runs.
    ctx = worker_ctx(breaker_failures=1, breaker_open_s=60, breaker_max_open_s=60)
    ctx.settings = ctx.settings.model_copy(update={"redis_url": spare})
    clean.simulate({"latency_ms": 0, "api_key": "sk-not-the-one-tierq-has"})
    jobs = {last: pending_job(clean, conversation(21, last)) for last in ("Where is it?", "And the invoice?")}
    try:
        # The summary call is refused: the job goes on whole, at once, rather than wait for a summary.
        (first, message), (second, later) = jobs.values()
        assert routed_now(classify_chunk(ctx, [first], message))
        # The breaker is open with the refusal as its reason: no summary call at all.
        assert routed_now(classify_chunk(ctx, [second], later))
        with clean.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, tier, handoff, messages, params FROM jobs ORDER BY id")).all()
            paid = conn.execute(text("SELECT job_id, tier, outcome, cost_usd FROM calls")).all()
        assert [tuple(r[:2]) for r in rows] == [(first, "queued"), (second, "queued")]
        for (_, _, _, _, messages, params), last in zip(rows, jobs, strict=True):
            assert messages == conversation(21, last) and NOTE_KEY not in params
        assert [tuple(r) for r in paid] == [(first, COMPRESSION_TIER, "http_4xx", 0)]
        assert clean.sim_stats()["unauthorized"] == 1 and clean.sim_stats()["calls"] == []
        # At its tier the job is held with the refusal's reason, as every job of that provider is.
        tier, handoff = rows[0][2], rows[0][3]
        assert process_chunk(ctx, tier, [first], handoff).held == 1
    finally:
        redis.Redis.from_url(spare).flushdb()
    with clean.engine.connect() as conn:
        status, reason = conn.execute(text("SELECT status, error FROM jobs WHERE id = :j"), {"j": first}).one()
    assert status == "queued" and reason == REFUSAL
    assert clean.sim_stats()["unauthorized"] == 1  # the open breaker held it without a call


def routed_now(summary: ClassifySummary) -> bool:
    return summary.held == 0 and sum(summary.routed.values()) == 1


def pending_job(stack: Stack, messages: list[dict[str, Any]]) -> tuple[int, uuid.UUID]:
    """A job of a batch submitted with --compress, waiting for its classify message: (job id, message id)."""
    message = uuid.uuid4()
    job = insert_job(stack, "", status="pending", tier=None, handoff=message,
                     params={RESERVED_PARAMS: {"compress": True}})
    with stack.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET messages = CAST(:m AS jsonb) WHERE id = :j"),
                     {"m": json.dumps(messages), "j": job})
    return job, message


def _report(stack: Stack, batch: str) -> dict[str, Any]:
    with stack.client() as tq:
        return tq.report(batch).as_dict()
