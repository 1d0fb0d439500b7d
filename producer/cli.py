"""The `tierq` command: submit, status, results, cancel, retry, report, demo, db, fake-llm, doctor, metrics,
quality, route."""

from __future__ import annotations

import json
import math
import sys
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any

import click

from producer.friendly import friendly as _friendly
from tierq.money import amount_problem


class _Seconds(click.FloatRange):
    """A number of seconds in a range; also refuses nan, which every range comparison lets through."""

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> Any:
        seconds = super().convert(value, param, ctx)
        if not math.isfinite(seconds):
            self.fail(f"{value!r} is not a number of seconds", param, ctx)
        return seconds


@click.group()
@click.version_option(package_name="tierq")
def main() -> None:
    """tierq: send each prompt to the cheapest model tier that can answer it, and account for every cent."""


def _usd(value: str | None) -> Decimal | None:
    """A money option parsed exactly as typed (a float would turn 0.1 into 0.1000000000000000055...)."""
    if value is None:
        return None
    try:
        amount = Decimal(value)
    except InvalidOperation:
        raise click.BadParameter(f"{value!r} is not an amount in USD, e.g. 25 or 0.50") from None
    problem = amount_problem(amount)
    if problem is not None:
        raise click.BadParameter(f"{value!r} {problem}")
    return amount


_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(value: str | None) -> float | None:
    """A duration such as 24h, 90m, 2d or 30s, in seconds."""
    if value is None:
        return None
    number, unit = value.strip()[:-1], value.strip()[-1:].lower()
    try:
        seconds = float(number) * _UNITS[unit]
    except (KeyError, ValueError):
        raise click.BadParameter(f"{value!r} is not a duration; use a number and a unit, e.g. 24h, 90m, 2d") from None
    if not seconds > 0 or seconds == float("inf"):
        raise click.BadParameter(f"{value!r} must be a positive duration, e.g. 24h")
    return seconds


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, allow_dash=True))
@click.option("--format", "fmt", type=click.Choice(["auto", "jsonl", "csv", "openai"]), default="auto",
              show_default=True, help="Input format; auto tells JSONL, CSV and OpenAI batch files apart by content.")
@click.option("--prompt-field", help="Field (JSONL) or column (CSV) holding the prompt [default: prompt, else text].")
@click.option("--template", help='Build each prompt from fields or columns, e.g. "Summarise this ticket: {text}".')
@click.option("--rejects", type=click.Path(dir_okay=False, path_type=Path),
              help="Write every rejected record (line, id, kind, reason) to FILE as JSONL.")
@click.option("--system", "system_prompt", help="System prompt for every job.")
@click.option("--task-type", default="default", show_default=True, help="Task type of every job without one.")
@click.option("--tenant", default="default", show_default=True, help="Tenant the batch belongs to.")
@click.option("--tier", "force_tier", help="Send every job to this tier (no routing).")
@click.option("--min-tier", help="Start no job below this tier.")
@click.option("--max-tier", help="Start no job above this tier.")
@click.option("--budget-usd", callback=lambda _c, _p, v: _usd(v), metavar="USD",
              help="Spend at most this on the batch; jobs that cannot be covered fail with reason 'budget'.")
@click.option("--no-cache", is_flag=True, help="Neither answer from nor fill the shared cache for this batch.")
@click.option("--no-store-text", is_flag=True,
              help="Keep only digests of prompts and answers in Postgres; answers are returned once by `results`.")
@click.option("--compress/--no-compress", default=None,
              help="Summarise older turns of long conversations [default: as the TOML's [compression] says].")
@click.option("--json-schema", "json_schema", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="Answers must be JSON matching this JSON schema FILE; others escalate as 'invalid'.")
@click.option("--deadline", callback=lambda _c, _p, v: _duration(v), metavar="DURATION",
              help="The batch may take this long (e.g. 24h): tiers with mode = \"batch\" or \"deadline\" whose "
                   "batch_window fits send its jobs to the provider's half-price batch API; a shorter deadline "
                   "keeps every tier interactive.")
