"""Cache entries: the hash P:e:<id> field by field, read with its vector-and-answer string, and checked."""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass
from decimal import Decimal
from typing import NamedTuple

import redis

from tierq.cache.identifiers import NAME_SEPARATOR
from tierq.cache.layout import Layout

# The fields of an entry's hash that a lookup reads, in the order of EntryFields.
FIELDS = ("s", "j", "m", "t", "c", "f", "n", "u", "ts", "w", "al", "nm", "ws")


class EntryFields(NamedTuple):
    """One HMGET of FIELDS: the raw value of each (None where unset, or when the entry is gone)."""

    state: bytes | None  # s: b"p" while pending, b"r" once ready
    job: bytes | None  # j: the leader job
    model: bytes | None  # m
    tier: bytes | None  # t
    cost: bytes | None  # c: USD, a decimal
    ids: bytes | None  # f: the identifier fingerprint
    namespace: bytes | None  # n
    tokens: bytes | None  # u: "prompt,completion,cached"
    cached_at: bytes | None  # ts: unix seconds
    width: bytes | None  # w: bytes of the vector before the answer (0 without one)
    length: bytes | None  # al: bytes of the answer
    names: bytes | None  # nm: places, acronyms, proper names, the kind of answer; NAME_SEPARATOR between them
    words: bytes | None  # ws: the content words' sketch (identifiers.word_sketch; unset before they were kept)


class StoredEntry(NamedTuple):
    """An entry as read from Redis: its fields and its vector-and-answer string (P:v:<id>)."""

    fields: EntryFields
    blob: bytes | None


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


def decoded(value: bytes | None) -> str | None:
    """A field's text, or None when it is unset."""
    return value.decode() if value is not None else None


def stored_names(value: bytes | None) -> frozenset[str]:
    """The names an entry's text holds (field nm; none for an entry written before names were kept)."""
    return frozenset(value.decode().split(NAME_SEPARATOR)) if value else frozenset()


def read_entries(client: redis.Redis, layout: Layout, entry_ids: Sequence[int]) -> list[StoredEntry]:
    """Fields and vector-and-answer string of several entries, read together (MULTI), in one round trip."""
    pipe = client.pipeline(transaction=True)
    for entry_id in entry_ids:
        pipe.hmget(layout.entry(entry_id), FIELDS)
        pipe.get(layout.vector(entry_id))
    replies = pipe.execute()
    return [StoredEntry(EntryFields(*fields), blob) for fields, blob in zip(replies[0::2], replies[1::2], strict=True)]


def parse_entry(entry_id: int, stored: StoredEntry, ttl_s: int, kind: str,
                similarity: float = 1.0) -> CacheEntry | None:
    """The entry read, or None when it is gone, older than ttl_s, or not whole (its string evicted or replaced)."""
    fields, blob = stored
    if fields.state is None or fields.width is None or time.time() - float(fields.cached_at or 0) > ttl_s:
        return None
    ready = fields.state == b"r"
    answer = None
    if ready:
        width = int(fields.width)
        body = (blob or b"")[width:]
        if len(blob or b"") < width or len(body) != int(fields.length or -1):
            return None
        answer = body.decode()
    usage = tuple(int(x) for x in (decoded(fields.tokens) or "0,0,0").split(","))
    return CacheEntry(entry_id, ready, int(fields.job or 0), answer, decoded(fields.model), decoded(fields.tier),
                      Decimal(decoded(fields.cost) or "0"), kind, similarity, (usage[0], usage[1], usage[2]))
