"""`tierq route`: fit, show, evaluate and switch learned routers (docs/routing.md)."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from producer.friendly import friendly

FEW_ROWS = 200  # below this, a half's quality share varies by five points and more from one split to another


def _pct(value: float) -> str:
    return f"{value:.1%}"


@click.group()
def route() -> None:
    """Learned routers: which prompts skip the cheap tier, which cheap answers go on to the strong one."""


@route.command("fit")
@click.argument("files", nargs=-1, type=click.Path(path_type=Path))
@click.option("--task-type", required=True, help="The task type the router decides for.")
@click.option("--cheap", "cheap_column", help="Column of FILES saying whether the cheap model was right.")
@click.option("--strong", "strong_column", help="Column of FILES saying whether the strong model was right.")
@click.option("--no-database", is_flag=True, help="Learn from FILES only, not from the database's labels.")
@click.option("--seed", default=0, show_default=True, help="Seed of the folds and the bootstrap.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def fit(files: tuple[Path, ...], task_type: str, cheap_column: str | None, strong_column: str | None,
        no_database: bool, seed: int, as_json: bool) -> None:
    """Fit a router from the database's labels and/or labelled FILES (RouteLLM's CSV format); store it
    as a new version, active when it keeps the quality target on its held-out labels."""
    from producer.api import Tierq
    from producer.route import fit_version

    with Tierq() as tq:
        result = fit_version(tq.engine, tq.config, task_type, files, cheap_column, strong_column,
                             not no_database, seed, warn=lambda line: click.echo(line, err=True),
                             progress=lambda line: click.echo(line, err=True))
    if as_json:
        click.echo(json.dumps(result.as_dict()))
        return
    sources = result.sources
    click.echo(f"router {task_type} v{result.version}: {result.labels:,} labels ({sources.audits:,} audits, "
               f"{sources.escalations:,} escalations, {sources.files:,} from files)")
    click.echo(f"  held out: {result.held_out.rows:,} labels, quality {_pct(result.held_out.share)} of the strong "
               f"tier's at {_pct(result.held_out.cost_share)} of its cost")
    click.echo(f"  {result.reason}")


@route.command("show")
@click.option("--task-type", help="Only this task type.")
@click.option("--all", "every", is_flag=True, help="Every stored version, not only the active ones.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@friendly
def show(task_type: str | None, every: bool, as_json: bool) -> None:
    """Active router versions per task type: labels, thresholds, held-out quality."""
    from producer.api import Tierq
    from producer.route import show as listed

    with Tierq() as tq:
        versions = listed(tq.engine, task_type, every)
        enabled = tq.config.router.enabled
    if as_json:
        click.echo(json.dumps({"enabled": enabled, "routers": [v.as_dict() for v in versions]}))
        return
    if not versions:
        click.echo("no learned router is active; `tierq route fit --task-type T` fits one from audits "
                   "(docs/routing.md)" if not every else "no router versions stored")
        return
    if not enabled:
        click.echo("[router] enabled = false in the TOML: workers ignore these routers")
    for v in versions:
        m, p = v.metrics, v.policy
        state = "active" if v.active else "inactive"
        start = p.get("start_strong_below")
        escalate = p.get("escalate_below")
        click.echo(f"{v.task_type} v{v.version} ({state}, {v.created_at:%Y-%m-%d %H:%M}): {v.cheap_tier} -> "
                   f"{v.strong_tier}, {m.get('labels', 0):,} labels")
        click.echo(f"  start at {v.strong_tier} when the prompt scores below {_threshold(start)}; escalate a "
                   f"{v.cheap_tier} answer scoring below {_threshold(escalate)}")
        click.echo(f"  held out: {m.get('held_out_rows', 0):,} labels, quality {_pct(m.get('held_out_share', 0.0))} "
                   f"at {_pct(m.get('held_out_cost_share', 0.0))} of the cost (target {_pct(m.get('target', 0.0))})")
        if not v.active and v.note and v.note.startswith("not activated"):
            click.echo(f"  {v.note}")  # why a fit left it inactive (docs/routing.md promises the reason)


def _threshold(value: float | None) -> str:
    """A threshold as people read it: four significant digits (`--json` keeps every digit)."""
    if value is None:
        return "(never)"
    return "(always)" if value == float("inf") else f"{value:.4g}"


@route.command("eval")
@click.argument("files", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option("--cheap", "cheap_column", required=True, help="Column saying whether the cheap model was right.")
@click.option("--strong", "strong_column", required=True, help="Column saying whether the strong model was right.")
@click.option("--cheap-price", required=True, help="Cheap model's USD per million tokens, IN/OUT (0.6/0.6).")
@click.option("--strong-price", required=True, help="Strong model's USD per million tokens, IN/OUT (10/30).")
@click.option("--target", default=0.95, show_default=True, type=click.FloatRange(0, 1, min_open=True),
              help="Share of the strong model's quality to keep.")
@click.option("--confidence", default=None, type=click.FloatRange(0.5, 1, max_open=True),
              help="Bootstrap confidence that the target is kept (default [router] confidence, 0.8).")
@click.option("--seed", default=0, show_default=True, help="Which halves: rows split by a hash of prompt and seed.")
@click.option("--seeds", "count", default=1, show_default=True, type=click.IntRange(1, 1000),
              help="Run this many seeds from --seed on and report the spread of each figure too.")
@click.option("--prompt-only", is_flag=True, help="Ignore response texts: decide from prompts alone.")
@click.option("--json", "as_json", is_flag=True,
              help="Print one JSON object (with --seeds: {\"seeds\": [one per seed], \"spread\": {...}}).")
@friendly
def evaluate(files: tuple[Path, ...], cheap_column: str, strong_column: str, cheap_price: str,
             strong_price: str, target: float, confidence: float | None, seed: int, count: int, prompt_only: bool,
             as_json: bool) -> None:
    """Fit on half of labelled FILES, report cost and quality on the other half (no database needed)."""
    from producer.route import price_pair
    from tierq.router.config import RouterConfig
    from tierq.router.evaluate import evaluate as run
    from tierq.router.evaluate import read, spread

    data = read(files, cheap_column, strong_column, price_pair(cheap_price, "--cheap-price"),
                price_pair(strong_price, "--strong-price"), warn=lambda line: click.echo(line, err=True))
    if len(data.prompts) < FEW_ROWS:
        rows = len(data.prompts)
        click.echo(f"warning: only {rows:,} labelled rows, about {rows // 2:,} per half: the figures below carry "
                   "several points of chance; judge a router on a few hundred rows or more", err=True)
    cheap_right, strong_right = sum(data.cheap_ok), sum(data.strong_ok)
    if data.prompts and strong_right <= cheap_right:
        rows = len(data.prompts)
        click.echo(f"warning: {strong_column!r} is right on {strong_right:,} of {rows:,} rows and {cheap_column!r} on "
                   f"{cheap_right:,}: the strong model is no better, so routing has nothing to keep from it and the "
                   "figures below say little (are --cheap and --strong the right way round?)", err=True)
    if prompt_only:
        data.cheap_answers[:] = [None] * len(data.cheap_answers)
    margin = confidence if confidence is not None else RouterConfig().confidence
    reports = []
    for each in range(seed, seed + count):
        reports.append(run(data, each, target, margin, progress=_told(each)))
        if not as_json:
            _report(reports[-1], target)
    if count == 1:
        if as_json:
            click.echo(json.dumps(reports[0]))
        return
    figures = spread(reports)
    if as_json:
        click.echo(json.dumps({"target": target, "confidence": margin, "seeds": reports, "spread": figures}))
        return
    click.echo(f"over seeds {seed}-{seed + count - 1}: mean (sd, least-greatest)")
    for name, value in figures.items():
        click.echo(f"  {name}: {value['mean']} ({value['sd']}, {value['min']}-{value['max']})")


def _told(seed: int) -> Callable[[str], None]:
    """How far a long fit of `seed` is, on standard error."""
    return lambda line: click.echo(f"seed {seed}: {line}", err=True)


def _report(report: dict[str, Any], target: float) -> None:
    """One seed's report, for people."""
    seed = report["seed"]
    click.echo(
        f"train {report['train']:,} rows, test {report['test']:,} rows (seed {seed}); policy: {report['policy']}"
    )
    click.echo(
        f"  cost cut {report['cost_reduction_pct']:.1f}% against all-strong at {report['quality_share_pct']:.1f}% "
        f"of its quality (target {target:.0%})"
    )
    click.echo(f"  random routing at that quality: {report['random_cost_reduction_pct']:.1f}%; "
               f"oracle: {report['oracle_cost_reduction_pct']:.1f}%")
    click.echo(
        f"  strong model answered {report['strong_share_pct']:.1f}% "
        f"(started there {report['started_strong_pct']:.1f}%, "
        f"escalated {report['escalated_pct']:.1f}%); prompt AUC {report['auc']}"
        + (f", answer AUC {report['answer_auc']}" if report.get("answer_auc") is not None else "")
    )


@route.command("activate")
@click.option("--task-type", required=True)
@click.option("--version", "version", required=True, type=int)
@friendly
def activate(task_type: str, version: int) -> None:
    """Make a stored version active (a rollback), whatever its held-out figures."""
    from producer.api import Tierq
    from producer.route import activate as switch

    with Tierq() as tq:
        switch(tq.engine, task_type, version)
    click.echo(f"router {task_type} v{version} is active; workers use it within [router] poll_s")


@route.command("off")
@click.option("--task-type", required=True)
@friendly
def off(task_type: str) -> None:
    """Stop using the learned router of a task type (its versions stay stored)."""
    from producer.api import Tierq
    from producer.route import deactivate

    with Tierq() as tq:
        count = deactivate(tq.engine, task_type)
    click.echo(f"router {task_type} is off" if count else f"router {task_type} was not active")
