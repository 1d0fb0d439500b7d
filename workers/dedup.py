"""The cache step of classify: answer from the cache, follow a job already asking, or lead."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field, replace
from decimal import Decimal

from sqlalchemy import text

from models.enums import JobStatus
from tierq.cache import CacheEntry, CacheKey, cache_key
from tierq.cache.embedders import Vectors
from tierq.cache.identifiers import added, substituted
from workers.context import WorkerContext
from workers.sharing import SharedAnswer
from workers.store import PendingJob
from workers.verify import Gray, verify

log = logging.getLogger(__name__)
_ENDED = ", ".join(f"'{state}'" for state in (JobStatus.FAILED, JobStatus.CANCELLED))


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
    """Look the jobs up together; register the misses as leaders, coalescing duplicates in the chunk.

    Exact matches are read first, so only the texts they miss are embedded, and each different text once.
    A text repeated in the chunk is looked up once and shares its first occurrence's fate; a text near
    one that leads a new entry in this chunk follows that leader.
    """
    result = Dedup()
    if not jobs:
        return result
    keys = [key_of(job) for job in jobs]
    found = ctx.cache.lookup(keys, None)
    _forget_stale(ctx, jobs, found)
    heads: dict[str, int] = {}  # exact key -> first row that missed with it
    twin_of: dict[int, int] = {}  # a later row with the same exact key -> that first row
    for row, entry in enumerate(found):
        if entry is None:
            twin_of[row] = heads.setdefault(keys[row].exact, row)
    rows = list(heads.values())
    vectors = ctx.embedder.embed([keys[row].text for row in rows]) if ctx.config.cache.semantic and rows else None
    if vectors is not None:
        verifying = ctx.cache.floor is not None
        grays: list[tuple[int, CacheEntry]] = []
        for row, entry in zip(rows, ctx.cache.nearest([keys[row] for row in rows], vectors, verifying), strict=True):
            if entry is not None and entry.kind == "gray":
                grays.append((row, entry))
            else:
                found[row] = entry
        if grays:
            same = verify(ctx, [Gray(jobs[row], entry) for row, entry in grays])
            for row, entry in grays:
                if jobs[row].id in same:
                    found[row] = replace(entry, kind="semantic")
        _forget_stale(ctx, jobs, found, rows)
    open_rows = [n for n, row in enumerate(rows) if found[row] is None]  # positions in `rows`
    follows = _near_in_chunk(ctx, [keys[rows[n]] for n in open_rows], None if vectors is None else vectors[open_rows])
    lead = [n for n, leader in zip(open_rows, follows, strict=True) if leader is None]
    fresh = _register(ctx, jobs, keys, rows, lead, vectors, found)
    # A row that was to follow a leader whose text another process registered first registers itself.
    orphans = [n for n, leader in zip(open_rows, follows, strict=True)
               if leader is not None and open_rows[leader] not in fresh]
    fresh.update(_register(ctx, jobs, keys, rows, orphans, vectors, found))
    for n, leader in zip(open_rows, follows, strict=True):
        if leader is not None and open_rows[leader] in fresh:
            found[rows[n]] = fresh[open_rows[leader]]
    for row, (job, key) in enumerate(zip(jobs, keys, strict=True)):
        entry = found[twin_of.get(row, row)]  # a repeated text shares its first occurrence's entry
        if entry is None:
            raise RuntimeError(f"job {job.id}: the cache step left it without an entry")
        _decide(result, job, key, entry)
    cache = ctx.cache
    cache.count("hits", len(result.hits))
    cache.count("coalesced", len(result.followers))
    cache.count("misses", len(result.leaders))
    return result


def _register(ctx: WorkerContext, jobs: list[PendingJob], keys: list[CacheKey], rows: list[int], chosen: list[int],
              vectors: Vectors | None, found: list[CacheEntry | None]) -> dict[int, CacheEntry]:
    """Register rows[n] for each n in `chosen`; fills `found`, and returns the new entries by n."""
    if not chosen:
        return {}
    targets = [rows[n] for n in chosen]
    registered = ctx.cache.register_many([keys[row] for row in targets], None if vectors is None else vectors[chosen],
                                         [jobs[row].id for row in targets])
    fresh: dict[int, CacheEntry] = {}
    for n, row, (entry_id, existing) in zip(chosen, targets, registered, strict=True):
        if existing is None:
            existing = fresh[n] = CacheEntry(entry_id, False, jobs[row].id, None, None, None, Decimal(0), "fresh")
        found[row] = existing
    return fresh


def _forget_stale(ctx: WorkerContext, jobs: list[PendingJob], found: list[CacheEntry | None],
                  rows: list[int] | None = None) -> None:
    """Forget the entries (among `found`, at `rows` or all) that wait for a leader that ended without an
    answer: a job cancelled while it was queued, or one that failed when its entry could not be dropped.
    A job that followed it would wait a whole lease for nothing, as would a batch submitted again after a
    cancel. Such an entry is dropped, and its rows go on as misses: they lead new entries, or follow one
    another as any misses of a chunk do."""
    ours = {job.id for job in jobs}
    waits = {row: entry for row in (range(len(found)) if rows is None else rows)
             if (entry := found[row]) is not None and not entry.ready and entry.leader_job not in ours}
    if not waits:
        return
    with ctx.engine.connect() as conn:
        alive = set(conn.execute(text(f"SELECT id FROM jobs WHERE id = ANY(:ids) AND status NOT IN ({_ENDED})"),
                                 {"ids": sorted({e.leader_job for e in waits.values()})}).scalars())
    stale = {row: entry for row, entry in waits.items() if entry.leader_job not in alive}
    for entry in {entry.id: entry for entry in stale.values()}.values():
        ctx.cache.drop(entry.id, entry.leader_job)
    for row in stale:
        found[row] = None
    if stale:
        log.info("cache: %d jobs lead in place of %d leaders that ended without an answer", len(stale),
                 len({e.leader_job for e in stale.values()}))


def _decide(result: Dedup, job: PendingJob, key: CacheKey, entry: CacheEntry) -> None:
    """Record what the job does with its entry: take its answer, lead it, or follow its leader."""
    if entry.ready and entry.answer is not None:
        result.hits[job.id] = SharedAnswer(entry.answer, entry.model or "", entry.tier or "", entry.cost_usd,
                                           *entry.tokens)
        if entry.kind == "semantic":
            result.semantic[job.id] = key.namespace
    elif entry.leader_job == job.id:
        result.leaders[job.id] = entry.id
    else:
        result.followers[job.id] = (entry.leader_job, entry.id)


def _near_in_chunk(ctx: WorkerContext, keys: list[CacheKey], vectors: Vectors | None) -> list[int | None]:
    """For each key (all of different texts, in order), the first earlier one that leads and asks nearly
    the same question (same namespace and identifiers, no name swapped for another, no more content words
    added or dropped than the guard allows, similarity at or above the threshold), else None."""
    follows: list[int | None] = [None] * len(keys)
    if vectors is None or not keys:
        return follows
    cache = ctx.cache
    similar = (vectors @ vectors.T) >= cache.threshold
    budget, share = cache.cfg.added_words, cache.cfg.added_share
    leaders: dict[tuple[str, str], list[int]] = {}
    for n, key in enumerate(keys):
        group = leaders.setdefault((key.namespace, key.ids), [])
        near = [m for m in group if similar[n, m] and not substituted(key.names, keys[m].names, key.says, keys[m].says)
                and not added(key.words, keys[m].words, budget, share)]
        if near:
            follows[n] = near[0]
        else:
            group.append(n)
    return follows
