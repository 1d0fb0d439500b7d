"""The learned router: features, fits and thresholds from labels, `tierq route eval/fit/show`, and both of its
decisions taken by real workers (a prompt that starts at the strong tier; a cheap answer sent on to it)."""

from __future__ import annotations

import csv
import json
import random
import re
import subprocess
import sys
import time
from contextlib import AbstractContextManager
from decimal import Decimal
from pathlib import Path

import numpy as np
import pytest
from conftest import Stack, own_worker, run_batch
from sqlalchemy import text

from producer.api import Tierq
from producer.route import Sources, _store, activate, fit_version, price_pair, show
from tierq.errors import InputError
from tierq.money import Price
from tierq.router import logreg
from tierq.router.design import Builder
from tierq.router.evaluate import left_out_note, read
from tierq.router.features import FeatureSpec, answer_shape, prompt_matrix
from tierq.router.fit import Examples, Router, check, fit, holdout
from tierq.router.policy import Policy, Rows, choose, random_cost_share

TIERQ = Path(sys.executable).with_name("tierq")
EASY = ["parcel", "delivery", "tracking", "address", "courier", "shipping", "label", "box"]
HARD = ["contract", "liability", "indemnity", "arbitration", "clause", "statute", "jurisdiction", "tort"]


def ticket(rng: random.Random, hard: bool, n: int) -> str:
    words = rng.sample(HARD if hard else EASY, 3)
    return f"Ticket {n}: question about the {words[0]} and the {words[1]}, see {words[2]} (ref {rng.randint(1, 10**6)})"


def labelled_rows(count: int, seed: int = 0) -> list[dict[str, str]]:
    """Tickets the cheap model gets right unless they are legal ones (then mostly wrong, the strong one right)."""
    rng = random.Random(seed)
    rows = []
    for n in range(count):
        hard = rng.random() < 0.3
        cheap_right = rng.random() < (0.15 if hard else 0.97)
        rows.append({"prompt": ticket(rng, hard, n), "cheap": str(cheap_right), "strong": str(rng.random() < 0.97)})
    return rows


def prompt_examples(count: int) -> Examples:
    """`labelled_rows(count)` as a fit sees them: prompts only, the strong model always right, at 100x the price."""
    rows = labelled_rows(count)
    return Examples([r["prompt"] for r in rows], [None] * len(rows),
                    Rows(np.array([r["cheap"] == "True" for r in rows], dtype=np.float64), np.ones(len(rows)),
                         np.full(len(rows), 0.1), np.full(len(rows), 10.0)))


def write_csv(path: Path, rows: list[dict[str, str]]) -> Path:
    with path.open("w", newline="") as handle:
        writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
        writer.writeheader()
        writer.writerows(rows)
    return path


def test_features_are_deterministic_and_scaled() -> None:
    spec = FeatureSpec(word_bits=8, char_bits=8)
    x = prompt_matrix(["Where is my parcel?", "Where is my parcel?", ""], spec)
    assert x.shape == (3, spec.prompt_width) and np.array_equal(x.row(0), x.row(1))
    assert abs(float(np.linalg.norm(x.row(0)[:256])) - 1) < 1e-5 and not x.row(2)[: spec.hashed].any()
    assert set(x.entry_columns) <= set(range(256))  # words are the sparse columns, the rest dense
    right = answer_shape("Add 12 and 30.", "12 + 30 = 42. The answer is 42.")
    wrong = answer_shape("Add 12 and 30.", "12 + 30 = 52. The answer is 52.")
    from tierq.router.features import ANSWER_SHAPE
    steps_wrong = ANSWER_SHAPE.index("steps_wrong")
    assert right[steps_wrong] == 0 and wrong[steps_wrong] > 0
    assert answer_shape("q", "a", logprobs=(-0.5, -2.0))[ANSWER_SHAPE.index("logprob_min")] == -2.0


def test_answer_features_stay_fast_and_finite_on_hostile_answers() -> None:
    hostile = ["\n".join(f"- {n}" for n in range(4000)), "1 - " * 5000, "[" + ",".join(map(str, range(400))) + "]",
               "1e999 = 1e999", "", "ünïcode ÷ 3 = \udc89", "9" * 5000 + " / 0 = 1"]
    started = time.perf_counter()
    rows = [answer_shape("Add 2 and 2.", text) for text in hostile]
    assert time.perf_counter() - started < 2.0  # linear in the answer's length: no regular-expression blow-up
    assert all(np.isfinite(row).all() for row in rows)


