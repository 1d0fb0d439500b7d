"""Generations: which hashing a namespace's records are under, and moving them when it gets its centre.

A namespace starts in generation 0 (its entries hashed from the origin); once it holds `centre_after`
entries, `centre` gives it the mean of their vectors as its centre, under a new epoch, and moves their
records there (tierq.cache.index draws the pages and the scripts). Each process remembers the
generation it last saw; every script checks it and answers OTHER_GENERATION when it is stale, and the
caller forgets it, reloads and tries again.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import NamedTuple, cast

import numpy as np
import numpy.typing as npt
import redis

from tierq.cache.embedders import Vectors
from tierq.cache.entries import decoded
from tierq.cache.index import ENTRY_GONE, OTHER_GENERATION, SLOT, PageIndex, Slots, id_bytes
from tierq.cache.keys import CacheKey
from tierq.cache.layout import Layout
from tierq.cache.lsh import Hyperplanes
from tierq.cache_config import CacheConfig

Offset = npt.NDArray[np.float32] | None  # the offset of a namespace's centre; None in generation 0

CENTRE_FIELDS = ("e", "v")  # of P:c:<namespace>, in the order of StoredCentre


class StoredCentre(NamedTuple):
    """One HMGET of CENTRE_FIELDS: a namespace's centre, both None while it has none."""

    epoch: bytes | None
    vector: bytes | None  # float32


class _Young(NamedTuple):
    """An entry of a namespace's generation-0 set, as `centre` reads it."""

    entry_id: int
    ids: bytes | None  # f: its identifier fingerprint
    generation: bytes | None  # g: b"0" while it is hashed from the origin
    head: bytes  # the head of P:v:<id>, its float16 vector (shorter when the string is gone)


