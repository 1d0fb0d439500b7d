"""Lookups: a request's exact entry, or else the nearest entry the semantic index finds for it."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import numpy.typing as npt
import redis

from tierq.cache.embedders import Vectors
from tierq.cache.entries import CacheEntry, EntryFields, decoded, parse_entry, read_entries, stored_names
from tierq.cache.generations import Generations
from tierq.cache.identifiers import added_to_sketch, sketch_says, substituted
from tierq.cache.index import OTHER_GENERATION, SLOT, PageIndex
from tierq.cache.keys import CacheKey
from tierq.cache.layout import Layout
from tierq.cache.lsh import Hyperplanes
from tierq.cache_config import CacheConfig

Candidates = tuple[list[int], npt.NDArray[np.float32]]  # entry ids, and their vectors row by row


class Lookups:
    """Finds the entry that answers a request: its exact match, or the nearest at or above the threshold."""

    def __init__(self, client: redis.Redis, config: CacheConfig, layout: Layout, planes: Hyperplanes,
                 index: PageIndex, generations: Generations, threshold: float, floor: float | None = None) -> None:
        self.r = client
        self.cfg = config
        self.layout = layout
        self.planes = planes
        self.index = index
        self.generations = generations
        self.threshold = threshold
        self.floor = min(floor, threshold) if floor is not None else threshold
        # Candidates further than this from the query by sketch are skipped: 0.5% of pairs exactly at the
        # threshold are (far fewer above it); the rest are well below it and would lose the re-rank anyway.
        # With gray-zone verification on, the same holds at its floor.
        self.far = planes.sketch_distance(self.floor, 0.995)

    def lookup(self, keys: Sequence[CacheKey], vectors: Vectors | None) -> list[CacheEntry | None]:
        """Exact matches first, then (for the rest, when vectors are given) the nearest semantic match."""
        pipe = self.r.pipeline(transaction=False)
        for key in keys:
            pipe.get(self.layout.exact(key.exact))
        ids = [int(v) if v else None for v in pipe.execute()]
        found: list[CacheEntry | None] = [None] * len(keys)
        exact = [i for i, e in enumerate(ids) if e is not None]
        for index, stored in zip(exact, read_entries(self.r, self.layout, [ids[i] or 0 for i in exact]), strict=True):
            found[index] = parse_entry(ids[index] or 0, stored, self.cfg.ttl_s, "exact")
        misses = [i for i, f in enumerate(found) if f is None]
        if vectors is not None and self.cfg.semantic and misses:
            for index, entry in zip(misses, self.nearest([keys[i] for i in misses], vectors[misses]), strict=True):
                found[index] = entry
        return found

    def candidates(self, keys: Sequence[CacheKey], vectors: Vectors) -> list[Candidates]:
        """For each query, the ids and float32 vectors of the entries its probes found."""
        out: list[Candidates] = [([], np.empty((0, self.cfg.dim), np.float32))] * len(keys)
        todo = list(range(len(keys)))
        sketches = self.planes.sketch(vectors)
        for _ in range(3):  # a namespace that just got its centre is reloaded and searched again
            pipe = self.r.pipeline(transaction=False)
            by_namespace: dict[str, list[int]] = {}
            for i in todo:
                by_namespace.setdefault(keys[i].namespace, []).append(i)
            searched: list[int] = []
            for namespace, members in by_namespace.items():
                generation, offset = self.generations.current(namespace)
                bands, buckets = self.planes.probes_many(vectors[members], self.cfg.probes, offset)
                seeds = np.array([self.index.seed(namespace, keys[i].ids, generation) for i in members], np.uint64)
                packed = self.index.slots(seeds[:, None], bands, buckets).packed()
                size = bands.shape[1] * SLOT
                for row, i in enumerate(members):
                    self.index.search(pipe, namespace, generation, packed[row * size : (row + 1) * size],
                                      sketches[i].tobytes(), self.far, self.layout.vectors, self.layout.width,
                                      self.cfg.max_candidates)
                searched += members
            stale = []
            for i, reply in zip(searched, pipe.execute(), strict=True):
                if reply == OTHER_GENERATION:
                    self.generations.forget(keys[i].namespace)
                    stale.append(i)
                    continue
                ids, blob = self.index.parse(reply, self.layout.width)
                halves = np.frombuffer(blob, dtype=np.float16).reshape(len(ids), self.cfg.dim)
                out[i] = (ids, halves.astype(np.float32))
            todo = stale
            if not todo:
                break
        return out

    def nearest(self, keys: Sequence[CacheKey], vectors: Vectors, gray: bool = False) -> list[CacheEntry | None]:
        """For each query, the most similar candidate at or above the threshold whose entry is there, fresh
        and its own; with `gray`, failing that, the most similar ready one at or above `floor` (kind "gray":
        not a hit, a candidate to verify). The best candidates of all queries are read in one round trip; a
        query whose best is not valid tries its next one in the next round."""
        lowest = self.floor if gray else self.threshold
        queue: list[list[tuple[int, float]]] = []  # per query: (id, similarity) at or above `lowest`, best first
        for vector, (ids, matrix) in zip(vectors, self.candidates(keys, vectors), strict=True):
            similarities = matrix @ vector
            order = [int(i) for i in np.argsort(-similarities) if similarities[i] >= lowest]
            queue.append([(ids[i], float(similarities[i])) for i in order])
        results: list[CacheEntry | None] = [None] * len(keys)
        waiting = [q for q in range(len(keys)) if queue[q]]
        while waiting:
            heads = [queue[q].pop(0) for q in waiting]
            stored = read_entries(self.r, self.layout, [h[0] for h in heads])
            for q, (entry_id, similarity), entry in zip(waiting, heads, stored, strict=True):
                if not self._its_own(keys[q], entry.fields):
                    continue
                if similarity >= self.threshold:
                    results[q] = parse_entry(entry_id, entry, self.cfg.ttl_s, "semantic", similarity)
                elif entry.fields.state == b"r":  # only an answer can be verified
                    results[q] = parse_entry(entry_id, entry, self.cfg.ttl_s, "gray", similarity)
            waiting = [q for q in waiting if results[q] is None and queue[q]]
        return results

    def _its_own(self, key: CacheKey, fields: EntryFields) -> bool:
        """Whether a candidate entry may answer `key`: same namespace and identifier fingerprint, no place,
        acronym or proper name of the key swapped for another, and no more content words added or dropped
        than the guard allows (an entry written before its words were kept has none to compare)."""
        if decoded(fields.namespace) != key.namespace or (decoded(fields.ids) or "") != key.ids:
            return False
        if substituted(key.names, stored_names(fields.names), key.says, sketch_says(fields.words)):
            return False
        return not added_to_sketch(key.words, fields.words, self.cfg.added_words, self.cfg.added_share)
