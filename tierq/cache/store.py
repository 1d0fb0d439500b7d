"""The cache in Redis: entries, the exact index, the semantic index, leases, eviction.

Keys under the prefix P:
    P:x:<exact>        entry id of an exact request (string, TTL: ttl_s)
    P:e:<id>           the entry (hash, small enough for Redis's compact listpack encoding): state
                       p(ending)/r(eady), leader job, identifier fingerprint, names (places and
                       acronyms), namespace, tenant, time cached, vector width, and once answered the
                       model, tier, cost and tokens
    P:v:<id>           its float16 vector followed, once answered, by the answer (string)
    P:p:<band>:<page>  semantic index pages shared by every namespace (tierq.cache.index)
    P:c:<namespace>    the namespace's centre, once it has had `centre_after` entries (hash: epoch, float32)
    P:k:<namespace>    its entries still hashed from the origin (set; emptied when the centre is set)
    P:epoch            the last centre epoch given
    P:format           the layout version of everything under P (the older layout, recognised by its
                       sorted set P:z, is cleared at start)
    P:n, P:lo          the last entry id given, and the oldest not yet swept: ids are given in time
                       order, so the eviction sweep walks up from P:lo, dropping expired entries and, while
                       more than `max_entries` ids are in the window, the oldest ones
    P:live             how many entries there are
    P:l:<job>          lease of a leader job being answered (TTL, renewed by the tier worker)
    P:stat             counters
A pending entry is a question being answered right now; lookups that find one coalesce onto its
leader instead of calling a model. An entry is served for ttl_s after it was cached: lookups check
its time, Redis expires the exact key then, and the entry and vector a margin later, so the eviction
sweep can still read the vector it needs to unindex them.
"""

from __future__ import annotations

import hashlib
import logging
import random
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import Any, cast

import numpy as np
import numpy.typing as npt
import redis
from redis.typing import EncodableT, FieldT

from tierq.cache.embedders import Vectors
from tierq.cache.identifiers import substituted
from tierq.cache.index import SLOT, PageIndex, Slots, id_bytes
from tierq.cache.keys import CacheKey
from tierq.cache.lsh import Hyperplanes
from tierq.config import CacheConfig

log = logging.getLogger(__name__)

_FIELDS = ("s", "j", "m", "t", "c", "f", "n", "u", "ts", "w", "al", "nm")
FORMAT = "2"  # the layout of the keys below, recorded in P:format for whoever changes it next

# KEYS: entry, vector+answer, stats; ARGV: leader job, answer, model, tier, cost, tokens, now, ttl of
# the entry and vector. The vector stays; the answer goes after it.
_FILL = """
if redis.call('HGET', KEYS[1], 'j') ~= ARGV[1] then return 0 end
local width = tonumber(redis.call('HGET', KEYS[1], 'w') or '0')
local head = ''
if width > 0 then
  head = redis.call('GETRANGE', KEYS[2], 0, width - 1)
  if #head ~= width then return 0 end
end
redis.call('SET', KEYS[2], head .. ARGV[2], 'EX', ARGV[8])
redis.call('HSET', KEYS[1], 's', 'r', 'm', ARGV[3], 't', ARGV[4], 'c', ARGV[5], 'u', ARGV[6], 'ts', ARGV[7],
           'al', #ARGV[2])
redis.call('EXPIRE', KEYS[1], ARGV[8])
redis.call('HINCRBY', KEYS[3], 'fills', 1)
return 1
"""

# KEYS: exact key, id counter, live entry counter. ARGV: entry key prefix, now, ttl, keep seconds, then the entry's fields
# and values. If the exact key names an entry cached less than ttl ago, returns {its id, 0}; otherwise
# gives the next id, points the exact key at it and writes the entry, all at once (so an id without
# an entry is one that is gone for good, and the sweep can step over it): {id, 1}.
_REGISTER = """
local old = redis.call('GET', KEYS[1])
if old then
  local cached = redis.call('HMGET', ARGV[1] .. old, 'ts', 'w')
  if cached[1] and cached[2] and tonumber(cached[1]) >= tonumber(ARGV[2]) - tonumber(ARGV[3]) then
    return {tonumber(old), 0}
  end
end
local id = redis.call('INCR', KEYS[2])
redis.call('INCR', KEYS[3])
redis.call('SET', KEYS[1], id, 'EX', ARGV[3])
redis.call('HSET', ARGV[1] .. id, 'ts', ARGV[2], 'rt', ARGV[2], unpack(ARGV, 5))
redis.call('EXPIRE', ARGV[1] .. id, ARGV[4])
return {id, 1}
"""