@click.option("--wait", is_flag=True, help="Show progress until the batch is done.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@_friendly
def submit(file: str, fmt: str, prompt_field: str | None, template: str | None, rejects: Path | None,
           system_prompt: str | None, task_type: str, tenant: str, force_tier: str | None,
           min_tier: str | None, max_tier: str | None, budget_usd: Decimal | None, no_cache: bool, no_store_text: bool,
           compress: bool | None, json_schema: Path | None, deadline: float | None, wait: bool,
           as_json: bool) -> None:
    """Submit FILE (JSONL, CSV or an OpenAI batch request file; - reads standard input) as one batch."""
    from producer.commands import run_submit
    from producer.inputs.stream import ReadOptions
    from producer.submit import BatchOptions
    from tierq.validator_config import read_json_schema

    schema = read_json_schema(json_schema, "--json-schema") if json_schema is not None else None
    options = BatchOptions(tenant=tenant, task_type=task_type, system_prompt=system_prompt, force_tier=force_tier,
                           min_tier=min_tier, max_tier=max_tier, source="<stdin>" if file == "-" else file,
                           use_cache=not no_cache, budget_usd=budget_usd, store_text=not no_store_text,
                           compress=compress, json_schema=schema, deadline_s=deadline)
    sys.exit(run_submit(file, options, ReadOptions(fmt, prompt_field, template), rejects, wait, as_json))


@main.command()
@click.argument("batch")
@click.option("--watch", is_flag=True, help="Refresh until the batch is done (in place on a terminal).")
@click.option("--interval", default=2.0, show_default=True, type=_Seconds(min=0.1, max=86_400),
              help="Seconds between refreshes with --watch.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with --watch, one line per refresh).")
@_friendly
def status(batch: str, watch: bool, interval: float, as_json: bool) -> None:
    """Show a batch's jobs by state and tier, escalations, cost so far, rate and ETA."""
    from producer.commands import watch_status

    sys.exit(watch_status(batch, as_json, watch, interval))


@main.command()
@click.argument("batch")
@click.option(
    "-o", "--output", type=click.File("w", encoding="utf-8"), default="-", help="Write to FILE instead of stdout."
)
@click.option("--format", "fmt", type=click.Choice(["jsonl", "openai"]), default="jsonl", show_default=True,
              help="tierq's JSONL, or the OpenAI Batch API output-file format.")
@_friendly
def results(batch: str, output: Any, fmt: str) -> None:
    """Write the batch's finished jobs, one JSON line per job, in input order."""
    from producer.commands import write_results

    write_results(batch, output, fmt)


@main.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def cancel(batch: str, as_json: bool) -> None:
    """Cancel BATCH: its waiting jobs get no model call; running ones finish their call; results stay."""
    from producer.api import Tierq

    with Tierq() as tq:
        done = tq.cancel(batch)
    if as_json:
        click.echo(json.dumps(done.as_dict()))
    elif done.finished:
        click.echo(f"batch {done.batch_id} has finished: nothing to cancel (its results stay; "
                   f"`tierq retry {done.batch_id} --failed` runs its failed jobs again)")
    elif done.already and not done.cancelled:
        click.echo(f"batch {done.batch_id} was already cancelled ({done.running:,} jobs still finishing a call)")
    else:
        kept = (f", {done.kept:,} answered and waiting to be audited kept their answer (succeeded)"
                if done.kept else "")
        click.echo(f"batch {done.batch_id}: {done.cancelled:,} jobs cancelled, {done.running:,} still finishing a "
                   f"call{kept}")


@main.command()
@click.argument("batch")
@click.option("--failed", is_flag=True, help="Retry the jobs that failed (for now the only kind; required).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def retry(batch: str, failed: bool, as_json: bool) -> None:
    """Send BATCH's failed jobs through routing and the tiers again."""
    from producer.api import Tierq

    if not failed:
        raise click.UsageError("say what to retry: --failed")
    with Tierq() as tq:
        count = tq.retry_failed(batch)
        spent = tq.failed_for_budget(batch)
    if as_json:
        click.echo(json.dumps({"batch_id": batch, "retried": count, "left_for_budget": spent}))
        return
    click.echo(f"batch {batch}: {count:,} failed jobs queued again")
    if spent:
        click.echo(f"{spent:,} failed jobs stay failed: the batch's budget could not cover them, and a batch's budget "
                   f"cannot be raised; submit them again as a new batch with a larger --budget-usd (`tierq results "
                   f"{batch}` lists them)", err=True)


@main.command()
@click.argument("batch", required=False)
@click.option(
    "--since", help="Only jobs submitted and calls made from DATE on (2026-11-01, 2026-11-01T09:00, 7d, 12h)."
)
@click.option("--json", "as_json", is_flag=True, help="Print JSON (money as decimal strings).")
@click.option("--plot", type=click.Path(dir_okay=False, path_type=Path), help="Also draw the bill as a PNG at FILE.")
@_friendly
def report(batch: str | None, since: str | None, as_json: bool, plot: Path | None) -> None:
    """Show the bill of one batch or of all: totals against the baseline, by tier, model, task type and tenant."""
    from producer.commands import print_report

    print_report(batch, since, as_json, plot)


@main.command()
@click.option("--jobs", default=300, show_default=True, help="How many sample tickets to submit.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file (default: the simulated provider's config shipped with tierq).")
@click.option("--redis-db", default=15, show_default=True, type=click.IntRange(0, 15),
              help="Redis database of the demo's queues and cache, apart from your own (same server).")
@click.option("--database", default="tierq_demo", show_default=True,
              help="Postgres database of the demo's batches, apart from your own (same server; created if missing).")
@click.option("--batch-mode", is_flag=True,
              help="Submit the sample batch with --deadline 24h: tiers with mode = \"deadline\" (the shipped "
                   "config's cold tier) answer through the provider's half-price batch API.")
@_friendly
def demo(jobs: int, config_path: Path | None, redis_db: int, database: str, batch_mode: bool) -> None:
    """Start what is needed on this machine, run a sample batch end to end, print the bill, stop."""
    from producer.demo import run_demo
    from producer.services import ServiceUnavailable

    try:
        code = run_demo(jobs, config_path, out=click.echo, redis_db=redis_db,
                        deadline_s=86400.0 if batch_mode else None, database=database)
    except ServiceUnavailable as exc:
        click.echo(f"error: {exc}", err=True)
        code = 2
    sys.exit(code)


@main.group()
def db() -> None:
    """Database schema (Alembic migrations)."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
@_friendly
def db_upgrade(revision: str) -> None:
    """Create the database if missing and migrate it to REVISION."""
    from migrations import current_revision, upgrade
    from tierq.settings import get_settings

    url = get_settings().database_url
    upgrade(url, revision)
    click.echo(f"database at revision {current_revision(url)}")


@db.command("current")
@_friendly
def db_current() -> None:
    """Print the database's revision and the newest one."""
    from migrations import current_revision, head_revision
    from tierq.settings import get_settings

    click.echo(f"current {current_revision(get_settings().database_url)}, head {head_revision()}")


@main.command("fake-llm", context_settings={"ignore_unknown_options": True, "allow_extra_args": True})
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535))
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file whose [simulator] table sets latency and failure rates per model.")
@click.option("--replay", type=click.Path(exists=True, dir_okay=False),
              help="CSV of recorded answers (prompt, <model>_response columns) to answer with instead of inventing.")