def test_a_design_with_sparse_columns_multiplies_like_its_dense_matrix() -> None:
    rng = np.random.default_rng(3)
    dense = rng.normal(size=(50, 40)).astype(np.float32)
    dense[rng.random(dense.shape) < 0.8] = 0
    dense[:, 6] = 0
    sparse_at = np.array([1, 5, 6, 20, 33, 39])
    builder = Builder(50, 40, np.setdiff1d(np.arange(40), sparse_at))
    builder.dense[:] = dense[:, builder.dense_at]
    for row in reversed(range(50)):  # blocks may come in any row order
        hit = sparse_at[dense[row, sparse_at] != 0]
        builder.sparse(row, hit, dense[row, hit])
    x = builder.build()
    w, u = rng.normal(size=40), rng.normal(size=50)
    assert np.allclose(x @ w, dense @ w, atol=1e-4) and np.allclose(x.transpose_times(u), dense.T @ u, atol=1e-4)
    pick = np.array([7, 3, 49, 3])
    assert np.allclose(x.take(pick) @ w, dense[pick] @ w, atol=1e-4)
    assert np.array_equal(x.documents(), np.count_nonzero(dense, axis=0))
    scale, shift = rng.random(40).astype(np.float32), np.zeros(40, dtype=np.float32)
    shift[x.dense_at] = 1.0
    assert np.allclose(x.scaled(scale, shift).row(4), dense[4] * scale + shift, atol=1e-5)
    with pytest.raises(ValueError, match="sparse column"):
        x.scaled(scale, np.ones(40, dtype=np.float32))
    small, kept = x.compact()  # column 6 is sparse and never set (10% of 50 rows: checked below)
    assert list(kept) == [c for c in range(40) if x.documents()[c] or c in x.dense_at]
    assert small.width == len(kept) < 40 and np.allclose(small @ w[kept], x @ w, atol=1e-4)
    # The same fit, whichever way the columns are stored.
    y = (dense[:, 5] + dense[:, 0] > 0).astype(np.float64)
    assert np.allclose(logreg.fit(x, y, l2=1.0).predict(x), logreg.fit(dense, y, l2=1.0).predict(dense), atol=1e-4)


def test_a_router_stored_with_another_layout_scores_as_it_was_fitted() -> None:
    examples = prompt_examples(300)
    router = fit(examples, 0.95, 0.8, spec=FeatureSpec(word_bits=11, char_bits=10)).router  # an older layout
    loaded = type(router).from_blobs(*router.blobs())
    assert loaded.spec == FeatureSpec(word_bits=11, char_bits=10)
    prompts = [r["prompt"] for r in labelled_rows(20, seed=1)]
    assert np.allclose(loaded.prompt_scores(prompts), router.prompt_scores(prompts), atol=1e-7)
    assert logreg.auc(router.prompt_scores(examples.prompts), examples.labels) > 0.8


def test_logistic_regression_separates_and_auc_counts_ties() -> None:
    rng = np.random.default_rng(0)
    x = rng.normal(size=(400, 5)).astype(np.float32)
    y = (x[:, 0] - x[:, 1] > 0).astype(np.float64)
    model = logreg.fit(x, y, l2=0.1)
    assert logreg.auc(model.predict(x), y) > 0.99
    assert logreg.auc(np.array([0.5, 0.5]), np.array([0.0, 1.0])) == 0.5
    oof = logreg.out_of_fold(x, y, 5, 0, 0.1)
    assert 0.95 < logreg.auc(oof, y) <= 1.0


def test_a_warm_started_fit_reaches_the_optimum_a_cold_one_does() -> None:
    rng = np.random.default_rng(3)
    x = rng.normal(size=(600, 30)).astype(np.float32)
    y = (x[:, :5].sum(axis=1) + rng.normal(size=600) > 0).astype(np.float64)  # noisy: the optimum is interior
    exact = logreg.fit(x, y, l2=2.0, tol=1e-12, newton_steps=200)  # converged far past the default tolerance
    warm = logreg.fit(x, y, l2=2.0, start=logreg.fit(x, y, l2=200.0))
    assert np.allclose(warm.predict(x), exact.predict(x), atol=1e-3)
    assert np.allclose(logreg.fit(x, y, l2=2.0).predict(x), exact.predict(x), atol=1e-3)
    with pytest.raises(ValueError, match="a start of 30 weights for 10 columns"):
        logreg.fit(x[:, :10], y, l2=2.0, start=warm)
    # Along the path each fold starts from its fit at the stronger l2; the scores are those of cold fits.
    path = logreg.out_of_fold_path(x, y, 5, 0, (2.0, 200.0))
    assert [l2 for l2, _ in path] == [200.0, 2.0]
    for l2, scores in path:
        assert np.allclose(scores, logreg.out_of_fold(x, y, 5, 0, l2), atol=1e-3)
    assert not np.allclose(path[0][1], path[1][1], atol=1e-2)  # the two l2s do give different scores


