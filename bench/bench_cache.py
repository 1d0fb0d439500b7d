"""Semantic-cache benchmark: lookup latency, recall, candidates and Redis memory per entry.

    .venv/bin/python bench/bench_cache.py [--entries 100000 1000000] [--shapes 20x12 32x16] [--no-write]

Fills a CacheStore with N unit 384-dim vectors shaped like one domain of sentence embeddings
(cache_vectors.py), all in one namespace (the worst case: one tenant's one task), then looks up
near-duplicates of stored vectors (cosine 0.85-0.99 to their source) and fresh vectors of the same
domain, one query at a time, through `CacheStore.lookup`. Recall is against exact brute-force search.
By default it starts its own redis-server on a free port (so memory is measured alone and no shared
database is flushed); `--url` names an existing server's database instead, which it flushes.
Appends each run to docs/cache.md's bench section unless --no-write. Not a test: it takes minutes.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import os
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path

import numpy as np
import redis
from cache_vectors import DIM, Domain, describe, make_vectors, near_duplicates
from docs_section import write_section
from threadpoolctl import threadpool_limits

from tierq.cache.embedders import Vectors
from tierq.cache.keys import CacheKey
from tierq.cache.lsh import Hyperplanes
from tierq.cache.store import CacheStore
from tierq.config import CacheConfig

ROOT = Path(__file__).resolve().parents[1]
# MiniLM's default; the lowest threshold of the built-in embedders, so the hardest for the index.
THRESHOLD = 0.86
NAMESPACE = "bench"
ANSWER = "The parcel left our warehouse yesterday and arrives within two working days."


def entry_key(i: int) -> CacheKey:
    """The key of stored entry i (entry id i + 1)."""
    return CacheKey(NAMESPACE, f"e{i:031x}", "", "", "bench")


def query_key(i: int) -> CacheKey:
    """A key with no exact match, so that every lookup goes to the semantic index."""
    return CacheKey(NAMESPACE, f"q{i:031x}", "", "", "bench")


def bulk_load(store: CacheStore, vectors: Vectors, via_api: int = 200) -> None:
    """The first `via_api` entries through register and fill; the rest copy entry 1's fields, in pipelines."""
    for i in range(via_api):
        entry_id, _ = store.register(entry_key(i), vectors[i].tolist(), job_id=i + 1)
        store.fill(entry_id, i + 1, ANSWER, "model-a", "hot", Decimal("0.000123"))
    p, ttl = store.p, store.cfg.ttl_s
    # Copying what the store wrote keeps the bulk entries the same size when the store gains a field.
    template = {k.decode(): v for k, v in store.r.hgetall(f"{p}:e:1").items()}
    for start in range(via_api, len(vectors), 2000):
        chunk = range(start, min(len(vectors), start + 2000))
        members: dict[str, list[int]] = {}
        pipe = store.r.pipeline(transaction=False)
        for i, row in zip(chunk, store.planes.buckets(vectors[chunk.start : chunk.stop]), strict=True):
            key, entry_id = entry_key(i), i + 1
            pipe.set(f"{p}:x:{key.exact}", entry_id, ex=ttl)
            pipe.hset(f"{p}:e:{entry_id}", mapping={**template, "j": entry_id, "x": key.exact, "ts": int(time.time()),
                                                    "b": row.tobytes()})
            pipe.expire(f"{p}:e:{entry_id}", ttl)
            pipe.set(f"{p}:v:{entry_id}", vectors[i].astype(np.float16).tobytes(), ex=ttl)
            for band_key in store._band_keys(key.namespace, key.ids, row):
                members.setdefault(band_key, []).append(entry_id)
        pipe.zadd(f"{p}:z", {str(i + 1): time.time() for i in chunk})
        for band_key, ids in members.items():
            pipe.sadd(band_key, *ids)
            pipe.expire(band_key, ttl)
        pipe.execute()
    store.r.set(f"{p}:n", len(vectors))


