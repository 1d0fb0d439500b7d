"""The cache store: the one object a worker holds, in front of the parts of the cache in Redis.

The keys and how long they live are drawn in tierq.cache.layout; an entry's hash in tierq.cache.entries.
The parts: registration (a pending entry per question, filled by its leader), lookups (exact, then
semantic), generations (which hashing a namespace's records are under; centring), eviction (drop, the
sweep, vacuum) and leader leases.
"""

from __future__ import annotations

import hashlib
import logging
from collections.abc import Sequence
from decimal import Decimal
from typing import cast

import numpy as np
import redis

from tierq.cache.embedders import Vectors
from tierq.cache.entries import CacheEntry
from tierq.cache.eviction import Eviction
from tierq.cache.generations import Generations, Offset
from tierq.cache.index import PageIndex
from tierq.cache.keys import CacheKey
from tierq.cache.layout import FORMAT, Layout
from tierq.cache.leases import Leases
from tierq.cache.lookups import Candidates, Lookups
from tierq.cache.lsh import Hyperplanes
from tierq.cache.registration import Registration
from tierq.cache_config import CacheConfig

log = logging.getLogger(__name__)


class CacheStore:
    """One Redis database holding the cache of every tenant; safe to share across processes."""

    def __init__(self, client: redis.Redis, config: CacheConfig, threshold: float) -> None:
        self.r = client
        self.cfg = config
        self.p = config.prefix
        self.threshold = threshold
        # Candidates this similar but under the threshold are offered for verification (None: off).
        self.floor = config.verify_floor(threshold)
        self.layout = Layout.of(config)
        self.planes = Hyperplanes(config.dim, config.bands, config.rows)
        self.width = self.layout.width
        # The planes' shape salts every bucket hash: entries indexed under another shape are never
        # candidates (they are still found exactly, and age out).
        salt = hashlib.blake2b(f"{config.dim}:{config.bands}:{config.rows}".encode(), digest_size=16).digest()
        self.index = PageIndex(client, self.p, config.pages, config.bands, salt)
        self.generations = Generations(client, config, self.layout, self.planes, self.index)
        self.eviction = Eviction(client, config, self.layout, self.index, self.generations)
        self.registration = Registration(client, config, self.layout, self.generations, self.eviction)
        self.lookups = Lookups(client, config, self.layout, self.planes, self.index, self.generations, threshold,
                               self.floor)
        self.leases = Leases(client, self.layout, config.lease_s)
        self.far = self.lookups.far
        self._check_format()

    def _check_format(self) -> None:
        """Clear what an older tierq left under this prefix (a cache: its entries are only re-asked).

        The older layout is recognised by its eviction sorted set, P:z, which this one never writes;
        a missing P:format alone proves nothing (a FLUSHDB while workers run removes it too).
        """
        if self.r.exists(self.layout.older):
            log.warning("cache: clearing the entries under %s:*, written in an older layout", self.p)
            self.clear_all()
        self._mark_format()

    def _mark_format(self) -> None:
        """Record the layout unless it is recorded already: a read, so that `tierq cache stats` and `tierq cache
        clear` work on a Redis at maxmemory (`noeviction` refuses every write; clearing is how it gets memory
        back)."""
        if self.r.get(self.layout.format) != FORMAT.encode():
            self.r.set(self.layout.format, FORMAT)

    def clear_all(self) -> int:
        """Delete every key under the prefix but the epoch counter (an epoch is never given twice, so a
        process that remembers a cleared namespace's centre is told so); returns how many entries there were."""
        entries = self.entries()
        batch: list[bytes] = []
        keep = {self.layout.epoch.encode(), self.layout.format.encode()}
        for name in cast(list[bytes], self.r.scan_iter(match=f"{self.p}:*", count=1000)):
            if name in keep:
                continue
            batch.append(name)
            if len(batch) >= 1000:
                self.r.delete(*batch)
                batch.clear()
        if batch:
            self.r.delete(*batch)
        self._mark_format()
        self.generations.clear()
        return entries

    def lookup(self, keys: Sequence[CacheKey], vectors: Vectors | None) -> list[CacheEntry | None]:
        """Exact matches first, then (for the rest, when vectors are given) the nearest semantic match."""
        return self.lookups.lookup(keys, vectors)

    def nearest(self, keys: Sequence[CacheKey], vectors: Vectors, gray: bool = False) -> list[CacheEntry | None]:
        """For each query, the most similar candidate at or above the threshold whose entry is there, fresh
        and its own; with `gray`, else the most similar ready one at or above `floor` (kind "gray")."""
        return self.lookups.nearest(keys, vectors, gray)

    def candidates(self, keys: Sequence[CacheKey], vectors: Vectors) -> list[Candidates]:
        """For each query, the ids and float32 vectors of the entries its probes found."""
        return self.lookups.candidates(keys, vectors)

    def generation(self, namespace: str) -> tuple[int, Offset]:
        """0 while the namespace is hashed from the origin; its centre's epoch and offset once it has one."""
        return self.generations.current(namespace)

    def centre(self, namespace: str) -> int:
        """Give a namespace its centre and move its generation-0 entries into its generation; returns how many."""
        return self.generations.centre(namespace)

    def register(self, key: CacheKey, vector: Sequence[float] | None, job_id: int) -> tuple[int, CacheEntry | None]:
        """Make `job_id` the leader of `key` (its new entry id, None); if a job got there first, its entry."""
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.register_many([key], vectors, [job_id])[0]

    def register_many(self, keys: Sequence[CacheKey], vectors: Vectors | None, job_ids: Sequence[int]
                      ) -> list[tuple[int, CacheEntry | None]]:
        """`register` for several keys (of different exact texts) at once: a few round trips for all of them."""
        return self.registration.register_many(keys, vectors, job_ids)

    def fill(
        self, entry_id: int, leader_job: int, answer: str, model: str, tier: str, cost: Decimal,
        tokens: tuple[int, int, int] = (0, 0, 0),
    ) -> bool:
        """Store a validated answer in the leader's pending entry, then run the eviction sweep; False if the
        entry is gone or not its own."""
        if not self.registration.fill(entry_id, leader_job, answer, model, tier, cost, tokens):
            return False
        self.evict()
        return True

    def drop(self, entry_id: int, leader_job: int | None = None) -> bool:
        """Remove an entry (only if `leader_job` still leads it, when given) with its index records."""
        return self.eviction.drop(entry_id, leader_job)

    def evict(self, batch: int = 100, most: int = 2_000) -> int:
        """Drop expired entries and, while more than `max_entries` ids are live, the oldest; returns how many."""
        return self.eviction.evict(batch, most)

    def vacuum(self, pages: int | None = None) -> int:
        """Cut index records of entries Redis expired, from `pages` random pages or from all of them."""
        return self.eviction.vacuum(pages)

    def entries(self) -> int:
        """Live entries: registered and not dropped. (One that Redis expired on its own, because no fill
        ran the sweep for its whole margin, still counts until `tierq cache clear`.)"""
        return int(cast(bytes | None, self.r.get(self.layout.live)) or 0)

    def count(self, field: str, amount: int = 1) -> None:
        """Add to one of the counters `tierq cache stats` shows."""
        if amount:
            self.r.hincrby(self.layout.stat, field, amount)

    def renew_leases(self, job_ids: Sequence[int]) -> None:
        """Tell followers these leaders are alive for another `lease_s`."""
        self.leases.renew(job_ids)

    def alive(self, job_id: int) -> bool:
        """True while the leader's worker keeps renewing its lease."""
        return self.leases.alive(job_id)