@click.option(
    "--replay-map", help='Which simulated model replays which recorded one: "sim-nano=REC-A,sim-flagship=REC-B".'
)
def fake_llm(host: str, port: int, config_path: str | None, replay: str | None, replay_map: str | None) -> None:
    """Run the simulated OpenAI-compatible provider (chat completions, embeddings, models)."""
    from fakellm import main as serve

    args = ["--host", host, "--port", str(port)] + (["--config", config_path] if config_path else [])
    args += (["--replay", replay] if replay else []) + (["--replay-map", replay_map] if replay_map else [])
    sys.exit(serve(args))


@main.command()
@click.option("--timeout", default=3.0, show_default=True, type=_Seconds(min=0, min_open=True, max=3_600),
              help="Seconds to wait for each service and for workers.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
def doctor(timeout: float, as_json: bool) -> None:
    """Check Redis, the broker, Postgres, migrations, providers and a worker per queue; exit 1 on a problem."""
    from producer.doctor import State, render, run_checks

    checks = run_checks(timeout)
    if as_json:
        ok = all(check.state is not State.PROBLEM for check in checks)
        click.echo(json.dumps({"ok": ok, "checks": [check.as_dict() for check in checks]}))
    else:
        click.echo("\n".join(render(checks)))
    sys.exit(1 if any(check.state is State.PROBLEM for check in checks) else 0)


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True, help="Address to listen on (0.0.0.0: every one).")
@click.option("--port", default=9808, show_default=True, type=click.IntRange(0, 65535))
@_friendly
def metrics(host: str, port: int) -> None:
    """Serve Prometheus metrics: queue lengths, jobs per state, calls and spend per model."""
    from producer.metrics import serve
    from tierq.settings import get_settings

    serve(get_settings(), host, port, on_ready=lambda line: click.echo(line, err=True))


