"""The semantic index in plain Redis: LSH buckets of every namespace hashed into shared pages.

A (namespace, identifier fingerprint, generation, band, bucket) is hashed to 64 bits: the top bits pick
one of `pages` page keys of the band, the low 24 bits are the bucket's tag. A page is a string of
24-byte records: the tag (3 bytes), the entry id (5) and the entry's sketch (16; tierq.cache.lsh), so
one band membership costs 24 bytes whatever the number of namespaces (a Redis set or hash per bucket
costs 60-200). A search skips records whose sketch is too far from the query's, so it fetches the
vectors of a fraction of the entries that share a bucket with the query. Lua scripts add, remove,
search and migrate records atomically; a search returns each candidate's id and float16 vector in one
reply, so the client parses two strings, not one reply per candidate. A tag collision only adds a
candidate: the re-rank and the entry's own namespace and fingerprint decide a hit.

Generations: a namespace's first entries are hashed from the origin (generation 0). Once it holds
`centre_after` of them, the store computes their mean, and `migrate` stores it as the namespace's centre
under a new epoch (a number from one counter, never reused) and moves their records to that
generation, hashed from the centre. An entry records its generation. Every script that reads or writes
a namespace's records first checks the namespace's current generation, so a process with a stale view
(the centre set, expired or remade since it looked) retries instead of reading or writing records
under the wrong hashes.

Probes and slots travel packed, 7 bytes each (band, page in 3 bytes, tag in 3 bytes), and the scripts
build the page keys themselves: packing hundreds of arguments costs the client more than a search
costs the server. The scripts touch keys they are not given (pages, entries, vectors), which standalone
Redis allows and Redis Cluster does not; tierq's cache needs one Redis.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
import redis
from redis.typing import EncodableT, KeyT

RECORD = 24  # bytes: 3 of tag, 5 of entry id (ids up to 2**40), 16 of sketch
SLOT = 7  # bytes: band, page (3), tag (3)
MAX_ID = 2**40 - 1
OTHER_GENERATION = -1  # a script's reply: the namespace (or the entry) is not in the generation it was given
ENTRY_GONE = -2  # `add`'s reply: the entry was dropped while it was being registered
_TAG_MASK = np.uint64(0xFFFFFF)

_LUA_HELPERS = """
local function page_key(prefix, packed, at)
  local band, h, m, l = string.byte(packed, at, at + 3)
  return prefix .. band .. ':' .. ((h * 256 + m) * 256 + l)
end
local function id_of(raw)
  local b1, b2, b3, b4, b5 = string.byte(raw, 1, 5)
  return string.format('%.0f', (((b1 * 256 + b2) * 256 + b3) * 256 + b4) * 256 + b5)
end
-- Cuts the record that starts with `head` (its tag and id, 8 bytes) from a page.
local function cut(page, head)
  local at = 1
  while true do
    at = string.find(page, head, at, true)
    if not at then return page, false end
    if (at - 1) % 24 == 0 then return string.sub(page, 1, at - 1) .. string.sub(page, at + 24), true end
    at = at + 1
  end
end
local function generation(centre_key)
  return redis.call('HGET', centre_key, 'e') or '0'
end
"""

# KEYS: centre, generation-0 set, entry. ARGV: generation, entry id, keep seconds, page prefix, slots,
# id (5 bytes) and sketch (16). Returns -1 if the namespace is in another generation, -2 if the entry
# is gone (dropped while it was being registered), else the generation-0 count.
_ADD = _LUA_HELPERS + """
local gen = generation(KEYS[1])
if gen ~= ARGV[1] then return -1 end
if redis.call('EXISTS', KEYS[3]) == 0 then return -2 end
local slots, tail = ARGV[5], ARGV[6]
for at = 1, #slots, 7 do
  local key = page_key(ARGV[4], slots, at)
  local page = redis.call('GET', key) or ''
  redis.call('SET', key, page .. string.sub(slots, at + 4, at + 6) .. tail)
