"""The cache's keys in Redis: their names under the prefix, and how long they are kept.

Keys under the prefix P:
    P:x:<exact>        entry id of an exact request (string, TTL: ttl_s)
    P:e:<id>           the entry (hash, small enough for Redis's compact listpack encoding): state
                       p(ending)/r(eady), leader job, identifier fingerprint, names (places and
                       acronyms), namespace, tenant, time cached, vector width, and once answered the
                       model, tier, cost and tokens (tierq.cache.entries reads it)
    P:v:<id>           its float16 vector followed, once answered, by the answer (string)
    P:p:<band>:<page>  semantic index pages shared by every namespace (tierq.cache.index)
    P:c:<namespace>    the namespace's centre, once it has had `centre_after` entries (hash: epoch, float32)
    P:k:<namespace>    its entries still hashed from the origin (set; emptied when the centre is set)
    P:epoch            the last centre epoch given
    P:format           the layout version of everything under P (the older layout, recognised by its
                       sorted set P:z, is cleared at start)
    P:n, P:lo          the last entry id given, and the oldest not yet swept: ids are given in time
                       order, so the eviction sweep walks up from P:lo, dropping expired entries and, while
                       more than `max_entries` ids are in the window, the oldest ones
    P:sweep            the eviction sweep's lock (a token, 30 s)
    P:live             how many entries there are
    P:l:<job>          lease of a leader job being answered (TTL, renewed by the tier worker)
    P:stat             counters
A pending entry is a question being answered right now; lookups that find one coalesce onto its
leader instead of calling a model. An entry is served for ttl_s after it was cached: lookups check
its time, Redis expires the exact key then, and the entry and vector a margin later, so the eviction
sweep can still read the vector it needs to unindex them.
"""

from __future__ import annotations

from tierq.cache_config import CacheConfig

FORMAT = "2"  # the layout of the keys above, recorded in P:format for whoever changes it next


class Layout:
    """The names of the keys under one prefix (drawn in the module docstring) and their lifetimes."""

    def __init__(self, prefix: str, ttl_s: int, width: int) -> None:
        self.prefix = prefix
        self.ttl_s = ttl_s
        self.width = width  # bytes of the float16 vector at the head of P:v:<id>
        self.entries = f"{prefix}:e:"  # P:e:, which the scripts and searches complete with an id
        self.vectors = f"{prefix}:v:"  # P:v:, likewise
        self.last_id = f"{prefix}:n"
        self.low = f"{prefix}:lo"
        self.live = f"{prefix}:live"
        self.sweep = f"{prefix}:sweep"
        self.stat = f"{prefix}:stat"
        self.epoch = f"{prefix}:epoch"
        self.format = f"{prefix}:format"
        self.older = f"{prefix}:z"  # the sorted set of the older layout

    @classmethod
    def of(cls, config: CacheConfig) -> Layout:
        """The layout of the cache `config` describes."""
        return cls(config.prefix, config.ttl_s, 2 * config.dim)

    @property
    def keep_s(self) -> int:
        """How long Redis keeps an entry and its vector: ttl_s and a margin for the eviction sweep."""
        return self.ttl_s + max(60, self.ttl_s // 10)

    def exact(self, exact: str) -> str:
        """P:x:<exact>."""
        return f"{self.prefix}:x:{exact}"

    def entry(self, entry_id: int) -> str:
        """P:e:<id>."""
        return f"{self.entries}{entry_id}"

    def vector(self, entry_id: int) -> str:
        """P:v:<id>."""
        return f"{self.vectors}{entry_id}"

    def lease(self, job_id: int) -> str:
        """P:l:<job>."""
        return f"{self.prefix}:l:{job_id}"
