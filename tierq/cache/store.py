"""The cache in Redis: entries, the exact index, LSH band sets, leases, eviction.

Keys under the prefix P:
    P:x:<exact>            entry id of an exact request (string, TTL)
    P:e:<id>               the entry (hash): state p(ending)/r(eady), leader job, identifier
                           fingerprint, namespace, band buckets, answer, model, tier, cost
    P:v:<id>               its vector, float16 (a string of its own: one MGET fetches every candidate,
                           and the hash stays small enough for Redis's compact encoding)
    P:b:<ns>:<ids>:<band>:<n>  ids of entries of one namespace and identifier fingerprint whose
                           vector falls in bucket n of a band (set)
    P:z                    every entry id scored by creation time (eviction: oldest first, expired)
    P:l:<job>              lease of a leader job being answered (TTL, renewed by the tier worker)
    P:stat                 counters
A pending entry is a question being answered right now; lookups that find one coalesce onto its
leader instead of calling a model.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import cast

import numpy as np
import numpy.typing as npt
import redis
from redis.typing import EncodableT, FieldT

from tierq.cache.embedders import Vectors
from tierq.cache.keys import CacheKey
from tierq.cache.lsh import Hyperplanes
from tierq.config import CacheConfig

_FIELDS = ("s", "j", "a", "m", "t", "c", "f", "n", "u")


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached answer (ready) or a question in flight (pending, with its leader job)."""

    id: int
    ready: bool
    leader_job: int
    answer: str | None
    model: str | None
    tier: str | None
    cost_usd: Decimal
    kind: str = "exact"  # or "semantic"
    similarity: float = 1.0
    tokens: tuple[int, int, int] = (0, 0, 0)  # prompt, completion, cached tokens of the answering call