end
redis.call('HSET', KEYS[3], 'g', gen)
if gen ~= '0' then
  redis.call('EXPIRE', KEYS[1], ARGV[3])
else
  redis.call('SADD', KEYS[2], ARGV[2])
  redis.call('EXPIRE', KEYS[2], ARGV[3])
end
return redis.call('SCARD', KEYS[2])
"""

# KEYS: generation-0 set, entry, centre. ARGV: the generation the slots were computed in, entry id,
# page prefix, slots, id (5 bytes). Returns -1 if the entry is in another generation, or its
# generation is not the namespace's any more (so the slots may be wrong), else the records cut.
_REMOVE = _LUA_HELPERS + """
local gen = redis.call('HGET', KEYS[2], 'g')
if gen and gen ~= ARGV[1] then return -1 end
if ARGV[1] ~= '0' and generation(KEYS[3]) ~= ARGV[1] then return -1 end
local slots, raw, removed = ARGV[4], ARGV[5], 0
for at = 1, #slots, 7 do
  local key = page_key(ARGV[3], slots, at)
  local page = redis.call('GET', key)
  if page then
    local found
    page, found = cut(page, string.sub(slots, at + 4, at + 6) .. raw)
    if found then
      removed = removed + 1
      if #page == 0 then redis.call('DEL', key) else redis.call('SET', key, page) end
    end
  end
end
redis.call('SREM', KEYS[1], ARGV[2])
return removed
"""

# KEYS: centre. ARGV: generation, page prefix, vector prefix, vector bytes, most candidates, probes,
# the query's sketch, the largest sketch distance kept. Returns -1 if the namespace is in the other
# generation, else {ids (5 bytes each), vectors}. A record whose vector has expired is garbage: it is
# cut from its page here.
_SEARCH = _LUA_HELPERS + """
if generation(KEYS[1]) ~= ARGV[1] then return -1 end
local page_prefix, prefix, width, limit, probes = ARGV[2], ARGV[3], tonumber(ARGV[4]), tonumber(ARGV[5]), ARGV[6]
local far = tonumber(ARGV[8])
-- A record's sketch distance: the bits in which its 16 bytes differ from the query's, counted with a
-- 256-entry table. Computed only for records whose tag matches (a few per search), which costs less than
-- a table per query byte.
local ones = {[0] = 0}
for i = 1, 255 do ones[i] = ones[bit.rshift(i, 1)] + bit.band(i, 1) end
local bxor = bit.bxor
local q1, q2, q3, q4, q5, q6, q7, q8, q9, q10, q11, q12, q13, q14, q15, q16 = string.byte(ARGV[7], 1, 16)
local find, byte, sub = string.find, string.byte, string.sub
local pages, dirty, seen, ids, vectors, n = {}, {}, {}, {}, {}, 0
for p = 1, #probes, 7 do
  if n >= limit then break end
  local key = page_key(page_prefix, probes, p)
  local page = pages[key]
  if page == nil then page = redis.call('GET', key) or ''; pages[key] = page end
  local tag, at = sub(probes, p + 4, p + 6), 1
  while n < limit do
    at = find(page, tag, at, true)
    if not at then break end
    if (at - 1) % 24 == 0 then
      local s1, s2, s3, s4, s5, s6, s7, s8, s9, s10, s11, s12, s13, s14, s15, s16 = byte(page, at + 8, at + 23)
      if ones[bxor(s1, q1)] + ones[bxor(s2, q2)] + ones[bxor(s3, q3)] + ones[bxor(s4, q4)] + ones[bxor(s5, q5)]
          + ones[bxor(s6, q6)] + ones[bxor(s7, q7)] + ones[bxor(s8, q8)] + ones[bxor(s9, q9)] + ones[bxor(s10, q10)]
          + ones[bxor(s11, q11)] + ones[bxor(s12, q12)] + ones[bxor(s13, q13)] + ones[bxor(s14, q14)]
          + ones[bxor(s15, q15)] + ones[bxor(s16, q16)] > far then
        at = at + 24
      else
        local raw = sub(page, at + 3, at + 7)
        if seen[raw] then
          at = at + 24
        else
          seen[raw] = true
          local vector = redis.call('GETRANGE', prefix .. id_of(raw), 0, width - 1)
          if #vector == width then
            n = n + 1
            ids[n], vectors[n] = raw, vector
            at = at + 24
          else
            page = sub(page, 1, at - 1) .. sub(page, at + 24)
            pages[key], dirty[key] = page, true
          end
        end
      end
    else
      at = at + 1
    end
  end
