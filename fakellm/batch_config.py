"""The `[simulator.batch]` table: how long a simulated batch spends in each status.

Every key can also be set for one batch through its metadata, as the string value of `sim_<key>`
(`metadata={"sim_window_s": "0.5"}`), so tests sharing one simulator need not change its config.
"""

from __future__ import annotations

import dataclasses
import enum
import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

METADATA_PREFIX = "sim_"
DAY_S = 86400.0


class Progress(enum.StrEnum):
    """How the answered lines of an in-progress batch appear."""

    GRADUAL = "gradual"  # line i of n is answered at in_progress_s * (i + 1) / n
    AT_END = "at_end"  # every line is answered once in_progress_s has passed


@dataclass(frozen=True)
class BatchTiming:
    """Seconds a batch spends validating, in progress, finalizing and cancelling, and its completion window."""

    validating_s: float = 0.05
    in_progress_s: float = 0.2
    progress: Progress = Progress.GRADUAL
    finalizing_s: float = 0.05
    cancelling_s: float = 0.05
    # The "24h" completion window in simulated seconds: lines not answered by then are `batch_expired`.
    window_s: float = DAY_S

    def overridden(self, overrides: Mapping[str, Any], where: str) -> BatchTiming:
        """Return a validated copy with the given keys replaced; `where` names the table in messages."""
        known = {f.name for f in dataclasses.fields(self)}
        changes: dict[str, Any] = {}
        for key, value in overrides.items():
            if key not in known:
                raise ValueError(f"unknown key {key!r} in {where}; known keys: {', '.join(sorted(known))}")
            changes[key] = _checked(key, value, where)
        return dataclasses.replace(self, **changes)

    def for_metadata(self, metadata: Mapping[str, str]) -> BatchTiming:
        """This timing with the batch's `sim_<key>` metadata values applied (strings, as metadata holds)."""
        known = {f.name for f in dataclasses.fields(self)}
        overrides: dict[str, Any] = {}
        for name, raw in metadata.items():
            if not name.startswith(METADATA_PREFIX):
                continue
            key = name.removeprefix(METADATA_PREFIX)
            if key not in known:
                names = ", ".join(METADATA_PREFIX + k for k in sorted(known))
                raise ValueError(f"metadata.{name} is not a simulator setting; use one of {names}")
            if key == "progress":
                overrides[key] = raw
                continue
            try:
                overrides[key] = float(raw)
            except ValueError:
                raise ValueError(f"metadata.{name} must be a number of seconds, got {raw!r}") from None
        return self.overridden(overrides, "the batch's sim_ metadata")


def _checked(key: str, value: Any, where: str) -> Any:
    """Validate one timing value and return it in its stored form."""
    if key == "progress":
        try:
            return Progress(value)
        except ValueError:
            choices = " or ".join(repr(p.value) for p in Progress)
            raise ValueError(f"progress in {where} must be {choices}, got {value!r}") from None
    if isinstance(value, bool) or not isinstance(value, (int, float)) or math.isnan(value) or value < 0:
        raise ValueError(f"{key} in {where} must be a number of seconds >= 0, got {value!r}")
    return float(value)
