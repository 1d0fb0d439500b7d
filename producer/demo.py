"""`tierq demo`: services, simulated provider and workers on this machine, a sample batch, and its bill."""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from decimal import Decimal
from importlib import resources
from pathlib import Path

from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError

from fakellm.testing import running_server
from migrations import upgrade
from producer import claims
from producer.api import Tierq
from producer.bill.build import build_bill
from producer.bill.report import tier_summary
from producer.localstack import service_env, start_worker, stop_worker
from producer.sample import sample_tickets
from producer.services import ServiceUnavailable, ensure_postgres, ensure_redis
from producer.status import BatchStatus
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.money import dollars, usd
from tierq.queues import queue_names
from tierq.redact import masked_url
from tierq.settings import Settings

SIM_CONFIG = Path(str(resources.files("tierq") / "configs" / "sim.toml"))
DEMO_DB = 15  # the demo's queues, cache and rate limits, apart from a user's own batches
DEMO_DATABASE = "tierq_demo"  # the demo's batches and cost rows, apart from a user's (same Postgres server)


def demo_redis(url: str, db: int = DEMO_DB) -> str:
    """The same Redis server, database `db`: the demo's queues never meet a user's workers, `tierq cache
    stats` on the user's database never counts the demo's entries, nor does the demo answer from them."""
    base, _, last = url.rstrip("/").rpartition("/")
    return f"{base}/{db}" if last.isdigit() and "//" in base else f"{url.rstrip('/')}/{db}"


def demo_database(url: str, name: str = DEMO_DATABASE) -> str:
    """The same Postgres server and login, database `name`: `tierq report` and `quality` on the user's
    database never count the demo's batches."""
    return make_url(url).set(database=name).render_as_string(hide_password=False)


def run_demo(jobs: int, config_path: Path | None, out: Callable[[str], None] = print, redis_db: int = DEMO_DB,
             deadline_s: float | None = None, database: str = DEMO_DATABASE) -> int:
    """Run the whole pipeline once on this machine and print the bill per tier; with `deadline_s`, the batch
    is submitted with that deadline (`tierq submit --deadline`), so batch-API tiers whose window fits use it."""
    base = Settings()
    config_file = config_path or SIM_CONFIG
    config = load_config(config_file)
    if deadline_s is not None:
        batched = [t.name for t in config.tiers if t.uses_batch_api(deadline_s)]
        out(f"batch mode: tiers {', '.join(batched)} send their jobs to the provider's batch API" if batched else
            f"batch mode: no tier of {config_file} has mode = \"batch\" or \"deadline\"; every call is interactive")
    with ensure_redis(demo_redis(base.redis_url, redis_db), log=out) as redis_url, \
            _claimed(redis_url, redis_db), \
            ensure_postgres(demo_database(base.database_url, database), log=out) as db_url, \
            tempfile.TemporaryDirectory(prefix="tierq-demo-") as logs:
        out(f"redis: {masked_url(redis_url)} (database {redis_db}: the demo's queues and cache, apart from yours)")
        out(f"database: migrating {masked_url(db_url).split('@')[-1]} (the demo's batches, apart from yours)")
        _create_and_migrate(db_url, database)
        with running_server(config_file, stderr_path=Path(logs) / "simulator.log") as sim:
            out(f"simulated provider: {sim.base_url}")
            # The user's environment (provider keys, log level) but not their broker: the demo's is its Redis.
            inherit = {k: v for k, v in os.environ.items() if k != "TIERQ_BROKER_URL"}
            env = service_env(db_url, redis_url, config_file, sim.base_url, inherit=inherit)
            queues = ",".join(queue_names(config))
            worker = start_worker(env, Path(logs) / "worker.log", queues, name="tierq-demo", loglevel="WARNING",
                                  broker_url=redis_url)
            try:
                out(f"workers: celery -A workers worker -Q {queues}")
                settings = Settings(redis_url=redis_url, database_url=db_url, config=config_file)
                kept = db_url == demo_database(base.database_url, database)  # not a throwaway server's
                return _submit_and_report(settings, jobs, out, deadline_s, kept)
            finally:
                stop_worker(worker.proc)


@contextlib.contextmanager
def _claimed(redis_url: str, redis_db: int) -> Iterator[None]:
    """Hold the demo's Redis database (producer/claims.py): a second demo, a benchmark or a test session
    using it at the same time would take the demo's queued jobs, or flush them."""
    try:
        with claims.claimed(redis_url, "a tierq demo"):
            yield
    except claims.DatabaseInUse as exc:
        raise ServiceUnavailable(f"{exc}; wait for it to finish, or give the demo another database "
                                 f"(--redis-db, now {redis_db})") from None


