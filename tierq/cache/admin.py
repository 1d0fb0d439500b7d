"""`tierq cache stats` and `tierq cache clear`: what the cache holds, and emptying it (per tenant)."""

from __future__ import annotations

import random
from typing import Any, cast

from tierq.cache.store import CacheStore


def cache_stats(store: CacheStore, sample: int = 200) -> dict[str, Any]:
    """Entries, hit and miss counters, and the memory of an average entry (sampled)."""
    r, p = store.r, store.p
    entries = store.entries()
    counters = {k.decode(): int(v) for k, v in cast(dict[bytes, bytes], r.hgetall(f"{p}:stat")).items()}
    low, high = (int(v or 0) for v in cast(list[bytes | None], r.mget(f"{p}:lo", f"{p}:n")))
    window = range(max(low, 1), high + 1)
    picked = random.sample(window, min(sample, len(window)))
    # An entry is its hash and its vector-and-answer string; index pages add 8 bytes per band.
    sizes = [(r.memory_usage(f"{p}:e:{i}") or 0) + (r.memory_usage(f"{p}:v:{i}") or 0) for i in picked
             if r.exists(f"{p}:e:{i}")]
    per_entry = sum(sizes) / len(sizes) if sizes else 0.0
    lookups = counters.get("hits", 0) + counters.get("coalesced", 0) + counters.get("misses", 0)
    return {
        "entries": entries,
        "hits": counters.get("hits", 0),
        "coalesced": counters.get("coalesced", 0),
        "misses": counters.get("misses", 0),
        "hit_rate": round((counters.get("hits", 0) + counters.get("coalesced", 0)) / lookups, 4) if lookups else 0.0,
        "fills": counters.get("fills", 0),
        "verify_calls": counters.get("verify_calls", 0),  # gray-zone checks made, and how many said "same"
        "verified": counters.get("verified", 0),
        "evicted": counters.get("evicted", 0),
        "entry_bytes_avg": round(per_entry),
        "threshold": store.threshold,
        "max_entries": store.cfg.max_entries,
        "ttl_s": store.cfg.ttl_s,
    }


def clear_cache(store: CacheStore, tenant: str | None = None) -> int:
    """Remove every entry (or only `tenant`'s) with its index keys; returns the entries removed."""
    r, p = store.r, store.p
    if tenant is None:
        return store.clear_all()
    removed = 0
    for name in r.scan_iter(match=f"{p}:e:*", count=1000):
        if r.hget(name, "tn") == tenant.encode() and store.drop(int(name.rsplit(b":", 1)[1])):
            removed += 1
    return removed
