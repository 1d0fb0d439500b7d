"""`tierq route eval`: fit a router on half of a labelled file and report what it does on the other half.

The file is RouteLLM's evaluation format: a `prompt` column, one boolean column per model (was its
answer right), and optionally `<model>_response` with the answer's text. Rows are split into halves by
a hash of the prompt and the seed (the same prompt always lands in the same half). A call is priced as
the simulator counts tokens: 4 characters a token, 4 tokens of framing for the one user message, and
the recorded response's tokens, or one token for a model without response texts.
"""

from __future__ import annotations

import csv
import hashlib
import statistics
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np

from tierq.errors import InputError
from tierq.money import Price, Usage
from tierq.money import estimate_tokens as tokens
from tierq.router import logreg
from tierq.router.fit import Examples, decide, fit
from tierq.router.policy import Rows, oracle_cost_share, outcome, random_cost_share

# The figures whose spread over seeds `spread` reports.
FIGURES = ("cost_reduction_pct", "quality_share_pct", "random_cost_reduction_pct", "oracle_cost_reduction_pct",
           "strong_share_pct", "auc", "answer_auc")
TRUE = {"true", "1", "1.0", "yes", "t", "y"}
FALSE = {"false", "0", "0.0", "no", "f", "n"}
MISSING = {"", "nan", "none", "null", "na", "n/a"}  # no verdict for that model: the row is left out


@dataclass(frozen=True, slots=True)
class Labelled:
    """Rows of a labelled file: prompts, both models' answers (None without texts), correctness, costs."""

    prompts: list[str]
    cheap_answers: list[str | None]
    cheap_ok: list[bool]
    strong_ok: list[bool]
    cheap_cost: list[Decimal]
    strong_cost: list[Decimal]
    left_out: list[str] = field(default_factory=list)  # "file:line ('col' empty)": rows without a verdict

    def rows(self, index: Sequence[int]) -> Rows:
        """The policy view of rows `index` (costs as floats: they only rank policies)."""
        pick = list(index)
        return Rows(np.array([self.cheap_ok[i] for i in pick], dtype=np.float64),
                    np.array([self.strong_ok[i] for i in pick], dtype=np.float64),
                    np.array([float(self.cheap_cost[i]) for i in pick]),
                    np.array([float(self.strong_cost[i]) for i in pick]))

    def examples(self, index: Sequence[int]) -> Examples:
        """Rows `index` as training examples."""
        return Examples([self.prompts[i] for i in index], [self.cheap_answers[i] for i in index], self.rows(index))


def _flag(value: str, path: Path, line: int, column: str) -> bool | None:
    """True or False; None when the cell is empty (no verdict)."""
    folded = value.strip().casefold()
    if folded in TRUE:
        return True
    if folded in FALSE:
        return False
    if folded in MISSING:
        return None
    raise InputError(f"{path}:{line}: column {column!r} must be true or false, got {value[:40]!r}")


def read(paths: Sequence[Path], cheap: str, strong: str, cheap_price: Price, strong_price: Price,
         warn: Callable[[str], None] | None = None) -> Labelled:
    """Read labelled files; InputError naming the file, line and column on bad input. `warn` hears, in one
    line, about rows left out for want of a verdict."""
    if cheap == strong:
        raise InputError(f"--cheap and --strong both name the column {cheap!r}; name the cheap model's column and "
                         "the strong model's")
    csv.field_size_limit(min(sys.maxsize, 2**31 - 1))
    data = Labelled([], [], [], [], [], [])
    for path in paths:
        try:
            handle = path.open(newline="", encoding="utf-8-sig")  # a spreadsheet's CSV starts with a byte-order mark
        except OSError as exc:
            raise InputError(f"{path}: cannot read it ({exc.strerror})") from None
        with handle:
            reader = csv.DictReader(handle)
            try:
                _read_rows(reader, path, cheap, strong, cheap_price, strong_price, data)
            except UnicodeDecodeError:
                raise InputError(f"{path}:{_first_undecodable(path)}: not UTF-8 text; save it as UTF-8 CSV") from None
            except csv.Error as exc:
                raise InputError(f"{path}:{reader.line_num}: not valid CSV ({exc})") from None
    if not data.prompts:
        without = f" ({len(data.left_out)} without a verdict for {cheap!r} or {strong!r})" if data.left_out else ""
        raise InputError(f"{', '.join(map(str, paths))}: no rows{without}")
    note = left_out_note(data)
    if note and warn is not None:
        warn(note)
    return data