def _s(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


class CacheStore:
    """One Redis database holding the cache of every tenant; safe to share across processes."""

    def __init__(self, client: redis.Redis, config: CacheConfig, threshold: float) -> None:
        self.r = client
        self.cfg = config
        self.p = config.prefix
        self.threshold = threshold
        self.planes = Hyperplanes(config.dim, config.bands, config.rows)

    def _band_keys(self, namespace: str, ids: str, buckets: Sequence[int]) -> list[str]:
        # The identifier fingerprint is part of the key: entries with other identifiers are never candidates.
        return [f"{self.p}:b:{namespace}:{ids}:{band}:{int(bucket)}" for band, bucket in enumerate(buckets)]

    def _entry(self, entry_id: int, raw: Sequence[bytes | None], kind: str, similarity: float = 1.0) -> CacheEntry:
        state, job, answer, model, tier, cost = raw[0], raw[1], raw[2], raw[3], raw[4], raw[5]
        usage = tuple(int(x) for x in (_s(raw[8]) or "0,0,0").split(","))
        return CacheEntry(entry_id, state == b"r", int(job or 0), _s(answer), _s(model), _s(tier),
                          Decimal(_s(cost) or "0"), kind, similarity, (usage[0], usage[1], usage[2]))

    def lookup(self, keys: Sequence[CacheKey], vectors: Vectors | None) -> list[CacheEntry | None]:
        """Exact matches first, then (for the rest, when vectors are given) the nearest semantic match."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(f"{self.p}:x:{key.exact}")
        ids = [int(v) if v else None for v in pipe.execute()]
        found: list[CacheEntry | None] = [None] * len(keys)
        pipe = self.r.pipeline(transaction=False)
        for entry_id in ids:
            if entry_id is not None:
                pipe.hmget(f"{self.p}:e:{entry_id}", _FIELDS)
        for index, raw in zip([i for i, e in enumerate(ids) if e is not None], pipe.execute(), strict=True):
            if raw[0] is not None:
                found[index] = self._entry(ids[index] or 0, raw, "exact")
        misses = [i for i, f in enumerate(found) if f is None]
        if vectors is not None and self.cfg.semantic and misses:
            for index, entry in zip(misses, self._nearest([keys[i] for i in misses], vectors[misses]), strict=True):
                found[index] = entry
        return found

    def _nearest(self, keys: Sequence[CacheKey], vectors: Vectors) -> list[CacheEntry | None]:
        buckets = self.planes.buckets(vectors)
        pipe = self.r.pipeline(transaction=False)
        for key, row in zip(keys, buckets, strict=True):
            pipe.sunion(self._band_keys(key.namespace, key.ids, row))
        candidates = [[int(m) for m in members] for members in pipe.execute()]
        unique = sorted({c for cands in candidates for c in cands})
        if not unique:
            return [None] * len(keys)
        width = self.cfg.dim * 2
        raw = cast(list[bytes | None], self.r.mget([f"{self.p}:v:{i}" for i in unique]))
        present = [n for n, blob in enumerate(raw) if blob is not None and len(blob) == width]
        row_of = {unique[n]: r for r, n in enumerate(present)}
        matrix = np.frombuffer(b"".join(raw[n] or b"" for n in present), dtype=np.float16)
        matrix = matrix.reshape(len(present), self.cfg.dim).astype(np.float32)
        results: list[CacheEntry | None] = []
        for key, vector, cands in zip(keys, vectors, candidates, strict=True):
            rows = [row_of[c] for c in cands if c in row_of]
            results.append(self._best(key, [c for c in cands if c in row_of], matrix[rows] @ vector) if rows else None)
        return results

    def _best(self, key: CacheKey, ids: list[int], similarities: npt.NDArray[np.float32]) -> CacheEntry | None:
        """The most similar candidate at or above the threshold whose entry is still there."""
        for index in np.argsort(-similarities):
            similarity = float(similarities[index])
            if similarity < self.threshold:
                return None
            raw = cast(list[bytes | None], self.r.hmget(f"{self.p}:e:{ids[index]}", _FIELDS))
            if raw[0] is not None and _s(raw[7]) == key.namespace and (_s(raw[6]) or "") == key.ids:
                return self._entry(ids[index], raw, "semantic", similarity)
        return None

    def register(self, key: CacheKey, vector: Sequence[float] | None, job_id: int) -> tuple[int, CacheEntry | None]:
        """Make `job_id` the leader of `key` (its new entry id, None); if a job got there first, its entry."""
        entry_id = int(self.r.incr(f"{self.p}:n"))
        if not self.r.set(f"{self.p}:x:{key.exact}", entry_id, nx=True, ex=self.cfg.ttl_s):
            existing = self.lookup([key], None)[0]
            if existing is not None:
                return existing.id, existing
            self.r.set(f"{self.p}:x:{key.exact}", entry_id, ex=self.cfg.ttl_s)
        fields: dict[FieldT, EncodableT] = {"s": "p", "j": job_id, "f": key.ids, "n": key.namespace,
                                                "x": key.exact, "tn": key.tenant, "ts": int(time.time())}
        pipe = self.r.pipeline(transaction=False)
        if vector is not None and self.cfg.semantic:
            vec = np.asarray(vector, dtype=np.float32)
            buckets = self.planes.buckets(vec.reshape(1, -1))[0]
            fields["b"] = buckets.astype(np.int64).tobytes()
            pipe.set(f"{self.p}:v:{entry_id}", vec.astype(np.float16).tobytes(), ex=self.cfg.ttl_s)
            for band_key in self._band_keys(key.namespace, key.ids, buckets):
                pipe.sadd(band_key, entry_id)
                pipe.expire(band_key, self.cfg.ttl_s)
        pipe.hset(f"{self.p}:e:{entry_id}", mapping=fields)
        pipe.expire(f"{self.p}:e:{entry_id}", self.cfg.ttl_s)
        pipe.zadd(f"{self.p}:z", {str(entry_id): time.time()})
        pipe.execute()
        return entry_id, None

    def fill(
        self, entry_id: int, leader_job: int, answer: str, model: str, tier: str, cost: Decimal,
        tokens: tuple[int, int, int] = (0, 0, 0),
    ) -> bool:
        """Store a validated answer in the leader's pending entry; False if the entry is gone or not its own."""
        name = f"{self.p}:e:{entry_id}"
        if self.r.hget(name, "j") != str(leader_job).encode():
            return False
        pipe = self.r.pipeline(transaction=False)
        pipe.hset(name, mapping={"s": "r", "a": answer, "m": model, "t": tier, "c": str(cost),
                                 "u": ",".join(str(t) for t in tokens)})
        pipe.expire(name, self.cfg.ttl_s)
        pipe.expire(f"{self.p}:v:{entry_id}", self.cfg.ttl_s)
        pipe.hincrby(f"{self.p}:stat", "fills", 1)
        pipe.execute()
        self.evict()
        return True

    def drop(self, entry_id: int, leader_job: int | None = None) -> bool:
        """Remove an entry (only if `leader_job` still leads it, when given) with its index entries."""
        name = f"{self.p}:e:{entry_id}"
        job, exact, namespace, buckets, ids = cast(list[bytes | None], self.r.hmget(name, ["j", "x", "n", "b", "f"]))
        if job is None:
            # Expired already; its band-set members are swept when those sets expire.
            self.r.zrem(f"{self.p}:z", str(entry_id))
            self.r.delete(f"{self.p}:v:{entry_id}")
            return False
        if leader_job is not None and job != str(leader_job).encode():
            return False
        pipe = self.r.pipeline(transaction=False)
        if buckets:
            band_keys = self._band_keys(_s(namespace) or "", _s(ids) or "", np.frombuffer(buckets, dtype=np.int64).tolist())
            for band_key in band_keys:
                pipe.srem(band_key, entry_id)
        pipe.delete(name, f"{self.p}:v:{entry_id}")
        pipe.zrem(f"{self.p}:z", str(entry_id))
        pipe.execute()
        if exact is not None and self.r.get(f"{self.p}:x:{_s(exact)}") == str(entry_id).encode():
            self.r.delete(f"{self.p}:x:{_s(exact)}")
        return True

    def evict(self) -> int:
        """Drop expired entries and, above `max_entries`, the oldest ones; returns how many went."""
        zset = f"{self.p}:z"
        expired = [int(m) for m in cast(list[bytes], self.r.zrangebyscore(zset, "-inf", time.time() - self.cfg.ttl_s))]
        excess = int(self.r.zcard(zset)) - len(expired) - self.cfg.max_entries
        popped = cast(list[tuple[bytes, float]], self.r.zpopmin(zset, excess)) if excess > 0 else []
        oldest = [int(m) for m, _ in popped]
        for entry_id in expired + oldest:
            self.drop(entry_id)
        if expired or oldest:
            self.r.hincrby(f"{self.p}:stat", "evicted", len(expired) + len(oldest))
        return len(expired) + len(oldest)

    def count(self, field: str, amount: int = 1) -> None:
        """Add to one of the counters `tierq cache stats` shows."""
        if amount:
            self.r.hincrby(f"{self.p}:stat", field, amount)

    def renew_leases(self, job_ids: Sequence[int]) -> None:
        """Tell followers these leaders are alive for another `lease_s`."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.set(f"{self.p}:l:{job_id}", 1, px=int(self.cfg.lease_s * 1000))
        pipe.execute()

    def alive(self, job_id: int) -> bool:
        """True while the leader's worker keeps renewing its lease."""
        return bool(self.r.exists(f"{self.p}:l:{job_id}"))
