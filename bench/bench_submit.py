"""Submit benchmark: jobs accepted per second from a 100k-line JSONL file, against a raw anchor.

    .venv/bin/python bench/bench_submit.py [--lines 100000] [--postgres URL] [--redis URL]

It writes a JSONL file of synthetic support tickets to a temporary directory (texts from
../shared/datasets/banking77/train.csv when that file exists), creates a throwaway database, migrates
it, and submits the file with the real producer (`Tierq.submit`: read, validate, COPY, enqueue). No
worker runs, so the classify messages stay in the broker, in a Redis database that must be empty and
is flushed at the end; the database is dropped. The anchor does the same two things with no tierq
code: one COPY of the same rows prepared in memory, and one raw Celery send per chunk.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import random
import resource
import sys
import tempfile
import time
import uuid
from importlib import resources
from pathlib import Path
from statistics import median

import psycopg
import redis
from sqlalchemy.engine import make_url

from producer import claims
from producer.api import Tierq
from producer.broker import make_sender
from producer.inputs.stream import LineSource, read_records
from producer.localstack import throwaway_database
from producer.submit import JOB_COLUMNS
from tierq.config import load_config
from tierq.contract import CLASSIFY_QUEUE, CLASSIFY_TASK
from tierq.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
BANKING77 = ROOT.parent / "shared" / "datasets" / "banking77" / "train.csv"
SIM_CONFIG = Path(str(resources.files("tierq") / "configs" / "sim.toml"))
TARGET = 5_000
FALLBACK = ["Where is my parcel? I ordered it on {day}.", "I was charged twice for order #{n}.",
            "How do I change my delivery address for order #{n}?", "My card payment was declined at {shop}."]


def texts() -> list[str]:
    """Real support messages when the shared dataset is there, else a few templates."""
    if BANKING77.exists():
        with open(BANKING77, newline="", encoding="utf-8") as f:
            return [row["text"] for row in csv.DictReader(f)]
    return [t.format(day="Monday", n=12345, shop="the bakery") for t in FALLBACK]


def write_jsonl(path: Path, lines: int) -> None:
    """`lines` tickets with ids, a task type and metadata, like a real export."""
    rng = random.Random(7)
    pool = texts()
    with open(path, "w", encoding="utf-8") as f:
        for n in range(lines):
            record = {"id": f"t-{n:07d}", "prompt": f"Ticket {n}: {rng.choice(pool)}", "task_type": "support",
                      "metadata": {"customer": f"c{rng.randint(1, 5000)}", "channel": rng.choice(["mail", "chat"])}}
            f.write(json.dumps(record) + "\n")


def rss_mb() -> float:
    """Peak resident memory of this process so far."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def parse_only(path: Path) -> float:
    """Seconds to read and validate the file without touching a database: the part that is pure Python."""
    started = time.perf_counter()
    with open(path, "rb") as stream:
        _, records = read_records(LineSource(stream))
        count = sum(1 for _ in records)
    assert count > 0
    return time.perf_counter() - started


