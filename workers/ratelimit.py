"""Per-model rate limits shared by every worker on every machine: token buckets in Redis.

Each model with `rpm` or `tpm` in the TOML has two buckets (requests, tokens) refilled continuously
at 98% of the limit, holding at most one second's worth, so no 60 s window can exceed the limit. A
429 with Retry-After pauses the model for every worker until then. Within a process one coroutine
per model waits on Redis at a time; the others queue behind it, so waiting costs no Redis traffic.
"""

from __future__ import annotations

import asyncio
import random

import redis.asyncio as aioredis

from tierq.config import Config

# Bucket state lives in Redis; time comes from the Redis server, so machines' clocks do not matter.
_ACQUIRE = """
local t = redis.call('TIME')
local now = t[1] * 1000 + math.floor(t[2] / 1000)
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then return pause end
local wait = 0
local state = {}
for i = 1, 2 do
  local rate, burst, cost = tonumber(ARGV[i * 3 - 2]), tonumber(ARGV[i * 3 - 1]), tonumber(ARGV[i * 3])
  if rate > 0 then
    local b = redis.call('HMGET', KEYS[i], 'v', 't')
    local v = math.min(burst, (tonumber(b[1]) or burst) + (now - (tonumber(b[2]) or now)) * rate)
    local need = math.min(cost, burst)
    if v < need then wait = math.max(wait, math.ceil((need - v) / rate)) end
    state[i] = v
  end
end
if wait > 0 then return wait end
for i = 1, 2 do
  if state[i] then
    redis.call('HSET', KEYS[i], 'v', state[i] - tonumber(ARGV[i * 3]), 't', now)
    redis.call('PEXPIRE', KEYS[i], 120000)
  end
end
return 0
"""
MARGIN = 0.98


class RateLimiter:
    """Waits until a model may be called; create it on the event loop that will use it."""

    def __init__(self, redis_url: str, config: Config, prefix: str = "tq:rl") -> None:
        self._redis = aioredis.Redis.from_url(redis_url, socket_timeout=10, retry_on_timeout=True)
        self._script = self._redis.register_script(_ACQUIRE)
        self._config = config
        self._prefix = prefix
        self._locks: dict[str, asyncio.Lock] = {}

    def limited(self, model: str) -> bool:
        """True when the TOML gives this model a requests or tokens limit."""
        cfg = self._config.models[model]
        return bool(cfg.rpm or cfg.tpm)

    async def acquire(self, model: str, tokens: int) -> None:
        """Wait for one request and about `tokens` tokens of `model`'s budget."""
        if not self.limited(model):
            return
        cfg = self._config.models[model]
        args: list[float] = []
        for limit, cost in ((cfg.rpm, 1), (cfg.tpm, tokens)):
            per_ms = (limit or 0) * MARGIN / 60_000
            args += [per_ms, max(1.0, (limit or 0) / 60), cost]
        keys = [f"{self._prefix}:{model}:r", f"{self._prefix}:{model}:t", f"{self._prefix}:{model}:pause"]
        async with self._locks.setdefault(model, asyncio.Lock()):
            while True:
                wait_ms = int(await self._script(keys=keys, args=args))
                if wait_ms <= 0:
                    return
                await asyncio.sleep(wait_ms / 1000 * random.uniform(1.0, 1.1))

    async def settle(self, model: str, estimated: int, actual: int) -> None:
        """Correct the tokens bucket by what the call really used."""
        if self._config.models[model].tpm and actual != estimated:
            await self._redis.hincrbyfloat(f"{self._prefix}:{model}:t", "v", estimated - actual)

    async def pause(self, model: str, seconds: float) -> None:
        """A 429 said to wait: hold every worker's calls to this model for `seconds`."""
        if seconds > 0:
            await self._redis.set(f"{self._prefix}:{model}:pause", 1, px=max(1, int(seconds * 1000)))

    async def close(self) -> None:
        """Close the Redis connections."""
        await self._redis.aclose()