@dataclass(frozen=True, slots=True)
class Result:
    """One (entries, shape) run."""

    entries: int
    shape: str
    latencies_ms: list[float]
    recall: float
    judged: int
    candidates: list[int]
    below: tuple[int, int]
    bytes_per_entry: float
    brute_ms: float

    def row(self) -> str:
        """One markdown table row."""
        p50, p99 = np.percentile(self.latencies_ms, [50, 99])
        return (f"| {self.entries:,} | {self.shape} | {p50:.1f} ms | {p99:.1f} ms | {self.recall:.3f} ({self.judged}) "
                f"| {np.mean(self.candidates):,.0f} / {np.percentile(self.candidates, 99):,.0f} "
                f"| {self.below[0]} / {self.below[1]} | {self.bytes_per_entry:,.0f} | {self.brute_ms:.1f} ms "
                f"| {self.brute_ms / p50:.2f} |")


HEADER = ["| entries | bands x rows | lookup p50 | lookup p99 | recall (queries judged) | candidates mean / p99 "
          "| hits below threshold (store / float32) | Redis bytes per entry | brute force | brute / p50 |",
          "|---|---|---|---|---|---|---|---|---|---|"]


def measure(store: CacheStore, stored: Vectors, queries: Vectors) -> tuple[list[float], float, int, list[int], tuple[int, int]]:
    """Single-query lookup times; recall, candidates and hits below the threshold, against brute force."""
    with threadpool_limits(2, "blas"):
        sims = np.concatenate([queries[i : i + 256] @ stored.T for i in range(0, len(queries), 256)])
    truth, best = sims.argmax(axis=1), sims.max(axis=1)
    buckets = store.planes.buckets(queries)
    latencies, candidates, found, below_store, below_true = [], [], 0, 0, 0
    for i, query in enumerate(queries):
        started = time.perf_counter()
        hit = store.lookup([query_key(i)], query.reshape(1, -1))[0]
        latencies.append(1e3 * (time.perf_counter() - started))
        candidates.append(len(store.r.sunion(store._band_keys(NAMESPACE, "", buckets[i]))))
        if hit is None:
            continue
        true_cos = float(sims[i, hit.id - 1])
        below_store += hit.similarity < store.threshold
        below_true += true_cos < store.threshold
        # A float16 tie with the true best counts as found.
        found += bool(best[i] >= store.threshold and (hit.id - 1 == truth[i] or true_cos >= best[i] - 2e-3))
    judged = int((best >= store.threshold).sum())
    return latencies, found / max(judged, 1), judged, candidates, (below_store, below_true)


def brute_force_ms(stored: Vectors, queries: Vectors) -> float:
    """Median time of one exact search (matrix-vector product and argmax) on one BLAS thread."""
    times = []
    with threadpool_limits(1, "blas"):
        for query in queries[:30]:
            started = time.perf_counter()
            int(np.argmax(stored @ query))
            times.append(time.perf_counter() - started)
    return 1e3 * float(np.median(times))


def run(client: redis.Redis, shape: str, stored: Vectors, queries: Vectors, threshold: float) -> Result:
    """Load `stored` under one LSH shape, measure, flush."""
    bands, rows = (int(x) for x in shape.split("x"))
    client.flushdb()
    baseline = int(client.info("memory")["used_memory"])
    store = CacheStore(client, CacheConfig(bands=bands, rows=rows, max_entries=10 * len(stored), prefix="bq"),
                       threshold)
    started = time.perf_counter()
    bulk_load(store, stored)
    print(f"loaded {len(stored):,} entries as {shape} in {time.perf_counter() - started:.0f} s", flush=True)
    used = int(client.info("memory")["used_memory"]) - baseline
    latencies, recall, judged, candidates, below = measure(store, stored, queries)
    client.flushdb()
    return Result(len(stored), shape, latencies, recall, judged, candidates, below, used / len(stored),
                  brute_force_ms(stored, queries))


