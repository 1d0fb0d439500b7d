"""What a call must pass before it is made: its provider's breaker, its model's rate limit, its batch's
budget. Each gate either lets the call go (after a short wait at most `horizon_s`), holds the job
(it goes back to its queue and comes back later, so no task sits on a worker thread for a long
wait), or, for a budget that can never cover the call, stops it.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from dataclasses import dataclass
from decimal import Decimal
from enum import StrEnum
from typing import Any

import redis.asyncio as aioredis

from models.enums import CallOutcome
from models.lifecycle import BUDGET_SPENT
from tierq.config import Config, TierConfig
from tierq.messages import estimated_prompt_tokens
from tierq.money import dollars
from workers.breaker import CircuitBreaker
from workers.budget import BudgetGate, output_cap, worst_case
from workers.llm import CallRecord
from workers.ratelimit import RateLimiter

REDIS_CONNECTIONS = 32

log = logging.getLogger(__name__)


class HoldKind(StrEnum):
    """What a held job waits for."""

    RATE_LIMIT = "rate_limit"  # tierq's own schedule: a slot is always given in time
    PROVIDER_LIMIT = "provider_limit"  # the provider's 429 asked for a longer wait than a task spends
    BUDGET = "budget"
    OUTAGE = "outage"


# The provider refuses the key itself (wrong or revoked). Not 403: providers send it for one model the key may
# not use, or for one prompt their moderation flagged, which say nothing about the provider's other calls.
KEY_REFUSED = (401,)
KEY_PREFIX = "key: "  # the start of a key refusal's reason


def key_refused(config: Config, provider: str, record: CallRecord) -> str | None:
    """Why a call's provider refused tierq's key (the reason a held job shows), or None when it did not.
    Such a refusal holds for every call to that provider, whatever the job: the jobs wait, as for an
    outage, and are neither escalated nor failed for it."""
    if record.status not in KEY_REFUSED:
        return None
    var = config.providers[provider].api_key_env
    if var:
        return f"{KEY_PREFIX}provider {provider!r} refused the API key in ${var} (HTTP {record.status}); fix it and " \
               "restart the workers"
    return (f"{KEY_PREFIX}provider {provider!r} refused a call without an API key (HTTP {record.status}); name the "
            f"variable that holds its key with api_key_env in [providers.{provider}] and restart the workers")


@dataclass(frozen=True, slots=True)
class Hold:
    """The job goes back to its queue and is tried again after `after_s`."""

    kind: HoldKind
    after_s: float
    reason: str

    @property
    def refused_key(self) -> bool:
        """The provider refuses tierq's key: waiting does not help until someone fixes it."""
        return self.reason.startswith(KEY_PREFIX)


@dataclass(frozen=True, slots=True)
class Stop:
    """The call must not be made, now or later (the batch's budget cannot cover it)."""

    reason: str


@dataclass(frozen=True, slots=True)
class Ticket:
    """A call that may go: the tokens its rate limit was charged, and the budget it holds."""

    model: str
    tokens: int
    batch_id: uuid.UUID | None = None
    held: Decimal = Decimal(0)


