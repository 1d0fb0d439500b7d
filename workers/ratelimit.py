"""Per-model rate limits shared by every worker on every machine: call slots scheduled in Redis.

Each model with `rpm` or `tpm` in the TOML has two schedules (requests, tokens), kept as the time the
next slot falls due (the generic cell rate algorithm). The rate is 98% of the limit and a schedule may
run at most a quarter second's worth ahead, so no 60 s window of slots exceeds 98.4% of the limit: the
rest, about a second's worth of calls, is for the calls whose slot came a little before a window and
that reached the provider inside it (a busy event loop sends late). A caller is given a slot
at a definite time, at most `horizon_s` from now, and waits for it; when the queue of slots already
given reaches past the horizon it is told to come back later instead, so a task never holds a worker
thread and its message for a long wait. A 429 with Retry-After pauses the model for every worker (a
model without limits: for this process).
One round trip per call; the time is the Redis server's, so the machines' clocks do not matter.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import redis.asyncio as aioredis

from tierq.config import Config

# KEYS: requests schedule, tokens schedule, pause. ARGV: per limit (ms per unit, burst units), then the
# call's tokens and the horizon in ms. Returns {1, delay ms} for a slot, {0, ms until one may be had}.
_ADMIT = """
local t = redis.call('TIME')
local now = t[1] * 1000 + t[2] / 1000
local horizon = tonumber(ARGV[6])
local at = now
local pause = redis.call('PTTL', KEYS[3])
if pause > 0 then at = now + pause end
local due = {}
for i = 1, 2 do
  local per = tonumber(ARGV[i * 2 - 1])
  if per > 0 then
    local cost = 1
    if i == 2 then cost = tonumber(ARGV[5]) end
    local burst = tonumber(ARGV[i * 2])
    local tat = math.max(tonumber(redis.call('GET', KEYS[i])) or now, now)
    local earliest = tat - math.max(0, burst - cost) * per
    if earliest > at then at = earliest end
    due[i] = {tat, cost * per}
  end
end
local delay = at - now
if delay > horizon then return {0, math.ceil(delay - horizon)} end
for i = 1, 2 do
  if due[i] then
    local tat = math.max(due[i][1], at) + due[i][2]
    redis.call('SET', KEYS[i], string.format('%.3f', tat), 'PX', math.ceil(tat - now) + 60000)
  end
end
return {1, math.floor(delay)}
"""
MARGIN = 0.98
BURST_S = 0.25  # how far ahead of its rate a schedule may run


@dataclass(frozen=True, slots=True)
class Admission:
    """A slot `delay_s` from now, or (`granted` False) none within the horizon: ask again in `delay_s`."""

    granted: bool
    delay_s: float


NOW = Admission(True, 0.0)


class RateLimiter:
    """Gives out call slots; create it on the event loop that will use it."""

    def __init__(self, client: aioredis.Redis, config: Config, horizon_s: float, prefix: str = "tq:rl") -> None:
        self._redis = client
        self._script = self._redis.register_script(_ADMIT)
        self._config = config
        self._horizon_ms = max(0.0, horizon_s * 1000)
        self._prefix = prefix
        self._paused: dict[str, float] = {}  # models without limits: paused in this process until (monotonic)

    def limited(self, model: str) -> bool:
        """True when the TOML gives this model a requests or tokens limit."""
        cfg = self._config.models[model]
        return bool(cfg.rpm or cfg.tpm)

    def _keys(self, model: str) -> list[str]:
        return [f"{self._prefix}:{model}:r", f"{self._prefix}:{model}:t", f"{self._prefix}:{model}:pause"]

    async def admit(self, model: str, tokens: int) -> Admission:
        """A slot for one call of about `tokens` tokens, or how long to come back after."""
        if not self.limited(model):
            return self._paused_here(model)
        cfg = self._config.models[model]
        args: list[float] = []
        for limit in (cfg.rpm, cfg.tpm):
            per_ms = 60_000 / (limit * MARGIN) if limit else 0.0
            args += [per_ms, max(1.0, (limit or 0) / 60 * BURST_S)]
        args += [max(1, tokens), self._horizon_ms]
        granted, ms = await self._script(keys=self._keys(model), args=args)
        return Admission(bool(granted), int(ms) / 1000)

    async def settle(self, model: str, estimated: int, actual: int) -> None:
        """Correct the tokens schedule by what the call really used."""
        tpm = self._config.models[model].tpm
        if tpm and actual != estimated:
            await self._redis.incrbyfloat(self._keys(model)[1], (actual - estimated) * 60_000 / (tpm * MARGIN))

    async def pause(self, model: str, seconds: float) -> None:
        """A 429 said to wait: hold every worker's calls to this model for `seconds` (a model without
        limits has no schedule in Redis, and no round trip per call to read one: it pauses in this process)."""
        if seconds <= 0:
            return
        if self.limited(model):
            await self._redis.set(self._keys(model)[2], 1, px=max(1, int(seconds * 1000)))
        else:
            self._paused[model] = max(self._paused.get(model, 0.0), time.monotonic() + seconds)

    def _paused_here(self, model: str) -> Admission:
        until = self._paused.get(model)
        if until is None:
            return NOW
        delay = until - time.monotonic()
        if delay <= 0:
            self._paused.pop(model, None)
            return NOW
        return Admission(delay * 1000 <= self._horizon_ms, delay)
