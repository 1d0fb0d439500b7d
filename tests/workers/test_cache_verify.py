"""Gray-zone verification of the semantic cache: a near entry under the threshold is served only when the
cheapest model says both requests ask for the same answer; the check is a cost row (`cache_verify`), made
only where the call it saves costs more, and never across the guards. Real worker, real simulator."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import redis
from conftest import Stack, own_worker, run_batch
from sqlalchemy import text

from producer.api import Tierq
from tierq.cache import cache_key
from tierq.cache.embedders import HashingEmbedder
from tierq.cache.factory import make_cache
from tierq.config import load_config
from tierq.errors import ConfigError
from workers.store import PendingJob
from workers.verify import may_use

VERIFY = 'embedder = "hashing"\nthreshold = 0.97\nverify = true\nverify_from = 0.8\n'
FIRST = ("How do I reset the password of my account on the shop website when I no longer have access to the e-mail "
         "address I signed up with, and the reset link never arrives?")
# The simulator's cheapest model answers a check whose text holds one of these markers with its word.
SAME = FIRST.replace("How do I", "How can I") + " [[sim:say@sim-nano=same]]"
OTHER = FIRST.replace("How do I", "How could I") + " [[sim:say@sim-nano=different]]"
BROKEN = FIRST.replace("How do I", "How should I") + " [[sim:refuse@sim-nano]]"  # the check itself fails


@contextmanager
def verifying(stack: Stack, tmp_path: Path, cache: str = VERIFY) -> Iterator[Tierq]:
    """A worker and a client whose [cache] table is `cache`."""
    with own_worker(stack, tmp_path, "", "verify",
                    edit=lambda body: body.replace('[cache]\nembedder = "hashing"\n', "[cache]\n" + cache)) as (tq, _):
        yield tq


def outcomes(result: dict[str, object]) -> list[str]:
    return [str(a["outcome"]) for a in result["attempts"]]  # type: ignore[attr-defined]


def test_a_near_entry_is_served_only_when_the_verifier_says_same(clean: Stack, tmp_path: Path) -> None:
    embedded = HashingEmbedder().embed([FIRST, SAME, OTHER, BROKEN])
    assert all(0.8 <= float(np.dot(embedded[0], embedded[n])) < 0.97 for n in (1, 2, 3))  # all in the gray zone
    with verifying(clean, tmp_path) as tq:
        clean.simulate({"latency_ms": 0})
        first = run_batch(clean, tq, [{"id": "a", "prompt": FIRST}], force_tier="cold", use_cache=True)["a"]
        # One at a time: in one batch their tier tasks run side by side, and a job answered first fills an
        # entry that another may find nearer than FIRST's (its check then compares those two texts).
        later: dict[str, dict[str, Any]] = {}
        for name, prompt in (("same", SAME), ("broken", BROKEN), ("other", OTHER)):
            later |= run_batch(clean, tq, [{"id": name, "prompt": prompt}], force_tier="cold", use_cache=True)
        counters = redis.Redis.from_url(clean.dbs.url(3)).hgetall("tq:c:stat")
    assert outcomes(first) == ["ok"]
    served, refused = later["same"], later["other"]
    assert served["cached"] and served["content"] == first["content"] and served["model"] == "sim-flagship"
    assert outcomes(served) == ["cache_verify", "cache_hit"]
    assert not refused["cached"] and outcomes(refused) == ["cache_verify", "ok"]
    assert refused["model"] == "sim-flagship" and refused["content"] != "different"
    broken = later["broken"]  # a check refused is paid, and the job goes on to its tier
    assert not broken["cached"] and outcomes(broken) == ["cache_verify", "ok"] and broken["status"] == "succeeded"
    with clean.engine.connect() as conn:
        checks = conn.execute(text("SELECT model, tier, cost_usd > 0, prompt_tokens > 0 FROM calls "
                                   "WHERE outcome = 'cache_verify'")).all()
        spent = conn.execute(text("SELECT sum(cost_usd) FROM calls WHERE outcome = 'cache_verify'")).scalar_one()
        saved = conn.execute(text("SELECT saved_usd FROM calls WHERE outcome = 'cache_hit'")).scalar_one()
    # Each check is one paid call to the cheapest model, under a tier of its own (it is no tier's answer),
    # and cost less than the call the hit saved.
    assert [tuple(row) for row in checks] == [("sim-nano", "cache_verify", True, True)] * 3
    assert spent < saved, (spent, saved)
    assert (counters[b"verify_calls"], counters[b"verified"]) == (b"3", b"1")


def test_no_check_where_it_would_cost_more_than_it_saves_nor_across_a_guard(clean: Stack, tmp_path: Path) -> None:
    cheap = "Where is my parcel today? It was sent last week from the warehouse and the tracking page has not changed."
    cheap_near = cheap.replace("today", "now") + " [[sim:say@sim-nano=same]]"
    france = "What is the capital city of France, and which river runs through the middle of it?"
    italy = france.replace("France", "Italy") + " [[sim:say@sim-nano=same]]"
    with verifying(clean, tmp_path) as tq:
        clean.simulate({"latency_ms": 0})
        # On the cheapest tier the answer cost less than a check of it would: it is asked again, unchecked.
        run_batch(clean, tq, [{"id": "p", "prompt": cheap}], force_tier="hot", use_cache=True)
        again = run_batch(clean, tq, [{"id": "p2", "prompt": cheap_near}], force_tier="hot", use_cache=True)["p2"]
        # A place swapped for another is never a candidate, however near.
        run_batch(clean, tq, [{"id": "fr", "prompt": france}], force_tier="cold", use_cache=True)
        swapped = run_batch(clean, tq, [{"id": "it", "prompt": italy}], force_tier="cold", use_cache=True)["it"]
        store, embedder = make_cache(tq.settings, tq.config, HashingEmbedder()), HashingEmbedder()
        found = {}
        for name, prompt, floor in (("p", cheap_near, "hot"), ("fr", italy, "cold")):
            key = cache_key(tenant="default", task_type="default", system_prompt=None,
                            messages=[{"role": "user", "content": prompt}], params={}, tier_floor=floor)
            vectors = embedder.embed([key.text])
            ids, matrix = store.candidates([key], vectors)[0]
            found[name] = [float(s) for s in matrix @ vectors[0] if 0.8 <= s < 0.97]
    # The index did offer both near entries (so it is the price and the guard that kept them unchecked).
    assert len(found["p"]) == 1 and len(found["fr"]) == 1, found
    for result in (again, swapped):  # asked again (audits of a stratum's first answers aside), never checked
        assert outcomes(result)[0] == "ok" and "cache_verify" not in outcomes(result) and not result["cached"]
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls WHERE outcome = 'cache_verify'")).scalar_one() == 0


def test_the_verifier_is_the_cheapest_model_unless_named_and_a_typo_is_caught(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "tierq" / "configs" / "sim.toml"
    body = shipped.read_text()
    config = tmp_path / "c.toml"

    def cache(table: str) -> None:
        config.write_text(body.replace('[cache]\nembedder = "hashing"\n', "[cache]\n" + table))

    cache(VERIFY)
    assert load_config(config).verifier_model == "sim-nano"
    cache(VERIFY + 'verify_model = "sim-mid"\n')
    assert load_config(config).verifier_model == "sim-mid"
    cache(VERIFY + 'verify_model = "sim-nanoo"\n')
    with pytest.raises(ConfigError, match="cache.verify_model 'sim-nanoo' is not a model; did you mean 'sim-nano'\\?"):
        load_config(config)
    cache("threshold = 0.8\nverify_from = 0.85\n")
    with pytest.raises(ConfigError, match="cache.verify_from 0.85 must be under cache.threshold 0.8"):
        load_config(config)


def test_a_batch_capped_below_the_verifiers_tier_is_not_checked(tmp_path: Path) -> None:
    shipped = Path(__file__).parents[2] / "tierq" / "configs" / "sim.toml"
    config_path = tmp_path / "c.toml"
    config_path.write_text(shipped.read_text().replace('[cache]\nembedder = "hashing"\n',
                                                       "[cache]\n" + VERIFY + 'verify_model = "sim-mid"\n'))
    config = load_config(config_path)
    warm = config.tier("warm")

    def job(max_tier: str | None) -> PendingJob:
        return PendingJob(1, uuid.uuid4(), "default", [{"role": "user", "content": "hi"}], {}, None, None, max_tier,
                          "default", None, True, None)

    # The verifier (sim-mid) is a warm model: a batch that may use at most hot must not send it text.
    assert [may_use(config, job(cap), warm) for cap in (None, "hot", "warm", "cold")] == [True, False, True, True]