def test_the_policy_is_the_cheapest_that_keeps_the_target_with_a_margin() -> None:
    n = 1000
    rng = np.random.default_rng(1)
    strong_ok = np.ones(n)
    cheap_ok = (rng.random(n) < 0.7).astype(np.float64)
    rows = Rows(cheap_ok, strong_ok, np.full(n, 1.0), np.full(n, 10.0))
    perfect = cheap_ok + rng.random(n) * 0.1  # every wrong cheap answer scores below every right one
    policy = choose(rows, perfect, None, target=0.95, confidence=0.8)
    direct, _ = policy.decide(perfect, None)
    share = float(np.where(direct, strong_ok, cheap_ok).sum()) / n
    assert 0.95 <= share < 0.99 and policy.share_lower >= 0.95 and policy.share >= policy.share_lower
    # A more careful margin sends more to the strong tier; an unreachable target sends everything there.
    careful = choose(rows, perfect, None, target=0.95, confidence=0.99)
    assert careful.decide(perfect, None)[0].sum() >= direct.sum()
    scores = rng.random(n)
    sent, _ = choose(rows, scores, None, target=1.0, confidence=0.8).decide(scores, None)
    assert np.where(sent, strong_ok, cheap_ok).all() and sent.sum() > 0.9 * n
    sent_at_random = (0.8 - cheap_ok.mean()) / (1 - cheap_ok.mean())  # to reach 80% of the strong tier's quality
    assert random_cost_share(rows, 1.0) == 1.0
    assert random_cost_share(rows, 0.8) == pytest.approx((1 - sent_at_random) * 0.1 + sent_at_random)


def test_answers_a_validator_failed_escalate_whatever_the_thresholds() -> None:
    n = 400
    rng = np.random.default_rng(3)
    cheap_ok = (rng.random(n) < 0.8).astype(np.float64)
    cheap_ok[:40] = 0  # the validator failed these: no text, score -inf
    rows = Rows(cheap_ok, np.ones(n), np.full(n, 1.0), np.full(n, 10.0))
    answer = np.where(np.arange(n) < 40, -np.inf, cheap_ok + rng.random(n) * 0.1)
    policy = choose(rows, rng.random(n), answer, target=0.9, confidence=0.8)
    assert policy.escalate_below is None or np.isfinite(policy.escalate_below)
    _, escalated = policy.decide(np.full(n, 0.5), answer)
    assert escalated[:40].all()


def test_a_stored_router_scores_as_the_fitted_one_and_keeps_infinite_thresholds() -> None:
    rows = labelled_rows(200)
    examples = Examples([r["prompt"] for r in rows], [f"answer {n}" for n in range(200)],
                        Rows(np.array([r["cheap"] == "True" for r in rows], dtype=np.float64), np.ones(200),
                             np.full(200, 0.1), np.full(200, 10.0)))
    router = fit(examples, 0.95, 0.8).router
    assert router.answer is not None
    edge = Router(router.spec, router.prompt, router.answer, Policy(float("-inf"), float("inf"), 1, 1, 1))
    for original in (router, edge):
        spec, policy, prompt, answer = original.blobs()
        json.dumps(policy)  # JSON, whatever the thresholds
        again = Router.from_blobs(spec, policy, prompt, answer)
        assert again.policy == original.policy
        assert np.allclose(again.prompt_scores(examples.prompts[:5]), original.prompt_scores(examples.prompts[:5]))


def test_a_router_beats_random_routing_on_labels_it_never_saw() -> None:
    rows = labelled_rows(600)
    cheap_ok = np.array([r["cheap"] == "True" for r in rows], dtype=np.float64)
    strong_ok = np.array([r["strong"] == "True" for r in rows], dtype=np.float64)
    examples = Examples([r["prompt"] for r in rows], [None] * len(rows),
                        Rows(cheap_ok, strong_ok, np.full(len(rows), 0.1), np.full(len(rows), 10.0)))
    train, held = holdout(examples.prompts, 0.5)
    router = fit(examples.take(train), 0.95, 0.8).router
    result = check(router, examples.take(held), 0.95)
    assert result.passed and result.cost_share < random_cost_share(examples.take(held).rows, result.share)


