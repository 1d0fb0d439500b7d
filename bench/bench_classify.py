"""Classify with the cache on: jobs/s of the classify step against a cache of 100,000 entries.

    .venv/bin/python bench/bench_classify.py [--jobs 4000] [--entries 100000] [--embedder hashing|minilm]

One worker process serving `classify` only (no tier worker: a job's classify step ends when it is on
its tier's queue, answered from the cache, or waiting for an identical job). The cache is first
filled with `--entries` answered entries in the namespace the batch's jobs will use, through the
store's own code (bench_cache.bulk_load), with texts written like the batch's and without identifiers,
so that every entry shares the LSH buckets of the jobs (the worst case for the index). Two batches are
measured, each from its first job row to its last job leaving `pending` (`created_at` / `updated_at`):
  - distinct: every job a new text (all cache misses);
  - repeats: half the jobs repeat a text earlier in the batch, a quarter repeat a stored entry.
Anchor: the same distinct batch with the cache off (`use_cache = false`), measured in the same run by the
same worker. The ratio is what the cache costs the classify step; the note splits a chunk's time.
"""

from __future__ import annotations

import argparse
import random
import sys
import time
from pathlib import Path
from typing import cast

import numpy as np
import redis
from bench_cache import bulk_load
from harness import BenchError, Stack, cli, open_stack, wait_for
from rows import Row, Target, table
from simconfigs import write_config
from sqlalchemy import text

from producer.api import Tierq
from producer.submit import BatchOptions
from tierq.cache import CacheKey, cache_key
from tierq.cache.factory import make_embedder
from tierq.cache.store import CacheStore
from tierq.config import load_config

# A new text costs Redis 2.5-6 ms of search at 100k entries (docs/cache.md, "A classify chunk"), so the
# cache-on rate is bounded by Redis, not by the worker; the target is that bound, not the anchor's.
TARGET = Target("ratio", 0.05)
SECONDS_PER_JOB_LIMIT = 0.2

_SUBJECTS = ["my parcel", "the invoice", "my refund", "the order", "my account", "the password reset",
             "my subscription", "the delivery", "the discount code", "my card payment", "the warranty claim",
             "the return label"]
_PROBLEMS = ["has not arrived", "shows the wrong amount", "was charged twice", "cannot be found", "is locked",
             "never came by email", "was cancelled without notice", "went to the old address", "does not work",
             "was declined", "is still pending", "has the wrong name on it"]
_ASKS = ["what should I do", "can you help", "who do I contact", "how long will it take", "is this normal",
         "can I get my money back", "please advise", "what are my options"]
_MOODS = ["", "again", "for the third time", "since last week", "after your update", "this morning", "yesterday"]


def ticket(rng: random.Random) -> str:
    """A support ticket without identifiers (no digits, no names), so all of them share the index's buckets."""
    return (f"{rng.choice(_SUBJECTS).capitalize()} {rng.choice(_PROBLEMS)} {rng.choice(_MOODS)}, "
            f"{rng.choice(_ASKS)}? {' '.join(rng.sample(_WORDS, 4))}").replace(" ,", ",")


_WORDS = ["urgent", "kindly", "quickly", "honestly", "frankly", "really", "truly", "simply", "please", "sadly",
          "luckily", "finally", "still", "already", "perhaps", "maybe", "surely", "clearly", "certainly", "again",
          "soon", "later", "today", "tonight", "tomorrow", "now"]


def distinct_tickets(count: int, rng: random.Random, avoid: set[str]) -> list[str]:
    """`count` different tickets, none of them in `avoid`."""
    found: dict[str, None] = {}
    while len(found) < count:
        candidate = ticket(rng)
        if candidate not in avoid:
            found[candidate] = None
    return list(found)


def key_for(prompt: str, options: BatchOptions) -> CacheKey:
    """The cache key the classify step computes for a job submitted with this prompt and these options."""
    return cache_key(tenant=options.tenant, task_type=options.task_type, system_prompt=options.system_prompt,
                     messages=[{"role": "user", "content": prompt}], params=dict(options.params),
                     tier_floor=options.force_tier or options.min_tier)


def fill(stack: Stack, config_path: Path, prompts: list[str], options: BatchOptions) -> float:
    """Store an answered entry for each prompt in the jobs' namespace; seconds spent embedding them."""
    config = load_config(config_path)
    settings = stack.settings(config_path)
    embedder = make_embedder(settings, config)
    started = time.perf_counter()
    vectors = np.concatenate([embedder.embed(prompts[i : i + 1000]) for i in range(0, len(prompts), 1000)])
    embed_s = time.perf_counter() - started
    keys = [key_for(p, options) for p in prompts]
    store = CacheStore(redis.Redis.from_url(stack.redis_url), config.cache,
                       config.cache.threshold or embedder.default_threshold)
    bulk_load(store, vectors, keys.__getitem__)
    return embed_s


