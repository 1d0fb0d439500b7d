"""The cache's parts against a real Redis: identifiers, the hashing embedder, LSH, the store."""

from __future__ import annotations

import time
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
import redis

from conftest import RedisDbs
from tierq.cache import CacheStore, HashingEmbedder, cache_key
from tierq.cache.identifiers import fingerprint, identifiers
from tierq.cache.lsh import Hyperplanes
from tierq.config import CacheConfig

@pytest.fixture()
def store(redis_dbs: RedisDbs) -> Iterator[CacheStore]:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    yield CacheStore(client, CacheConfig(prefix="t", max_entries=1000, ttl_s=3600), threshold=0.9)
    client.flushdb()
    client.close()


def key(text: str, tenant: str = "a", **params: object):  # type: ignore[no-untyped-def]
    return cache_key(tenant=tenant, task_type="support", system_prompt=None,
                     messages=[{"role": "user", "content": text}], params=dict(params), tier_floor=None)


EMBED = HashingEmbedder()


def test_identifiers_tell_apart_orders_amounts_dates_emails_urls() -> None:
    base = "Where is order #48213 placed on 2024-05-01 for $1,250.00? Mail me at ann@example.com, see https://x.io/a"
    assert identifiers(base) == {"48213", "2024-05-01", "1,250.00", "ann@example.com", "https://x.io/a"}
    for other in ("Where is order #48214", "on 2024-05-02", "for $1,250.01", "at bob@example.com", "https://x.io/b"):
        assert fingerprint(base) != fingerprint(base.replace(base.split(" ")[0], other))
    assert fingerprint("Where is my parcel?") == fingerprint("where is my parcel") == ""


def test_weekday_and_month_names_are_dates() -> None:
    assert fingerprint("Is the branch open on Friday?") != fingerprint("Is the branch open on Monday?")
    assert fingerprint("Card arrived in Sept") == fingerprint("card arrived in september")
    assert fingerprint("Shares close higher on Tuesday") == fingerprint("shares close higher on TUESDAY") != ""
    # "May" and "March" are verbs far more often than months.
    assert fingerprint("May I change my PIN?") == fingerprint("Can I change my PIN?") == ""
    assert fingerprint("We march on") == ""


def test_hashing_embedder_is_near_for_near_identical_text() -> None:
    a, b, c = EMBED.embed(["Where is my parcel? It has not arrived.", "where is my parcel?? it has not arrived",
                           "How do I change my password?"])
    assert float(a @ b) > 0.9 > 0.5 > float(a @ c)
    assert np.allclose(np.linalg.norm(EMBED.embed(["x", "yy"]), axis=1), 1.0)


def test_lsh_odds_follow_the_formula() -> None:
    planes = Hyperplanes(384, bands=20, rows=12)
    assert planes.collision_odds(0.95) > 0.99 and planes.collision_odds(0.0) < 0.01
    rng = np.random.default_rng(1)
    v = rng.standard_normal((1, 384)).astype(np.float32)
    assert (planes.buckets(v) == planes.buckets(v * 3)).all()


def test_register_fill_and_exact_and_semantic_hits(store: CacheStore) -> None:
    k1 = key("Where is my parcel? It has not arrived.")
    vec = EMBED.embed([k1.text])[0]
    entry_id, existing = store.register(k1, vec.tolist(), job_id=7)
    assert existing is None
    pending = store.lookup([k1], None)[0]
    assert pending is not None and not pending.ready and pending.leader_job == 7
    second_id, leader = store.register(k1, vec.tolist(), job_id=8)
    assert leader is not None and leader.leader_job == 7 and second_id == entry_id
    assert store.fill(entry_id, 8, "no", "m", "hot", Decimal(1)) is False  # not the leader
    assert store.fill(entry_id, 7, "It ships today.", "sim-nano", "hot", Decimal("0.0001"))
    near = key("where is my parcel?? it has not arrived")
    vectors = EMBED.embed([k1.text, near.text])
    exact, semantic = store.lookup([k1, near], vectors)
    assert exact is not None and exact.ready and exact.kind == "exact" and exact.answer == "It ships today."
    assert semantic is not None and semantic.kind == "semantic" and semantic.similarity >= 0.9
    assert semantic.cost_usd == Decimal("0.0001")


def test_no_hit_across_tenants_params_identifiers_or_below_threshold(store: CacheStore) -> None:
    k1 = key("Where is order 48213? It has not arrived.")
    entry_id, _ = store.register(k1, EMBED.embed([k1.text])[0].tolist(), job_id=1)
    store.fill(entry_id, 1, "answer", "m", "hot", Decimal(0))
    others = [key(k1.text, tenant="b"), key(k1.text, temperature=0.9), key("Where is order 48214? It has not arrived."),
              key("Can I pay in instalments for a standing desk?")]
    vectors = EMBED.embed([k.text for k in others])
    assert store.lookup(others, vectors) == [None, None, None, None]


def test_semantic_hits_are_never_below_the_threshold(store: CacheStore) -> None:
    texts = [f"ticket about parcel {chr(97 + i % 26)}{chr(97 + i // 26)} late delivery" for i in range(300)]
    vectors = EMBED.embed(texts)
    for i, text in enumerate(texts):
        k = key(text)
        entry_id, _ = store.register(k, vectors[i].tolist(), job_id=i)
        store.fill(entry_id, i, text, "m", "hot", Decimal(0))
    queries = [key(t.upper() + "!") for t in texts[:100]] + [key(f"parcel {i} question") for i in range(100)]
    qv = EMBED.embed([q.text for q in queries])
    for q, v, found in zip(queries, qv, store.lookup(queries, qv), strict=True):
        if found is not None:
            assert found.similarity >= 0.9
            assert found.similarity == pytest.approx(float(v @ EMBED.embed([found.answer or ""])[0]), abs=2e-3)


def test_eviction_and_expiry_are_not_served(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    small = CacheStore(client, CacheConfig(prefix="t", max_entries=3, ttl_s=1), threshold=0.9)
    keys = [key(f"question number {word}") for word in ("one", "two", "three", "four", "five")]
    for n, k in enumerate(keys):
        entry_id, _ = small.register(k, EMBED.embed([k.text])[0].tolist(), job_id=n)
        small.fill(entry_id, n, f"answer {n}", "m", "hot", Decimal(0))
    found = small.lookup(keys, None)
    assert [f is not None for f in found] == [False, False, True, True, True]
    time.sleep(1.2)
    assert small.lookup(keys, EMBED.embed([k.text for k in keys])) == [None] * 5
    assert small.evict() == 3 and client.zcard("t:z") == 0
    client.flushdb()
    client.close()


def test_stats_and_clear_by_tenant(store: CacheStore) -> None:
    from tierq.cache.admin import cache_stats, clear_cache

    for n, tenant in enumerate(("acme", "acme", "globex")):
        k = key(f"question {n} about parcels", tenant=tenant)
        entry_id, _ = store.register(k, EMBED.embed([k.text])[0].tolist(), job_id=n)
        store.fill(entry_id, n, "answer", "m", "hot", Decimal(0))
    stats = cache_stats(store)
    assert stats["entries"] == 3 and stats["fills"] == 3 and stats["entry_bytes_avg"] > 0
    assert clear_cache(store, tenant="acme") == 2
    assert cache_stats(store)["entries"] == 1
    assert store.lookup([key("question 2 about parcels", tenant="globex")], None)[0] is not None
    assert clear_cache(store) == 1 and list(store.r.scan_iter(match="t:*")) == []