def run_tierq(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([str(TIERQ), *args], env=env, capture_output=True, text=True, timeout=300)


def test_route_eval_reports_cost_and_quality_against_random_and_oracle(
    tmp_path: Path, stack_env: dict[str, str]
) -> None:
    data = write_csv(tmp_path / "labels.csv", labelled_rows(800))
    done = run_tierq(stack_env, "route", "eval", str(data), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "0.6/0.6", "--strong-price", "10/30", "--seed", "3", "--json")
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout)
    assert report["train"] + report["test"] == 800 and report["policy"] == "route"
    assert report["quality_share_pct"] >= 93 and report["auc"] > 0.8
    assert report["random_cost_reduction_pct"] < report["cost_reduction_pct"] <= report["oracle_cost_reduction_pct"]
    # The same seed splits the same way, also as one of several; the spread is over the seeds' figures.
    done = run_tierq(stack_env, "route", "eval", str(data), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "0.6/0.6", "--strong-price", "10/30", "--seed", "2", "--seeds", "2", "--json")
    assert done.returncode == 0, done.stderr
    both = json.loads(done.stdout)
    assert [r["seed"] for r in both["seeds"]] == [2, 3] and both["seeds"][1] == report
    cuts = [r["cost_reduction_pct"] for r in both["seeds"]]
    assert both["spread"]["cost_reduction_pct"] == {"mean": round(sum(cuts) / 2, 2),
                                                    "sd": round(abs(cuts[0] - cuts[1]) / 2**0.5, 2),
                                                    "min": min(cuts), "max": max(cuts)}
    text_out = run_tierq(stack_env, "route", "eval", str(data), "--cheap", "cheap", "--strong", "strong",
                         "--cheap-price", "0.6/0.6", "--strong-price", "10/30", "--seeds", "2").stdout
    assert "(seed 0)" in text_out and "(seed 1)" in text_out and "over seeds 0-1" in text_out
    assert "right way round" not in done.stderr
    # The columns swapped (a slip on the command line): the "strong" model is the worse one, and it says so.
    swapped = run_tierq(stack_env, "route", "eval", str(data), "--cheap", "strong", "--strong", "cheap",
                        "--cheap-price", "0.6/0.6", "--strong-price", "10/30")
    assert swapped.returncode == 0, swapped.stderr
    assert swapped.stderr.startswith("warning: 'cheap' is right on ") and \
        "(are --cheap and --strong the right way round?)" in swapped.stderr, swapped.stderr


def test_a_row_without_its_trailing_empty_answer_text_is_read(tmp_path: Path) -> None:
    # A writer that leaves out a row's empty trailing cells: nothing tierq needs is missing from it.
    (tmp_path / "short.csv").write_text("prompt,cheap,strong,cheap_response\nfine,True,True,4\nshort,False,True\n")
    short = read([tmp_path / "short.csv"], "cheap", "strong", price_pair("1/1", "--cheap-price"),
                 price_pair("2/2", "--strong-price"))
    assert (short.prompts, short.cheap_answers, short.cheap_ok) == (["fine", "short"], ["4", None], [True, False])


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (
            ["--cheap", "nope", "--strong", "strong", "--cheap-price", "1/1", "--strong-price", "2/2"],
            "no column 'nope'",
        ),
        (
            ["--cheap", "cheap", "--strong", "strong", "--cheap-price", "1-1", "--strong-price", "2/2"],
            "--cheap-price '1-1'",
        ),
    ],
)
def test_route_eval_says_what_is_wrong_in_one_line(tmp_path: Path, stack_env: dict[str, str], args: list[str],
                                                   message: str) -> None:
    data = write_csv(tmp_path / "labels.csv", labelled_rows(30))
    done = run_tierq(stack_env, "route", "eval", str(data), *args)
    assert done.returncode == 2 and message in done.stderr and len(done.stderr.strip().splitlines()) == 1
    done = run_tierq(stack_env, "route", "eval", str(data), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "1/1", "--strong-price", "2/2", "--json")
    assert done.returncode == 0 and json.loads(done.stdout)["train"] + json.loads(done.stdout)["test"] == 30
    assert done.stderr == ("warning: only 30 labelled rows, about 15 per half: the figures below carry several points "
                           "of chance; judge a router on a few hundred rows or more\n")
    bad = write_csv(tmp_path / "bad.csv", [{"prompt": "p", "cheap": "maybe", "strong": "True"}])
    done = run_tierq(stack_env, "route", "eval", str(bad), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "1/1", "--strong-price", "2/2")
    assert done.returncode == 2 and "bad.csv:2: column 'cheap' must be true or false" in done.stderr
    (tmp_path / "ragged.csv").write_text("prompt,cheap,strong\nfine,True,True\nwhat is 2,3,True,False\n")
    done = run_tierq(stack_env, "route", "eval", str(tmp_path / "ragged.csv"), "--cheap", "cheap", "--strong",
                     "strong", "--cheap-price", "1/1", "--strong-price", "2/2")
    assert done.returncode == 2 and "ragged.csv:3: row has 4 fields, the header has 3; quote a prompt" in done.stderr
    # A line break in an unquoted prompt: its first line is a row with too few fields, not a row without a verdict
    # (which would be left out, and the prompt's second line read as a prompt of its own).
    (tmp_path / "broken.csv").write_text("prompt,cheap,strong\nfine,True,True\nfirst line\nsecond line,True,False\n")
    done = run_tierq(stack_env, "route", "eval", str(tmp_path / "broken.csv"), "--cheap", "cheap", "--strong",
                     "strong", "--cheap-price", "1/1", "--strong-price", "2/2")
    assert done.returncode == 2 and done.stderr == (
        f"error: {tmp_path / 'broken.csv'}:3: row has 1 field, the header has 3; quote a prompt that holds a line "
        'break ("...")\n'), done.stderr
    empty = write_csv(tmp_path / "empty.csv", [{"prompt": "p", "cheap": "", "strong": "True"}] * 2)
    done = run_tierq(stack_env, "route", "eval", str(empty), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "1/1", "--strong-price", "2/2")
    assert done.returncode == 2 and "no rows (2 without a verdict for 'cheap' or 'strong')" in done.stderr


