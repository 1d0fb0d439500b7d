"""Registration: a question becomes a pending entry led by one job, and its answer fills it."""

from __future__ import annotations

import time
from collections.abc import Sequence
from decimal import Decimal
from typing import Any, NamedTuple

import numpy as np
import redis
from redis.typing import EncodableT, FieldT

from tierq.cache.embedders import Vectors
from tierq.cache.entries import CacheEntry, parse_entry, read_entries
from tierq.cache.eviction import Eviction
from tierq.cache.generations import Generations
from tierq.cache.identifiers import NAME_SEPARATOR, word_sketch
from tierq.cache.keys import CacheKey
from tierq.cache.layout import Layout
from tierq.cache_config import CacheConfig

# KEYS: exact key, id counter, live entry counter. ARGV: entry key prefix, now, ttl, keep seconds, then the
# entry's fields and values. If the exact key names an entry cached less than ttl ago, returns {its id, 0}; otherwise
# gives the next id, points the exact key at it and writes the entry, all at once (so an id without
# an entry is one that is gone for good, and the sweep can step over it): {id, 1}.
_REGISTER = """
local old = redis.call('GET', KEYS[1])
if old then
  local cached = redis.call('HMGET', ARGV[1] .. old, 'ts', 'w')
  if cached[1] and cached[2] and tonumber(cached[1]) >= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
    return {tonumber(old), 0}
  end
end
local id = redis.call('INCR', KEYS[2])
redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], id, 'EX', ARGV[3])
redis.call('HSET', ARGV[1] .. id, 'ts', ARGV[2], 'rt', ARGV[2], unpack(ARGV, 5))
redis.call('EXPIRE', ARGV[1] .. id, ARGV[4])
return {id, 1}
"""

# KEYS: entry, vector+answer, stats; ARGV: leader job, answer, model, tier, cost, tokens, now, ttl of
# the entry and vector. The vector stays; the answer goes after it.
_FILL = """
if redis.call('HGET', KEYS[1], 'j') ~= ARGV[1] then return 0 end
local width = tonumber(redis.call('HGET', KEYS[1], 'w') or '0')
local head = ''
if width > 0 then
  head = redis.call('GETRANGE', KEYS[2], 0, width - 1)
  if #head ~= width then return 0 end
end
redis.call('SET', KEYS[2], head .. ARGV[2], 'EX', ARGV[8])
redis.call('HSET', KEYS[1], 's', 'r', 'm', ARGV[3], 't', ARGV[4], 'c', ARGV[5], 'u', ARGV[6], 'ts', ARGV[7],
           'al', #ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('HINCRBY', KEYS[3], 'fills', 1)
return 1
"""


class Registered(NamedTuple):
    """The reply of _REGISTER: the key's entry id, and 1 if this call created it (0 if it was there)."""

    entry_id: int
    created: int


class Registration:
    """Makes jobs the leaders of new entries (one per exact question) and stores their answers."""

    def __init__(self, client: redis.Redis, config: CacheConfig, layout: Layout, generations: Generations,
                 eviction: Eviction) -> None:
        self.r = client
        self.cfg = config
        self.layout = layout
        self.generations = generations
        self.eviction = eviction
        self._register = client.register_script(_REGISTER)
        self._fill = client.register_script(_FILL)

    def register_many(self, keys: Sequence[CacheKey], vectors: Vectors | None, job_ids: Sequence[int]
                      ) -> list[tuple[int, CacheEntry | None]]:
        """Make each job the leader of its key (its new entry id, None), or if a job got there first, that
        entry; for several keys (of different exact texts) at once: a few round trips for all of them."""
        semantic = vectors is not None and self.cfg.semantic
        pipe = self.r.pipeline(transaction=False)
        for key, job_id in zip(keys, job_ids, strict=True):
            self._register_on(pipe, key, job_id, semantic)
        results: list[tuple[int, CacheEntry | None]] = []
        created: list[int] = []
        for n, reply in enumerate(pipe.execute()):
            registered = Registered(*reply)
            results.append((int(registered.entry_id), None))
            if int(registered.created):
                created.append(n)
            else:
                results[n] = self._taken(keys[n], int(registered.entry_id), job_ids[n], semantic)
                if results[n][1] is None:
                    created.append(n)
        if semantic and vectors is not None and created:
            # Index the float16 vectors that are stored, so that dropping or centring (which read them back)
            # computes the same buckets.
            halves = vectors[created].astype(np.float16)
            pipe = self.r.pipeline(transaction=False)
            for n, half in zip(created, halves, strict=True):
                pipe.set(self.layout.vector(results[n][0]), half.tobytes(), ex=self.layout.keep_s)
            pipe.execute()
            self.generations.index_many([keys[n] for n in created], halves.astype(np.float32),
                                        [results[n][0] for n in created])
        return results

    def _register_on(self, client: redis.Redis | redis.client.Pipeline, key: CacheKey, job_id: int, semantic: bool
                     ) -> Any:
        fields: dict[FieldT, EncodableT] = {"s": "p", "j": job_id, "f": key.ids, "n": key.namespace, "x": key.exact,
                                            "tn": key.tenant, "w": self.layout.width if semantic else 0,
                                            "nm": NAME_SEPARATOR.join(sorted(key.names)),
                                            "ws": word_sketch(key.words)}
        args: list[EncodableT] = [self.layout.entries, f"{time.time():.3f}", self.cfg.ttl_s, self.layout.keep_s]
        for name, value in fields.items():
            args += [name, value]
        return self._register([self.layout.exact(key.exact), self.layout.last_id, self.layout.live], args,
                              client=client)

    def _taken(self, key: CacheKey, entry_id: int, job_id: int, semantic: bool) -> tuple[int, CacheEntry | None]:
        """The key had an entry already: that entry, or (if it is gone or not whole) a new one for `job_id`."""
        for _ in range(3):
            (stored,) = read_entries(self.r, self.layout, [entry_id])
            existing = parse_entry(entry_id, stored, self.cfg.ttl_s, "exact")
            if existing is not None:
                return entry_id, existing
            self.eviction.drop(entry_id)  # gone between the two reads, or not whole (its string evicted): replace it
            registered = Registered(*(int(x) for x in self._register_on(self.r, key, job_id, semantic)))
            entry_id = registered.entry_id
            if registered.created:
                return entry_id, None
        raise RuntimeError(f"cache key {key.exact}: its entry vanished three times while registering")

    def fill(
        self, entry_id: int, leader_job: int, answer: str, model: str, tier: str, cost: Decimal,
        tokens: tuple[int, int, int] = (0, 0, 0),
    ) -> bool:
        """Store a validated answer in the leader's pending entry; False if the entry is gone or not its own."""
        keys = [self.layout.entry(entry_id), self.layout.vector(entry_id), self.layout.stat]
        args: list[EncodableT] = [leader_job, answer, model, tier, str(cost), ",".join(str(t) for t in tokens),
                                  f"{time.time():.3f}", self.layout.keep_s]
        return bool(self._fill(keys, args))