class Gates:
    """The gates of one worker process; their Redis clients are made on the event loop on first use."""

    def __init__(self, redis_url: str, config: Config, budget: BudgetGate, horizon_s: float) -> None:
        self.config, self.budget, self.horizon_s = config, budget, horizon_s
        self._redis_url = redis_url
        self._redis: aioredis.Redis | None = None
        self._limiter: RateLimiter | None = None
        self._breaker: CircuitBreaker | None = None

    @property
    def redis(self) -> aioredis.Redis:
        """One client for both gates. Hundreds of calls may ask at once: they wait for one of
        REDIS_CONNECTIONS connections rather than fail (redis-py's own pool raises past 100)."""
        if self._redis is None:
            pool = aioredis.BlockingConnectionPool.from_url(
                self._redis_url, max_connections=REDIS_CONNECTIONS, timeout=10, socket_timeout=10)
            self._redis = aioredis.Redis(connection_pool=pool)
        return self._redis

    @property
    def limiter(self) -> RateLimiter:
        """The shared rate limits."""
        if self._limiter is None:
            self._limiter = RateLimiter(self.redis, self.config, self.horizon_s)
        return self._limiter

    @property
    def breaker(self) -> CircuitBreaker:
        """The shared per-provider breakers; a probe holds its turn for the longest call timeout."""
        if self._breaker is None:
            probe_s = max(p.timeout_s for p in self.config.providers.values()) + 5
            self._breaker = CircuitBreaker(self.redis, self.config.worker, probe_s)
        return self._breaker

    async def before(
        self, tier: TierConfig, name: str, messages: list[dict[str, Any]], params: dict[str, Any],
        batch_id: uuid.UUID | None, budgeted: bool,
    ) -> Ticket | Hold | Stop:
        """Pass the call through the breaker, the rate limit and the budget, in that order."""
        model = self.config.models[name]
        opened = await self.breaker.admit(model.provider)
        if not opened.granted:
            why = await self.breaker.reason(model.provider)
            return Hold(HoldKind.OUTAGE, opened.delay_s,
                        why or f"connection: provider {model.provider!r} cannot be reached")
        tokens = estimated_prompt_tokens(messages) + int(params.get("max_tokens") or 0)
        slot = await self.limiter.admit(name, tokens)
        if not slot.granted:
            return Hold(HoldKind.RATE_LIMIT, slot.delay_s, f"rate limit: {name} has no free slot yet")
        held = Decimal(0)
        if budgeted and batch_id is not None:
            params.setdefault("max_tokens", output_cap(params, tier, model))
            held = worst_case(messages, int(params["max_tokens"]), model)
            covered = await self.budget.reserve(batch_id, held, self.horizon_s)
            if covered is False:
                return Stop(f"{BUDGET_SPENT} cannot cover a call to {name} "
                            f"(worst case {dollars(held)})")
            if covered is None:
                return Hold(HoldKind.BUDGET, 1.0, "budget: calls in flight hold the rest of the batch's budget")
        if slot.delay_s > 0:
            await asyncio.sleep(slot.delay_s)
        return Ticket(name, tokens, batch_id if budgeted else None, held)

    async def after(self, ticket: Ticket, record: CallRecord) -> Hold | None:
        """Settle the call's budget and tokens, pause the model on a 429, feed the breaker; a Hold when the
        provider's breaker is open after this call, or the provider refused the key."""
        if ticket.batch_id is not None:
            await self.budget.settle(ticket.batch_id, ticket.held, record.cost_usd)
        provider = self.config.models[ticket.model].provider
        refused = key_refused(self.config, provider, record)
        if record.outcome is CallOutcome.CONNECTION or refused is not None:
            opened = await self.breaker.failed(provider, refused)
            if opened:
                what = refused.removeprefix(KEY_PREFIX) if refused else f"provider {provider!r} cannot be reached"
                log.warning("%s; no call goes to it for %.1f s (jobs wait on their queues)", what, opened)
            # A refused key holds the job whether or not the breaker opened yet: no job is at fault for it.
            if refused is not None or opened or await self.breaker.is_open(provider):
                return Hold(HoldKind.OUTAGE, self.config.worker.breaker_open_s,
                            refused or record.error or "connection")
            return None
        await self.breaker.reached(provider)
        if record.outcome is CallOutcome.RATE_LIMITED:
            await self.limiter.pause(ticket.model, record.retry_after or 1.0)
        elif record.usage.prompt_tokens or record.usage.completion_tokens:
            await self.limiter.settle(ticket.model, ticket.tokens,
                                      record.usage.prompt_tokens + record.usage.completion_tokens)
        return None

    async def close(self) -> None:
        """Close the Redis connections."""
        self._limiter = self._breaker = None
        if self._redis is not None:
            await self._redis.aclose()
            self._redis = None
