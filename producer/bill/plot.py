"""`tierq report --plot FILE.png`: what was paid, by tier and model, beside the baseline."""

from __future__ import annotations

from decimal import Decimal
from pathlib import Path
from typing import Any

from producer.bill.build import Bill
from tierq.errors import TierqError
from tierq.money import dollars

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
    return dollars(value, 2 if abs(value) >= 1 else -value.adjusted() + 2)


def _axis_formatter(ticks: Any) -> Any:
    """One money format for every tick of the axis: as many decimals as its ticks need to read exactly
    ($0.00025 steps are not rounded into $0.0003, $0.0005, $0.0008...), at least cents."""
    decimals = next((d for d in range(2, 9) if all(abs(round(t, d) - t) < 1e-12 for t in ticks)), 8)

    def tick(value: float, _: Any) -> str:
        return dollars(Decimal(str(float(value))), decimals) if value else "$0"

    return tick


def render_bill(bill: Bill, path: Path | str, tier_order: list[str]) -> Path:
    """Write the bill's picture as a PNG at `path`; returns the path."""
    plt = _pyplot()
    target = Path(path)
    fig = draw_bill(bill, tier_order)
    try:
        fig.savefig(target, format="png", dpi=110)
    finally:
        plt.close(fig)
    return target


def draw_bill(bill: Bill, tier_order: list[str]) -> Any:
    """The bill's picture as a matplotlib Figure (the caller closes it)."""
    plt = _pyplot()
    # Dollar signs are money here, not the delimiters of matplotlib's math text.
    with plt.rc_context({"text.parse_math": False}):
        fig, (left, right) = plt.subplots(1, 2, figsize=(12, 5.5), gridspec_kw={"width_ratios": [1, 1.4]})
        _paid_vs_baseline(left, bill, tier_order)
        _by_model(right, bill, tier_order)
        fig.suptitle(f"tierq bill, {_scope(bill)}: {_label(bill.totals.cost_usd)} paid, {_verdict(bill)}",
                     fontsize=13, fontweight="bold")
        fig.text(0.5, 0.905, _footnote(bill), ha="center", va="top", fontsize=9.5, color="#444444")
        fig.tight_layout(rect=(0, 0, 1, 0.86))
    return fig


def _pyplot() -> Any:
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        raise TierqError("--plot needs matplotlib; install it with: pip install matplotlib") from None
    return plt


def _verdict(bill: Bill) -> str:
    pct = bill.savings_pct
    if pct is None:
        return "no baseline yet"
    where = f"{_label(bill.baseline_cost_usd)} with {bill.baseline_model} alone"
    return f"{pct}% less than {where}" if pct >= 0 else f"{-pct}% more than {where}"


def _footnote(bill: Bill) -> str:
    """Cache savings and escalations, which the bars do not show."""
    hits = bill.totals.cache_hits
    cache = f"cache: {hits:,} job{'s' if hits != 1 else ''} answered at no cost, {_label(bill.totals.saved_usd)} saved"
    paths = ", ".join(f"{a} \u2192 {b} {n:,}" for (a, b), n in bill.escalations.items()) or "none"
    line = f"{cache}   \u00b7   escalations: {paths}"
    quality = bill.quality
    if quality is not None and quality.share is not None:
        low, high = quality.interval
        line += (f"\nquality: {quality.share:.1%} of answers agree with the {quality.reference_tier} tier "
                 f"(95% interval {low:.1%}-{high:.1%}), audits {_label(quality.audit_cost_usd)}")
    return line


def _scope(bill: Bill) -> str:
    text = f"batch {str(bill.scope.batch_id)[:8]}" if bill.scope.batch_id else "all batches"
    return text + (f" since {bill.scope.since:%Y-%m-%d}" if bill.scope.since else "")


def _colour(tier: str, tier_order: list[str]) -> str:
    index = tier_order.index(tier) if tier in tier_order else len(TIER_COLOURS) - 1
    return TIER_COLOURS[min(index, len(TIER_COLOURS) - 1)]


def _paid_vs_baseline(ax: Any, bill: Bill, tier_order: list[str]) -> None:
    """Two bars: what was paid, stacked by tier, and the baseline; a legend names the tiers."""
    top = max(_dollars(bill.totals.cost_usd), _dollars(bill.baseline_cost_usd)) or 1.0
    bottom = 0.0
    for tier, cost in _by_tier(bill, tier_order):
        height = _dollars(cost)
        ax.bar(0, height, bottom=bottom, color=_colour(tier, tier_order), edgecolor="white", width=0.6,
               label=f"{tier}  {_label(cost)}")
        if height >= 0.07 * top:  # a label only where it fits inside its segment
            ax.text(0, bottom + height / 2, tier, ha="center", va="center", color="white", fontsize=9)
        bottom += height
    ax.bar(1, _dollars(bill.baseline_cost_usd), color=BASELINE_COLOUR, width=0.6)
    for x, value in ((0, bill.totals.cost_usd), (1, bill.baseline_cost_usd)):
        ax.text(x, _dollars(value), _label(value), ha="center", va="bottom", fontsize=10, fontweight="bold")
    saved = bill.savings_usd
    if bill.baseline_cost_usd and saved > 0:
        base = _dollars(bill.baseline_cost_usd)
        paid = _dollars(bill.totals.cost_usd)
        ax.plot([-0.3, 1.3], [base, base], linestyle="--", color="#888888", linewidth=1)
        if base - paid > 0.2 * top:  # room for an arrow from the baseline down to the paid bar's label
            ax.annotate("", xy=(0, paid + 0.08 * top), xytext=(0, base),
                        arrowprops={"arrowstyle": "->", "color": "#3a8f5c", "linewidth": 2})
        room = base - paid > 0.2 * top
        ax.text(  # beside the arrow, in the gap between the bars: two short lines fit there
            0.05 if room else -0.3,
            (base + paid) / 2 if room else base * 1.06,
            f"saved {_label(saved)}\n({bill.savings_pct}%)" if room else f"saved {_label(saved)} ({bill.savings_pct}%)",
            color="#3a8f5c",
            fontsize=11,
            fontweight="bold",
            va="center",
        )
    ax.set_xticks([0, 1], ["tierq", f"baseline\n(all on {bill.baseline_model})"])
    ax.set_ylim(0, top * 1.18)
    ax.yaxis.set_major_formatter(_axis_formatter(ax.get_yticks()))
    ax.set_title("Paid vs. the top tier for every job")
    ax.spines[["top", "right"]].set_visible(False)
    if bill.by_tier_model:
        ax.legend(title="paid, by tier", loc="upper center", bbox_to_anchor=(0.5, -0.16), ncol=3, fontsize=8.5,
                  title_fontsize=8.5, frameon=False)


def _by_tier(bill: Bill, tier_order: list[str]) -> list[tuple[str, Decimal]]:
    totals: dict[str, Decimal] = {}
    for (tier, _), spend in bill.by_tier_model.items():
        totals[tier] = totals.get(tier, Decimal(0)) + spend.cost_usd
    return sorted(totals.items(), key=lambda kv: _rank(kv[0], tier_order))


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