# KEYS: a lock. ARGV: the token it was taken with. Deletes it only if it still holds that token.
_UNLOCK = """
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
"""

# KEYS: entry, vector+answer, live entry counter. Deletes both; 1 if the entry was there.
_DROP = """
local gone = redis.call('DEL', KEYS[1])
redis.call('DEL', KEYS[2])
if gone == 1 then redis.call('DECR', KEYS[3]) end
return gone
"""


@dataclass(frozen=True, slots=True)
class CacheEntry:
    """A cached answer (ready) or a question in flight (pending, with its leader job)."""

    id: int
    ready: bool
    leader_job: int
    answer: str | None
    model: str | None
    tier: str | None
    cost_usd: Decimal
    kind: str = "exact"  # or "semantic"
    similarity: float = 1.0
    tokens: tuple[int, int, int] = (0, 0, 0)  # prompt, completion, cached tokens of the answering call


def _s(value: bytes | None) -> str | None:
    return value.decode() if value is not None else None


NAME_SEPARATOR = "\x1f"


def _names(value: bytes | None) -> frozenset[str]:
    """The names an entry's text holds (field nm; none for an entry written before names were kept)."""
    return frozenset(value.decode().split(NAME_SEPARATOR)) if value else frozenset()


class CacheStore:
    """One Redis database holding the cache of every tenant; safe to share across processes."""

    def __init__(self, client: redis.Redis, config: CacheConfig, threshold: float) -> None:
        self.r = client
        self.cfg = config
        self.p = config.prefix
        self.threshold = threshold
        self.planes = Hyperplanes(config.dim, config.bands, config.rows)
        self.width = 2 * config.dim  # bytes of a float16 vector
        # The planes' shape salts every bucket hash: entries indexed under another shape are never
        # candidates (they are still found exactly, and age out).
        salt = hashlib.blake2b(f"{config.dim}:{config.bands}:{config.rows}".encode(), digest_size=16).digest()
        self.index = PageIndex(client, self.p, config.pages, config.bands, salt)
        self._fill = client.register_script(_FILL)
        self._register = client.register_script(_REGISTER)
        self._drop = client.register_script(_DROP)
        self._unlock = client.register_script(_UNLOCK)
        # Candidates further than this from the query by sketch are skipped: 0.5% of pairs exactly at the
        # threshold are (far fewer above it); the rest are well below it and would lose the re-rank anyway.
        self.far = self.planes.sketch_distance(threshold, 0.995)
        # namespace -> (generation, offset of its centre); the scripts check it, so a stale one is reloaded.
        self._generations: dict[str, tuple[int, npt.NDArray[np.float32] | None]] = {}
        self._check_format()

    def _check_format(self) -> None:
        """Clear what an older tierq left under this prefix (a cache: its entries are only re-asked).

        The older layout is recognised by its eviction sorted set, P:z, which this one never writes;
        a missing P:format alone proves nothing (a FLUSHDB while workers run removes it too).
        """
        if self.r.exists(f"{self.p}:z"):
            log.warning("cache: clearing the entries under %s:*, written in an older layout", self.p)
            self.clear_all()
        self.r.set(f"{self.p}:format", FORMAT)

    def clear_all(self) -> int:
        """Delete every key under the prefix but the epoch counter (an epoch is never given twice, so a
        process that remembers a cleared namespace's centre is told so); returns how many entries there were."""
        entries = self.entries()
        batch: list[bytes] = []
        keep = f"{self.p}:epoch".encode()
        for name in cast(list[bytes], self.r.scan_iter(match=f"{self.p}:*", count=1000)):
            if name == keep:
                continue
            batch.append(name)
            if len(batch) >= 1000:
                self.r.delete(*batch)
                batch.clear()
        if batch:
            self.r.delete(*batch)
        self.r.set(f"{self.p}:format", FORMAT)
        self._generations.clear()
        return entries

    @property
    def _keep_s(self) -> int:
        """How long Redis keeps an entry and its vector: ttl_s and a margin for the eviction sweep."""
        return self.cfg.ttl_s + max(60, self.cfg.ttl_s // 10)

    def _entry(self, entry_id: int, raw: Sequence[bytes | None], blob: bytes | None, kind: str,
               similarity: float = 1.0) -> CacheEntry | None:
        """The entry of one HMGET of _FIELDS and its vector-and-answer string, or None when it is gone,
        older than ttl_s, or not whole (its string evicted or replaced)."""
        state, job, model, tier, cost, _, _, tokens, cached_at, width, length, _ = raw
        if state is None or width is None or time.time() - float(cached_at or 0) > self.cfg.ttl_s:
            return None
        ready = state == b"r"
        answer = None
        if ready:
            body = (blob or b"")[int(width) :]
            if len(blob or b"") < int(width) or len(body) != int(length or -1):
                return None
            answer = body.decode()
        usage = tuple(int(x) for x in (_s(tokens) or "0,0,0").split(","))
        return CacheEntry(entry_id, ready, int(job or 0), answer, _s(model), _s(tier), Decimal(_s(cost) or "0"), kind,
                          similarity, (usage[0], usage[1], usage[2]))

    def _read(self, entry_ids: Sequence[int]) -> list[tuple[list[bytes | None], bytes | None]]:
        """Fields and vector-and-answer string of several entries, read together (MULTI), in one round trip."""
        pipe = self.r.pipeline(transaction=True)
        for entry_id in entry_ids:
            pipe.hmget(f"{self.p}:e:{entry_id}", _FIELDS)
            pipe.get(f"{self.p}:v:{entry_id}")
        replies = pipe.execute()
        return [(cast(list[bytes | None], replies[2 * n]), cast(bytes | None, replies[2 * n + 1]))
                for n in range(len(entry_ids))]

    def lookup(self, keys: Sequence[CacheKey], vectors: Vectors | None) -> list[CacheEntry | None]:
        """Exact matches first, then (for the rest, when vectors are given) the nearest semantic match."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(f"{self.p}:x:{key.exact}")
        ids = [int(v) if v else None for v in pipe.execute()]
        found: list[CacheEntry | None] = [None] * len(keys)
        exact = [i for i, e in enumerate(ids) if e is not None]
        for index, (raw, blob) in zip(exact, self._read([ids[i] or 0 for i in exact]), strict=True):
            found[index] = self._entry(ids[index] or 0, raw, blob, "exact")
        misses = [i for i, f in enumerate(found) if f is None]
        if vectors is not None and self.cfg.semantic and misses:
            for index, entry in zip(misses, self.nearest([keys[i] for i in misses], vectors[misses]), strict=True):
                found[index] = entry
        return found

    def generation(self, namespace: str) -> tuple[int, npt.NDArray[np.float32] | None]:
        """0 while the namespace is hashed from the origin; its centre's epoch and offset once it has one."""
        known = self._generations.get(namespace)
        if known is None:
            epoch, raw = cast(list[bytes | None], self.r.hmget(self.index.centre_key(namespace), ["e", "v"]))
            if epoch is None or raw is None:
                known = (0, None)
            else:
                known = (int(epoch), self.planes.offset(np.frombuffer(raw, dtype=np.float32)))
            if len(self._generations) >= 100_000:
                self._generations.clear()
            self._generations[namespace] = known
        return known

    def candidates(self, keys: Sequence[CacheKey], vectors: Vectors) -> list[tuple[list[int], npt.NDArray[np.float32]]]:
        """For each query, the ids and float32 vectors of the entries its probes found."""
        out: list[tuple[list[int], npt.NDArray[np.float32]]] = [([], np.empty((0, self.cfg.dim), np.float32))] * len(keys)
        todo = list(range(len(keys)))
        sketches = self.planes.sketch(vectors)
        for _ in range(3):  # a namespace that just got its centre is reloaded and searched again
            pipe = self.r.pipeline(transaction=False)
            by_namespace: dict[str, list[int]] = {}
            for i in todo:
                by_namespace.setdefault(keys[i].namespace, []).append(i)
            searched: list[int] = []
            for namespace, members in by_namespace.items():
                generation, offset = self.generation(namespace)
                bands, buckets = self.planes.probes_many(vectors[members], self.cfg.probes, offset)
                seeds = np.array([self.index.seed(namespace, keys[i].ids, generation) for i in members], np.uint64)
                packed = self.index.slots(seeds[:, None], bands, buckets).packed()
                size = bands.shape[1] * SLOT
                for row, i in enumerate(members):
                    self.index.search(pipe, namespace, generation, packed[row * size : (row + 1) * size],
                                      sketches[i].tobytes(), self.far, f"{self.p}:v:", self.width,
                                      self.cfg.max_candidates)
                searched += members
            stale = []
            for i, reply in zip(searched, pipe.execute(), strict=True):
                if reply == -1:
                    self._generations.pop(keys[i].namespace, None)
                    stale.append(i)
                    continue
                ids, blob = self.index.parse(reply, self.width)
                out[i] = (ids, np.frombuffer(blob, dtype=np.float16).reshape(len(ids), self.cfg.dim).astype(np.float32))
            todo = stale
            if not todo:
                break
        return out

    def nearest(self, keys: Sequence[CacheKey], vectors: Vectors) -> list[CacheEntry | None]:
        """For each query, the most similar candidate at or above the threshold whose entry is there, fresh
        and its own. The best candidates of all queries are read in one round trip; a query whose best is
        not valid tries its next one in the next round."""
        queue: list[list[tuple[int, float]]] = []  # per query: (id, similarity) at or above the threshold, best first
        for vector, (ids, matrix) in zip(vectors, self.candidates(keys, vectors), strict=True):
            similarities = matrix @ vector
            order = [int(i) for i in np.argsort(-similarities) if similarities[i] >= self.threshold]
            queue.append([(ids[i], float(similarities[i])) for i in order])
        results: list[CacheEntry | None] = [None] * len(keys)
        waiting = [q for q in range(len(keys)) if queue[q]]
        while waiting:
            heads = [queue[q].pop(0) for q in waiting]
            for q, (entry_id, similarity), (raw, blob) in zip(waiting, heads, self._read([h[0] for h in heads]),
                                                                strict=True):
                if (_s(raw[6]) == keys[q].namespace and (_s(raw[5]) or "") == keys[q].ids
                        and not substituted(keys[q].names, _names(raw[11]))):
                    results[q] = self._entry(entry_id, raw, blob, "semantic", similarity)
            waiting = [q for q in waiting if results[q] is None and queue[q]]
        return results

    def register(self, key: CacheKey, vector: Sequence[float] | None, job_id: int) -> tuple[int, CacheEntry | None]:
        """Make `job_id` the leader of `key` (its new entry id, None); if a job got there first, its entry."""
        vectors = None if vector is None else np.asarray(vector, dtype=np.float32).reshape(1, -1)
        return self.register_many([key], vectors, [job_id])[0]

    def register_many(self, keys: Sequence[CacheKey], vectors: Vectors | None, job_ids: Sequence[int]
                      ) -> list[tuple[int, CacheEntry | None]]:
        """`register` for several keys (of different exact texts) at once: a few round trips for all of them."""
        semantic = vectors is not None and self.cfg.semantic
        pipe = self.r.pipeline(transaction=False)
        for key, job_id in zip(keys, job_ids, strict=True):
            self._register_on(pipe, key, job_id, semantic)
        results: list[tuple[int, CacheEntry | None]] = []
        created: list[int] = []
        for n, (entry_id, was_created) in enumerate(pipe.execute()):
            results.append((int(entry_id), None))
            if int(was_created):
                created.append(n)
            else:
                results[n] = self._taken(keys[n], int(entry_id), job_ids[n], semantic)
                if results[n][1] is None:
                    created.append(n)
        if semantic and vectors is not None and created:
            # Index the float16 vectors that are stored, so that dropping or centring (which read them back)
            # computes the same buckets.
            halves = vectors[created].astype(np.float16)
            pipe = self.r.pipeline(transaction=False)
            for n, half in zip(created, halves, strict=True):
                pipe.set(f"{self.p}:v:{results[n][0]}", half.tobytes(), ex=self._keep_s)
            pipe.execute()
            self._index_many([keys[n] for n in created], halves.astype(np.float32), [results[n][0] for n in created])
        return results

    def _register_on(self, client: redis.Redis | redis.client.Pipeline, key: CacheKey, job_id: int, semantic: bool
                     ) -> Any:
        fields: dict[FieldT, EncodableT] = {"s": "p", "j": job_id, "f": key.ids, "n": key.namespace, "x": key.exact,
                                            "tn": key.tenant, "w": self.width if semantic else 0,
                                            "nm": NAME_SEPARATOR.join(sorted(key.names))}
        args: list[EncodableT] = [f"{self.p}:e:", f"{time.time():.3f}", self.cfg.ttl_s, self._keep_s]
        for name, value in fields.items():
            args += [name, value]
        return self._register([f"{self.p}:x:{key.exact}", f"{self.p}:n", f"{self.p}:live"], args, client=client)

    def _taken(self, key: CacheKey, entry_id: int, job_id: int, semantic: bool) -> tuple[int, CacheEntry | None]:
        """The key had an entry already: that entry, or (if it is gone or not whole) a new one for `job_id`."""
        for _ in range(3):
            (raw, blob), = self._read([entry_id])
            existing = self._entry(entry_id, raw, blob, "exact")
            if existing is not None:
                return entry_id, existing
            self.drop(entry_id)  # gone between the two reads, or not whole (its string evicted): replace it
            entry_id, created = (int(x) for x in self._register_on(self.r, key, job_id, semantic))
            if created:
                return entry_id, None
        raise RuntimeError(f"cache key {key.exact}: its entry vanished three times while registering")

    def _index_many(self, keys: Sequence[CacheKey], vectors: Vectors, entry_ids: Sequence[int]) -> None:
        """Add entries' records, each in its namespace's generation (one round trip for all); give a
        namespace its centre when due."""
        sketches = self.planes.sketch(vectors)
        groups: dict[tuple[str, str], list[int]] = {}
        for n, key in enumerate(keys):
            groups.setdefault((key.namespace, key.ids), []).append(n)
        pipe = self.r.pipeline(transaction=False)
        queued: list[tuple[int, int]] = []  # (entry, generation) in the order of the replies
        for (namespace, ids), members in groups.items():
            generation, offset = self.generation(namespace)
            slots_of = self._slots(namespace, ids, generation, offset, vectors[members])
            for n, slots in zip(members, slots_of, strict=True):
                self.index.queue_add(pipe, namespace, generation, slots, entry_ids[n], sketches[n].tobytes(),
                                     f"{self.p}:e:{entry_ids[n]}", self._keep_s)
                queued.append((n, generation))
        due: set[str] = set()
        for (n, generation), young in zip(queued, pipe.execute(), strict=True):
            namespace = keys[n].namespace
            if young == -1:  # the namespace changed generation since it was read: this one alone, again
                self._generations.pop(namespace, None)
                self._index_entry(namespace, keys[n].ids, vectors[n], entry_ids[n])
            elif young >= self.cfg.centre_after or (generation != 0 and young > 0):
                due.add(namespace)
        for namespace in due:
            self.centre(namespace)

    def _slots(self, namespace: str, ids: str, generation: int, offset: npt.NDArray[np.float32] | None,
               vectors: Vectors) -> list[Slots]:
        """The slots of the buckets that hold each vector (one per band), in one generation."""
        seed = self.index.seed(namespace, ids, generation)
        bands = np.arange(self.cfg.bands, dtype=np.int64)
        return [self.index.slots(seed, bands, row) for row in self.planes.buckets(vectors, offset)]

    def _index_entry(self, namespace: str, ids: str, vector: npt.NDArray[np.float32], entry_id: int) -> None:
        """Add an entry's records in its namespace's generation; give the namespace a centre when due."""
        sketch = self.planes.sketch(vector.reshape(1, -1))[0].tobytes()
        for _ in range(3):
            generation, offset = self.generation(namespace)
            slots = self._slots(namespace, ids, generation, offset, vector.reshape(1, -1))[0]
            young = self.index.add(self.r, namespace, generation, slots, entry_id, sketch, f"{self.p}:e:{entry_id}",
                                   self._keep_s)
            if young == -1:
                self._generations.pop(namespace, None)
                continue
            if young == -2:
                return  # dropped while it was being registered: nothing to index
            if young >= self.cfg.centre_after or (generation != 0 and young > 0):
                self.centre(namespace)
            return
        raise RuntimeError(f"cache entry {entry_id}: namespace {namespace} changed generation three times while indexing")

    def centre(self, namespace: str) -> int:
        """Give a namespace its centre (the mean of its generation-0 vectors) and move them into its generation.

        Safe to run from several processes at once: the first centre stored wins (the others move
        entries under it), and entries that arrive in generation 0 meanwhile are moved by the next
        round. Returns the entries moved.
        """
        moved = 0
        young = self.index.young_key(namespace)
        for _ in range(5):
            members = [int(m) for m in cast(set[bytes], self.r.smembers(young))]
            if not members:
                break
            pipe = self.r.pipeline(transaction=False)
            for entry_id in members:
                pipe.hmget(f"{self.p}:e:{entry_id}", ["f", "g"])
                pipe.getrange(f"{self.p}:v:{entry_id}", 0, self.width - 1)
            pipe.hmget(self.index.centre_key(namespace), ["e", "v"])
            replies = pipe.execute()
            live = [(entry_id, _s(replies[2 * n][0]) or "", replies[2 * n + 1]) for n, entry_id in enumerate(members)
                    if replies[2 * n][1] == b"0" and len(replies[2 * n + 1]) == self.width]
            gone = [m for m in members if m not in {e for e, _, _ in live}]
            if gone:
                self.r.srem(young, *gone)
            if not live:
                continue
            halves = np.frombuffer(b"".join(v for _, _, v in live), dtype=np.float16).reshape(len(live), -1)
            vectors: Vectors = halves.astype(np.float32)
            epoch_raw, centre_raw = replies[-1]
            if epoch_raw is not None and centre_raw is not None:
                epoch, centre = int(epoch_raw), np.frombuffer(centre_raw, dtype=np.float32)
            else:
                epoch, centre = self.index.new_epoch(), vectors.mean(axis=0).astype(np.float32)
            offset = self.planes.offset(centre)
            items = []
            for (entry_id, ids, _), vector, sketch in zip(live, vectors, self.planes.sketch(vectors), strict=True):
                old = self._slots(namespace, ids, 0, None, vector.reshape(1, -1))[0].packed()
                new = self._slots(namespace, ids, epoch, offset, vector.reshape(1, -1))[0].packed()
                pairs = np.hstack([np.frombuffer(old, np.uint8).reshape(-1, 7), np.frombuffer(new, np.uint8).reshape(-1, 7)])
                items.append(id_bytes(entry_id) + sketch.tobytes() + pairs.tobytes())
            result = self.index.migrate(namespace, epoch, centre, self._keep_s, f"{self.p}:e:", b"".join(items),
                                        self.cfg.bands)
            self._generations.pop(namespace, None)
            if result is not None:
                moved += result[0]
                if result[1] == 0:
                    break
        return moved

    def fill(
        self, entry_id: int, leader_job: int, answer: str, model: str, tier: str, cost: Decimal,
        tokens: tuple[int, int, int] = (0, 0, 0),
    ) -> bool:
        """Store a validated answer in the leader's pending entry; False if the entry is gone or not its own."""
        keys = [f"{self.p}:e:{entry_id}", f"{self.p}:v:{entry_id}", f"{self.p}:stat"]
        args: list[EncodableT] = [leader_job, answer, model, tier, str(cost), ",".join(str(t) for t in tokens),
                                  f"{time.time():.3f}", self._keep_s]
        if not self._fill(keys, args):
            return False
        self.evict()
        return True

    def drop(self, entry_id: int, leader_job: int | None = None) -> bool:
        """Remove an entry (only if `leader_job` still leads it, when given) with its index records."""
        name, vkey = f"{self.p}:e:{entry_id}", f"{self.p}:v:{entry_id}"
        pipe = self.r.pipeline(transaction=False)
        pipe.hmget(name, ["j", "x", "n", "f", "w", "g"])
        pipe.getrange(vkey, 0, self.width - 1)
        (job, exact, namespace, ids, width, generation), head = pipe.execute()
        if job is None:
            # Gone already (Redis expired it); records left in index pages are cut by the next search
            # that meets them, or by a vacuum, since its vector is gone too.
            self.r.delete(vkey)
            return False
        if leader_job is not None and job != str(leader_job).encode():
            return False
        if int(width or 0) == self.width and len(head) == self.width and generation is not None:
            self._unindex(_s(namespace) or "", _s(ids) or "", int(generation), head, entry_id)
        self._drop([name, vkey, f"{self.p}:live"], [])
        if exact is not None and self.r.get(f"{self.p}:x:{_s(exact)}") == str(entry_id).encode():
            self.r.delete(f"{self.p}:x:{_s(exact)}")
        return True

    def _unindex(self, namespace: str, ids: str, generation: int, head: bytes, entry_id: int) -> None:
        """Cut an entry's records from the index pages (those of its generation, which it names)."""
        vector = np.frombuffer(head, dtype=np.float16).astype(np.float32).reshape(1, -1)
        for attempt in range(3):
            current, offset = self.generation(namespace)
            if generation != 0 and current != generation:
                if attempt == 0:
                    self._generations.pop(namespace, None)  # perhaps only this process's view is old
                    continue
                return  # its centre is gone: the records are cut by the searches and vacuums that meet them
            slots = self._slots(namespace, ids, generation, offset if generation != 0 else None, vector)[0]
            if self.index.remove(namespace, generation, slots, entry_id, f"{self.p}:e:{entry_id}") != -1:
                return
            self._generations.pop(namespace, None)
            moved = cast(bytes | None, self.r.hget(f"{self.p}:e:{entry_id}", "g"))
            generation = int(moved or 0)  # it was moved into its namespace's centred generation meanwhile

    def evict(self, batch: int = 100, most: int = 2_000) -> int:
        """Drop expired entries and, while more than `max_entries` ids are live, the oldest; returns how many.

        Ids are given in registration order, so the sweep walks up from the oldest (P:lo), at most
        `most` ids per call, saving its place after each batch. One process sweeps at a time (a lock
        it releases only if it still holds it). An id without an entry was dropped already (or never
        won its exact key) and is stepped over.
        """
        lock, token = f"{self.p}:sweep", uuid.uuid4().hex
        if not self.r.set(lock, token, nx=True, px=30_000):
            return 0
        dropped = 0
        try:
            low, high = (int(v or 0) for v in cast(list[bytes | None], self.r.mget(f"{self.p}:lo", f"{self.p}:n")))
            low, stop = max(low, 1), max(low, 1) + most
            cutoff = time.time() - self.cfg.ttl_s
            while low <= min(high, stop):
                window = range(low, min(high, low + batch - 1) + 1)
                pipe = self.r.pipeline(transaction=False)
                for entry_id in window:
                    pipe.hget(f"{self.p}:e:{entry_id}", "rt")
                stamps = cast(list[bytes | None], pipe.execute())
                done = False
                for entry_id, stamp in zip(window, stamps, strict=True):
                    if stamp is not None and high - entry_id < self.cfg.max_entries and float(stamp) >= cutoff:
                        done = True
                        break
                    if stamp is not None and self.drop(entry_id):
                        dropped += 1
                    low = entry_id + 1
                self.r.set(f"{self.p}:lo", low)
                if done:
                    break
        finally:
            self._unlock([lock], [token])
        if dropped:
            self.r.hincrby(f"{self.p}:stat", "evicted", dropped)
        self.vacuum(2)
        return dropped

    def entries(self) -> int:
        """Live entries: registered and not dropped. (One that Redis expired on its own, because no fill
        ran the sweep for its whole margin, still counts until `tierq cache clear`.)"""
        return int(cast(bytes | None, self.r.get(f"{self.p}:live")) or 0)

    def vacuum(self, pages: int | None = None) -> int:
        """Cut index records of entries Redis expired before the sweep reached them, from `pages` random
        pages (each fill vacuums two, so every page is visited now and then) or from all of them."""
        if pages is None:
            names = [n.decode() for n in cast(list[bytes], self.r.scan_iter(match=f"{self.index.page_prefix}*", count=1000))]
            return sum(self.index.vacuum(self.r, names[i : i + 500], f"{self.p}:v:") for i in range(0, len(names), 500))
        picks = zip(random.choices(range(self.cfg.bands), k=pages), random.choices(range(self.cfg.pages), k=pages), strict=True)
        return self.index.vacuum(self.r, [f"{self.index.page_prefix}{band}:{page}" for band, page in picks], f"{self.p}:v:")

    def count(self, field: str, amount: int = 1) -> None:
        """Add to one of the counters `tierq cache stats` shows."""
        if amount:
            self.r.hincrby(f"{self.p}:stat", field, amount)

    def renew_leases(self, job_ids: Sequence[int]) -> None:
        """Tell followers these leaders are alive for another `lease_s`."""
        pipe = self.r.pipeline(transaction=False)
        for job_id in job_ids:
            pipe.set(f"{self.p}:l:{job_id}", 1, px=int(self.cfg.lease_s * 1000))
        pipe.execute()

    def alive(self, job_id: int) -> bool:
        """True while the leader's worker keeps renewing its lease."""
        return bool(self.r.exists(f"{self.p}:l:{job_id}"))
