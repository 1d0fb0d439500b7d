"""Audits: a sample of answers given below the reference tier (and of semantic cache hits) is asked again at
the reference tier; comparators decide agreement; a disagreeing answer is replaced by the reference's; every
audit call is a cost row; labels record what was found. Real worker, real simulator, real services."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from conftest import Stack, own_worker, run_batch
from sqlalchemy import text

from producer.api import Tierq
from producer.submit import BatchOptions
from producer.views import bill_lines
from tierq.quality import ComparatorConfig
from workers.audits import draw
from workers.comparators import choice, comparator, final_number, json_value, label_of

TIERQ = Path(sys.executable).with_name("tierq")
CAPITAL = "What is the capital of France? [[sim:say@sim-nano=Paris]] [[sim:say@sim-flagship={answer}]]"


@contextmanager
def audited(stack: Stack, tmp_path: Path, quality: str) -> Iterator[Tierq]:
    """A worker and a client whose TOML has this [quality] table, on a broker and Redis of their own."""
    with own_worker(stack, tmp_path, "[quality]\n" + quality, "quality") as (tq, _):
        yield tq


run = run_batch


def labels(stack: Stack) -> list[tuple[Any, ...]]:
    with stack.engine.connect() as conn:
        return [tuple(r) for r in conn.execute(text(
            "SELECT j.custom_id, l.source, l.candidate_tier, l.candidate_model, l.reference_model, l.comparator, "
            "l.agree FROM labels l JOIN jobs j ON j.id = l.job_id ORDER BY j.custom_id"))]


def test_comparators_decide_agreement() -> None:
    assert comparator(ComparatorConfig(kind="exact"))(" Paris\n", "paris", []) is True
    assert choice("Let me think... The answer is (c).") == "C" and choice("B) because...") == "B"
    assert comparator(ComparatorConfig(kind="choice"))("I pick (B)", "Answer: B", []) is True
    assert final_number("so she pays $1,250.50 in total. #### 1250.5") == 1250.5
    assert comparator(ComparatorConfig(kind="number"))("#### 18", "The answer is 18.", []) is True
    assert comparator(ComparatorConfig(kind="number"))("#### 17", "The answer is 18.", []) is False
    assert comparator(ComparatorConfig(kind="number"))("no idea", "no number either", []) is None
    assert json_value('Sure: {"intent": "refund", "amount": 3}') == {"intent": "refund", "amount": 3}
    by_intent = comparator(ComparatorConfig(kind="json", fields=("intent",)))
    assert by_intent('{"intent": "refund", "amount": 3}', '{"intent": "refund", "amount": 4}', []) is True
    assert comparator(ComparatorConfig(kind="json"))('{"a": 1}', '{"a": 2}', []) is False
    labels_ = ("card_lost", "refund", "delivery")
    assert label_of("This is about a Refund, not delivery.", labels_) == "refund"
    assert comparator(ComparatorConfig(kind="label", labels=labels_))("refund", "REFUND please", []) is True
    mine = comparator(ComparatorConfig(kind="callable", callable="audit_support:same_length"))
    assert mine("abc", "xyz", []) is True and mine("ab", "xyz", []) is False


def test_sampling_is_drawn_from_the_job_id_and_every_stratum_gets_its_minimum(clean: Stack, tmp_path: Path) -> None:
    records = [{"id": f"t{n}", "prompt": f"ticket {n}: where is my parcel?"} for n in range(60)]
    with audited(clean, tmp_path, "audit_rate = 0.2\nmin_per_stratum = 0\ncomparator = \"exact\"\n") as tq:
        results = run(clean, tq, records, force_tier="hot")
    with clean.engine.connect() as conn:
        ids = dict(conn.execute(text("SELECT custom_id, id FROM jobs")).all())
    expected = sorted(c for c, job_id in ids.items() if draw(job_id) < 0.2)
    assert sorted(r["id"] for r in results.values() if r["audited"]) == expected and expected
    assert [row[0] for row in labels(clean)] == expected  # the sim's models agree unless told otherwise
    with audited(clean, tmp_path, "audit_rate = 0.0001\nmin_per_stratum = 5\ncomparator = \"exact\"\n") as tq:
        clean.simulate({"latency_ms": 0})
        small = run(clean, tq, [{"id": f"s{n}", "prompt": f"question {n}?"} for n in range(3)]
                    + [{"id": f"w{n}", "prompt": f"question {n}? ```code```"} for n in range(8)])
    audited_ids = sorted(r["id"] for r in small.values() if r["audited"])
    assert [i for i in audited_ids if i.startswith("s")] == ["s0", "s1", "s2"]  # a stratum smaller than 5
    assert len([i for i in audited_ids if i.startswith("w")]) == 5  # warm's first five


@pytest.mark.parametrize(("reference", "replaced"), [("Paris", False), ("Rome", True)])
def test_a_disagreeing_answer_is_replaced_by_the_reference(clean: Stack, tmp_path: Path, reference: str,
                                                          replaced: bool) -> None:
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"exact\"\n") as tq:
        result = run(clean, tq, [{"id": "q", "prompt": CAPITAL.format(answer=reference)}], force_tier="hot")["q"]
        bill = tq.report().as_dict()
    assert result["content"] == reference and result["audited"] is True
    assert result["replaced_by_reference"] is replaced
    assert (result["tier"], result["model"]) == (("cold", "sim-flagship") if replaced else ("hot", "sim-nano"))
    assert [a["outcome"] for a in result["attempts"]] == ["ok", "audit"]
    assert labels(clean) == [("q", "answer", "hot", "sim-nano", "sim-flagship", "exact", not replaced)]
    audit_cost = Decimal(result["attempts"][1]["cost_usd"])
    assert Decimal(bill["quality"]["audit_cost_usd"]) == audit_cost > 0


def test_an_audit_the_budget_cannot_cover_is_skipped_and_the_answer_kept(clean: Stack, tmp_path: Path) -> None:
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"exact\"\n") as tq:
        # Room for the cheap call, none for the flagship's worst case (2.00/8.00 per million, 1024 out).
        result = run(clean, tq, [{"id": "q", "prompt": CAPITAL.format(answer="Rome")}], force_tier="hot",
                     budget_usd=Decimal("0.001"))["q"]
    assert (result["content"], result["replaced_by_reference"], result["status"]) == ("Paris", False, "succeeded")
    assert [a["outcome"] for a in result["attempts"]] == ["ok"] and labels(clean) == []


def test_similarity_and_judge_comparators(clean: Stack, tmp_path: Path) -> None:
    clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"wrong_rate": 1.0}}})
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"similarity\"\n") as tq:
        clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"wrong_rate": 1.0}}})
        wrong = run(clean, tq, [{"id": f"w{n}", "prompt": f"Tell me about plan {n}."} for n in range(4)],
                    force_tier="hot")
    assert all(r["replaced_by_reference"] for r in wrong.values()), wrong
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"judge\"\n") as tq:
        clean.simulate({"latency_ms": 0})
        judged = run(clean, tq, [{"id": "j", "prompt": "Is this ok? [[sim:say@sim-flagship=yes]]"}],
                     force_tier="hot")["j"]
    assert [a["outcome"] for a in judged["attempts"]] == ["ok", "audit", "judge"]
    assert judged["replaced_by_reference"] is False
    assert {row[0]: row[5:] for row in labels(clean)}["j"] == ("judge", True)


def test_an_answer_an_audit_replaced_is_not_an_escalation_in_status_or_bill(clean: Stack, tmp_path: Path) -> None:
    replaced_at_hot = "What is the capital of France? [[sim:say@sim-nano=Paris]] [[sim:say@sim-flagship=Rome]]"
    replaced_at_warm = ("What is the capital of Spain? [[sim:refuse@sim-nano]] [[sim:refuse@sim-mini]] "
                        "[[sim:say@sim-mid=Madrid]] [[sim:say@sim-mid-b=Madrid]] [[sim:say@sim-flagship=Lisbon]]")
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"exact\"\n") as tq:
        clean.simulate({"latency_ms": 0})
        batch = tq.submit([{"id": "h", "prompt": replaced_at_hot}, {"id": "w", "prompt": replaced_at_warm}],
                          BatchOptions(use_cache=False)).batch_id
        status = clean.wait(tq, batch)
        bill = tq.report(batch)
        results = {r["id"]: r for r in tq.results(batch)}
    assert results["h"]["replaced_by_reference"] and results["w"]["replaced_by_reference"]
    assert (results["h"]["content"], results["w"]["content"]) == ("Rome", "Lisbon")
    # One escalation (hot -> warm, the refusal); both answers ended at cold by their audits, which is not one.
    assert status.escalations == 1
    assert bill.escalations == {("hot", "warm"): 1}
    assert {line.tier: line.escalated for line in bill.by_tier} == {"hot": 1, "warm": 0, "cold": 0}
    # Each tier balances: started = answered + escalated + failed (an answer an audit replaced counts where
    # it was given).
    assert {line.tier: (line.started, line.answered, line.escalated, line.failed) for line in bill.by_tier} == {
        "hot": (2, 1, 1, 0), "warm": (0, 1, 0, 0), "cold": (0, 0, 0, 0)}
    # ... and says which of those answers were replaced, which status counts at cold, where they ended.
    assert {line.tier: line.replaced for line in bill.by_tier} == {"hot": 1, "warm": 1, "cold": 0}
    assert status.by_tier_status == {"cold": {"succeeded": 2}}
    shown = bill_lines(bill)
    assert any(line.split()[:6] == ["hot", "2", "1", "1", "0", "1"] for line in shown), shown
    assert any(line.startswith("replaced: answered there, then replaced by an audit") for line in shown), shown


def test_private_batches_are_audited_without_texts_in_postgres(clean: Stack, tmp_path: Path) -> None:
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"exact\"\n") as tq:
        result = run(clean, tq, [{"id": "q", "prompt": CAPITAL.format(answer="Rome")}], force_tier="hot",
                     store_text=False)["q"]
    assert (result["content"], result["replaced_by_reference"]) == ("Rome", True)
    with clean.engine.connect() as conn:
        stored = conn.execute(text("SELECT content, candidate, content_sha256 FROM jobs")).one()
    assert stored[0] is None and stored[1] is None and stored[2] is not None
    assert labels(clean)[0][6] is False


def test_semantic_cache_hits_are_audited(clean: Stack, tmp_path: Path) -> None:
    with audited(clean, tmp_path, "audit_rate = 1\ncomparator = \"exact\"\n") as tq:
        first = run(clean, tq, [{"id": "a", "prompt": "How do I reset my password for the shop website?"}],
                    force_tier="hot", use_cache=True)
        second = run(clean, tq, [{"id": "b", "prompt": "How can I reset my password for the shop website?"}],
                     force_tier="hot", use_cache=True)
        across = subprocess.run([str(TIERQ), "quality", "--json"], cwd=tmp_path, capture_output=True, text=True,
                                env={**clean.env, "TIERQ_CONFIG": str(tmp_path / "quality.toml")}, timeout=60,
                                check=True)
    assert first["a"]["audited"] and second["b"]["cached"] and second["b"]["audited"]
    assert [row[:2] for row in labels(clean)] == [("a", "answer"), ("b", "cache")]
    assert [a["outcome"] for a in second["b"]["attempts"]] == ["cache_hit", "audit"]
    with clean.engine.connect() as conn:
        rows = conn.execute(text("SELECT namespace, prompt_sha256, candidate_sha256, reference_sha256 FROM labels "
                                 "ORDER BY id")).all()
    # The cache hit's label names the namespace it was served from; every label has the three digests.
    assert rows[0][0] is None and rows[1][0] is not None and rows[0][1] != rows[1][1]
    assert all(len(digest) == 64 for row in rows for digest in row[1:])
    [space] = json.loads(across.stdout)["cache_namespaces"]
    assert (space["namespace"], space["audited"], space["tenant"]) == (rows[1][0], 1, "default")


def test_quality_is_measured_per_stratum_and_for_the_batch(clean: Stack, tmp_path: Path) -> None:
    clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"wrong_rate": 0.25}}})
    records = [{"id": f"t{n}", "prompt": f"ticket {n}: where is my parcel?"} for n in range(80)]
    with audited(clean, tmp_path, "audit_rate = 0.5\ncomparator = \"exact\"\n") as tq:
        clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"wrong_rate": 0.25}}})
        batch = tq.submit(records, BatchOptions(use_cache=False, force_tier="hot")).batch_id
        status = clean.wait(tq, batch, timeout=120)
        quality = tq.report(batch).as_dict()["quality"]
        across = subprocess.run(
            [str(TIERQ), "quality", "--json"],
            env={**clean.env, "TIERQ_CONFIG": str(tmp_path / "quality.toml")},
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=60,
            check=True,
        )
    [stratum] = quality["strata"]
    with clean.engine.connect() as conn:
        agree, audits = conn.execute(text("SELECT count(*) FILTER (WHERE agree), count(*) FROM labels")).one()
        replaced = conn.execute(text("SELECT count(*) FROM jobs WHERE replaced")).scalar_one()
    assert (stratum["task_type"], stratum["tier"], stratum["audited"], stratum["agree"]) == (
        "default",
        "hot",
        audits,
        agree,
    )
    low, high = stratum["interval"]
    assert 0 < audits < 80 and low <= agree / audits <= high and replaced == audits - agree > 0
    # Every answer delivered: audited ones agree (or were replaced), the others at the measured rate.
    estimate = (audits + (80 - audits) * agree / audits) / 80
    assert quality["estimated_agreement"] == round(estimate, 4)
    assert quality["interval"][0] <= estimate <= quality["interval"][1]
    assert status.quality is not None and status.quality.share == pytest.approx(estimate)
    assert json.loads(across.stdout)["strata"][0]["audited"] == audits


@pytest.mark.parametrize(
    ("quality", "expected"),
    [
        ('[quality]\ncomparator = { kind = "callable", callable = "nowhere_at_all:agree" }\n',
         "quality.comparator: cannot import 'nowhere_at_all' for callable 'nowhere_at_all:agree'"),
        ('[quality.task_types.t]\ncomparator = { kind = "callable", callable = "json:nothing_here" }\n',
         "quality.task_types.t.comparator: 'json' has no function 'nothing_here'"),
    ],
)
def test_a_comparator_callable_that_cannot_be_imported_stops_start_up(
    tmp_path: Path, stack: Stack, quality: str, expected: str
) -> None:
    """As a bad validator does: found only at the first audit, it cost each audit its reference call, left no
    label, and the bill said no answer was audited."""
    from conftest import ROOT, SHIPPED_SIM_CONFIG

    from tierq.config import load_config
    from tierq.errors import ConfigError

    config = tmp_path / "tierq.toml"
    config.write_text(SHIPPED_SIM_CONFIG.read_text() + "\n" + quality)
    with pytest.raises(ConfigError) as err:
        load_config(config)
    assert str(err.value).startswith(f"{config}: {expected}")
    done = subprocess.run(
        [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", "classify", "--without-gossip"],
        env={**stack.env, "TIERQ_CONFIG": str(config), "TIERQ_BROKER_URL": stack.dbs.url(4)},
        cwd=ROOT, capture_output=True, text=True, timeout=60,
    )
    assert done.returncode != 0 and expected in done.stderr, done.stderr[-2000:]
