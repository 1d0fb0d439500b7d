"""Removing entries: dropping one with its index records, the eviction sweep, and vacuuming the pages."""

from __future__ import annotations

import random
import time
import uuid
from typing import cast

import redis

from tierq.cache.entries import decoded
from tierq.cache.generations import Generations
from tierq.cache.index import PageIndex
from tierq.cache.layout import Layout
from tierq.cache_config import CacheConfig

# KEYS: entry, vector+answer, live entry counter. Deletes both; 1 if the entry was there.
_DROP = """
local gone = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
if gone == 1 then redis.call('DECR', KEYS[3]) end
return gone
"""

# KEYS: a lock (or an exact key). ARGV: the token it was taken with (the entry it names). Deletes it only
# if it still holds that value.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""


class Eviction:
    """Drops entries: one at a time, the expired and the oldest over `max_entries`, and stale index records."""

    def __init__(self, client: redis.Redis, config: CacheConfig, layout: Layout, index: PageIndex,
                 generations: Generations) -> None:
        self.r = client
        self.cfg = config
        self.layout = layout
        self.index = index
        self.generations = generations
        self._drop = client.register_script(_DROP)
        self._unlock = client.register_script(_UNLOCK)

    def drop(self, entry_id: int, leader_job: int | None = None) -> bool:
        """Remove an entry (only if `leader_job` still leads it, when given) with its index records."""
        name, vkey = self.layout.entry(entry_id), self.layout.vector(entry_id)
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(name, ["j", "x", "n", "f", "w", "g"])
        pipe.getrange(vkey, 0, self.layout.width - 1)
        (job, exact, namespace, ids, width, generation), head = pipe.execute()
        if job is None:
            # Gone already (Redis expired it); records left in index pages are cut by the next search
            # that meets them, or by a vacuum, since its vector is gone too.
            self.r.delete(vkey)
            return False
        if leader_job is not None and job != str(leader_job).encode():
            return False
        if int(width or 0) == self.layout.width and len(head) == self.layout.width and generation is not None:
            self.generations.unindex(decoded(namespace) or "", decoded(ids) or "", int(generation), head, entry_id)
        self._drop([name, vkey, self.layout.live], [])
        if exact is not None:
            # Only if the exact key still names this entry, in one step: a registration that took it over
            # meanwhile (after a GET and before a DEL) keeps its key.
            self._unlock([self.layout.exact(exact.decode())], [str(entry_id)])
        return True

    def evict(self, batch: int = 100, most: int = 2_000) -> int:
        """Drop expired entries and, while more than `max_entries` ids are live, the oldest; returns how many.

        Ids are given in registration order, so the sweep walks up from the oldest (P:lo), at most
        `most` ids per call, saving its place after each batch. One process sweeps at a time (a lock
        it releases only if it still holds it). An id without an entry was dropped already (or never
        won its exact key) and is stepped over.
        """
        lock, token = self.layout.sweep, uuid.uuid4().hex
        if not self.r.set(lock, token, nx=True, px=30_000):
            return 0
        dropped = 0
        try:
            marks = cast(list[bytes | None], self.r.mget(self.layout.low, self.layout.last_id))
            low, high = (int(v or 0) for v in marks)
            low, stop = max(low, 1), max(low, 1) + most
            cutoff = time.time() - self.cfg.ttl_s
            while low <= min(high, stop):
                window = range(low, min(high, low + batch - 1) + 1)
                pipe = self.r.pipeline(transaction=False)
                for entry_id in window:
                    pipe.hget(self.layout.entry(entry_id), "rt")
                stamps = cast(list[bytes | None], pipe.execute())
                done = False
                for entry_id, stamp in zip(window, stamps, strict=True):
                    if stamp is not None and high - entry_id < self.cfg.max_entries and float(stamp) >= cutoff:
                        done = True
                        break
                    if stamp is not None and self.drop(entry_id):
                        dropped += 1
                    low = entry_id + 1
                self.r.set(self.layout.low, low)
                if done:
                    break
        finally:
            self._unlock([lock], [token])
        if dropped:
            self.r.hincrby(self.layout.stat, "evicted", dropped)
        self.vacuum(2)
        return dropped

    def vacuum(self, pages: int | None = None) -> int:
        """Cut index records of entries Redis expired before the sweep reached them, from `pages` random
        pages (each fill vacuums two, so every page is visited now and then) or from all of them."""
        prefix = self.index.page_prefix
        if pages is None:
            names = [n.decode() for n in cast(list[bytes], self.r.scan_iter(match=f"{prefix}*", count=1000))]
            return sum(self.index.vacuum(self.r, names[i : i + 500], self.layout.vectors)
                       for i in range(0, len(names), 500))
        picks = zip(random.choices(range(self.cfg.bands), k=pages), random.choices(range(self.cfg.pages), k=pages),
                    strict=True)
        return self.index.vacuum(self.r, [f"{prefix}{band}:{page}" for band, page in picks], self.layout.vectors)