def anchor(db_url: str, broker: str, path: Path, chunk: int) -> float:
    """Seconds for one COPY of the same rows (prepared beforehand) plus one raw send per chunk."""
    batch = uuid.uuid4()
    with open(path, "rb") as stream:
        rows = [_anchor_row(batch, n, json.loads(line), chunk) for n, line in enumerate(stream, start=1)]
    app = make_sender(load_config(SIM_CONFIG), broker)
    plain = make_url(db_url).set(drivername="postgresql").render_as_string(hide_password=False)
    started = time.perf_counter()
    with psycopg.connect(plain) as conn:
        conn.execute("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                     "VALUES (%s, 'bench', 'support', '{}', 0, 0, false)", (batch,))
        ids = [r[0] for r in conn.execute("SELECT nextval('jobs_id_seq') FROM generate_series(1, %s)", (len(rows),))]
        with conn.cursor() as cur, cur.copy(f"COPY jobs ({', '.join(JOB_COLUMNS)}) FROM STDIN") as copy:
            for job_id, row in zip(ids, rows, strict=True):
                copy.write_row((job_id, *row))
    for start in range(0, len(ids), chunk):
        app.send_task(CLASSIFY_TASK, args=[ids[start : start + chunk]], kwargs={"batch": str(batch)},
                      task_id=str(uuid.uuid4()), queue=CLASSIFY_QUEUE)
    elapsed = time.perf_counter() - started
    app.close()
    return elapsed


def _anchor_row(batch: uuid.UUID, n: int, obj: dict[str, object], chunk: int) -> tuple[object, ...]:
    messages = json.dumps([{"role": "user", "content": obj["prompt"]}])
    return (batch, n, obj["id"], "bench", obj["task_type"], messages, "{}", json.dumps(obj["metadata"]),
            len(str(obj["prompt"])), "pending", uuid.UUID(int=n // chunk), 0, 0)


def ours(settings: Settings, path: Path) -> tuple[float, int]:
    """Seconds for `Tierq.submit` of the file, and the jobs it accepted."""
    with Tierq(settings, load_config(SIM_CONFIG)) as tq:
        tq.engine.connect().close()  # open the pool outside the timing, as a long-lived client would
        started = time.perf_counter()
        result = tq.submit(path)
        elapsed = time.perf_counter() - started
    assert result.rejected == 0, result.rejections[:3]
    return elapsed, result.accepted


def main(argv: list[str] | None = None) -> int:
    """Run the benchmark and print the table; exit 1 when tierq misses the target."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--lines", type=int, default=100_000)
    parser.add_argument("--repeat", type=int, default=3, help="runs of each; the table shows the median")
    parser.add_argument("--postgres", default=os.environ.get("TIERQ_BENCH_POSTGRES_URL",
                                                             "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"))
    parser.add_argument("--redis", default=os.environ.get("TIERQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/13"))
    args = parser.parse_args(argv)
    try:
        with claims.claimed(args.redis, "a benchmark run (bench_submit.py)"):
            return measure(args)
    except claims.DatabaseInUse as exc:
        print(f"error: {exc}; wait for it to finish, or pass --redis with a database of your own", file=sys.stderr)
        return 2
    except redis.exceptions.ConnectionError as exc:
        print(f"error: Redis at {args.redis} is not reachable: {exc}", file=sys.stderr)
        return 2


def measure(args: argparse.Namespace) -> int:
    """The benchmark on the database `args.redis` names, which this run holds."""
    broker = redis.Redis.from_url(args.redis)
    if broker.dbsize():
        print(f"error: Redis database {args.redis} is not empty; pass --redis with an empty database", file=sys.stderr)
        return 2
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "tickets.jsonl"
        write_jsonl(path, args.lines)
        size_mb = path.stat().st_size / 1e6
        chunk = load_config(SIM_CONFIG).worker.classify_chunk
        try:
            with throwaway_database(args.postgres, "tierq_bench") as db_url:
                base_rss = rss_mb()
                parse_s = median([parse_only(path) for _ in range(args.repeat)])
                settings = Settings(database_url=db_url, redis_url=args.redis, config=SIM_CONFIG)
                ours_runs: list[float] = []
                anchor_runs: list[float] = []
                peak = 0.0
                # Alternate the two, so that a busy moment of the machine does not favour either.
                for _ in range(args.repeat):
                    ours_s, accepted = ours(settings, path)
                    ours_runs.append(ours_s)
                    if not anchor_runs:  # measured before the anchor, which holds every row in memory
                        peak = rss_mb() - base_rss
                    anchor_runs.append(anchor(db_url, args.redis, path, chunk))
                ours_s, anchor_s = median(ours_runs), median(anchor_runs)
        finally:
            broker.flushdb()
    report(args.lines, size_mb, parse_s, ours_s, accepted, anchor_s, peak)
    return 0 if accepted / ours_s >= TARGET else 1


def report(lines: int, size_mb: float, parse_s: float, ours_s: float, accepted: int, anchor_s: float,
           peak: float) -> None:
    """The table the docs quote."""
    ours_rate, anchor_rate = accepted / ours_s, lines / anchor_s
    print(f"submit benchmark: {lines:,} JSONL lines ({size_mb:.1f} MB), {os.cpu_count()} cores, "
          f"{time.strftime('%Y-%m-%d')}, median of each")
    print(f"{'':<44}{'seconds':>9}{'jobs/s':>10}")
    print(f"{'read + validate only (no database)':<44}{parse_s:>9.2f}{lines / parse_s:>10,.0f}")
    print(f"{'tierq submit (read, validate, COPY, enqueue)':<44}{ours_s:>9.2f}{ours_rate:>10,.0f}")
    print(f"{'anchor: one raw COPY + raw sends':<44}{anchor_s:>9.2f}{anchor_rate:>10,.0f}")
    print(f"ratio tierq / anchor: {ours_rate / anchor_rate:.2f}; target >= {TARGET:,} jobs/s: "
          f"{'met' if ours_rate >= TARGET else 'MISSED'}; peak memory of the submission +{peak:.0f} MB")


if __name__ == "__main__":
    sys.exit(main())