def test_labelled_files_as_pandas_writes_them_and_bad_ones_named(tmp_path: Path, stack_env: dict[str, str]) -> None:
    rows = labelled_rows(300)
    rows[0]["cheap"], rows[1]["strong"], rows[2]["cheap"] = "1.0", "0.0", "0"
    for at in (5, 7, 9, 11):  # as pandas writes a missing value, or a cell left empty
        rows[at]["strong" if at == 7 else "cheap"] = "NaN" if at == 5 else ""
    path = write_csv(tmp_path / "labels.csv", rows)
    price = Price(Decimal(1), Decimal(1), Decimal(1))
    data = read([path], "cheap", "strong", price, price)
    assert len(data.prompts) == 296 and data.cheap_ok[:3] == [True, True, False] and data.strong_ok[1] is False
    assert data.left_out == [f"{path}:{line} ('{column}' empty)"  # the header is line 1
                             for line, column in ((7, "cheap"), (9, "strong"), (11, "cheap"), (13, "cheap"))]
    assert left_out_note(data) == (f"left out 4 rows with no verdict: {path}:7 ('cheap' empty), "
                                   f"{path}:9 ('strong' empty), {path}:11 ('cheap' empty), and 1 more")
    done = run_tierq(stack_env, "route", "eval", str(path), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "0.6/0.6", "--strong-price", "10/30", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["train"] + json.loads(done.stdout)["test"] == 296
    # A record is named by its first line, also after a prompt that spans several.
    (tmp_path / "lines.csv").write_text('prompt,cheap,strong\n"two\nlines",True,True\nthird,maybe,True\n')
    with pytest.raises(InputError, match=r"lines.csv:4: column 'cheap' must be true or false, got 'maybe'"):
        read([tmp_path / "lines.csv"], "cheap", "strong", price, price)
    (tmp_path / "latin.csv").write_bytes("prompt,cheap,strong\ncaf\u00e9,True,True\n".encode("latin-1"))
    with pytest.raises(InputError, match=r"latin.csv:2: not UTF-8 text; save it as UTF-8 CSV"):
        read([tmp_path / "latin.csv"], "cheap", "strong", price, price)
    (tmp_path / "named.csv").write_text("question,cheap,strong\nhi,True,True\n")
    with pytest.raises(InputError, match=r"named.csv: no column 'prompt' \(columns: question, cheap, strong\); the "
                                         r"prompts must be in a column named 'prompt', as in RouteLLM's files: "
                                         r"rename that column$"):
        read([tmp_path / "named.csv"], "cheap", "strong", price, price)
    with pytest.raises(InputError, match=r"lines.csv: no column 'mixtral' \(columns: prompt, cheap, strong\); name "
                                         r"the column of that model's verdicts with --cheap$"):
        read([tmp_path / "lines.csv"], "mixtral", "strong", price, price)
    with pytest.raises(InputError, match=r"^--cheap and --strong both name the column 'cheap'; name the cheap "
                                         r"model's column and the strong model's$"):
        read([tmp_path / "lines.csv"], "cheap", "cheap", price, price)
    (tmp_path / "empty.csv").write_text("")
    with pytest.raises(InputError, match=r"empty.csv: empty, not even a header row"):
        read([tmp_path / "empty.csv"], "cheap", "strong", price, price)
    # A spreadsheet's "CSV UTF-8" starts with a byte-order mark, which was read into the name of the first column.
    (tmp_path / "excel.csv").write_bytes(b"\xef\xbb\xbfprompt,cheap,strong\r\nhi,TRUE,FALSE\r\n")
    excel = read([tmp_path / "excel.csv"], "cheap", "strong", price, price)
    assert (excel.prompts, excel.cheap_ok, excel.strong_ok) == (["hi"], [True], [False])
    assert done.stderr.strip().splitlines() == [left_out_note(data)]


def routed(stack: Stack, tmp_path: Path, extra: str = "") -> AbstractContextManager[tuple[Tierq, dict[str, str]]]:
    """A worker whose TOML lets routers decide quickly (a new version is seen within 0.3 s); sim-nano returns
    log-probabilities."""
    return own_worker(stack, tmp_path, "[router]\nmin_labels = 20\npoll_s = 0.3\n" + extra, "router",
                      lambda body: body.replace('[models."sim-nano"]\n', '[models."sim-nano"]\nlogprobs = true\n'))


run = run_batch


def test_a_fitted_router_sends_prompts_it_doubts_straight_to_the_strong_tier(clean: Stack, tmp_path: Path) -> None:
    data = write_csv(tmp_path / "labels.csv", labelled_rows(400))
    with routed(clean, tmp_path) as (tq, env):
        done = run_tierq(env, "route", "fit", str(data), "--task-type", "legal-or-not", "--cheap", "cheap",
                         "--strong", "strong", "--json")
        assert done.returncode == 0, done.stderr
        fitted = json.loads(done.stdout)
        assert fitted["active"] is True and fitted["sources"] == {"audits": 0, "escalations": 0, "files": 400}
        # No batch of that task type yet: a router fitted ahead of its jobs is fine, but it is said.
        assert done.stderr == ("warning: no batch of task type 'legal-or-not' was submitted. Workers use this router "
                               "only for jobs submitted with --task-type legal-or-not\n")
        rng = random.Random(7)
        records = [{"id": f"{kind}{n}", "prompt": ticket(rng, kind == "hard", 1000 + n), "task_type": "legal-or-not"}
                   for kind in ("easy", "hard") for n in range(10)]
        results = run(clean, tq, records)
        other = run(clean, tq, [{**r, "task_type": "default"} for r in records])  # no router for this task type
        shown = json.loads(run_tierq(env, "route", "show", "--json").stdout)
        typo = run_tierq(env, "route", "fit", str(data), "--task-type", "legal-or-nit", "--cheap", "cheap",
                         "--strong", "strong", "--json")
        assert typo.stderr.startswith("warning: no batch of task type 'legal-or-nit' was submitted; did you mean "
                                      "'legal-or-not'? Workers use this router only"), typo.stderr
    started = {i: r["attempts"][0]["tier"] for i, r in results.items()}
    # The cheapest policy at the target: most legal tickets skip the cheap tier, nearly no other one does.
    assert sum(started[f"hard{n}"] == "cold" for n in range(10)) >= 7
    assert sum(started[f"easy{n}"] == "hot" for n in range(10)) >= 9
    assert set(started.values()) == {"hot", "cold"}
    assert {r["attempts"][0]["tier"] for r in other.values()} == {"hot"}
    assert [(r["task_type"], r["version"], r["active"]) for r in shown["routers"]] == [("legal-or-not", 1, True)]


def test_a_refit_that_misses_the_target_on_held_out_labels_leaves_the_previous_version(clean: Stack) -> None:
    examples = prompt_examples(300)
    router = fit(examples, 0.95, 0.8).router
    good = check(router, examples, 0.95)
    first = _store(clean.engine, clean.config, "refits", router, good, Sources(files=300), 300)
    everyone_cheap = type(router)(router.spec, router.prompt, None, type(router.policy)(None, None, 1, 1, 0))
    bad = check(everyone_cheap, examples, 0.95)
    assert first.active and not bad.passed
    second = _store(clean.engine, clean.config, "refits", everyone_cheap, bad, Sources(files=300), 300)
    assert (second.version, second.active) == (2, False) and "version 1 stays active" in second.reason
    assert [(v.version, v.active) for v in show(clean.engine, "refits", every=True)] == [(2, False), (1, True)]


def test_too_few_labels_leave_the_router_off_and_say_so(clean: Stack) -> None:
    with pytest.raises(Exception, match=r"has 0 labels .* at least 200 \(\[router\] min_labels\)"):
        fit_version(clean.engine, clean.config, "nothing-yet")
    assert show(clean.engine) == []


def test_audits_teach_the_router_which_cheap_answers_to_send_on(clean: Stack, tmp_path: Path) -> None:
    """Batch 1 is audited; the router is fitted from its labels (answer texts, log-probabilities); batch 2 of the
    same questions, not audited, has the answers the router doubts escalated to the strong tier."""
    clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"wrong_rate": 0.35}}})
    questions = [{"id": f"q{n}", "prompt": f"Question {n}: what does order {n * 7919 % 10007} contain?",
                  "task_type": "orders"} for n in range(160)]
    with routed(clean, tmp_path, '[quality]\naudit_rate = 1\ncomparator = "exact"\n') as (tq, env):
        first = run(clean, tq, questions, force_tier="hot")
        with clean.engine.connect() as conn:
            labels = conn.execute(
                text(
                    "SELECT j.custom_id, l.agree, l.candidate IS NOT NULL, "
                    "l.candidate_logprob_mean IS NOT NULL FROM labels l JOIN jobs j ON j.id = l.job_id"
                )
            ).all()
        assert len(labels) == 160 and all(has_text and has_logprobs for _, _, has_text, has_logprobs in labels)
        wrong = {custom_id for custom_id, agree, _, _ in labels if not agree}
        assert 30 < len(wrong) < 90 and all(first[q]["replaced_by_reference"] == (q in wrong) for q in first)
        done = run_tierq(env, "route", "fit", "--task-type", "orders", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["active"] is True
    with routed(clean, tmp_path, '[quality]\naudit_rate = 0\n') as (tq, _):
        second = run(clean, tq, questions)
    with clean.engine.connect() as conn:
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE NOT audited LIMIT 1")).scalar()
        escalated = set(conn.execute(text(
            "SELECT j.custom_id FROM calls c JOIN jobs j ON j.id = c.job_id WHERE c.batch_id = :b "
            "AND c.tier = 'hot' AND c.outcome = 'invalid' AND c.error LIKE 'router:%'"), {"b": batch}).scalars())
    # A doubted answer goes straight to the strong tier (cold), not to the next one (warm).
    assert escalated and all([a["tier"] for a in second[q]["attempts"]] == ["hot", "cold"] for q in escalated)
    # The same questions again: the prompt scorer may know some of them well enough to skip the cheap tier.
    started_strong = {q for q in second if second[q]["attempts"][0]["tier"] == "cold"}
    kept_from_cheap = escalated | started_strong
    caught = len(kept_from_cheap & wrong) / len(wrong)
    bothered = len(kept_from_cheap - wrong) / (len(second) - len(wrong))
    assert caught > 0.8 and bothered < 0.45 and caught > 2 * bothered
    # Of the wrong answers the cheap tier gave, the answer scorer sent most on: the simulator's wrong answers
    # are less sure of themselves, with overlap (fakellm/chat.py token_logprobs).
    answered_wrong = wrong - started_strong
    assert answered_wrong and len(escalated & answered_wrong) / len(answered_wrong) > 0.8


def test_a_router_that_fails_keeps_the_paid_answer(caplog: pytest.LogCaptureFixture) -> None:
    import uuid
    from decimal import Decimal

    from models.enums import CallOutcome
    from tierq.money import Usage
    from workers.calls import TierResult, _second_look
    from workers.learned import Doubt
    from workers.llm import CallRecord

    def record() -> CallRecord:
        return CallRecord(uuid.uuid4(), "sim-nano", "sim", Usage(10, 5), Decimal("0.001"), 5, CallOutcome.OK,
                          content="42")

    def broken(answer: str, logprobs: object) -> Doubt | None:
        raise ValueError("a scorer bug")

    kept, result = record(), TierResult(7)
    _second_look(broken, kept, result, 7)
    assert kept.outcome is CallOutcome.OK and result.jump_to is None and "job 7's answer; it is kept" in caplog.text
    doubted, result = record(), TierResult(8)
    _second_look(lambda answer, logprobs: Doubt("router: low", "cold"), doubted, result, 8)
    assert (doubted.outcome, doubted.error, result.jump_to) == (CallOutcome.INVALID, "router: low", "cold")


def test_a_stored_version_a_worker_cannot_read_leaves_the_other_task_types_routers_in_use(
    clean: Stack, caplog: pytest.LogCaptureFixture
) -> None:
    """A version another tierq stored (its layout has a field this one lacks) is skipped with one warning; the
    routers of the other task types are still used, and a later look does not warn again."""
    from workers.learned import LearnedRoutes

    examples = prompt_examples(300)
    router = fit(examples, 0.95, 0.8).router
    held = check(router, examples, 0.95)
    for task in ("readable", "unreadable"):
        assert _store(clean.engine, clean.config, task, router, held, Sources(files=300), 300).active
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE routers SET spec = spec || '{\"char_sizes\": [2, 3]}' "
                          "WHERE task_type = 'unreadable'"))
    config = clean.config.model_copy(update={"router": clean.config.router.model_copy(update={"poll_s": 0.01})})
    routes = LearnedRoutes(clean.engine, config)
    with caplog.at_level("INFO", logger="workers.learned"):
        readable = routes.get("readable")
        time.sleep(0.05)
        assert routes.get("unreadable") is None
    assert readable is not None and readable.version == 1
    warnings = [r.getMessage() for r in caplog.records if r.levelname == "WARNING"]
    assert len(warnings) == 1 and warnings[0].startswith("router unreadable v1 cannot be read by this worker"), warnings
    assert "tierq route activate --task-type unreadable --version N" in warnings[0]
    assert not any("using learned router unreadable" in r.getMessage() for r in caplog.records)
    # Nor does `tierq route activate` take such a version: the workers would route by the rules alone.
    with pytest.raises(InputError) as refused:
        activate(clean.engine, "unreadable", 1)
    assert str(refused.value).startswith("router version 1 of task type 'unreadable' cannot be read by this tierq "
                                         "(TypeError: ")
    activate(clean.engine, "readable", 1)