end
for key in pairs(dirty) do
  if #pages[key] == 0 then redis.call('DEL', key) else redis.call('SET', key, pages[key]) end
end
return {table.concat(ids), table.concat(vectors)}
"""

# KEYS: centre, generation-0 set. ARGV: centre bytes, keep seconds, page prefix, entry prefix, bands,
# items (per entry its id (5 bytes) and sketch (16), then per band its slot in generation 0 and its slot
# in the centre's), the centre's epoch. Sets the centre unless there is one; moves the records of the
# entries still in generation 0. Returns -1 if another centre was set first, else {entries moved,
# entries left in generation 0}.
_MIGRATE = _LUA_HELPERS + """
local epoch = redis.call('HGET', KEYS[1], 'e')
if epoch and epoch ~= ARGV[7] then return -1 end
if not epoch then
  epoch = ARGV[7]
  redis.call('HSET', KEYS[1], 'e', epoch, 'v', ARGV[1])
  redis.call('EXPIRE', KEYS[1], ARGV[2])
end
local prefix, entry_prefix, bands, items = ARGV[3], ARGV[4], tonumber(ARGV[5]), ARGV[6]
local size = 21 + 14 * bands
local pages, dirty, moved = {}, {}, 0
local function page(key)
  local p = pages[key]
  if p == nil then p = redis.call('GET', key) or ''; pages[key] = p end
  return p
end
for i = 1, #items, size do
  local raw, sketch = string.sub(items, i, i + 4), string.sub(items, i + 5, i + 20)
  local id = id_of(raw)
  if redis.call('SREM', KEYS[2], id) == 1 then
    moved = moved + 1
    for j = 0, bands - 1 do
      local at = i + 21 + 14 * j
      local old = page_key(prefix, items, at)
      pages[old] = cut(page(old), string.sub(items, at + 4, at + 6) .. raw)
      local new = page_key(prefix, items, at + 7)
      pages[new] = page(new) .. string.sub(items, at + 11, at + 13) .. raw .. sketch
      dirty[old], dirty[new] = true, true
    end
    if redis.call('EXISTS', entry_prefix .. id) == 1 then redis.call('HSET', entry_prefix .. id, 'g', epoch) end
  end
end
for key in pairs(dirty) do
  if #pages[key] == 0 then redis.call('DEL', key) else redis.call('SET', key, pages[key]) end