def _first_undecodable(path: Path) -> int:
    """The number of the first line of `path` that is not UTF-8 (the reader decodes in blocks, so its own
    line count only says after which line the block began)."""
    with path.open("rb") as raw:
        for number, line in enumerate(raw, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError:
                return number
    return 1


def _read_rows(reader: csv.DictReader[str], path: Path, cheap: str, strong: str, cheap_price: Price,
               strong_price: Price, data: Labelled) -> None:
    """Append one file's rows to `data`."""
    if reader.fieldnames is None:
        raise InputError(f"{path}: empty, not even a header row; the first line names the columns (prompt, "
                         "one per model)")
    columns = list(reader.fieldnames)
    shown = ", ".join(columns[:12]) + (", ..." if len(columns) > 12 else "")
    if "prompt" not in columns:
        raise InputError(f"{path}: no column 'prompt' (columns: {shown}); the prompts must be in a column named "
                         "'prompt', as in RouteLLM's files: rename that column")
    for needed, option in ((cheap, "--cheap"), (strong, "--strong")):
        if needed not in columns:
            raise InputError(f"{path}: no column {needed!r} (columns: {shown}); name the column of that model's "
                             f"verdicts with {option}")
    end = reader.line_num
    for row in reader:
        line, end = end + 1, reader.line_num  # the record's first line (a quoted field may hold line breaks)
        if None in row:  # DictReader's key for fields past the header's: the columns no longer line up
            raise InputError(f"{path}:{line}: row has {len(columns) + len(row[None]):,} fields, the header has "
                             f"{len(columns):,}; quote a prompt that holds a comma (\"...\")")
        if None in (row["prompt"], row[cheap], row[strong]):  # DictReader's value for fields the row lacks (an
            # empty cell is ""); a row that stops after the columns tierq needs lacks only empty answer texts
            given = sum(value is not None for value in row.values())
            raise InputError(f"{path}:{line}: row has {given:,} field{'s' if given != 1 else ''}, the header has "
                             f"{len(columns):,}; quote a prompt that holds a line break (\"...\")")
        cheap_ok = _flag(row[cheap] or "", path, line, cheap)
        strong_ok = _flag(row[strong] or "", path, line, strong)
        if cheap_ok is None or strong_ok is None:
            empty = " and ".join(repr(c) for c, ok in ((cheap, cheap_ok), (strong, strong_ok)) if ok is None)
            data.left_out.append(f"{path}:{line} ({empty} empty)")
            continue
        prompt = row["prompt"] or ""
        cheap_text = row.get(f"{cheap}_response")
        strong_text = row.get(f"{strong}_response")
        prompt_tokens = 4 + tokens(prompt)
        data.prompts.append(prompt)
        data.cheap_answers.append(cheap_text)
        data.cheap_ok.append(cheap_ok)
        data.strong_ok.append(strong_ok)
        data.cheap_cost.append(
            cheap_price.cost(Usage(prompt_tokens, tokens(cheap_text) if cheap_text is not None else 1))
        )
        data.strong_cost.append(
            strong_price.cost(Usage(prompt_tokens, tokens(strong_text) if strong_text is not None else 1))
        )


def left_out_note(data: Labelled, shown: int = 3) -> str | None:
    """One line on the rows `read` left out for want of a verdict, or None when there were none."""
    count = len(data.left_out)
    if not count:
        return None
    more = f", and {count - shown:,} more" if count > shown else ""
    rows = f"{count:,} row{'s' if count != 1 else ''}"
    return f"left out {rows} with no verdict: {', '.join(data.left_out[:shown])}{more}"


def split(prompts: Sequence[str], seed: int) -> tuple[list[int], list[int]]:
    """(train, test) indexes: a prompt's half is a hash of it and the seed."""
    train: list[int] = []
    test: list[int] = []
    for index, prompt in enumerate(prompts):
        digest = hashlib.blake2b(f"{seed}\x00{prompt}".encode(), digest_size=8).digest()
        (train if digest[0] & 1 == 0 else test).append(index)
    return train, test


def _pct(value: float) -> float:
    return round(100.0 * value, 2)


def _finite(value: float) -> float | None:
    """JSON has no NaN: an AUC with one class only is null."""
    return round(value, 4) if np.isfinite(value) else None


def evaluate(data: Labelled, seed: int, target: float, confidence: float,
             progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Fit on one half, report on the other: the figures `tierq route eval --json` prints (`progress`: `fit`'s)."""
    train, test = split(data.prompts, seed)
    fitted = fit(data.examples(train), target, confidence, seed, progress=progress)
    router = fitted.router
    held = data.examples(test)
    direct, escalated = decide(router, held)
    prompt_scores = router.prompt_scores(held.prompts)
    answer_scores = None
    if router.answer is not None and len(held.with_answers()) == len(test):
        answer_scores = router.answer_scores(held.prompts, [a or "" for a in held.answers])
    rows = held.rows
    quality, _ = outcome(rows, direct, escalated)
    # Exact cost of the policy's calls.
    cost = Decimal(0)
    for position, index in enumerate(test):
        if direct[position]:
            cost += data.strong_cost[index]
        else:
            cost += data.cheap_cost[index] + (data.strong_cost[index] if escalated[position] else Decimal(0))
    all_strong = sum((data.strong_cost[i] for i in test), Decimal(0))
    strong_right = float(rows.strong_ok.sum())
    share = quality / strong_right if strong_right else 1.0
    labels = (rows.cheap_ok >= rows.strong_ok).astype(np.float64)
    policy = router.policy
    report: dict[str, Any] = {
        "seed": seed, "train": len(train), "test": len(test), "target": target, "confidence": confidence,
        "policy": "cascade" if policy.escalate_below is not None else "route",
        "cost_reduction_pct": _pct(float(1 - cost / all_strong)) if all_strong else 0.0,
        "quality_share_pct": _pct(share),
        "strong_share_pct": _pct(float((direct | escalated).mean())),
        "started_strong_pct": _pct(float(direct.mean())),
        "escalated_pct": _pct(float(escalated.mean())),
        "accuracy_pct": _pct(quality / len(test)),
        "cheap_accuracy_pct": _pct(float(rows.cheap_ok.mean())),
        "strong_accuracy_pct": _pct(float(rows.strong_ok.mean())),
        "random_cost_reduction_pct": _pct(1 - random_cost_share(rows, share)),
        "oracle_cost_reduction_pct": _pct(1 - oracle_cost_share(rows)),
        "auc": _finite(logreg.auc(prompt_scores, labels)),
        "answer_auc": _finite(logreg.auc(answer_scores, labels)) if answer_scores is not None else None,
        "train_share_pct": _pct(policy.share), "train_share_lower_pct": _pct(policy.share_lower),
        "train_cost_share_pct": _pct(policy.cost_share),
        "all_strong_cost_usd": str(all_strong), "cost_usd": str(cost),
    }
    return report


def spread(reports: Sequence[dict[str, Any]]) -> dict[str, dict[str, float]]:
    """Mean, standard deviation, least and greatest of each figure over several seeds' reports (one split
    says little: on 660 test questions the quality share alone varies by about 1.5 points)."""
    out: dict[str, dict[str, float]] = {}
    for name in FIGURES:
        values = [float(r[name]) for r in reports if r.get(name) is not None]
        if values:
            out[name] = {"mean": round(statistics.mean(values), 2),
                         "sd": round(statistics.stdev(values), 2) if len(values) > 1 else 0.0,
                         "min": min(values), "max": max(values)}
    return out
