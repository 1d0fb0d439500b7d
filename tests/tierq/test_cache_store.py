"""The cache's parts against a real Redis: identifiers, the hashing embedder, LSH, the store."""

from __future__ import annotations

import concurrent.futures
import time
from collections.abc import Iterator
from decimal import Decimal

import numpy as np
import pytest
import redis
from conftest import RedisDbs

from tierq.cache import CacheStore, HashingEmbedder, cache_key
from tierq.cache.identifiers import (
    NAME_SEPARATOR,
    SKETCH_WORDS,
    added,
    added_to_sketch,
    asks,
    content_words,
    fingerprint,
    identifiers,
    names,
    sketch_says,
    substituted,
    word_hashes,
    word_sketch,
)
from tierq.cache.lsh import Hyperplanes
from tierq.cache_config import CacheConfig


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


def test_register_many_leads_new_keys_and_returns_the_entries_of_known_ones(store: CacheStore) -> None:
    known = key("How do I change my password?")
    known_id, _ = store.register(known, EMBED.embed([known.text])[0].tolist(), job_id=1)
    store.fill(known_id, 1, "Use the settings page.", "sim-nano", "hot", Decimal("0.0002"))
    keys = [key("Where is my parcel? It has not arrived."), known, key("Can I pay in instalments for a desk?")]
    registered = store.register_many(keys, EMBED.embed([k.text for k in keys]), [10, 11, 12])
    assert [existing is None for _, existing in registered] == [True, False, True]
    entry_id, existing = registered[1]
    assert entry_id == known_id and existing is not None and existing.answer == "Use the settings page."
    assert len({entry_id for entry_id, _ in registered}) == 3
    # The new entries are indexed: a near text finds the pending entry of its leader.
    near = key("where is my parcel?? it has not arrived")
    found = store.lookup([near], EMBED.embed([near.text]))[0]
    assert found is not None and found.kind == "semantic" and found.leader_job == 10 and not found.ready


def test_probes_of_many_vectors_are_those_of_each_vector() -> None:
    planes = Hyperplanes(384, bands=24, rows=20)
    rng = np.random.default_rng(3)
    vectors = rng.standard_normal((40, 384)).astype(np.float32)
    offset = planes.offset(vectors.mean(axis=0))
    bands, buckets = planes.probes_many(vectors, 400, offset)
    assert bands.shape == buckets.shape == (40, 400)
    for row, vector in enumerate(vectors):
        one_bands, one_buckets = planes.probes(vector, 400, offset)
        # The same probes; the order of near-equal scores may differ in the last bit of a float sum.
        one = set(zip(one_bands.tolist(), one_buckets.tolist(), strict=True))
        assert one == set(zip(bands[row].tolist(), buckets[row].tolist(), strict=True))
        assert set(bands[row, :24].tolist()) == set(range(24)), "every band's own bucket comes first"


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
    for v, found in zip(qv, store.lookup(queries, qv), strict=True):
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
    assert small.evict() == 3 and small.entries() == 0
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
    assert clear_cache(store) == 1 and list(store.r.scan_iter(match="t:*")) == [b"t:format"]  # no centre was made


def _page_bytes(client: redis.Redis, prefix: str) -> int:
    return sum(int(client.strlen(name)) for name in client.scan_iter(match=f"{prefix}:p:*", count=1000))


def _tickets(n: int, start: int = 0) -> list[str]:
    words = ["parcel", "refund", "invoice", "password", "delivery", "voucher", "account", "address"]
    return [f"my {words[i % 8]} question {chr(97 + i % 26)}{chr(97 + (i // 26) % 26)} about the {words[(i // 8) % 8]}"
            for i in range(start, start + n)]