@main.group()
def cache() -> None:
    """The shared Redis cache of answers."""


def _cache_store() -> Any:
    from tierq.cache.embedders import HashingEmbedder
    from tierq.cache.factory import make_cache
    from tierq.settings import get_settings

    settings = get_settings()
    config = settings.load_config()
    # Stats and clearing never embed text, so the model-free embedder stands in for whichever is configured.
    return make_cache(settings, config, HashingEmbedder(config.cache.dim))


@cache.command("stats")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def cache_stats_command(as_json: bool) -> None:
    """Entries, hits, coalesced duplicates, misses and the size of an average entry."""
    from tierq.cache.admin import cache_stats

    stats = cache_stats(_cache_store())
    if as_json:
        click.echo(json.dumps(stats))
        return
    for key, value in stats.items():
        note = "  (hits and coalesced, of all lookups)" if key == "hit_rate" else ""
        click.echo(f"{key:<16} {value}{note}")


@cache.command("clear")
@click.option("--tenant", help="Remove only this tenant's entries.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def cache_clear_command(tenant: str | None, as_json: bool) -> None:
    """Remove every cached answer (or one tenant's)."""
    from tierq.cache.admin import clear_cache

    removed = clear_cache(_cache_store(), tenant)
    if as_json:
        click.echo(json.dumps({"removed": removed, "tenant": tenant}))
    else:
        click.echo(f"removed {removed} entries" + (f" of tenant {tenant}" if tenant else ""))


@main.command()
@click.argument("batch", required=False)
@click.option("--older-than", default="10m", show_default=True,
              help="Only jobs unchanged for this long (30m, 2h, 1d), so messages still queued are not doubled.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def recover(batch: str | None, older_than: str, as_json: bool) -> None:
    """Publish again the messages of waiting jobs whose message was lost (safe to repeat)."""
    from producer.api import Tierq
    from producer.commands import parse_age
    from producer.recover import recover as resend
    from producer.status import parse_batch_id

    age_s = parse_age(older_than, "--older-than")
    with Tierq() as tq:
        done = resend(tq.engine, tq.publisher, parse_batch_id(batch) if batch else None, age_s)
    if as_json:
        click.echo(json.dumps({"messages": done.messages, "jobs": done.jobs}))
    else:
        click.echo(f"published {done.messages} messages again for {done.jobs} waiting jobs")


@main.command()
@click.option("--task-type", help="Only this task type.")
@click.option("--since", help="Only audits from DATE on (2026-11-01, 7d, 12h).")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def quality(task_type: str | None, since: str | None, as_json: bool) -> None:
    """Measured quality across batches: how often audited answers agreed with the reference tier."""
    from producer.api import Tierq
    from producer.bill.quality import across_batches, cache_precision
    from producer.commands import parse_since

    with Tierq() as tq, tq.engine.connect() as conn:
        start = parse_since(since) if since else None
        strata = across_batches(conn, task_type, start)
        namespaces = cache_precision(conn, task_type, start)
        reference = tq.config.reference_tier
    if as_json:
        click.echo(json.dumps({"reference_tier": reference, "strata": [s.as_dict() for s in strata],
                               "cache_namespaces": [n.as_dict() for n in namespaces]}))
        return
    if not strata:
        click.echo("no audited answers yet; [quality] audit_rate in the TOML sets how many are audited")
        return
    click.echo(f"agreement with the {reference} tier, 95% intervals:")
    for stratum in strata:
        low, high = stratum.as_dict()["interval"]
        where = "the cache" if stratum.source == "cache" else stratum.tier
        click.echo(f"  {stratum.task_type} at {where}: {stratum.agree:,} of {stratum.audited:,} agree "
                   f"({stratum.agree / stratum.audited:.1%}, {low:.1%}-{high:.1%})")
    if namespaces:
        click.echo("semantic cache hits that agreed with a fresh reference answer, per cache namespace:")
    for space in namespaces[:20]:
        low, high = space.as_dict()["interval"]
        click.echo(f"  {space.namespace[:12]} (tenant {space.tenant}, {space.task_type}): {space.agree:,} of "
                   f"{space.audited:,} ({space.agree / space.audited:.1%}, {low:.1%}-{high:.1%})")


def _register() -> None:
    from producer.route_cli import route

    main.add_command(route)


_register()

if __name__ == "__main__":
    main()
