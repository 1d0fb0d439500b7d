"""`tierq demo`: services, simulated provider and workers on this machine, a sample batch, and its bill."""

from __future__ import annotations

import contextlib
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from importlib import resources
from pathlib import Path

from migrations import upgrade
from producer.api import Tierq
from producer.bill.build import build_bill
from producer.bill.report import tier_summary
from producer.sample import sample_tickets
from producer.services import ensure_postgres, ensure_redis
from producer.status import BatchStatus
from producer.submit import BatchOptions
from tierq.config import load_config
from tierq.money import usd
from tierq.settings import Settings

SIM_CONFIG = Path(str(resources.files("tierq") / "configs" / "sim.toml"))
QUEUES = "classify,hot,warm,cold"
DEMO_DB = 15  # the demo's queues, cache and rate limits, apart from a user's own batches


def demo_redis(url: str, db: int = DEMO_DB) -> str:
    """The same Redis server, database `db`: the demo's queues never meet a user's workers, `tierq cache
    stats` on the user's database never counts the demo's entries, nor does the demo answer from them."""
    base, _, last = url.rstrip("/").rpartition("/")
    return f"{base}/{db}" if last.isdigit() and "//" in base else f"{url.rstrip('/')}/{db}"


def _redact(url: str) -> str:
    return re.sub(r"//[^@/]*@", "//***@", url)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def _process(args: list[str], env: dict[str, str], ready: Callable[[], bool], what: str) -> Iterator[None]:
    proc = subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True)
    try:
        deadline = time.monotonic() + 30
        while not ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                err = proc.stderr.read().decode(errors="replace")[-2000:] if proc.stderr else ""
                raise RuntimeError(f"{what} did not start:\n{err}")
            time.sleep(0.2)
        yield
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(timeout=15)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()


def _answers(port: int) -> Callable[[], bool]:
    def check() -> bool:
        with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
            return True
        return False

    return check


def run_demo(jobs: int, config_path: Path | None, out: Callable[[str], None] = print, redis_db: int = DEMO_DB,
             deadline_s: float | None = None) -> int:
    """Run the whole pipeline once on this machine and print the bill per tier; with `deadline_s`, the batch
    is submitted with that deadline (`tierq submit --deadline`), so batch-API tiers whose window fits use it."""
    base = Settings()
    config_file = config_path or SIM_CONFIG
    if deadline_s is not None:
        config = load_config(config_file)
        batched = [t.name for t in config.tiers if t.uses_batch_api(deadline_s)]
        out(f"batch mode: tiers {', '.join(batched)} send their jobs to the provider's batch API" if batched else
            f"batch mode: no tier of {config_file} has mode = \"batch\" or \"deadline\"; every call is interactive")
    with ensure_redis(demo_redis(base.redis_url, redis_db), log=out) as redis_url, \
            ensure_postgres(base.database_url, log=out) as db_url:
        out(f"redis: {_redact(redis_url)} (database {redis_db}: the demo's queues and cache, apart from yours)")
        out(f"database: migrating {db_url.split('@')[-1]}")
        upgrade(db_url)
        port = _free_port()
        env = {**os.environ, "TIERQ_REDIS_URL": redis_url, "TIERQ_DATABASE_URL": db_url,
               "TIERQ_CONFIG": str(config_file), "TIERQ_SIM_URL": f"http://127.0.0.1:{port}/v1"}
        env.pop("TIERQ_BROKER_URL", None)
        sim = [sys.executable, "-m", "fakellm", "--port", str(port), "--config", str(config_file)]
        worker = [sys.executable, "-m", "celery", "-A", "workers", "worker", "-Q", QUEUES, "--loglevel", "WARNING",
                  "-n", f"tierq-demo-{os.getpid()}@%h"]
        with _process(sim, env, _answers(port), "the simulated provider"):
            out(f"simulated provider: http://127.0.0.1:{port}/v1")
            with _process(worker, env, lambda: True, "the workers"):
                out(f"workers: celery -A workers worker -Q {QUEUES}")
                settings = Settings(redis_url=redis_url, database_url=db_url, config=config_file)
                return _submit_and_report(settings, jobs, out, deadline_s)


def _submit_and_report(settings: Settings, jobs: int, out: Callable[[str], None], deadline_s: float | None) -> int:
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
                f"${usd(status.cost_usd)} spent, {time.monotonic() - started:.1f} s")

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
            f"${usd(bill.totals.saved_usd)} saved")
        out(f"total: {summary['succeeded']} succeeded, {summary['failed']} failed, ${summary['cost_usd']} paid; "
            f"all on {bill.baseline_model} would cost ${usd(bill.baseline_cost_usd)} "
            f"(savings {bill.savings_pct}%)")
        api = bill.batch_api
        if api.calls:
            out(f"provider batch APIs: {api.calls} calls, ${usd(api.cost_usd)} at batch prices "
                f"(${usd(api.list_cost_usd)} at list prices, ${usd(api.saved_usd)} saved)")
        if bill.quality is not None:
            out(bill.quality.line())
        out(f"results: tierq results {batch.batch_id}; the bill: tierq report {batch.batch_id}")
    return 0