def test_a_prompt_given_twice_is_never_scored_by_a_model_that_saw_it(tmp_path: Path, stack_env: dict[str, str]) -> None:
    """A labelled file given twice (or a question labelled in two batches): its copies share a fold, so the
    out-of-fold scores the thresholds are chosen on stay honest, and the router keeps the target as it does on
    the file given once. (With the copies in other folds the fit memorised each prompt's label from its
    ticket number, and the router chosen sent nearly everything to the cheap tier at far below the target.)"""
    rows = labelled_rows(600, seed=4)
    for row in rows:
        row["cheap"] = str(random.Random(row["prompt"]).random() < 0.7)  # right or not by chance alone
    data = write_csv(tmp_path / "labels.csv", rows)
    figures = {}
    for name, files in (("once", [str(data)]), ("twice", [str(data), str(data)])):
        done = run_tierq(stack_env, "route", "eval", *files, "--cheap", "cheap", "--strong", "strong",
                         "--cheap-price", "0.6/0.6", "--strong-price", "10/30", "--json")
        assert done.returncode == 0, done.stderr
        figures[name] = json.loads(done.stdout)
    once, twice = figures["once"], figures["twice"]
    assert twice["quality_share_pct"] >= 90 and abs(twice["quality_share_pct"] - once["quality_share_pct"]) < 3, \
        (once, twice)
    prompts = [r["prompt"] for r in labelled_rows(50)]
    groups = logreg.groups_of(prompts + prompts[:20])
    assert [f.tolist() for f in logreg.folds(50, 5, 3, logreg.groups_of(prompts))] == \
        [f.tolist() for f in logreg.folds(50, 5, 3)]  # without repeats, the folds are the same as before
    for part in logreg.folds(70, 5, 3, groups):
        assert all((i + 50 in part) == (i in part) for i in range(20))