end
return {moved, redis.call('SCARD', KEYS[2])}
"""


# KEYS: pages. ARGV: vector key prefix. Cuts the records whose vector is gone (entries Redis expired
# before the eviction sweep could unindex them); returns how many.
_VACUUM = _LUA_HELPERS + """
local cut_count = 0
for i = 1, #KEYS do
  local page = redis.call('GET', KEYS[i])
  if page then
    local kept, n = {}, 0
    for at = 1, #page, 24 do
      local record = string.sub(page, at, at + 23)
      if redis.call('EXISTS', ARGV[1] .. id_of(string.sub(record, 4, 8))) == 1 then
        n = n + 1
        kept[n] = record
      end
    end
    if n * 24 < #page then
      cut_count = cut_count + (#page / 24 - n)
      if n == 0 then redis.call('DEL', KEYS[i]) else redis.call('SET', KEYS[i], table.concat(kept)) end
    end
  end
end
return cut_count
"""


def _mix(x: npt.NDArray[np.uint64]) -> npt.NDArray[np.uint64]:
    """SplitMix64's finaliser: a bijection of 64-bit integers that scatters every input bit."""
    x = x ^ (x >> np.uint64(30))
    x = x * np.uint64(0xBF58476D1CE4E5B9)
    x = x ^ (x >> np.uint64(27))
    x = x * np.uint64(0x94D049BB133111EB)
    result: npt.NDArray[np.uint64] = x ^ (x >> np.uint64(31))
    return result


@dataclass(frozen=True, slots=True)
class Slots:
    """(band, page, tag) of some buckets of one namespace, identifier fingerprint and generation."""

    bands: npt.NDArray[np.int64]
    pages: npt.NDArray[np.int64]
    tags: npt.NDArray[np.int64]

    def packed(self) -> bytes:
        """7 bytes per slot: band, page (3 bytes), tag (3 bytes), big-endian; row after row when 2-D."""
        out = np.empty((self.bands.size, SLOT), dtype=np.uint8)
        out[:, 0] = self.bands.ravel()
        out[:, 1:4] = self.pages.ravel().astype(">u4").view(np.uint8).reshape(-1, 4)[:, 1:]
        out[:, 4:7] = self.tags.ravel().astype(">u4").view(np.uint8).reshape(-1, 4)[:, 1:]
        return out.tobytes()


def id_bytes(entry_id: int) -> bytes:
    """An entry id as stored in a page record: 5 bytes, big-endian."""
    if not 0 < entry_id <= MAX_ID:
        raise ValueError(f"entry id {entry_id} does not fit in 5 bytes")
    return entry_id.to_bytes(5, "big")


class PageIndex:
    """Where each (band, bucket) of a namespace lives, and the scripts that read and write it."""

    def __init__(self, client: redis.Redis, prefix: str, pages: int, bands: int, salt: bytes) -> None:
        if pages & (pages - 1) or not 1 <= pages <= 2**20:
            raise ValueError("pages must be a power of two between 1 and 2**20")
        if bands > 256:
            raise ValueError("at most 256 bands")
        self.prefix = prefix
        self.page_prefix = f"{prefix}:p:"
        self._shift = np.uint64(64 - (pages.bit_length() - 1)) if pages > 1 else None
        self._salt = salt
        self._add = client.register_script(_ADD)
        self._remove = client.register_script(_REMOVE)
        self._search = client.register_script(_SEARCH)
        self._migrate = client.register_script(_MIGRATE)
        self._vacuum = client.register_script(_VACUUM)
        self._epochs = client

    def centre_key(self, namespace: str) -> str:
        """A namespace's centre (hash: e, its epoch; v, its float32 bytes)."""
        return f"{self.prefix}:c:{namespace}"

    def young_key(self, namespace: str) -> str:
        """The set of a namespace's entries still in generation 0."""
        return f"{self.prefix}:k:{namespace}"

    def seed(self, namespace: str, ids: str, generation: int) -> np.uint64:
        """The hash seed of one namespace, identifier fingerprint and generation (and planes, via the salt)."""
        digest = hashlib.blake2b(f"{namespace}\x1f{ids}\x1f{generation}".encode(), digest_size=8,
                                 key=self._salt).digest()
        return np.uint64(int.from_bytes(digest, "big"))

    def slots(self, seed: np.uint64 | npt.NDArray[np.uint64], bands: npt.NDArray[np.int64],
              buckets: npt.NDArray[np.int64]) -> Slots:
        """Where (band, bucket) pairs live: their pages and tags. For many queries at once, `bands` and
        `buckets` are n x count and `seed` is a column of n seeds."""
        with np.errstate(over="ignore"):
            h = _mix(_mix(seed ^ bands.astype(np.uint64)) ^ buckets.astype(np.uint64))
        pages = (h >> self._shift).astype(np.int64) if self._shift is not None else np.zeros(len(h), np.int64)
        return Slots(bands.astype(np.int64), pages, (h & _TAG_MASK).astype(np.int64))

    def _add_args(self, namespace: str, generation: int, slots: Slots, entry_id: int, sketch: bytes, entry_key: str,
                  keep_s: int) -> tuple[list[KeyT], list[EncodableT]]:
        keys: list[KeyT] = [self.centre_key(namespace), self.young_key(namespace), entry_key]
        return keys, [generation, entry_id, keep_s, self.page_prefix, slots.packed(), id_bytes(entry_id) + sketch]

    def add(self, client: redis.Redis, namespace: str, generation: int, slots: Slots, entry_id: int, sketch: bytes,
            entry_key: str, keep_s: int) -> int:
        """Index one entry: -1 if the namespace is not in `generation`, else its generation-0 count."""
        keys, args = self._add_args(namespace, generation, slots, entry_id, sketch, entry_key, keep_s)
        return int(self._add(keys, args, client=client))

    def queue_add(self, pipe: redis.client.Pipeline, namespace: str, generation: int, slots: Slots, entry_id: int,
                  sketch: bytes, entry_key: str, keep_s: int) -> None:
        """`add` queued on a pipeline (bulk loads); its reply is the same."""
        keys, args = self._add_args(namespace, generation, slots, entry_id, sketch, entry_key, keep_s)
        self._add(keys, args, client=pipe)

    def remove(self, namespace: str, generation: int, slots: Slots, entry_id: int, entry_key: str) -> int:
        """Cut one entry's records: -1 if it or its namespace changed generation since the slots were computed."""
        keys: list[KeyT] = [self.young_key(namespace), entry_key, self.centre_key(namespace)]
        args: list[EncodableT] = [generation, entry_id, self.page_prefix, slots.packed(), id_bytes(entry_id)]
        return int(self._remove(keys, args))

    def search(self, pipe: redis.client.Pipeline, namespace: str, generation: int, probes: bytes, sketch: bytes,
               far: int, vector_prefix: str, width: int, limit: int) -> None:
        """Queue one search of `probes` (`Slots.packed`), in order, skipping records whose sketch is more than
        `far` bits from `sketch`; its reply is -1 or [ids, vectors] (see `parse`)."""
        args: list[EncodableT] = [generation, self.page_prefix, vector_prefix, width, limit, probes, sketch, far]
        self._search([self.centre_key(namespace)], args, client=pipe)

    def new_epoch(self) -> int:
        """A centre epoch never given before."""
        return int(self._epochs.incr(f"{self.prefix}:epoch"))

    def migrate(self, namespace: str, epoch: int, centre: npt.NDArray[np.float32], keep_s: int, entry_prefix: str,
                items: bytes, bands: int) -> tuple[int, int] | None:
        """Set the namespace's centre under `epoch` (if it has none) and move entries into that generation:
        (moved, left in generation 0), or None if another centre was set first."""
        keys: list[KeyT] = [self.centre_key(namespace), self.young_key(namespace)]
        args: list[EncodableT] = [centre.astype(np.float32).tobytes(), keep_s, self.page_prefix, entry_prefix, bands,
                                  items, epoch]
        reply = self._migrate(keys, args)
        return None if reply == OTHER_GENERATION else (int(reply[0]), int(reply[1]))

    def vacuum(self, client: redis.Redis, pages: list[str], vector_prefix: str) -> int:
        """Cut the records of entries whose vector is gone from these pages; returns how many."""
        return int(self._vacuum(pages, [vector_prefix], client=client)) if pages else 0

    @staticmethod
    def parse(reply: list[bytes], width: int) -> tuple[list[int], bytes]:
        """Entry ids and the concatenated vectors of one search reply."""
        raw_ids, vectors = reply
        ids = [int.from_bytes(raw_ids[i : i + 5], "big") for i in range(0, len(raw_ids), 5)]
        if len(vectors) != len(ids) * width:
            raise ValueError(f"search reply holds {len(vectors)} vector bytes for {len(ids)} ids of {width}")
        return ids, vectors
