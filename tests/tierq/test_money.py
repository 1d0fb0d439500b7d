"""Exact cost arithmetic."""

from __future__ import annotations

from decimal import Decimal

from tierq.money import Price, Usage, dollars, estimate_tokens, usd


def test_cost_is_exact_with_cached_tokens() -> None:
    price = Price(Decimal("0.15"), Decimal("0.60"), Decimal("0.075"))
    cost = price.cost(Usage(prompt_tokens=1234, completion_tokens=567, cached_tokens=1000))
    assert (
        cost
        == (Decimal(234) * Decimal("0.15") + Decimal(1000) * Decimal("0.075") + Decimal(567) * Decimal("0.60")) / 10**6
    )
    assert usd(cost) == "0.0004503"


def test_cached_tokens_never_exceed_the_prompt() -> None:
    price = Price(Decimal(1), Decimal(1), Decimal(0))
    assert price.cost(Usage(10, 0, cached_tokens=50)) == 0


def test_estimates_round_up() -> None:
    assert [estimate_tokens(t) for t in ("", "a", "abcd", "abcde")] == [0, 1, 1, 2]
    assert usd(Decimal("0")) == "0" and usd(Decimal("1.500000000000")) == "1.5"


def test_dollars_put_the_sign_before_the_dollar_sign() -> None:
    assert dollars(Decimal("-0.000210"), 6) == "-$0.000210"  # "$-0.000210" before
    assert dollars(Decimal("1234.5"), 2) == "$1,234.50" and dollars(Decimal("-1234.5"), 2) == "-$1,234.50"
    assert dollars(Decimal("0.004780000")) == "$0.00478" and dollars(Decimal("-0.5")) == "-$0.5"
    assert dollars(Decimal(0)) == "$0"
