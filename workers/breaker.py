"""A circuit breaker per provider, shared by every worker through Redis.

Closed, calls go. When `failures` calls could not reach the provider (connection refused, reset, name
not found) within `window_s`, across all workers, the breaker opens for `open_s`, twice as long each
time it opens again before a success (at most `max_open_s`). Open, no call is made: the jobs are held
on their queue, not failed or escalated. Then one call, the probe, is let through; its success closes
the breaker for everyone, its failure opens it again. A process remembers "closed" for a second, so a
healthy provider costs one Redis read per process per second.
"""

from __future__ import annotations

import asyncio
import time

import redis.asyncio as aioredis

from tierq.sections import WorkerConfig
from workers.ratelimit import NOW, Admission

# KEYS: open, trips, probe. ARGV: probe lease ms. {1, 1}: closed; {1, 0}: you are the probe; {0, ms}: wait.
_ADMIT = """
local open = redis.call('PTTL', KEYS[1])
if open > 0 then return {0, open} end
if redis.call('EXISTS', KEYS[2]) == 0 then return {1, 1} end
if redis.call('SET', KEYS[3], 1, 'NX', 'PX', ARGV[1]) then return {1, 0} end
return {0, math.max(100, redis.call('PTTL', KEYS[3]))}
"""
# KEYS: fails, open, trips, probe. ARGV: threshold, window ms, first open ms, longest open ms.
# Returns how long the breaker was opened for (0: it stays as it is).
_FAILED = """
if redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
local n = redis.call('INCR', KEYS[1])
if n == 1 then redis.call('PEXPIRE', KEYS[1], ARGV[2]) end
local probe = redis.call('DEL', KEYS[4])
if n < tonumber(ARGV[1]) and probe == 0 then return 0 end
local trips = redis.call('INCR', KEYS[3])
redis.call('PEXPIRE', KEYS[3], 86400000)
local ms = math.min(tonumber(ARGV[4]), tonumber(ARGV[3]) * 2 ^ (trips - 1))
redis.call('SET', KEYS[2], 1, 'PX', math.floor(ms))
redis.call('DEL', KEYS[1])
return math.floor(ms)
"""
CLOSED_CACHE_S = 1.0


class CircuitBreaker:
    """Per-provider breakers; create it on the event loop that will use it."""

    def __init__(self, client: aioredis.Redis, rules: WorkerConfig, probe_s: float, prefix: str = "tq:cb") -> None:
        self._redis = client
        self._admit = self._redis.register_script(_ADMIT)
        self._failed = self._redis.register_script(_FAILED)
        self._rules = rules
        self._probe_ms = int(probe_s * 1000)
        self._prefix = prefix
        self._closed_until: dict[str, float] = {}
        self._suspect: set[str] = set()
        self._asking: dict[str, asyncio.Lock] = {}

    def _keys(self, provider: str, *names: str) -> list[str]:
        return [f"{self._prefix}:{provider}:{name}" for name in names]

    async def admit(self, provider: str) -> Admission:
        """Whether a call to `provider` may go now, or how long until it may be tried."""
        if self._closed_until.get(provider, 0.0) > time.monotonic():
            return NOW
        # While the provider looks healthy one coroutine asks Redis for all: the others wait for its answer.
        async with self._asking.setdefault(provider, asyncio.Lock()):
            if self._closed_until.get(provider, 0.0) > time.monotonic():
                return NOW
            return await self._ask(provider)

    async def _ask(self, provider: str) -> Admission:
        allowed, value = await self._admit(keys=self._keys(provider, "open", "trips", "probe"), args=[self._probe_ms])
        if not allowed:
            self._suspect.add(provider)
            return Admission(False, int(value) / 1000)
        if value:
            self._closed_until[provider] = time.monotonic() + CLOSED_CACHE_S
        else:
            self._suspect.add(provider)
        return NOW

    async def failed(self, provider: str, why: str | None = None) -> float:
        """A call could not reach `provider` (or, `why` says, was refused by it for a reason that holds for
        every call, such as a rejected key); returns for how long that opened the breaker (0: it did not).
        `why` is what held jobs are told while it is open (`reason`); without it, that it cannot be reached."""
        self._closed_until.pop(provider, None)
        self._suspect.add(provider)
        r = self._rules
        why_key = self._keys(provider, "why")[0]
        if why is not None:
            await self._redis.set(why_key, why, px=int(r.breaker_max_open_s * 2000))
        else:
            await self._redis.delete(why_key)
        ms = await self._failed(keys=self._keys(provider, "fails", "open", "trips", "probe"),
                                args=[r.breaker_failures, int(r.breaker_window_s * 1000), int(r.breaker_open_s * 1000),
                                      int(r.breaker_max_open_s * 1000)])
        return int(ms) / 1000

    async def reached(self, provider: str) -> None:
        """A call reached `provider`: after recent failures, close its breaker for everyone."""
        if provider in self._suspect:
            self._suspect.discard(provider)
            await self._redis.delete(*self._keys(provider, "fails", "open", "trips", "probe", "why"))

    async def reason(self, provider: str) -> str | None:
        """Why the provider's breaker was last opened, when it was not for want of a connection."""
        why = await self._redis.get(self._keys(provider, "why")[0])
        return why.decode() if isinstance(why, bytes) else why

    async def is_open(self, provider: str) -> bool:
        """True while the provider's breaker is open (no call may go)."""
        return bool(await self._redis.exists(self._keys(provider, "open")[0]))