def _create_and_migrate(db_url: str, database: str) -> None:
    """Migrate the demo's database, creating it when the server has none of that name."""
    try:
        upgrade(db_url)
    except DBAPIError as exc:
        if "permission denied to create database" not in str(exc.orig):
            raise
        raise ServiceUnavailable(
            f"the demo keeps its batches in database {database!r} on your Postgres server, and your login may not "
            "create it: create it once (createdb " + database + "), or name one you own with --database") from None


def _submit_and_report(settings: Settings, jobs: int, out: Callable[[str], None], deadline_s: float | None,
                       kept: bool) -> int:
    with Tierq(settings) as tq:
        # A tenant of its own per run: the cache is per tenant, so a second demo does not find it all cached.
        tenant = f"demo-{uuid.uuid4().hex[:6]}"
        batch = tq.submit(sample_tickets(jobs), BatchOptions(tenant=tenant, task_type="support", source="demo",
                                                                    deadline_s=deadline_s))
        out(f"submitted batch {batch.batch_id}: {batch.accepted} jobs accepted, {batch.rejected} rejected")
        started = time.monotonic()

        def progress(status: BatchStatus) -> None:
            done = status.total - status.pending
            out(f"  {done}/{status.total} done, {status.escalations} escalations, "
                f"{dollars(status.cost_usd)} spent, {time.monotonic() - started:.1f} s")

        status = tq.wait(batch.batch_id, timeout=300, poll_s=1.0, on_progress=progress)
        if not status.done:
            out(f"timed out with {status.pending} jobs unfinished; are the workers running?")
            return 1
        out("")
        out(f"{'tier':<6} {'started':>8} {'answered':>9} {'escalated':>10} {'failed':>7} {'calls':>6} {'cost USD':>14}")
        for line in tier_summary(tq.engine, tq.config, batch.batch_id):
            out(f"{line.tier:<6} {line.started:>8} {line.answered:>9} {line.escalated:>10} {line.failed:>7} "
                f"{line.calls:>6} {usd(line.cost_usd):>14}")
        summary = status.as_dict()
        bill = build_bill(tq.engine, tq.config, batch.batch_id)
        out(f"cache: {bill.totals.cache_hits} jobs answered from the cache or by an identical job in flight, "
            f"{dollars(bill.totals.saved_usd)} saved")
        paid = dollars(Decimal(summary["cost_usd"]))
        out(f"total: {summary['succeeded']} succeeded, {summary['failed']} failed, {paid} paid; "
            f"all on {bill.baseline_model} would cost {dollars(bill.baseline_cost_usd)} "
            f"(savings {bill.savings_pct}%)")
        api = bill.batch_api
        if api.calls:
            out(f"provider batch APIs: {api.calls} calls, {dollars(api.cost_usd)} at batch prices "
                f"({dollars(api.list_cost_usd)} at list prices, {dollars(api.saved_usd)} saved)")
        if bill.quality is not None:
            out(bill.quality.line())
        if not kept:
            out("results: the batch was in a throwaway Postgres server, removed with the demo; start PostgreSQL "
                "(or point TIERQ_DATABASE_URL at one) to keep the demo's batches")
            return 0
        # The batch is in the demo's own database, read with the demo's TOML: the commands say so (the password,
        # if any, as ***), and run as printed from this directory in a shell with no tierq variables set.
        where = (f"TIERQ_DATABASE_URL={shlex.quote(masked_url(settings.database_url))} "
                 f"TIERQ_CONFIG={shlex.quote(_shown_path(settings.config))} {_program()}")
        out(f"results: {where} results {batch.batch_id}")
        out(f"the bill: {where} report {batch.batch_id} --plot bill.png")
    return 0


def _shown_path(path: Path) -> str:
    """`path` relative to the working directory when it lies under it, else absolute."""
    whole = path.resolve()
    try:
        return str(whole.relative_to(Path.cwd()))
    except ValueError:
        return str(whole)


def _program() -> str:
    """How to start this tierq again: `tierq` when that is the command on PATH, else the path it was run by
    (`make demo` runs `.venv/bin/tierq`, which a shell without the virtualenv activated does not find)."""
    invoked = Path(sys.argv[0])
    if invoked.name != "tierq":  # run as `python -m producer.cli` or from a test harness
        return "tierq"
    on_path = shutil.which("tierq")
    if on_path is not None and Path(on_path).resolve() == invoked.resolve():
        return "tierq"
    return shlex.quote(_shown_path(invoked))
