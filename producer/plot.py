"""`tierq report --plot FILE.png`: what was paid, by tier and model, beside the baseline."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from producer.bill import Bill
from tierq.errors import TierqError

# Cheapest tier first: calm to warm colours, so the eye finds the expensive tiers.
TIER_COLOURS = ("#3a8f5c", "#e0a526", "#d1495b", "#5b7db1", "#8e6bb8", "#6b6b6b")
BASELINE_COLOUR = "#b8b8b8"


def _dollars(value: Decimal) -> float:
    # Floats only to place bars on a picture; every figure printed on it comes from the Decimal.
    return float(value)


def _label(value: Decimal) -> str:
    """Dollars: cents from $1 up, three significant digits below ($0.0106, $0.000270)."""
    if value == 0:
        return "$0"
    if abs(value) >= 1:
        return f"${value:,.2f}"
    places = -value.adjusted() + 2
    return f"${value:,.{places}f}"


def _axis_dollars(value: float, _: Any) -> str:
    return _label(Decimal(str(float(value)))) if value else "$0"


def render_bill(bill: Bill, path: Path | str, tier_order: list[str]) -> Path:
    """Write the bill's picture as a PNG at `path`; returns the path."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TierqError("--plot needs matplotlib; install it with: pip install matplotlib") from None
    target = Path(path)
    # Dollar signs are money here, not the delimiters of matplotlib's math text.
    with plt.rc_context({"text.parse_math": False}):
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1, 1.4]})
        try:
            _paid_vs_baseline(left, bill, tier_order)
            _by_model(right, bill, tier_order)
            fig.suptitle(f"tierq bill, {_scope(bill)}: {_label(bill.totals.cost_usd)} paid, {_verdict(bill)}",
                         fontsize=13, fontweight="bold")
            fig.tight_layout(rect=(0, 0, 1, 0.94))
            fig.savefig(target, format="png", dpi=110)
        finally:
            plt.close(fig)
    return target


def _verdict(bill: Bill) -> str:
    pct = bill.savings_pct
    if pct is None:
        return "no baseline yet"
    where = f"{_label(bill.baseline_cost_usd)} with {bill.baseline_model} alone"
    return f"{pct}% less than {where}" if pct >= 0 else f"{-pct}% more than {where}"


def _scope(bill: Bill) -> str:
    text = f"batch {str(bill.scope.batch_id)[:8]}" if bill.scope.batch_id else "all batches"
    return text + (f" since {bill.scope.since:%Y-%m-%d}" if bill.scope.since else "")


def _colour(tier: str, tier_order: list[str]) -> str:
    index = tier_order.index(tier) if tier in tier_order else len(TIER_COLOURS) - 1
    return TIER_COLOURS[min(index, len(TIER_COLOURS) - 1)]


def _paid_vs_baseline(ax: Any, bill: Bill, tier_order: list[str]) -> None:
    """Two bars: what was paid, stacked by tier and model, and the baseline."""
    bottom = 0.0
    ordered = sorted(bill.by_tier_model.items(), key=lambda kv: (_rank(kv[0][0], tier_order), kv[0][1]))
    for (tier, model), spend in ordered:
        height = _dollars(spend.cost_usd)
        ax.bar(0, height, bottom=bottom, color=_colour(tier, tier_order), edgecolor="white", width=0.6)
        if bill.totals.cost_usd and spend.cost_usd / bill.totals.cost_usd > Decimal("0.06"):
            ax.text(0, bottom + height / 2, f"{tier} / {model}", ha="center", va="center", color="white", fontsize=8)
        bottom += height
    ax.bar(1, _dollars(bill.baseline_cost_usd), color=BASELINE_COLOUR, width=0.6)
    for x, value in ((0, bill.totals.cost_usd), (1, bill.baseline_cost_usd)):
        ax.text(x, _dollars(value), _label(value), ha="center", va="bottom", fontsize=10, fontweight="bold")
    saved = bill.savings_usd
    if bill.baseline_cost_usd and saved > 0:
        top = _dollars(bill.baseline_cost_usd)
        ax.plot([-0.3, 1.3], [top, top], linestyle="--", color="#888888", linewidth=1)
        middle = (top + _dollars(bill.totals.cost_usd)) / 2
        # The arrow stops short of the paid bar, whose own label sits on top of it.
        ax.annotate("", xy=(0, _dollars(bill.totals.cost_usd) + 0.08 * top), xytext=(0, top),
                    arrowprops={"arrowstyle": "->", "color": "#3a8f5c", "linewidth": 2})
        ax.text(0.05, middle, f"saved {_label(saved)}\n({bill.savings_pct}%)", color="#3a8f5c",
                fontsize=11, fontweight="bold", va="center")
    ax.set_xticks([0, 1], ["tierq", f"baseline\n(all on {bill.baseline_model})"])
    ax.yaxis.set_major_formatter(_axis_dollars)
    ax.set_title("Paid vs. the top tier for every job")
    ax.spines[["top", "right"]].set_visible(False)
    ax.margins(y=0.12)


def _by_model(ax: Any, bill: Bill, tier_order: list[str]) -> None:
    """Cost per model (coloured by tier), with its calls and median latency."""
    rows = sorted(bill.by_tier_model.items(), key=lambda kv: (_rank(kv[0][0], tier_order), kv[0][1]))
    if not rows:
        ax.text(0.5, 0.5, "no model calls in this scope", ha="center", va="center", transform=ax.transAxes)
        ax.set_axis_off()
        return
    names = [f"{tier} / {model}" for (tier, model), _ in rows]
    values = [_dollars(spend.cost_usd) for _, spend in rows]
    ax.barh(range(len(rows)), values, color=[_colour(t, tier_order) for (t, _), _ in rows])
    for y, ((_, model), spend) in enumerate(rows):
        p50 = bill.latency_ms.get(model, (None, None))[0]
        calls = f"{spend.calls:,} call" + ("" if spend.calls == 1 else "s")
        note = f" {_label(spend.cost_usd)}  ·  {calls}" + (f"  ·  p50 {p50:,} ms" if p50 is not None else "")
        ax.text(values[y], y, note, va="center", fontsize=8)
    ax.set_yticks(range(len(rows)), names)
    ax.invert_yaxis()
    ax.set_xticks([])  # every bar carries its amount
    ax.set_title("Where the money went, by tier and model")
    ax.spines[["top", "right", "bottom"]].set_visible(False)
    ax.margins(x=0.6)


def _rank(tier: str, tier_order: list[str]) -> int:
    return tier_order.index(tier) if tier in tier_order else len(tier_order)
