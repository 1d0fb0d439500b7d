"""The `[quality]` table: how many answers given below the reference tier are audited, and how an audit
decides whether a cheap answer agrees with the reference tier's (docs/quality.md).

    [quality]
    audit_rate = 0.02                  # share of jobs answered below the reference tier, also asked there
    reference_tier = "cold"            # default: the top tier
    min_per_stratum = 5                # audits per (tier, task type) of a batch at least, budget allowing
    comparator = "similarity"          # or a table: { kind = "number", tolerance = 0.01 }

    [quality.task_types.triage]        # per task type: any of audit_rate, comparator
    comparator = { kind = "label", labels = ["billing", "delivery", "refund"] }
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

KINDS = ("exact", "choice", "number", "json", "label", "similarity", "judge", "callable")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ComparatorConfig(_Strict):
    """Whether a candidate answer agrees with the reference answer; docs/quality.md says which for what."""

    kind: Literal["exact", "choice", "number", "json", "label", "similarity", "judge", "callable"] = "similarity"
    tolerance: float = Field(default=1e-6, ge=0, description="number: relative difference that still agrees")
    fields: tuple[str, ...] = Field(default=(), description="json: dotted paths that must be equal; () the whole")
    labels: tuple[str, ...] = Field(default=(), description="label: the answers' possible labels")
    threshold: float | None = Field(default=None, gt=0, le=1, description="similarity: default the cache's")
    callable: str | None = Field(default=None, pattern=r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$")

    @model_validator(mode="after")
    def _complete(self) -> ComparatorConfig:
        if self.kind == "label" and not self.labels:
            raise ValueError('kind = "label" needs labels = ["...", ...]')
        if self.kind == "callable" and self.callable is None:
            raise ValueError('kind = "callable" needs callable = "package.module:function"')
        return self


def _comparator(value: Any) -> Any:
    """`comparator = "exact"` is short for `comparator = { kind = "exact" }`."""
    return {"kind": value} if isinstance(value, str) else value


class QualityOverride(_Strict):
    """A task type's own audit rate or comparator."""

    audit_rate: float | None = Field(default=None, ge=0, le=1)
    comparator: ComparatorConfig | None = None

    _as_table = field_validator("comparator", mode="before")(classmethod(lambda cls, v: _comparator(v)))


class QualityConfig(_Strict):
    """Audits of answers given below the reference tier, and of semantic cache hits."""

    audit_rate: float = Field(default=0.02, ge=0, le=1)
    reference_tier: str | None = None
    target: float = Field(default=0.95, gt=0, le=1, description="share of the reference tier's quality to keep")
    min_per_stratum: int = Field(default=5, ge=0)
    comparator: ComparatorConfig = ComparatorConfig()
    task_types: dict[str, QualityOverride] = Field(default_factory=dict)

    _as_table = field_validator("comparator", mode="before")(classmethod(lambda cls, v: _comparator(v)))

    def rate_for(self, task_type: str) -> float:
        """The audit rate of `task_type`."""
        override = self.task_types.get(task_type)
        return override.audit_rate if override is not None and override.audit_rate is not None else self.audit_rate

    def comparator_for(self, task_type: str) -> ComparatorConfig:
        """The comparator of `task_type`."""
        override = self.task_types.get(task_type)
        return override.comparator if override is not None and override.comparator is not None else self.comparator


def normalised(text: str) -> str:
    """Text with case folded and runs of white space made one space (the `exact` comparison)."""
    return re.sub(r"\s+", " ", text).strip().casefold()