def index_only(shape: str, stored: Vectors, queries: Vectors, threshold: float, per_candidate_us: float) -> str:
    """Candidates and recall from the hyperplanes alone (what SUNION would return), for sizes too big to load."""
    bands, rows = (int(x) for x in shape.split("x"))
    planes = Hyperplanes(DIM, bands, rows)
    held, asked = planes.buckets(stored), planes.buckets(queries)
    with threadpool_limits(2, "blas"):
        sims = np.concatenate([queries[i : i + 256] @ stored.T for i in range(0, len(queries), 256)])
    candidates, found, judged = [], 0, 0
    for i, row in enumerate(asked):
        hit = (held == row).any(axis=1)
        candidates.append(int(hit.sum()))
        ok = sims[i] >= threshold
        judged += bool(ok.any())
        found += bool(ok.any() and hit[int(sims[i].argmax())])
    mean, p99 = np.mean(candidates), np.percentile(candidates, 99)
    return (f"| {len(stored):,} | {shape} | ~{mean * per_candidate_us / 1e3:.0f} ms | ~{p99 * per_candidate_us / 1e3:.0f} ms "
            f"| {found / max(judged, 1):.3f} ({judged}) | {mean:,.0f} / {p99:,.0f} | - | - "
            f"| {brute_force_ms(stored, queries):.1f} ms | - |")


@contextlib.contextmanager
def private_redis(settings: list[str]) -> Iterator[str]:
    """A throwaway redis-server on a free loopback port, without persistence; stopped on exit."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise SystemExit("redis-server is not installed; install it or pass --url redis://HOST:PORT/DB")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    with tempfile.TemporaryDirectory() as workdir:
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no", "--dir", workdir]
        for setting in settings:
            name, _, value = setting.partition("=")
            args += [f"--{name}", value]
        proc = subprocess.Popen(args, stdout=subprocess.DEVNULL)
        try:
            client = redis.Redis(port=port)
            for _ in range(100):
                with contextlib.suppress(redis.exceptions.ConnectionError):
                    if client.ping():
                        break
                time.sleep(0.05)
            yield f"redis://127.0.0.1:{port}/0"
        finally:
            proc.terminate()
            proc.wait(timeout=30)


def main() -> None:
    """Run every (entries, shape), print the rows, append them to docs/cache.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[100_000])
    parser.add_argument("--shapes", nargs="+", default=["20x12", "24x14", "32x16", "48x16"])
    parser.add_argument("--queries", type=int, default=500, help="near-duplicate queries; a fifth as many fresh ones")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--isotropic", action="store_true", help="clusters around random centres, no shared direction")
    parser.add_argument("--server-config", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings for the private redis-server, e.g. hash-max-listpack-value=1024")
    parser.add_argument("--url", help="an existing Redis database to use (and flush) instead of a private server")
    parser.add_argument("--index-only", type=float, metavar="US_PER_CANDIDATE",
                        help="no Redis: candidates and recall from the hyperplanes, latency estimated at this cost")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    domain = Domain(shared=0.0, topic=0.0, cluster=0.3) if args.isotropic else Domain()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(private_redis(args.server_config))
        client = redis.Redis.from_url(url)
        rows = []
        for n in args.entries:
            rng = np.random.default_rng(n)
            stored = make_vectors(n, rng, domain)
            queries = np.concatenate([near_duplicates(stored, args.queries, rng),
                                      make_vectors(args.queries // 5, rng, domain)])
            for shape in args.shapes:
                if args.index_only:
                    rows.append(index_only(shape, stored, queries, args.threshold, args.index_only))
                else:
                    rows.append(run(client, shape, stored, queries, args.threshold).row())
                print(rows[-1], flush=True)
        version = client.info("server")["redis_version"]
        client.close()
    server = f"Redis {version}" + (f" with {' '.join(args.server_config)}" if args.server_config else "")
    if args.index_only:
        server = f"no Redis (index only; latency = candidates x {args.index_only} µs, measured at 100k)"
    section = [f"{datetime.date.today()}, {os.cpu_count()} cores, {server}, threshold {args.threshold}, "
               f"{'isotropic clusters' if args.isotropic else 'one domain'} "
               f"({describe(make_vectors(20_000, np.random.default_rng(0), domain))}), {args.queries} near-duplicate "
               f"+ {args.queries // 5} fresh queries:", "", *HEADER, *rows, ""]
    print("\n".join(section))
    if not args.no_write:
        write_section(ROOT / "docs" / "cache.md", "bench", "\n".join(section), append=True)


if __name__ == "__main__":
    main()
