"""Batch budgets: reserve a call's worst-case cost before making it, settle to the real cost after.

The reservation is one guarded UPDATE, so workers racing for the last dollars cannot overspend: the
sum of spent and reserved money never passes the budget, and a call that cannot be covered is not
made. A worker that dies between the call and the settlement leaves its reservation in place, which
errs on the side of spending less.
"""

from __future__ import annotations

import asyncio
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

from sqlalchemy import Engine, text

from tierq.config import ModelConfig, TierConfig
from tierq.money import MILLION

# Output cap for budgeted calls that set none, so their worst case is finite.
DEFAULT_BUDGET_MAX_TOKENS = 1024


def prompt_token_bound(messages: list[dict[str, Any]]) -> int:
    """An upper bound on prompt tokens: no tokenizer makes more tokens than UTF-8 bytes, plus framing."""
    return 16 + sum(8 + len(str(m.get("content") or "").encode("utf-8")) for m in messages)


def output_cap(params: dict[str, Any], tier: TierConfig, model: ModelConfig) -> int:
    """The most completion tokens a budgeted call may produce (sent as its max_tokens)."""
    given = params.get("max_completion_tokens") or params.get("max_tokens")
    return int(given or tier.max_tokens or model.max_output_tokens or DEFAULT_BUDGET_MAX_TOKENS)


def worst_case(messages: list[dict[str, Any]], max_out: int, model: ModelConfig) -> Decimal:
    """The most a call can cost, whatever the provider reports."""
    price = model.price
    input_price = max(price.input, price.cached_input)
    return (prompt_token_bound(messages) * input_price + max_out * price.output) / MILLION


def reserve(engine: Engine, batch_id: uuid.UUID, amount: Decimal) -> bool | None:
    """Hold `amount` of the batch's budget: True when held, None when calls in flight hold what is
    missing (try again once they settle), False when even the unreserved rest cannot cover it."""
    with engine.begin() as conn:
        row = conn.execute(
            text("UPDATE batches SET reserved_usd = reserved_usd + :a WHERE id = :b "
                 "AND spent_usd + reserved_usd + :a <= budget_usd RETURNING id"),
            {"a": amount, "b": batch_id},
        ).first()
        if row is not None:
            return True
        could = conn.execute(
            text("SELECT spent_usd + :a <= budget_usd FROM batches WHERE id = :b"), {"a": amount, "b": batch_id}
        ).scalar()
    return None if could else False


def settle(engine: Engine, batch_id: uuid.UUID, reserved: Decimal, actual: Decimal) -> None:
    """Release a reservation and book what the call really cost (never more than was reserved)."""
    with engine.begin() as conn:
        conn.execute(
            text("UPDATE batches SET reserved_usd = reserved_usd - :r, spent_usd = spent_usd + :a WHERE id = :b"),
            {"r": reserved, "a": min(actual, reserved), "b": batch_id},
        )


class BudgetGate:
    """`reserve` and `settle` for coroutines, on a few threads of their own (each holds one connection)."""

    THREADS = 4

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._threads = ThreadPoolExecutor(self.THREADS, thread_name_prefix="tierq-budget")

    async def reserve(self, batch_id: uuid.UUID, amount: Decimal, wait_s: float) -> bool | None:
        """Hold `amount`: True when held, False when it can never be covered, None when calls in flight
        still hold the rest after `wait_s` (the job is held on its queue and tries again later)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + wait_s
        while True:
            held = await loop.run_in_executor(self._threads, reserve, self.engine, batch_id, amount)
            if held is not None or loop.time() >= deadline:
                return held
            await asyncio.sleep(random.uniform(0.05, 0.25))

    async def settle(self, batch_id: uuid.UUID, reserved: Decimal, actual: Decimal) -> None:
        """See `settle`."""
        await asyncio.get_running_loop().run_in_executor(self._threads, settle, self.engine, batch_id, reserved, actual)
