"""`--no-store-text`: Postgres holds digests only; texts live in Redis until used; answers are read once."""

from __future__ import annotations

import hashlib
import subprocess
import time
from pathlib import Path

import redis
from conftest import Stack
from sqlalchemy import text
from sqlalchemy.engine import make_url

from models import JobStatus
from producer.submit import BatchOptions

SECRET_PROMPT = "My account number is 44-1290-77 and my name is Ada Lovelace; where is my refund?"


def test_private_batches_keep_no_text_in_postgres(clean: Stack, tmp_path: Path) -> None:
    records = [{"id": "a", "prompt": SECRET_PROMPT},
               {"id": "b", "prompt": SECRET_PROMPT + " [[sim:refuse@sim-nano]]"}]
    with clean.client() as tq:
        batch = tq.submit(records, BatchOptions(store_text=False, system_prompt="Be brief."))
        clean.wait(tq, batch.batch_id)
        first = {r["id"]: r for r in tq.results(batch.batch_id)}
        second = {r["id"]: r for r in tq.results(batch.batch_id)}
    assert first["a"]["status"] == first["b"]["status"] == "succeeded"
    assert first["a"]["content"] and first["b"]["content"] and first["b"]["tier"] == "warm"
    assert second["a"]["content"] is None and second["b"]["content"] is None  # returned once
    # The command says so, rather than print nulls as if they were answers.
    again = subprocess.run([str(Path(__file__).resolve().parents[2] / ".venv" / "bin" / "tierq"), "results",
                            str(batch.batch_id)], env=clean.env, cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, check=False)
    assert again.returncode == 0 and len(again.stdout.splitlines()) == 2, again.stderr[-2000:]
    assert again.stderr == ("note: 2 succeeded jobs come without their answer: the batch was submitted with "
                            "--no-store-text, whose answers are kept in Redis until an earlier `tierq results` took "
                            "them or they expired\n")
    url = make_url(clean.settings.database_url)
    dump = subprocess.run(["pg_dump", "-h", url.host or "127.0.0.1", "-U", url.username or "postgres", "--data-only",
                           url.database or ""], capture_output=True, text=True, check=True).stdout
    assert "Ada Lovelace" not in dump and first["a"]["content"] not in dump
    with clean.engine.connect() as conn:
        digests = dict(conn.execute(text("SELECT custom_id, content_sha256 FROM jobs")).all())
    assert digests["a"] == hashlib.sha256(first["a"]["content"].encode()).hexdigest()
    vault = redis.Redis.from_url(clean.settings.redis_url)
    assert list(vault.scan_iter(match="tq:v:*")) == []  # prompts forgotten once final, answers once read


def test_a_cancelled_private_batch_leaves_no_prompt_in_redis(clean: Stack) -> None:
    clean.simulate({"latency_ms": 1500})
    # More jobs than the worker can claim at once (each task thread holds one chunk), so that some are still
    # waiting when the cancel comes, however fast the worker claims the rest: both ways of ending are seen.
    # (A thread frees only when its chunk's last call ends, about two latencies after the first claim.)
    held_at_once = clean.config.worker.threads * clean.config.worker.tier_chunk
    records = [{"id": f"t{n}", "prompt": f"{SECRET_PROMPT} ticket {n}"} for n in range(held_at_once + 400)]
    vault = redis.Redis.from_url(clean.settings.redis_url)
    with clean.client() as tq:
        batch = tq.submit(records, BatchOptions(store_text=False, force_tier="hot"))
        deadline = time.monotonic() + 30
        while tq.status(batch.batch_id).count(JobStatus.RUNNING) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        cancelled = tq.cancel(batch.batch_id)
        status = clean.wait(tq, batch.batch_id, timeout=60)
    assert cancelled.cancelled > 0 and status.count(JobStatus.CANCELLED) >= cancelled.cancelled
    assert list(vault.scan_iter(match="tq:v:q:*")) == []  # no prompt of a final job stays, cancelled or not


def test_a_reader_that_stops_early_leaves_the_answers_it_did_not_take(clean: Stack) -> None:
    # `tierq results B | head -1`: the lines after the first are not delivered, so their answers must stay.
    records = [{"id": f"t{n}", "prompt": f"{SECRET_PROMPT} ticket {n}"} for n in range(3)]
    with clean.client() as tq:
        batch = tq.submit(records, BatchOptions(store_text=False, use_cache=False)).batch_id
        clean.wait(tq, batch)
        lines = tq.results(batch)
        first = next(lines)
        second = next(lines)  # asked for: the first counts as delivered; this one is not yet
        lines.close()
        again = {r["id"]: r["content"] for r in tq.results(batch)}
    assert first["content"] and second["content"] and lines.private
    assert again[first["id"]] is None, "the delivered answer was taken"
    assert again[second["id"]] == second["content"], "the one the reader stopped at went back"
    assert sum(content is not None for content in again.values()) == 2
