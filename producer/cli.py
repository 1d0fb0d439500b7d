"""The `tierq` command: submit, status, results, report, demo, db, fake-llm."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from functools import wraps
from pathlib import Path
from typing import Any, TypeVar

import click

from tierq.errors import ConfigError, InputError, NotFound, TierqError

F = TypeVar("F", bound=Callable[..., Any])


def _friendly(func: F) -> F:
    """Turn tierq's own errors into one clear line on stderr and a non-zero exit."""

    @wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except (ConfigError, InputError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)
        except (NotFound, TierqError) as exc:
            click.echo(f"error: {exc}", err=True)
            sys.exit(1)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="tierq")
def main() -> None:
    """tierq: send each prompt to the cheapest model tier that can answer it, and account for every cent."""


@main.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--system", "system_prompt", help="System prompt for every job.")
@click.option("--task-type", default="default", show_default=True, help="Task type of every job without one.")
@click.option("--tenant", default="default", show_default=True, help="Tenant the batch belongs to.")
@click.option("--tier", "force_tier", help="Send every job to this tier (no routing).")
@click.option("--min-tier", help="Start no job below this tier.")
@click.option("--max-tier", help="Start no job above this tier.")
@click.option("--wait", is_flag=True, help="Show progress until the batch is done.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON summary.")
@_friendly
def submit(file: Path, system_prompt: str | None, task_type: str, tenant: str, force_tier: str | None,
           min_tier: str | None, max_tier: str | None, wait: bool, as_json: bool) -> None:
    """Submit a JSONL file of jobs ({"prompt": ...} or {"messages": [...]}, optional id, task_type, metadata)."""
    from producer.api import Tierq
    from producer.submit import BatchOptions

    options = BatchOptions(tenant=tenant, task_type=task_type, system_prompt=system_prompt, force_tier=force_tier,
                           min_tier=min_tier, max_tier=max_tier, source=str(file))
    with Tierq() as tq:
        result = tq.submit(file, options)
        for rejection in result.rejections[:20]:
            click.echo(f"rejected: {rejection.reason}", err=True)
        if result.rejected > 20:
            click.echo(f"... and {result.rejected - 20} more rejected records", err=True)
        if as_json:
            click.echo(json.dumps(result.as_dict()))
        else:
            click.echo(f"batch {result.batch_id}: {result.accepted} accepted, {result.rejected} rejected")
        if wait and result.accepted:
            tq.wait(result.batch_id, on_progress=lambda s: click.echo(_progress_line(s), err=True))
        if result.accepted == 0:
            click.echo(f"error: no record of {file} was accepted", err=True)
            sys.exit(1)


def _progress_line(status: Any) -> str:
    return f"{status.total - status.pending}/{status.total} done, ${status.as_dict()['cost_usd']} spent"


@main.command()
@click.argument("batch")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def status(batch: str, as_json: bool) -> None:
    """Show a batch's jobs by state and tier, escalations and cost so far."""
    from producer.api import Tierq

    with Tierq() as tq:
        current = tq.status(batch).as_dict()
    if as_json:
        click.echo(json.dumps(current))
        return
    click.echo(f"batch {current['batch_id']}: {current['total']} jobs, {'done' if current['done'] else 'running'}")
    click.echo("  " + ", ".join(f"{k} {v}" for k, v in sorted(current["by_status"].items())))
    click.echo("  by tier: " + ", ".join(f"{k} {v}" for k, v in current["by_tier"].items()))
    click.echo(f"  escalations {current['escalations']}, calls {current['calls']}, cost ${current['cost_usd']}")


@main.command()
@click.argument("batch")
@click.option("-o", "--output", type=click.File("w"), default="-", help="Write to FILE instead of stdout.")
@_friendly
def results(batch: str, output: Any) -> None:
    """Write the batch's finished jobs as JSONL, one line per job, in input order."""
    from producer.api import Tierq

    with Tierq() as tq:
        for row in tq.results(batch):
            output.write(json.dumps(row, ensure_ascii=False) + "\n")


@main.command()
@click.argument("batch", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@_friendly
def report(batch: str | None, as_json: bool) -> None:
    """Show the bill per tier for one batch, or for every batch."""
    from producer.api import Tierq
    from producer.report import tier_summary
    from producer.status import parse_batch_id

    with Tierq() as tq:
        lines = tier_summary(tq.engine, tq.config, parse_batch_id(batch) if batch else None)
    if as_json:
        click.echo(json.dumps({"by_tier": [line.as_dict() for line in lines]}))
        return
    click.echo(f"{'tier':<8} {'started':>8} {'answered':>9} {'escalated':>10} {'failed':>7} {'calls':>7} {'cost USD':>16}")
    for line in lines:
        d = line.as_dict()
        click.echo(f"{d['tier']:<8} {d['started']:>8} {d['answered']:>9} {d['escalated']:>10} {d['failed']:>7} "
                   f"{d['calls']:>7} {d['cost_usd']:>16}")


@main.command()
@click.option("--jobs", default=300, show_default=True, help="How many sample tickets to submit.")
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="TOML file (default: the simulated provider's config shipped with tierq).")
@_friendly
def demo(jobs: int, config_path: Path | None) -> None:
    """Start what is needed on this machine, run a sample batch end to end, print the bill, stop."""
    from producer.demo import run_demo
    from producer.services import ServiceUnavailable

    try:
        code = run_demo(jobs, config_path, out=click.echo)
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
@click.option("--port", default=8765, show_default=True)
@click.option("--config", "config_path", type=click.Path(exists=True, dir_okay=False),
              help="TOML file whose [simulator] table sets latency and failure rates per model.")
def fake_llm(host: str, port: int, config_path: str | None) -> None:
    """Run the simulated OpenAI-compatible provider (chat completions, embeddings, models)."""
    from fakellm import main as serve

    args = ["--host", host, "--port", str(port)] + (["--config", config_path] if config_path else [])
    sys.exit(serve(args))