def classify_rate(stack: Stack, config: Path, prompts: list[str], options: BatchOptions) -> tuple[float, int]:
    """Jobs/s from the batch's first job row to its last job leaving `pending`, and how many were cache hits."""
    with Tierq(stack.settings(config), load_config(config)) as tq:
        result = tq.submit([{"id": f"t{i}", "prompt": p} for i, p in enumerate(prompts)], options)
        if result.accepted != len(prompts):
            raise BenchError(f"{result.rejected} of {len(prompts)} tickets were rejected")

        def classified() -> bool:
            with tq.engine.connect() as conn:
                return not conn.execute(text("SELECT 1 FROM jobs WHERE batch_id = :b AND status = 'pending' LIMIT 1"),
                                        {"b": result.batch_id}).first()

        wait_for(classified, len(prompts) * SECONDS_PER_JOB_LIMIT + 60, f"{len(prompts)} jobs to be classified",
                 poll_s=0.1)
        with tq.engine.connect() as conn:
            span, hits = conn.execute(text(
                "SELECT extract(epoch FROM max(updated_at) - min(created_at)), "
                "count(*) FILTER (WHERE status = 'succeeded') FROM jobs WHERE batch_id = :b"),
                {"b": result.batch_id}).one()
    return len(prompts) / max(float(span), 1e-3), int(hits)


def namespaces(stack: Stack, prefix: str) -> set[str]:
    """The namespaces of the cache's entries (a sample of them), to check the fill used the jobs' one."""
    client = redis.Redis.from_url(stack.redis_url)
    found = set()
    for name in client.scan_iter(f"{prefix}:e:*", count=1000):
        found.add(cast(bytes, client.hget(name, "n") or b"").decode())
        if len(found) > 1:
            break
    return found


def run(stack: Stack, quick: bool = False, jobs: int | None = None, entries: int | None = None,
        embedder: str = "hashing") -> list[Row]:
    """Fill the cache, then measure the distinct batch, the repeats batch and the anchor."""
    n = jobs or (2_000 if quick else 4_000)
    stored = entries or (20_000 if quick else 100_000)
    config = write_config(stack.workdir / "classify.toml", tables={"cache": {"enabled": True, "embedder": embedder}})
    off = write_config(stack.workdir / "classify-off.toml", tables={"cache": {"enabled": False}})
    options = BatchOptions()
    rng = random.Random(7)
    stack.reset()
    prompts = distinct_tickets(stored + 3 * n, rng, set())
    filled, fresh, anchor_prompts = prompts[:stored], prompts[stored : stored + n], prompts[stored + n : stored + 2 * n]
    half = prompts[stored + 2 * n : stored + 2 * n + n // 4]
    repeats = [*half, *rng.sample(filled, n // 4)]
    repeats += [rng.choice(repeats) for _ in range(n - len(repeats))]
    rng.shuffle(repeats)
    embed_s = fill(stack, config, filled, options)
    prefix = load_config(config).cache.prefix
    rates = {}
    hit_counts = {}
    for name, toml, batch, batch_options in (
        ("anchor", off, anchor_prompts, BatchOptions(use_cache=False)),
        ("distinct", config, fresh, options),
        ("repeats", config, repeats, options),
    ):
        worker = stack.start_worker("classify", toml, f"classify-{name}")
        try:
            rates[name], hit_counts[name] = classify_rate(stack, toml, batch, batch_options)
        finally:
            stack.stop_worker(worker)
    seen = namespaces(stack, prefix)
    expected = key_for(fresh[0], options).namespace
    if seen != {expected}:
        raise BenchError(f"the cache was filled in namespaces {seen}, not the jobs' {expected}: "
                         "the bench's key is stale")
    per_entry_ms = 1e3 * embed_s / len(filled)
    note = (f"{embedder}, {stored:,} entries, {n:,} jobs, 1 worker process (classify only), chunks of "
            f"{load_config(config).worker.classify_chunk}; embedding costs {per_entry_ms:.2f} ms per text here")
    return [
        Row(f"classify, cache on ({embedder}, {stored // 1000}k entries, all new)", "jobs/s", rates["distinct"],
            rates["anchor"], TARGET, note=note),
        Row(f"classify, cache on ({embedder}, {stored // 1000}k entries, half repeats)", "jobs/s", rates["repeats"],
            rates["anchor"], TARGET, note=f"{hit_counts['repeats']:,} of {n:,} answered from the cache"),
    ]


def main(argv: list[str] | None = None) -> int:
    """Run this benchmark alone."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=4_000)
    parser.add_argument("--entries", type=int, default=100_000)
    parser.add_argument("--embedder", choices=["hashing", "minilm"], default="hashing")
    args = parser.parse_args(argv)
    with open_stack() as stack:
        rows = run(stack, jobs=args.jobs, entries=args.entries, embedder=args.embedder)
    print(table(rows))
    return 0


if __name__ == "__main__":
    sys.exit(cli(main))
