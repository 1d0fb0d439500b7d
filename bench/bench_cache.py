"""Semantic-cache benchmark: lookup latency, recall, candidates and Redis memory per entry.

    .venv/bin/python bench/bench_cache.py [--entries 100000 1000000] [--shapes 32x22] [--probes 600 900]

Fills a CacheStore with N unit 384-dim vectors shaped like one domain of sentence embeddings
(cache_vectors.py), all in one namespace (the worst case: one tenant's one task), then looks up
near-duplicates of stored vectors (cosine 0.85-0.99 to their source) and fresh vectors of the same
domain, one query at a time, through `CacheStore.lookup`. Recall is against exact brute-force search.
The store centres the namespace's index on the mean of its first entries, as in production, unless
--no-centre.
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
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from decimal import Decimal
from pathlib import Path
from typing import cast

import numpy as np
import redis
from cache_vectors import Domain, describe, make_vectors, near_duplicates
from docs_section import write_section
from redis.typing import EncodableT, FieldT
from threadpoolctl import threadpool_limits

from tierq.cache.embedders import Vectors
from tierq.cache.keys import CacheKey
from tierq.cache.store import CacheStore
from tierq.cache_config import CacheConfig

ROOT = Path(__file__).resolve().parents[1]
# MiniLM's default; the lowest threshold of the built-in embedders, so the hardest for the index.
THRESHOLD = 0.86
NAMESPACE = "bench"
DEFAULTS = CacheConfig()
ANSWER = "The parcel left our warehouse yesterday and arrives within two working days."


def entry_key(i: int) -> CacheKey:
    """The key of stored entry i (entry id i + 1)."""
    return CacheKey(NAMESPACE, f"e{i:031x}", "", "", "bench")


def query_key(i: int) -> CacheKey:
    """A key with no exact match, so that every lookup goes to the semantic index."""
    return CacheKey(NAMESPACE, f"q{i:031x}", "", "", "bench")


def bulk_load(store: CacheStore, vectors: Vectors, key: Callable[[int], CacheKey] = entry_key) -> None:
    """The first `centre_after` entries (at least 200) through register and fill, so the store centres the
    namespace as it would in production; the rest copy what those wrote, in pipelines. Entry i has key
    `key(i)`; every key must have the same namespace and identifier fingerprint, and the store must be empty."""
    namespace, ids = key(0).namespace, key(0).ids
    via_api = max(200, store.cfg.centre_after) if store.cfg.centre_after <= len(vectors) else 200
    for i in range(via_api):
        entry_id, _ = store.register(key(i), vectors[i].tolist(), job_id=i + 1)
        store.fill(entry_id, i + 1, ANSWER, "model-a", "hot", Decimal("0.000123"))
    p, keep, width = store.p, store.layout.keep_s, store.width
    # Copying what the store wrote keeps the bulk entries the same size when the store gains a field.
    # The store's client returns bytes (no decode_responses); redis's types allow str too.
    written = cast(dict[bytes, bytes], store.r.hgetall(f"{p}:e:{via_api}"))
    template: dict[FieldT, EncodableT] = {k.decode(): v for k, v in written.items()}
    answer = store.r.getrange(f"{p}:v:1", width, -1)
    generation, offset = store.generation(namespace)
    for start in range(via_api, len(vectors), 2000):
        chunk = range(start, min(len(vectors), start + 2000))
        pipe = store.r.pipeline(transaction=False)
        # As the store does: index the float16 vector that is stored.
        halves = vectors[chunk.start : chunk.stop].astype(np.float16).astype(np.float32)
        slots = store.generations.slots(namespace, ids, generation, offset, halves)
        sketches = store.planes.sketch(halves)
        for i, where, sketch in zip(chunk, slots, sketches, strict=True):
            exact, entry_id = key(i).exact, i + 1
            pipe.set(f"{p}:x:{exact}", entry_id, ex=store.cfg.ttl_s)
            now = f"{time.time():.3f}"
            pipe.hset(f"{p}:e:{entry_id}", mapping={**template, "j": entry_id, "x": exact, "ts": now, "rt": now})
            pipe.expire(f"{p}:e:{entry_id}", keep)
            pipe.set(f"{p}:v:{entry_id}", vectors[i].astype(np.float16).tobytes() + answer, ex=keep)
            store.index.queue_add(pipe, namespace, generation, where, entry_id, sketch.tobytes(), f"{p}:e:{entry_id}",
                                  keep)
        if any(reply == -1 for reply in pipe.execute()):
            raise RuntimeError("the namespace changed generation during the bulk load")
    store.r.set(f"{p}:n", len(vectors))
    store.r.set(f"{p}:live", len(vectors))


@dataclass(frozen=True, slots=True)
class Result:
    """One (entries, shape, probes) run."""

    entries: int
    shape: str
    probes: int
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
        return (f"| {self.entries:,} | {self.shape} | {self.probes} | {p50:.2f} ms | {p99:.2f} ms "
                f"| {self.recall:.3f} ({self.judged}) "
                f"| {np.mean(self.candidates):,.0f} / {np.percentile(self.candidates, 99):,.0f} "
                f"| {self.below[0]} / {self.below[1]} | {self.bytes_per_entry:,.0f} | {self.brute_ms:.1f} ms "
                f"| {self.brute_ms / p50:.1f} |")


HEADER = ["| entries | bands x rows | probes | lookup p50 | lookup p99 | recall (queries judged) "
          "| candidates mean / p99 "
          "| hits below threshold (store / float32) | Redis bytes per entry | brute force | brute / p50 |",
          "|---|---|---|---|---|---|---|---|---|---|---|"]


def measure(store: CacheStore, stored: Vectors, queries: Vectors
            ) -> tuple[list[float], float, int, list[int], tuple[int, int]]:
    """Single-query lookup times; recall, candidates and hits below the threshold, against brute force."""
    with threadpool_limits(2, "blas"):
        sims = np.concatenate([queries[i : i + 256] @ stored.T for i in range(0, len(queries), 256)])
    truth, best = sims.argmax(axis=1), sims.max(axis=1)
    latencies, candidates, found, below_store, below_true = [], [], 0, 0, 0
    with threadpool_limits(1, "blas"):
        for i, query in enumerate(queries):
            started = time.perf_counter()
            hit = store.lookup([query_key(i)], query.reshape(1, -1))[0]
            latencies.append(1e3 * (time.perf_counter() - started))
            candidates.append(len(store.candidates([query_key(i)], query.reshape(1, -1))[0][0]))
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


def run(client: redis.Redis, shape: str, probes: list[int], stored: Vectors, queries: Vectors, threshold: float,
        centre_after: int, pages: int) -> list[Result]:
    """Load `stored` under one LSH shape, measure each number of probes, flush."""
    bands, rows = (int(x) for x in shape.split("x"))
    client.flushdb()
    while int(client.info("memory")["used_memory"]) > 64 << 20:  # a background flush still freeing
        time.sleep(0.5)
    baseline = int(client.info("memory")["used_memory"])
    config = CacheConfig(bands=bands, rows=rows, pages=pages, max_entries=10 * len(stored), prefix="bq",
                         centre_after=centre_after)
    store = CacheStore(client, config, threshold)
    started = time.perf_counter()
    bulk_load(store, stored)
    print(f"loaded {len(stored):,} entries as {shape} in {time.perf_counter() - started:.0f} s", flush=True)
    used = int(client.info("memory")["used_memory"]) - baseline
    brute = brute_force_ms(stored, queries)
    results = []
    for count in probes:
        store = CacheStore(client, config.model_copy(update={"probes": count}), threshold)
        latencies, recall, judged, candidates, below = measure(store, stored, queries)
        results.append(Result(len(stored), shape, count, latencies, recall, judged, candidates, below,
                              used / len(stored), brute))
        print(results[-1].row(), flush=True)
    client.flushdb(asynchronous=True)  # millions of keys: freed in the background
    return results


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
        args = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "", "--appendonly", "no",
                "--dir", workdir]
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
    """Run every (entries, shape, probes), print the rows, append them to docs/cache.md."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, nargs="+", default=[100_000])
    parser.add_argument("--shapes", nargs="+", default=[f"{DEFAULTS.bands}x{DEFAULTS.rows}"])
    parser.add_argument("--probes", type=int, nargs="+", default=[DEFAULTS.probes])
    parser.add_argument("--pages", type=int, default=DEFAULTS.pages)
    parser.add_argument("--queries", type=int, default=500, help="near-duplicate queries; a fifth as many fresh ones")
    parser.add_argument("--threshold", type=float, default=THRESHOLD)
    parser.add_argument("--isotropic", action="store_true", help="clusters around random centres, no shared direction")
    parser.add_argument("--no-centre", action="store_true", help="never centre the namespace (hash from the origin)")
    parser.add_argument("--server-config", nargs="*", default=[], metavar="NAME=VALUE",
                        help="settings for the private redis-server, e.g. hash-max-listpack-value=1024")
    parser.add_argument("--url", help="an existing Redis database to use (and flush) instead of a private server")
    parser.add_argument("--no-write", action="store_true")
    args = parser.parse_args()
    domain = Domain(shared=0.0, topic=0.0, cluster=0.3) if args.isotropic else Domain()
    with contextlib.ExitStack() as stack:
        url = args.url or stack.enter_context(private_redis(args.server_config))
        client = redis.Redis.from_url(url)
        rows: list[str] = []
        for n in args.entries:
            rng = np.random.default_rng(n)
            stored = make_vectors(n, rng, domain)
            queries = np.concatenate([near_duplicates(stored, args.queries, rng),
                                      make_vectors(args.queries // 5, rng, domain)])
            centre_after = 2**62 if args.no_centre else DEFAULTS.centre_after
            for shape in args.shapes:
                results = run(client, shape, args.probes, stored, queries, args.threshold, centre_after, args.pages)
                rows.extend(r.row() for r in results)
        version = client.info("server")["redis_version"]
        client.close()
    server = f"Redis {version}" + (f" with {' '.join(args.server_config)}" if args.server_config else "")
    section = [f"{datetime.date.today()}, {os.cpu_count()} cores, {server}, threshold {args.threshold}, "
               f"{'isotropic clusters' if args.isotropic else 'one domain'} "
               f"({describe(make_vectors(20_000, np.random.default_rng(0), domain))}), "
               f"{'no centre' if args.no_centre else f'centred after {DEFAULTS.centre_after:,} entries'}, "
               f"{args.pages} pages per band, "
               f"{args.queries} near-duplicate + {args.queries // 5} fresh queries:", "", *HEADER, *rows, ""]
    print("\n".join(section))
    if not args.no_write:
        write_section(ROOT / "docs" / "cache.md", "bench", "\n".join(section), append=True)


if __name__ == "__main__":
    main()
