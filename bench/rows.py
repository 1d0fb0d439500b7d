"""One result row per measurement (ours, the anchor's, the ratio, the target) and the table of them."""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class Target:
    """What a row must reach: a ratio to its anchor (`ratio`), or a bound on our figure (`min`, `max`)."""

    kind: str
    value: float
    aim: float | None = None  # a stretch goal shown beside the target, not judged

    def met(self, ours: float, anchor: float | None) -> bool:
        """True when the figure reaches the target."""
        if self.kind == "ratio":
            return anchor is not None and anchor > 0 and ours / anchor >= self.value
        if self.kind == "min":
            return ours >= self.value
        return ours <= self.value

    def __str__(self) -> str:
        text = {"ratio": f">= {self.value:g}x", "min": f">= {self.value:,.0f}", "max": f"<= {self.value:,.0f}"}[
            self.kind
        ]
        return text + (f" (aim {self.aim:g}x)" if self.aim is not None else "")


@dataclass(frozen=True, slots=True)
class Row:
    """One benchmark figure beside its anchor's, measured in the same run."""

    name: str
    unit: str
    ours: float
    anchor: float | None
    target: Target
    note: str = ""

    @property
    def ratio(self) -> float | None:
        """Ours divided by the anchor's."""
        return self.ours / self.anchor if self.anchor else None

    @property
    def passed(self) -> bool:
        """True when the target holds."""
        return self.target.met(self.ours, self.anchor)

    def cells(self) -> list[str]:
        """The row as the table prints it."""
        anchor = "-" if self.anchor is None else f"{self.anchor:,.0f}"
        # Rounded down, so that a ratio just under its target never prints as the target.
        ratio = "-" if self.ratio is None else f"{math.floor(self.ratio * 100) / 100:.2f}x"
        return [self.name, f"{self.ours:,.0f} {self.unit}", anchor, ratio, str(self.target),
                "pass" if self.passed else "MISS"]


HEADER = ["benchmark", "ours", "anchor", "ratio", "target", "result"]


def table(rows: Sequence[Row]) -> str:
    """A plain-text table, columns aligned."""
    cells = [HEADER, *(row.cells() for row in rows)]
    widths = [max(len(line[i]) for line in cells) for i in range(len(HEADER))]
    lines = ["  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(line, widths, strict=True)))
             for line in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    notes = [f"  {row.name}: {row.note}" for row in rows if row.note]
    return "\n".join(lines + (["notes:", *notes] if notes else []))


def markdown(rows: Sequence[Row]) -> str:
    """The same table in Markdown, for docs/benchmarks.md."""
    lines = ["| " + " | ".join(HEADER) + " |", "|" + "---|" * len(HEADER)]
    lines += ["| " + " | ".join(row.cells()) + " |" for row in rows]
    return "\n".join(lines)
