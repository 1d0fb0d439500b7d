"""Exact money: prices per million tokens and the cost of a call, always `Decimal`, never float."""

from __future__ import annotations

from dataclasses import dataclass
from decimal import Decimal

MILLION = Decimal(1_000_000)
# Costs are stored as NUMERIC(24, 12): a price with at most 6 decimal places per million tokens makes
# every per-token cost exact at 12 places, so no rounding ever happens between the call and the bill.
PRICE_PLACES = 6
COST_PLACES = 12
COST_DIGITS = 24
ZERO = Decimal(0)


def amount_problem(amount: Decimal) -> str | None:
    """Why an amount of USD cannot be stored as NUMERIC(COST_DIGITS, COST_PLACES) as it is, or None."""
    if not amount.is_finite() or amount <= 0:
        return "must be a positive amount in USD"
    if amount >= Decimal(10) ** (COST_DIGITS - COST_PLACES):
        return f"is more than tierq stores (less than 10^{COST_DIGITS - COST_PLACES} USD)"
    if amount != amount.quantize(Decimal(1).scaleb(-COST_PLACES)):
        return f"has more than {COST_PLACES} decimal places, which tierq does not keep"
    return None


@dataclass(frozen=True, slots=True)
class Usage:
    """Tokens of one call as the provider reported them (or estimated, when `estimated`)."""

    prompt_tokens: int
    completion_tokens: int
    cached_tokens: int = 0
    estimated: bool = False


@dataclass(frozen=True, slots=True)
class Price:
    """USD per million tokens for one model."""

    input: Decimal
    output: Decimal
    cached_input: Decimal

    def cost(self, usage: Usage) -> Decimal:
        """The exact USD cost of `usage` at this price."""
        cached = min(usage.cached_tokens, usage.prompt_tokens)
        uncached = usage.prompt_tokens - cached
        total = uncached * self.input + cached * self.cached_input + usage.completion_tokens * self.output
        return total / MILLION


def estimate_tokens(text: str) -> int:
    """A provider-free token estimate (characters / 4, rounded up), used only where usage is missing."""
    return max(1, -(-len(text) // 4)) if text else 0


def usd(value: Decimal) -> str:
    """Money as the decimal string JSON output uses, without exponent or trailing noise."""
    text = format(value.normalize(), "f") if value else "0"
    return text


def dollars(value: Decimal, places: int | None = None) -> str:
    """Money for people, the sign before the dollar sign ('-$0.000210'): with `places` decimals (and
    thousands separators), else every digit there is (as `usd`)."""
    sign = "-" if value < 0 else ""
    return f"{sign}${abs(value):,.{places}f}" if places is not None else f"{sign}${usd(abs(value))}"