def test_route_show_all_says_why_a_fit_left_a_version_inactive(clean: Stack) -> None:
    examples = prompt_examples(300)
    router = fit(examples, 0.95, 0.8).router
    _store(clean.engine, clean.config, "refits", router, check(router, examples, 0.95), Sources(files=300), 300)
    everyone_cheap = type(router)(router.spec, router.prompt, None, type(router.policy)(None, None, 1, 1, 0))
    missed = _store(clean.engine, clean.config, "refits", everyone_cheap, check(everyone_cheap, examples, 0.95),
                    Sources(files=300), 300)
    done = run_tierq(clean.env, "route", "show", "--all")
    assert done.returncode == 0, done.stderr
    shown = done.stdout.splitlines()
    assert shown[0].startswith("refits v2 (inactive") and shown[3] == f"  {missed.reason}", shown
    assert missed.reason.startswith("not activated: kept ") and "version 1 stays active" in missed.reason
    assert shown[4].startswith("refits v1 (active") and len(shown) == 7  # an active version needs no reason
    # Thresholds to four significant digits, not a float's seventeen.
    assert shown[1] == ("  start at cold when the prompt scores below (never); escalate a hot answer scoring below "
                        "(never)")
    assert shown[5].startswith("  start at cold when the prompt scores below "), shown[5]
    assert all(len(number.lstrip("-").replace(".", "").lstrip("0")) <= 4
               for number in re.findall(r"-?\d+\.\d+", shown[5])), shown[5]


@pytest.mark.slow
def test_a_long_fit_says_how_far_it_is(tmp_path: Path, stack_env: dict[str, str]) -> None:
    """On 100,000 labelled rows `route eval` fitted for 7 minutes without a word; a fit of 5,000 rows or more
    (`tierq.router.fit.LONG_FIT_ROWS`) now says which fold of which scorer it is on, on standard error (standard
    output stays the JSON)."""
    data = write_csv(tmp_path / "labels.csv", labelled_rows(10_400))
    done = run_tierq(stack_env, "route", "eval", str(data), "--cheap", "cheap", "--strong", "strong",
                     "--cheap-price", "0.6/0.6", "--strong-price", "10/30", "--json")
    assert done.returncode == 0, done.stderr
    train = json.loads(done.stdout)["train"]
    assert train >= 5_000
    assert done.stderr.splitlines() == [f"seed 0: fitting the prompt scorer on {train:,} rows: fold {n} of 5"
                                        for n in range(1, 6)]