class Generations:
    """This process's view of each namespace's generation, and the records an entry has in it."""

    def __init__(self, client: redis.Redis, config: CacheConfig, layout: Layout, planes: Hyperplanes,
                 index: PageIndex) -> None:
        self.r = client
        self.cfg = config
        self.layout = layout
        self.planes = planes
        self.index = index
        # namespace -> (generation, offset of its centre); the scripts check it, so a stale one is reloaded.
        self._known: dict[str, tuple[int, Offset]] = {}

    def current(self, namespace: str) -> tuple[int, Offset]:
        """0 while the namespace is hashed from the origin; its centre's epoch and offset once it has one."""
        known = self._known.get(namespace)
        if known is None:
            raw = cast(list[bytes | None], self.r.hmget(self.index.centre_key(namespace), CENTRE_FIELDS))
            centre = StoredCentre(*raw)
            if centre.epoch is None or centre.vector is None:
                known = (0, None)
            else:
                known = (int(centre.epoch), self.planes.offset(np.frombuffer(centre.vector, dtype=np.float32)))
            if len(self._known) >= 100_000:
                self._known.clear()
            self._known[namespace] = known
        return known

    def forget(self, namespace: str) -> None:
        """Reload the namespace's generation when it is next asked for (a script said it changed)."""
        self._known.pop(namespace, None)

    def clear(self) -> None:
        """Forget every namespace's generation (the cache was cleared)."""
        self._known.clear()

    def slots(self, namespace: str, ids: str, generation: int, offset: Offset, vectors: Vectors) -> list[Slots]:
        """The slots of the buckets that hold each vector (one per band), in one generation."""
        seed = self.index.seed(namespace, ids, generation)
        bands = np.arange(self.cfg.bands, dtype=np.int64)
        return [self.index.slots(seed, bands, row) for row in self.planes.buckets(vectors, offset)]

    def index_many(self, keys: Sequence[CacheKey], vectors: Vectors, entry_ids: Sequence[int]) -> None:
        """Add entries' records, each in its namespace's generation (one round trip for all); give a
        namespace its centre when due."""
        sketches = self.planes.sketch(vectors)
        groups: dict[tuple[str, str], list[int]] = {}
        for n, key in enumerate(keys):
            groups.setdefault((key.namespace, key.ids), []).append(n)
        pipe = self.r.pipeline(transaction=False)
        queued: list[tuple[int, int]] = []  # (entry, generation) in the order of the replies
        for (namespace, ids), members in groups.items():
            generation, offset = self.current(namespace)
            slots_of = self.slots(namespace, ids, generation, offset, vectors[members])
            for n, slots in zip(members, slots_of, strict=True):
                self.index.queue_add(pipe, namespace, generation, slots, entry_ids[n], sketches[n].tobytes(),
                                     self.layout.entry(entry_ids[n]), self.layout.keep_s)
                queued.append((n, generation))
        due: set[str] = set()
        for (n, generation), young in zip(queued, pipe.execute(), strict=True):
            namespace = keys[n].namespace
            if young == OTHER_GENERATION:  # the namespace changed generation since it was read: this one alone, again
                self.forget(namespace)
                self._index_entry(namespace, keys[n].ids, vectors[n], entry_ids[n])
            elif young >= self.cfg.centre_after or (generation != 0 and young > 0):
                due.add(namespace)
        for namespace in due:
            self.centre(namespace)

    def _index_entry(self, namespace: str, ids: str, vector: npt.NDArray[np.float32], entry_id: int) -> None:
        """Add an entry's records in its namespace's generation; give the namespace a centre when due."""
        sketch = self.planes.sketch(vector.reshape(1, -1))[0].tobytes()
        for _ in range(3):
            generation, offset = self.current(namespace)
            slots = self.slots(namespace, ids, generation, offset, vector.reshape(1, -1))[0]
            young = self.index.add(self.r, namespace, generation, slots, entry_id, sketch, self.layout.entry(entry_id),
                                   self.layout.keep_s)
            if young == OTHER_GENERATION:
                self.forget(namespace)
                continue
            if young == ENTRY_GONE:
                return  # dropped while it was being registered: nothing to index
            if young >= self.cfg.centre_after or (generation != 0 and young > 0):
                self.centre(namespace)
            return
        raise RuntimeError(f"cache entry {entry_id}: namespace {namespace} changed generation three times while "
                           "indexing")

    def unindex(self, namespace: str, ids: str, generation: int, head: bytes, entry_id: int) -> None:
        """Cut an entry's records from the index pages (those of its generation, which it names)."""
        vector = np.frombuffer(head, dtype=np.float16).astype(np.float32).reshape(1, -1)
        for attempt in range(3):
            current, offset = self.current(namespace)
            if generation != 0 and current != generation:
                if attempt == 0:
                    self.forget(namespace)  # perhaps only this process's view is old
                    continue
                return  # its centre is gone: the records are cut by the searches and vacuums that meet them
            slots = self.slots(namespace, ids, generation, offset if generation != 0 else None, vector)[0]
            cut = self.index.remove(namespace, generation, slots, entry_id, self.layout.entry(entry_id))
            if cut != OTHER_GENERATION:
                return
            self.forget(namespace)
            moved = cast(bytes | None, self.r.hget(self.layout.entry(entry_id), "g"))
            generation = int(moved or 0)  # it was moved into its namespace's centred generation meanwhile

    def centre(self, namespace: str) -> int:
        """Give a namespace its centre (the mean of its generation-0 vectors) and move them into its generation.

        Safe to run from several processes at once: the first centre stored wins (the others move
        entries under it), and entries that arrive in generation 0 meanwhile are moved by the next
        round. Returns the entries moved.
        """
        moved = 0
        young_key = self.index.young_key(namespace)
        for _ in range(5):
            members = [int(m) for m in cast(set[bytes], self.r.smembers(young_key))]
            if not members:
                break
            pipe = self.r.pipeline(transaction=False)
            for entry_id in members:
                pipe.hmget(self.layout.entry(entry_id), ["f", "g"])
                pipe.getrange(self.layout.vector(entry_id), 0, self.layout.width - 1)
            pipe.hmget(self.index.centre_key(namespace), CENTRE_FIELDS)
            *placements, centre_reply = pipe.execute()
            young = [_Young(entry_id, ids, generation, head) for entry_id, (ids, generation), head
                     in zip(members, placements[0::2], placements[1::2], strict=True)]
            live = [y for y in young if y.generation == b"0" and len(y.head) == self.layout.width]
            gone = [m for m in members if m not in {y.entry_id for y in live}]
            if gone:
                self.r.srem(young_key, *gone)
            if not live:
                continue
            halves = np.frombuffer(b"".join(y.head for y in live), dtype=np.float16).reshape(len(live), -1)
            vectors: Vectors = halves.astype(np.float32)
            stored = StoredCentre(*centre_reply)
            if stored.epoch is not None and stored.vector is not None:
                epoch, centre = int(stored.epoch), np.frombuffer(stored.vector, dtype=np.float32)
            else:
                epoch, centre = self.index.new_epoch(), vectors.mean(axis=0).astype(np.float32)
            items = self._moves(namespace, live, vectors, epoch, self.planes.offset(centre))
            result = self.index.migrate(namespace, epoch, centre, self.layout.keep_s, self.layout.entries, items,
                                        self.cfg.bands)
            self.forget(namespace)
            if result is not None:
                moved_now, left = result
                moved += moved_now
                if left == 0:
                    break
        return moved

    def _moves(self, namespace: str, live: Sequence[_Young], vectors: Vectors, epoch: int,
               offset: npt.NDArray[np.float32]) -> bytes:
        """What `migrate` takes: per entry, its id, sketch, and each band's slot in generation 0 beside its
        slot in generation `epoch`."""
        items = []
        for entry, vector, sketch in zip(live, vectors, self.planes.sketch(vectors), strict=True):
            ids = decoded(entry.ids) or ""
            old = self.slots(namespace, ids, 0, None, vector.reshape(1, -1))[0].packed()
            new = self.slots(namespace, ids, epoch, offset, vector.reshape(1, -1))[0].packed()
            pairs = np.hstack([np.frombuffer(old, np.uint8).reshape(-1, SLOT),
                               np.frombuffer(new, np.uint8).reshape(-1, SLOT)])
            items.append(id_bytes(entry.entry_id) + sketch.tobytes() + pairs.tobytes())
        return b"".join(items)
