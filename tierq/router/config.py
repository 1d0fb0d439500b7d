"""The `[router]` table: when the learned router may decide, and from how much evidence."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RouterConfig(BaseModel):
    """A learned router per task type, fitted by `tierq route fit` from labels (docs/routing.md)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True  # false: workers ignore fitted routers (they stay stored)
    cheap_tier: str | None = None  # the tier whose answers the router judges; default the first
    strong_tier: str | None = None  # where it sends what the cheap tier should not answer; default [quality] reference
    min_labels: int = Field(default=200, ge=20, description="fewer labels: no router is fitted")
    confidence: float = Field(default=0.8, ge=0.5, lt=1, description="bootstrap confidence that the target is kept")
    holdout: float = Field(default=0.2, gt=0, lt=0.5, description="share of labels kept out of a fit to check it")
    poll_s: float = Field(default=30.0, gt=0, description="how often workers look for a newly activated version")