def test_a_namespace_is_centred_after_enough_entries_and_keeps_its_hits(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    cfg = CacheConfig(prefix="t", max_entries=1000, ttl_s=3600, centre_after=20)
    store = CacheStore(client, cfg, threshold=0.9)
    stale = CacheStore(client, cfg, threshold=0.9)  # another worker, which saw the namespace before its centre
    texts = _tickets(30)
    keys = [key(t) for t in texts]
    assert stale.generation(keys[0].namespace)[0] == 0
    for n, (k, v) in enumerate(zip(keys[:25], EMBED.embed(texts[:25]), strict=True)):
        entry_id, _ = store.register(k, v.tolist(), job_id=n + 1)
        assert store.fill(entry_id, n + 1, f"answer {n}", "m", "hot", Decimal(0))
    namespace = keys[0].namespace
    centre = np.frombuffer(client.hget(f"t:c:{namespace}", "v") or b"", dtype=np.float32)
    assert centre.shape == (384,) and float(np.linalg.norm(centre)) > 0.1
    assert client.scard(f"t:k:{namespace}") == 0
    epoch = client.hget(f"t:c:{namespace}", "e")
    assert epoch is not None and {client.hget(f"t:e:{i}", "g") for i in range(1, 26)} == {epoch}
    assert _page_bytes(client, "t") == 24 * cfg.bands * 25
    # The stale worker still believes generation 0: its writes and searches are refused, it reloads, retries.
    for n, (k, v) in enumerate(zip(keys[25:], EMBED.embed(texts[25:]), strict=True), start=25):
        entry_id, _ = stale.register(k, v.tolist(), job_id=n + 1)
        stale.fill(entry_id, n + 1, f"answer {n}", "m", "hot", Decimal(0))
    assert stale.generation(namespace)[0] == int(epoch) and client.hget("t:e:30", "g") == epoch
    queries = [key(t.upper() + "!") for t in texts]
    for reader in (store, CacheStore(client, cfg, threshold=0.9)):
        found = reader.lookup(queries, EMBED.embed([q.text for q in queries]))
        assert [f.answer if f else None for f in found] == [f"answer {n}" for n in range(30)]
    # Dropping an entry, migrated or not, cuts exactly its records.
    assert store.drop(3) and stale.drop(28)
    assert _page_bytes(client, "t") == 24 * cfg.bands * 28
    client.flushdb()
    client.close()


def test_centring_is_safe_to_repeat_and_to_race(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    cfg = CacheConfig(prefix="t", max_entries=1000, ttl_s=3600, centre_after=10_000)
    store = CacheStore(client, cfg, threshold=0.9)
    texts = _tickets(40)
    for n, (text, v) in enumerate(zip(texts, EMBED.embed(texts), strict=True)):
        entry_id, _ = store.register(key(text), v.tolist(), job_id=n + 1)
        store.fill(entry_id, n + 1, text, "m", "hot", Decimal(0))
    namespace = key(texts[0]).namespace
    client.delete("t:v:7", "t:e:7")  # an entry Redis expired: centring forgets it
    results = []
    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        for moved in pool.map(lambda _: CacheStore(client, cfg, 0.9).centre(namespace), range(4)):
            results.append(moved)
    assert sum(results) == 39 and client.scard(f"t:k:{namespace}") == 0
    assert store.centre(namespace) == 0
    # Entry 7's records (in generation 0, which nobody searches now) are garbage until a vacuum.
    assert _page_bytes(client, "t") == 24 * cfg.bands * 40
    assert store.vacuum() == cfg.bands and _page_bytes(client, "t") == 24 * cfg.bands * 39
    # A search cuts garbage it meets: entry 9's vector expires, then its near-duplicate is looked up.
    client.delete("t:v:9")
    found = store.lookup([key(texts[8] + "!")], EMBED.embed([texts[8] + "!"]))
    assert found[0] is None or found[0].id != 9
    assert 24 * cfg.bands * 38 <= _page_bytes(client, "t") < 24 * cfg.bands * 39
    client.flushdb()
    client.close()


def test_the_sweep_keeps_the_newest_entries_and_steps_over_dropped_ones(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    small = CacheStore(client, CacheConfig(prefix="t", max_entries=5, ttl_s=3600), threshold=0.9)
    keys = [key(f"question {n} about refunds") for n in range(12)]
    for n, k in enumerate(keys):
        entry_id, _ = small.register(k, EMBED.embed([k.text])[0].tolist(), job_id=n)
        if n in (3, 8):
            assert small.drop(entry_id, n)  # a leader that failed
        else:
            small.fill(entry_id, n, f"answer {n}", "m", "hot", Decimal(0))
        assert small.entries() <= 5
    served = [f is not None for f in small.lookup(keys, None)]
    assert served == [False] * 7 + [True, False, True, True, True]
    assert small.entries() == 4 and int(client.get("t:lo") or 0) == 8
    assert _page_bytes(client, "t") == 24 * small.cfg.bands * 4
    client.flushdb()
    client.close()


def test_one_leader_when_many_register_the_same_question_at_once(store: CacheStore) -> None:
    k = key("Where is my parcel? It has not arrived.")
    vector = EMBED.embed([k.text])[0].tolist()
    with concurrent.futures.ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda job: store.register(k, vector, job_id=job), range(1, 9)))
    leaders = [entry_id for entry_id, existing in results if existing is None]
    assert len(leaders) == 1 and {entry_id for entry_id, _ in results} == set(leaders)
    assert {existing.leader_job for _, existing in results if existing is not None} <= {1, 2, 3, 4, 5, 6, 7, 8}
    assert len({existing.leader_job for _, existing in results if existing is not None}) == 1
    assert store.entries() == 1


def test_a_worker_with_an_old_view_of_the_centre_still_unindexes_and_finds(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    cfg = CacheConfig(prefix="t", max_entries=1000, ttl_s=3600, centre_after=10)
    classify, tier = CacheStore(client, cfg, 0.9), CacheStore(client, cfg, 0.9)
    texts = _tickets(30)
    namespace = key(texts[0]).namespace
    assert tier.generation(namespace) == (0, None)  # the tier worker looked before the namespace was centred
    for n, text in enumerate(texts):
        entry_id, _ = classify.register(key(text), EMBED.embed([text])[0].tolist(), job_id=n + 1)
        classify.fill(entry_id, n + 1, text, "m", "hot", Decimal(0))
    assert tier.drop(25, 25) and tier.drop(5, 5)
    assert _page_bytes(client, "t") == 24 * cfg.bands * 28
    # The namespace is cleared and centred again (a new epoch) while a worker remembers the old one.
    remembered = classify.generation(namespace)
    tier.clear_all()
    for n, text in enumerate(texts[:20]):
        entry_id, _ = tier.register(key(text), EMBED.embed([text])[0].tolist(), job_id=100 + n)
        tier.fill(entry_id, 100 + n, f"again {n}", "m", "hot", Decimal(0))
    assert classify.generation(namespace) == remembered  # still the old epoch, until a script says otherwise
    found = classify.lookup([key(t + "!") for t in texts[:20]], EMBED.embed([t + "!" for t in texts[:20]]))
    assert [f.answer if f else None for f in found] == [f"again {n}" for n in range(20)]
    assert classify.generation(namespace)[0] > remembered[0]
    client.flushdb()
    client.close()


def test_an_entry_whose_answer_string_is_gone_is_not_served_and_is_replaced(store: CacheStore) -> None:
    k = key("Where is my parcel? It has not arrived.")
    entry_id, _ = store.register(k, EMBED.embed([k.text])[0].tolist(), job_id=1)
    store.fill(entry_id, 1, "It ships today.", "m", "hot", Decimal(0))
    store.r.delete(f"t:v:{entry_id}")  # e.g. evicted alone by a maxmemory policy
    assert store.lookup([k], EMBED.embed([k.text])) == [None]
    new_id, existing = store.register(k, EMBED.embed([k.text])[0].tolist(), job_id=2)
    assert existing is None and new_id != entry_id and store.entries() == 1


def test_the_sweep_goes_by_registration_time_and_a_late_fill_does_not_block_it(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    short = CacheStore(client, CacheConfig(prefix="t", max_entries=100, ttl_s=1), threshold=0.9)
    late, early = key("a question answered late"), key("a question answered early")
    late_id, _ = short.register(late, EMBED.embed([late.text])[0].tolist(), job_id=1)
    early_id, _ = short.register(early, EMBED.embed([early.text])[0].tolist(), job_id=2)
    short.fill(early_id, 2, "early", "m", "hot", Decimal(0))
    time.sleep(1.2)
    assert short.fill(late_id, 1, "late", "m", "hot", Decimal(0))  # its fill sweeps both: registered > ttl ago
    assert short.entries() == 0 and _page_bytes(client, "t") == 0
    client.flushdb()
    client.close()


def test_dropping_every_entry_leaves_no_record(store: CacheStore) -> None:
    rng = np.random.default_rng(3)
    dense = rng.standard_normal((200, 384)).astype(np.float32) * 0.2 + rng.standard_normal(384).astype(np.float32)
    dense /= np.linalg.norm(dense, axis=1, keepdims=True)
    ids = [store.register(key(f"ticket {i}"), dense[i].tolist(), job_id=i + 1)[0] for i in range(200)]
    assert _page_bytes(store.r, "t") == 24 * store.cfg.bands * 200
    assert all(store.drop(entry_id) for entry_id in ids)
    assert _page_bytes(store.r, "t") == 0 and store.entries() == 0


def test_a_cache_left_by_an_older_tierq_is_cleared_at_start(redis_dbs: RedisDbs) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    client.set("t:n", 7)
    client.zadd("t:z", {"7": 1.0})
    client.hset("t:e:7", mapping={"s": "r", "j": 1, "a": "an answer in the old layout", "ts": int(time.time())})
    store = CacheStore(client, CacheConfig(prefix="t"), threshold=0.9)
    assert sorted(client.scan_iter(match="t:*")) == [b"t:format"] and store.entries() == 0
    # A cache of this layout whose format key was flushed away is kept.
    entry_id, _ = store.register(key("a question"), EMBED.embed(["a question"])[0].tolist(), job_id=1)
    client.delete("t:format")
    assert CacheStore(client, CacheConfig(prefix="t"), threshold=0.9).entries() == 1
    client.flushdb()
    client.close()


def test_what_a_request_says_besides_its_text_is_part_of_its_namespace() -> None:
    def ask(text: str, image: str | None = None, name: str | None = None, **params: object) -> str:
        content: object = text if image is None else [{"type": "text", "text": text},
                                                       {"type": "image_url", "image_url": {"url": image}}]
        message: dict[str, object] = {"role": "user", "content": content}
        if name is not None:
            message["name"] = name
        return cache_key(tenant="a", task_type="t", system_prompt=None, messages=[message], params=dict(params),
                         tier_floor=None).namespace

    question = "What is in this picture?"
    assert ask(question, "data:image/png;base64,AAAA") != ask(question, "data:image/png;base64,BBBB")
    assert ask(question, "data:image/png;base64,AAAA") == ask(question, "data:image/png;base64,AAAA")
    assert ask(question, "https://x.io/cat.png") != ask(question)
    assert ask("Who am I?", name="ann") != ask("Who am I?", name="bob") != ask("Who am I?")
    assert ask(question, seed=1) != ask(question, seed=2)
    assert ask(question, response_format={"type": "json_object"}) != ask(question)
    assert ask("Where is my parcel?") == ask("where is my parcel??")  # the text itself is the semantic layer's
    # tierq's own options: a JSON schema changes which answers are kept, a deadline only how they are fetched.
    assert ask(question, _tierq={"json_schema": {"type": "object"}}) != ask(question)
    assert ask(question, _tierq={"deadline_at": 1.8e9}) == ask(question)
    assert ask(question, _tierq={"deadline_at": 1.8e9, "compress": True}) == ask(question, _tierq={"compress": True})


@pytest.mark.parametrize(("a", "b"), [
    ("Why is this important?", "Why is this losing importance?"),
    ("My card works abroad", "My card does not work abroad"),
    ("Can I pay without a PIN?", "Can I pay with a PIN?"),
    # contractions as quick messages and word processors write them
    ("My card works abroad", "My card doesnt work abroad"),
    ("My card works abroad", "My card don\u2019t work abroad"),
    ("Why did my top up go through?", "Why didn`t my top up go through?"),
    ("Can I have a virtual card?", "Can I have a non virtual card?"),
    ("My physical card is not working", "My non-physical card will not work"),
    ("How do I know if my top-up went through?", "How do I know if my top up was unsuccessful?"),
])
def test_negation_blocks_a_semantic_hit(a: str, b: str) -> None:
    assert fingerprint(a) != fingerprint(b)


@pytest.mark.parametrize(("a", "b"), [
    ("Where is my parcel?", "where is my parcel??"),
    ("My card has not arrived yet", "My card still hasn't arrived"),
    ("Why did my top up fail?", "Why didn't my top up work?"),
    ("I lost my card", "My card was lost, what now?"),
    ("Why didn't my top up go through?", "Why didnt my top up go through"),
    ("I don\u2019t know this charge", "I do not know this charge"),
    ("My non-physical card will not work", "My virtual card works"),
])
def test_the_same_polarity_still_matches(a: str, b: str) -> None:
    assert fingerprint(a) == fingerprint(b)


@pytest.mark.parametrize(("a", "b"), [
    ("What is the capital of France?", "What is the capital of Italy?"),
    ("U.S. income tax & charitable donations: what can I deduct?",
     "UK income tax & charitable donations: what can I deduct?"),
    ("How do I move my workspace to the EU region?", "How do I move my workspace to the US region?"),
    # a question asking for another kind of answer: a reason, not a method or a list
    ("Why do you need to peel peaches to can them?", "How to peel peaches?"),
    ("What do you need to verify my identity?", "Why do you need to verify my identity?"),
    # people and products, by their capitalised names
    ("What did Obama say about Syria?", "What did Trump say about Syria?"),
    ("How do I reset my Samsung phone?", "How do I reset my Nokia phone?"),
])
def test_a_name_swapped_for_another_is_no_semantic_hit(redis_dbs: RedisDbs, a: str, b: str) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    # A threshold low enough that the vectors alone would hit: the names guard is what must refuse it.
    loose = CacheStore(client, CacheConfig(prefix="t", max_entries=1000, ttl_s=3600), threshold=0.5)
    try:
        stored = key(a)
        entry_id, _ = loose.register(stored, EMBED.embed([a])[0].tolist(), job_id=1)
        assert loose.fill(entry_id, 1, "an answer about the first place", "sim-nano", "hot", Decimal(0))
        swapped, same = key(b), key(a.replace("?", "??"))
        found = loose.lookup([swapped, same], EMBED.embed([b, same.text]))
        assert float(EMBED.embed([a])[0] @ EMBED.embed([b])[0]) >= 0.5
        assert found[0] is None, f"{b!r} was answered with the entry of {a!r}"
        assert found[1] is not None and found[1].kind == "semantic"
    finally:
        client.flushdb()
        client.close()


def test_names_are_places_and_acronyms_and_only_a_swap_blocks() -> None:
    assert names("Can you help us?") == frozenset()  # the pronoun, not the country
    assert names("Flights from the U.S. and the United States to Tel Aviv") == {"US", "Tel Aviv"}
    assert names("PLEASE HELP ME, MY CARD IS LOCKED") == frozenset()  # shouting, not naming
    assert substituted(names("the capital of France"), names("the capital of Italy"))
    assert not substituted(names("Moffitt said the NHS would pay"), names("the NHS would pay"))  # one side adds
    assert not substituted(names("Where is my parcel?"), names("Where is my parcel, please?"))


def test_proper_names_are_capitalised_words_that_start_no_sentence() -> None:
    assert names("What did Obama say about Syria?") == {"Syria", "~obama", "?other"}
    assert names("Obama spoke. Then Syria answered.") == {"Syria"}  # each capitalised only as a sentence's first word
    assert names('He said: "Please call me." Samsung said no.') == set()
    assert names("I'm new here and I think I'd like a card") == set()
    assert names("Car Bomb Hits Swedish Consulate in Benghazi") == set()  # a headline in title case
    assert "~royc" in names("The firm hired Hollins Jr. Royce and Smith as its lawyers")  # "Jr." ends no sentence
    assert "~then" not in names("We flew to the U.S. Then we rested.")  # but a place's own full stop may
    many = "Flights from France, Italy, Spain, Germany, Norway, Sweden, Poland, Greece, Turkey, Egypt and Japan"
    assert len(NAME_SEPARATOR.join(names(many)).encode()) <= 64  # the field stays a compact Redis value

    def swapped(a: str, b: str) -> bool:
        says_a, says_b = key(a).says, key(b).says
        return substituted(names(a), names(b), says_a, says_b)

    assert swapped("What did Obama say about Syria?", "What did Trump say about Syria?")
    assert swapped("Is my Samsung phone covered?", "Is my Nokia phone covered?")
    # A name begun alike, a demonym of a place, or the same word written small is no swap.
    assert not swapped("FTC Chairman Timothy Muris said no.", "FTC Chairman Tim Muris said no.")
    assert not swapped("the Chinese Foreign Ministry said so", "China's foreign ministry said so")
    assert not swapped("the talks with the President went well", "the talks with the president went well, Kerry said")
    # A sentence starts after a full stop that ends no abbreviation, and on a new line.
    assert not swapped("I forgot my PIN. How do I reset it?", "Forgot my PIN. What can I do to reset it?")
    assert not swapped("Hi. Can I get a refund?", "Hey. Could I get a refund?")
    assert not swapped("hi\nHow do I cancel my order", "hello\nWhat is the way to cancel my order")
    # An entry compared through its sketch: a word its sample does not reach counts as said.
    long = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(100)) + " met the President"
    says_long = sketch_says(word_sketch(key(long).words))
    assert says_long("president") and says_long("wordaa")
    assert not sketch_says(word_sketch(key("the president met us").words))("trump")


def test_the_kind_of_answer_asked_for_is_the_first_question_word() -> None:
    assert [asks(t) for t in ("Why is it late?", "how many cards can I have", "Which card is best?",
                              "I lost my card, what now?", "My card is lost.")] == [
        "?why", "?how-much", "?other", "?other", None]
    assert not substituted(names("When will my card arrive?"), names("Where is my card?"))
    assert not substituted(names("How do I reset my PIN?"), names("How can I reset my PIN?"))
    assert not substituted(names("Where is my parcel?"), names("My parcel has not arrived"))  # one side asks
    assert substituted(names("How long does a transfer take?"), names("How does a transfer work?"))


def test_content_words_leave_out_function_words_and_compare_the_forms_of_a_word() -> None:
    assert content_words("Where is it, and what is it for?") == frozenset()
    assert content_words("I don't know why") == content_words("I dont know why") == {"know"}
    for forms in (("charge", "charges", "charged", "charging"), ("country", "countries"), ("pass", "passes"),
                  ("cancel", "cancelled", "cancels"), ("run", "running"), ("speed", "speeds"), ("status", "statuses")):
        assert len({content_words(w) for w in forms}) == 1, forms
    assert content_words("speed") != content_words("spe") and content_words("cases") != content_words("cash")
    # Words of any script, combining marks and composed or decomposed letters alike; punctuation at the ends cut.
    assert content_words("Über cafe\u0301, «Straße»") == content_words("über café straße") == {"über", "café", "straß"}
    assert content_words("मैं अपना खाता कैसे बंद करूं?") == {"मैं", "अपना", "खाता", "कैसे", "बंद", "करूं"}
    assert content_words("order 48213, e-mail") == {"order", "mail"}  # numbers are identifiers, not words


def test_more_content_words_added_than_the_budget_are_refused() -> None:
    short = content_words("The company said its quarterly profit rose.")
    assert not added(short, content_words("The company said its quarterly profit rose sharply."), 3, 0.25)
    longer = content_words("The company said its quarterly profit rose, helped by strong phone sales and lower costs.")
    assert added(short, longer, 3, 0.25) and added(longer, short, 3, 0.25)  # either side may say more
    assert not added(short, longer, 6, 0.25)
    # A long text is paraphrased in more words: a quarter of the longer side's content words are allowed.
    many = frozenset(f"w{i}" for i in range(40))
    assert not added(many, many | {"x1", "x2", "x3", "x4", "x5"}, 3, 0.25)
    assert added(many, many | {f"x{i}" for i in range(20)}, 3, 0.25)
    assert not added(short, longer, 3, 1.0)  # added_share = 1: off


def test_an_entry_keeps_a_sketch_of_its_words_that_fits_a_compact_redis_hash_field() -> None:
    few = word_hashes(content_words("How do I close my account and move the balance to my wife's savings?"))
    assert len(word_sketch(few)) == 2 + 2 * len(few) <= 64
    assert not added_to_sketch(few, word_sketch(few), 3, 0.25)
    assert added_to_sketch(word_hashes(content_words("How do I close my account?")), word_sketch(few), 3, 0.25)
    assert not added_to_sketch(few, None, 3, 0.25)  # an entry written before words were kept
    # A long text keeps only its smallest hashes: the difference is estimated on them, scaled up.
    long = frozenset(range(0, 60_000, 300))  # 200 words, hashes spread as a hash spreads them
    sketch = word_sketch(long)
    assert len(sketch) == 2 + 2 * SKETCH_WORDS <= 64
    assert not added_to_sketch(long, sketch, 3, 0.25)
    assert not added_to_sketch(long | frozenset(range(1, 60_000, 3000)), sketch, 3, 0.25)  # 20 more: allowed 55
    assert added_to_sketch(long | frozenset(range(1, 60_000, 600)), sketch, 3, 0.25)  # 100 more: allowed 75
    assert added_to_sketch(frozenset(range(0, 60_000, 600)), sketch, 3, 0.25)  # 100 of the 200 left out


def test_a_long_texts_entry_stays_a_compact_redis_hash(store: CacheStore) -> None:
    text = " ".join(f"word{chr(97 + i % 26)}{chr(97 + i // 26)}" for i in range(300))
    entry_id, _ = store.register(key(text), EMBED.embed([text])[0].tolist(), job_id=1)
    assert store.r.object("encoding", f"t:e:{entry_id}") == b"listpack"


@pytest.mark.parametrize(("a", "b"), [
    ("The company said its quarterly profit rose.",
     "The company said its quarterly profit rose, helped by strong phone sales and lower costs."),
    ("How do I close my account?", "How do I close my account and move the balance to my wife's savings account?"),
])
def test_a_text_that_says_more_than_a_few_words_beyond_the_other_is_no_semantic_hit(
        redis_dbs: RedisDbs, a: str, b: str) -> None:
    client = redis.Redis.from_url(redis_dbs.url(2))
    client.flushdb()
    # A threshold low enough that the vectors alone would hit, and bands of two rows, so that the index finds
    # entries that far: the content-word guard must refuse it.
    shape = {"prefix": "t", "max_entries": 1000, "ttl_s": 3600, "rows": 2}
    loose = CacheStore(client, CacheConfig(**shape), threshold=0.3)
    try:
        entry_id, _ = loose.register(key(a), EMBED.embed([a])[0].tolist(), job_id=1)
        assert loose.fill(entry_id, 1, "an answer to the shorter question", "sim-nano", "hot", Decimal(0))
        near = a.rstrip("?.") + " today, please?"  # one content word added: still the same question
        assert float(EMBED.embed([a])[0] @ EMBED.embed([b])[0]) >= 0.3
        found = loose.lookup([key(b), key(near)], EMBED.embed([b, near]))
        assert found[0] is None, f"{b!r} was answered with the entry of {a!r}"
        assert found[1] is not None and found[1].kind == "semantic"
        # An entry written before the words were kept (no field ws) is compared by its vector and names only.
        client.hdel(f"t:e:{entry_id}", "ws")
        assert loose.lookup([key(b)], EMBED.embed([b]))[0] is not None
        # Turned off (added_share = 1), the vectors decide again.
        off = CacheStore(client, CacheConfig(**shape, added_share=1), threshold=0.3)
        client.hset(f"t:e:{entry_id}", "ws", word_sketch(word_hashes(content_words(a))))
        assert off.lookup([key(b)], EMBED.embed([b]))[0] is not None
        assert loose.lookup([key(b)], EMBED.embed([b]))[0] is None
    finally:
        client.flushdb()
        client.close()
