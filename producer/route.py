"""`tierq route fit` and `tierq route show`: learned router versions in Postgres.

A fit reads one task type's examples from the database (audited answers of the cheap tier, and jobs
whose cheap answer a validator failed) and/or from labelled files, holds out a share of them by a hash
of the prompt, fits on the rest (tierq/router), and stores the result as a new version. The version
becomes active only when it keeps `[quality] target` of the strong tier's quality on its held-out
labels; otherwise the previous version stays active. Workers pick the active version up within
`[router] poll_s`.
"""

from __future__ import annotations

import difflib
import hashlib
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import numpy as np
from sqlalchemy import Connection, Engine, text

from tierq.config import Config
from tierq.errors import InputError, NotFound
from tierq.messages import user_text
from tierq.money import Price, Usage, estimate_tokens
from tierq.router.evaluate import read
from tierq.router.features import LogprobSummary
from tierq.router.fit import Check, Examples, Router, check, fit, holdout
from tierq.router.policy import Rows

# Cheap-tier outcomes that escalate because of the answer (not an error): the cheap tier was not good enough.
FAILED_ANSWERS = ("invalid", "refusal", "empty", "truncated")


def _cost(price: Price, prompt: str, answer_chars: int) -> float:
    return float(price.cost(Usage(4 + estimate_tokens(prompt), max(1, -(-answer_chars // 4)))))


@dataclass(slots=True)
class _Collected:
    prompts: list[str] = field(default_factory=list)
    answers: list[str | None] = field(default_factory=list)
    valid: list[bool] = field(default_factory=list)
    logprobs: list[LogprobSummary | None] = field(default_factory=list)
    cheap_ok: list[float] = field(default_factory=list)
    strong_ok: list[float] = field(default_factory=list)
    cheap_cost: list[float] = field(default_factory=list)
    strong_cost: list[float] = field(default_factory=list)

    def examples(self) -> Examples:
        return Examples(self.prompts, self.answers,
                        Rows(np.array(self.cheap_ok), np.array(self.strong_ok), np.array(self.cheap_cost),
                             np.array(self.strong_cost)), self.valid, self.logprobs)


@dataclass(frozen=True, slots=True)
class Sources:
    """How many examples came from where."""

    audits: int = 0
    escalations: int = 0
    files: int = 0

    def as_dict(self) -> dict[str, int]:
        """JSON form."""
        return {"audits": self.audits, "escalations": self.escalations, "files": self.files}


def _prices(config: Config) -> tuple[Price, Price]:
    cheap, strong = config.router_tiers
    return config.price(config.tier(cheap).models[0]), config.price(config.tier(strong).models[0])


def database_examples(conn: Connection, config: Config, task_type: str, into: _Collected) -> tuple[int, int]:
    """Add the database's examples of `task_type`: (audits, escalations) added. Private batches' texts are
    in the vault, not here: they do not teach the router."""
    cheap, _ = config.router_tiers
    cheap_price, strong_price = _prices(config)
    audits = conn.execute(text(
        "SELECT j.messages, l.candidate, l.agree, l.candidate_chars, l.reference_chars, "
        "l.candidate_logprob_mean, l.candidate_logprob_min FROM labels l JOIN jobs j ON j.id = l.job_id "
        "JOIN batches b ON b.id = l.batch_id WHERE l.task_type = :task AND l.source = 'answer' "
        "AND l.candidate_tier = :cheap AND b.store_text AND l.candidate IS NOT NULL ORDER BY l.id"),
        {"task": task_type, "cheap": cheap}).all()
    for messages, candidate, agree, candidate_chars, reference_chars, mean, least in audits:
        prompt = user_text(messages)
        into.prompts.append(prompt)
        into.answers.append(candidate)
        into.valid.append(True)
        into.logprobs.append((float(mean), float(least)) if mean is not None and least is not None else None)
        into.cheap_ok.append(float(agree))
        into.strong_ok.append(1.0)  # the reference tier is the measure of right
        into.cheap_cost.append(_cost(cheap_price, prompt, candidate_chars))
        into.strong_cost.append(_cost(strong_price, prompt, reference_chars))
    failed = conn.execute(
        text(
            "SELECT j.messages, length(coalesce(j.content, '')) FROM jobs j JOIN batches b ON b.id = j.batch_id "
            "WHERE j.task_type = :task AND b.store_text AND j.status = 'succeeded' AND j.start_tier = :cheap "
            "AND j.tier <> :cheap AND NOT j.audited AND EXISTS (SELECT 1 FROM calls c WHERE c.job_id = j.id "
            "AND c.tier = :cheap AND c.outcome = ANY(:failed) AND coalesce(c.error, '') NOT LIKE 'router:%') "
            "ORDER BY j.id"
        ),
        {"task": task_type, "cheap": cheap, "failed": list(FAILED_ANSWERS)},
    ).all()
    for messages, answer_chars in failed:
        prompt = user_text(messages)
        into.prompts.append(prompt)
        into.answers.append(None)  # a validator failed it: it escalates whatever a router says
        into.valid.append(False)
        into.logprobs.append(None)
        into.cheap_ok.append(0.0)
        into.strong_ok.append(1.0)
        into.cheap_cost.append(_cost(cheap_price, prompt, 4 * (config.tier(cheap).max_tokens or 64)))
        into.strong_cost.append(_cost(strong_price, prompt, answer_chars))
    return len(audits), len(failed)


def file_examples(config: Config, paths: Sequence[Path], cheap: str, strong: str, into: _Collected,
                  warn: Callable[[str], None] | None = None) -> int:
    """Add the examples of labelled files (RouteLLM's format), priced at the router's tiers' first models;
    `warn` hears about rows left out."""
    cheap_price, strong_price = _prices(config)
    data = read(paths, cheap, strong, cheap_price, strong_price, warn)
    for index, prompt in enumerate(data.prompts):
        into.prompts.append(prompt)
        into.answers.append(data.cheap_answers[index])
        into.valid.append(True)
        into.logprobs.append(None)
        into.cheap_ok.append(float(data.cheap_ok[index]))
        into.strong_ok.append(float(data.strong_ok[index]))
        into.cheap_cost.append(float(data.cheap_cost[index]))
        into.strong_cost.append(float(data.strong_cost[index]))
    return len(data.prompts)


@dataclass(frozen=True, slots=True)
class FitResult:
    """What `tierq route fit` did."""

    task_type: str
    version: int
    active: bool
    labels: int
    sources: Sources
    held_out: Check
    reason: str

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"task_type": self.task_type, "version": self.version, "active": self.active, "labels": self.labels,
                "sources": self.sources.as_dict(), "held_out": {"rows": self.held_out.rows,
                "quality_share": round(self.held_out.share, 4), "quality_share_upper": round(self.held_out.upper, 4),
                "cost_share": round(self.held_out.cost_share, 4),
                "target": self.held_out.target}, "reason": self.reason}


def _unknown_task_type(conn: Connection, task_type: str) -> str | None:
    """A warning when no batch of `task_type` was submitted, nor any of the latest 100,000 jobs (a typo, or a
    router fitted ahead of its jobs): workers use a router only for jobs of its task type."""
    # A record may name its own task type: the latest jobs' too (by primary key, so it costs the same on a
    # table of any size).
    known = sorted({str(t) for t in conn.execute(text(
        "SELECT task_type FROM batches UNION SELECT task_type FROM (SELECT task_type FROM jobs ORDER BY id DESC "
        "LIMIT 100000) recent")).scalars()})
    if task_type in known:
        return None
    close = difflib.get_close_matches(task_type, known, n=1)
    hint = (f"; did you mean {close[0]!r}?" if close else
            f" (those submitted: {', '.join(known[:8])})." if known else ".")
    return (f"warning: no batch of task type {task_type!r} was submitted{hint} Workers use this router only for "
            f"jobs submitted with --task-type {task_type}")


def fit_version(
    engine: Engine,
    config: Config,
    task_type: str,
    paths: Sequence[Path] = (),
    cheap_column: str | None = None,
    strong_column: str | None = None,
    use_database: bool = True,
    seed: int = 0,
    warn: Callable[[str], None] | None = None,
    progress: Callable[[str], None] | None = None,
) -> FitResult:
    """Fit a router for `task_type`, store it as a new version, activate it if it passes its held-out check;
    `warn` hears about labelled rows left out, `progress` how far a long fit is (`tierq.router.fit.fit`)."""
    cheap, strong = config.router_tiers
    if config.tier_index(strong) <= config.tier_index(cheap):
        raise InputError(f"a router sends work from the cheap tier up to a stronger one, but {strong!r} does not come "
                         f"after {cheap!r} in {config.tier_names}; set [router] cheap_tier and strong_tier")
    collected = _Collected()
    audits = escalations = files = 0
    with engine.connect() as conn:
        unknown = _unknown_task_type(conn, task_type)
        if use_database:
            audits, escalations = database_examples(conn, config, task_type, collected)
    if unknown is not None and warn is not None:
        warn(unknown)
    if paths:
        if not cheap_column or not strong_column:
            raise InputError("labelled files need --cheap COL and --strong COL: the columns that say whether each "
                             "model's answer was right")
        files = file_examples(config, paths, cheap_column, strong_column, collected, warn)
    sources = Sources(audits, escalations, files)
    total = len(collected.prompts)
    minimum = config.router.min_labels
    if total < minimum:
        raise InputError(f"task type {task_type!r} has {total} labels ({audits} audits, {escalations} escalations, "
                         f"{files} from files); a router needs at least {minimum} ([router] min_labels): audit more "
                         "answers ([quality] audit_rate) or pass a labelled file; the router stays off until then")
    examples = collected.examples()
    fit_rows, held = holdout(examples.prompts, config.router.holdout)
    # Folds are drawn by position: a canonical order makes a fit independent of the order rows were read in.
    fit_rows.sort(key=lambda i: hashlib.blake2b(examples.prompts[i].encode(), digest_size=8).digest())
    target, confidence = config.quality.target, config.router.confidence
    router = fit(examples.take(fit_rows), target, confidence, seed, progress=progress).router
    result = check(router, examples.take(held), target, confidence, seed)
    return _store(engine, config, task_type, router, result, sources, total)


def _store(engine: Engine, config: Config, task_type: str, router: Router, held: Check, sources: Sources,
           labels: int) -> FitResult:
    spec, policy, prompt_blob, answer_blob = router.blobs()
    cheap, strong = config.router_tiers
    metrics = {
        "labels": labels,
        "sources": sources.as_dict(),
        "held_out_rows": held.rows,
        "held_out_share": held.share,
        "held_out_share_upper": held.upper,
        "held_out_cost_share": held.cost_share,
        "target": held.target,
        "confidence": config.router.confidence,
        "l2": router.prompt.l2,
    }
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('tierq-router:' || :task))"), {"task": task_type})
        version = int(conn.execute(text("SELECT coalesce(max(version), 0) + 1 FROM routers WHERE task_type = :task"),
                                   {"task": task_type}).scalar_one())
        if held.passed:
            conn.execute(
                text("UPDATE routers SET active = false WHERE task_type = :task AND active"), {"task": task_type}
            )
            reason = f"active: kept {held.share:.1%} of the {strong} tier's quality on {held.rows} held-out labels"
        else:
            previous = conn.execute(text("SELECT version FROM routers WHERE task_type = :task AND active"),
                                    {"task": task_type}).scalar()
            keeps = f"version {previous} stays active" if previous is not None else "the router stays off"
            reason = (f"not activated: kept {held.share:.1%} of the {strong} tier's quality on {held.rows} held-out "
                      f"labels (at most {held.upper:.1%} within its sampling error), below the target "
                      f"{held.target:.0%}; {keeps}")
        conn.execute(
            text(
                "INSERT INTO routers (task_type, version, active, cheap_tier, strong_tier, spec, policy, metrics, "
                "prompt_scorer, answer_scorer, note) "
                "VALUES (:task, :version, :active, :cheap, :strong, CAST(:spec AS jsonb), "
                "CAST(:policy AS jsonb), CAST(:metrics AS jsonb), :prompt, :answer, :note)"
            ),
            {
                "task": task_type,
                "version": version,
                "active": held.passed,
                "cheap": cheap,
                "strong": strong,
                "spec": json.dumps(spec),
                "policy": json.dumps(policy),
                "metrics": json.dumps(metrics),
                "prompt": prompt_blob,
                "answer": answer_blob,
                "note": reason,
            },
        )
    return FitResult(task_type, version, held.passed, labels, sources, held, reason)


@dataclass(frozen=True, slots=True)
class Shown:
    """One stored router version, as `tierq route show` lists it."""

    task_type: str
    version: int
    active: bool
    cheap_tier: str
    strong_tier: str
    policy: dict[str, Any]
    metrics: dict[str, Any]
    note: str | None
    created_at: datetime

    def as_dict(self) -> dict[str, Any]:
        """JSON form."""
        return {"task_type": self.task_type, "version": self.version, "active": self.active,
                "cheap_tier": self.cheap_tier, "strong_tier": self.strong_tier, "policy": self.policy,
                "metrics": self.metrics, "note": self.note, "created_at": self.created_at.isoformat()}


def show(engine: Engine, task_type: str | None = None, every: bool = False) -> list[Shown]:
    """Active versions per task type (`every`: all versions, newest first)."""
    where = [] if every else ["active"]
    if task_type is not None:
        where.append("task_type = :task")
    clause = f"WHERE {' AND '.join(where)} " if where else ""
    with engine.connect() as conn:
        rows = conn.execute(text(
            "SELECT task_type, version, active, cheap_tier, strong_tier, policy, metrics, note, created_at "
            f"FROM routers {clause}ORDER BY task_type, version DESC"), {"task": task_type}).all()
    return [Shown(*row) for row in rows]


def activate(engine: Engine, task_type: str, version: int) -> None:
    """Make a stored version the active one (a rollback), whatever its held-out figures."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('tierq-router:' || :task))"), {"task": task_type})
        found = conn.execute(text("SELECT spec, policy, prompt_scorer, answer_scorer FROM routers "
                                  "WHERE task_type = :task AND version = :version"),
                             {"task": task_type, "version": version}).first()
        if found is None:
            raise NotFound(
                f"no router version {version} for task type {task_type!r}; `tierq route show --all` lists them"
            )
        spec, policy, prompt, answer = found
        try:  # the workers read it the same way, and would route this task type by the rules alone
            Router.from_blobs(spec, policy, bytes(prompt), bytes(answer) if answer else None)
        except Exception as exc:  # decoding only (no I/O): whatever it raises means another tierq's, or damaged
            raise InputError(
                f"router version {version} of task type {task_type!r} cannot be read by this tierq "
                f"({type(exc).__name__}: {str(exc)[:200]}), so the workers could not use it; activate a version "
                "this tierq fitted "
                "(`tierq route show --all`), or fit one (`tierq route fit`)") from None
        conn.execute(text("UPDATE routers SET active = false WHERE task_type = :task AND active"), {"task": task_type})
        conn.execute(text("UPDATE routers SET active = true WHERE task_type = :task AND version = :version"),
                     {"task": task_type, "version": version})


def deactivate(engine: Engine, task_type: str) -> int:
    """Turn the router of `task_type` off (its versions stay stored); how many were active."""
    with engine.begin() as conn:
        conn.execute(text("SELECT pg_advisory_xact_lock(hashtext('tierq-router:' || :task))"), {"task": task_type})
        return conn.execute(text("UPDATE routers SET active = false WHERE task_type = :task AND active"),
                            {"task": task_type}).rowcount


def price_pair(value: str, option: str) -> Price:
    """`IN/OUT` USD per million tokens, exactly."""
    parts = value.split("/")
    try:
        if len(parts) != 2:
            raise ValueError
        low, high = Decimal(parts[0]), Decimal(parts[1])
        if low < 0 or high < 0 or not low.is_finite() or not high.is_finite():
            raise ValueError
    except (ValueError, ArithmeticError):
        raise InputError(f"{option} {value!r}: give input/output USD per million tokens, e.g. 0.6/0.6") from None
    return Price(low, high, low)
