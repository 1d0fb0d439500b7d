"""The cache step of classify: answer from the cache, follow a job already asking, or lead."""

from __future__ import annotations

from dataclasses import dataclass, field
from decimal import Decimal

import numpy as np

from tierq.cache import CacheEntry, CacheKey, cache_key
from tierq.cache.embedders import Vectors
from workers.context import WorkerContext
from workers.sharing import SharedAnswer
from workers.store import PendingJob


@dataclass(slots=True)
class Dedup:
    """What the cache decided for a chunk's jobs."""

    hits: dict[int, SharedAnswer] = field(default_factory=dict)
    semantic: dict[int, str] = field(default_factory=dict)  # hits by meaning, not by the same words: job -> namespace
    followers: dict[int, tuple[int, int]] = field(default_factory=dict)  # job -> (leader job, entry)
    leaders: dict[int, int] = field(default_factory=dict)  # job -> entry it must fill


def key_of(job: PendingJob) -> CacheKey:
    """The cache key of a pending job."""
    return cache_key(tenant=job.tenant, task_type=job.task_type, system_prompt=job.system_prompt,
                     messages=job.messages, params=job.params, tier_floor=job.force_tier or job.min_tier)


def deduplicate(ctx: WorkerContext, jobs: list[PendingJob]) -> Dedup:
    """Look the jobs up in one batch; register the misses as leaders, coalescing duplicates in the chunk."""
    result = Dedup()
    if not jobs:
        return result
    keys = [key_of(job) for job in jobs]
    vectors = ctx.embedder.embed([k.text for k in keys]) if ctx.config.cache.semantic else None
    found = ctx.cache.lookup(keys, vectors)
    fresh: list[tuple[CacheKey, int, int, int]] = []  # registered by this chunk: (key, row, entry, leader job)
    for row, (job, key, entry) in enumerate(zip(jobs, keys, found, strict=True)):
        if entry is None:
            entry = _near_in_chunk(ctx, fresh, key, row, vectors)
        if entry is None:
            entry_id, entry = ctx.cache.register(key, None if vectors is None else vectors[row].tolist(), job.id)
            if entry is None:
                result.leaders[job.id] = entry_id
                fresh.append((key, row, entry_id, job.id))
                continue
        if entry.ready and entry.answer is not None:
            result.hits[job.id] = SharedAnswer(entry.answer, entry.model or "", entry.tier or "", entry.cost_usd,
                                               *entry.tokens)
            if entry.kind == "semantic":
                result.semantic[job.id] = key.namespace
        elif entry.leader_job == job.id:
            result.leaders[job.id] = entry.id
        else:
            result.followers[job.id] = (entry.leader_job, entry.id)
    cache = ctx.cache
    cache.count("hits", len(result.hits))
    cache.count("coalesced", len(result.followers))
    cache.count("misses", len(result.leaders))
    return result


def _near_in_chunk(
    ctx: WorkerContext, fresh: list[tuple[CacheKey, int, int, int]], key: CacheKey, row: int, vectors: Vectors | None
) -> CacheEntry | None:
    """A job registered earlier in this chunk that asks the same (or nearly the same) question."""
    for other, other_row, entry_id, leader in fresh:
        if other.namespace != key.namespace:
            continue
        same = other.exact == key.exact
        if not same and vectors is not None and other.ids == key.ids:
            same = float(np.dot(vectors[row], vectors[other_row])) >= ctx.cache.threshold
        if same:
            return CacheEntry(entry_id, False, leader, None, None, None, Decimal(0), "chunk")
    return None
