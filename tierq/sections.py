"""The smaller tables of the TOML file: routing rules (`[routing]`), what makes an answer bad
(`[answers]`), the workers' batching, leases, holds and reconciler (`[worker]`), and the compression of
long conversations (`[compression]`). `tierq.config.Config` holds them."""

from __future__ import annotations

import re

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from tierq.outline import STUCK_AFTER_S


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class RuleConfig(_Strict):
    """A routing rule: when every condition it sets holds, the job starts at `tier` (or higher)."""

    name: str
    tier: str
    keywords: tuple[str, ...] = ()
    patterns: tuple[str, ...] = ()
    min_chars: int | None = Field(default=None, ge=0)
    min_steps: int | None = Field(default=None, ge=1)
    task_types: tuple[str, ...] = ()

    @model_validator(mode="after")
    def _has_condition(self) -> RuleConfig:
        if not (self.keywords or self.patterns or self.min_chars is not None or self.min_steps or self.task_types):
            raise ValueError("a rule needs at least one of keywords, patterns, min_chars, min_steps, task_types")
        return self

    @field_validator("patterns")
    @classmethod
    def _compiles(cls, value: tuple[str, ...]) -> tuple[str, ...]:
        for pattern in value:
            try:
                re.compile(pattern)
            except re.error as exc:
                raise ValueError(f"pattern {pattern!r} is not a valid regular expression: {exc}") from None
        return value


class RoutingConfig(_Strict):
    """How the classify step picks a job's starting tier: the highest tier any matching rule names."""

    default_tier: str | None = None
    rules: tuple[RuleConfig, ...] = ()


class AnswerConfig(_Strict):
    """What makes an answer bad enough to escalate, besides errors, truncation and content filters."""

    min_chars: int = Field(default=1, ge=0)
    refusal_phrases: tuple[str, ...] = (
        "I'm sorry, but I can't",
        "I’m sorry, but I can’t",
        "I cannot help with",
        "I can't help with",
        "I can't assist with",
        "I am unable to help",
    )


class WorkerConfig(_Strict):
    """Batching of tasks, leases, holds and the reconciler (docs/reliability.md says how they fit)."""

    classify_chunk: int = Field(default=500, ge=1, le=10_000)
    tier_chunk: int = Field(default=50, ge=1, le=1_000)
    threads: int = Field(default=32, ge=1, le=1_000, description="task threads per worker process (Celery's "
                         "--concurrency overrides it); more than open_calls / tier_chunk, so that chunks waiting "
                         "for their slowest call leave no slot idle")
    open_calls: int = Field(default=800, ge=1, le=100_000, description="jobs one worker process answers at "
                            "once, over all its task threads: its open model calls")
    flush_ms: float = Field(default=1000.0, ge=0, description="a chunk's answered jobs are written together, "
                            "at most this long after the first of them came back (one more transaction per "
                            "task and flush_ms at most)")
    lease_s: float = Field(default=30.0, ge=1, description="a claim's lease, renewed every third of it; a dead "
                           "worker's jobs are taken over this long after it died")
    max_wait_s: float = Field(default=5.0, ge=0, description="longest in-task wait for a rate-limit slot or "
                              "budget; longer waits give the job back to its queue")
    outage_limit_s: float = Field(default=1800.0, gt=0, description="jobs held this long for a provider that "
                                  "cannot be reached fail")
    budget_wait_s: float = Field(default=600.0, gt=0, description="jobs held this long for budget that calls "
                                 "in flight hold fail")
    rate_limit_wait_s: float = Field(default=1800.0, gt=0, description="jobs held this long for a provider's "
                                     "429 with a long Retry-After go on to the next tier (fail at the last)")
    breaker_failures: int = Field(default=5, ge=1, description="connection failures within breaker_window_s "
                                  "that open a provider's breaker")
    breaker_window_s: float = Field(default=10.0, gt=0)
    breaker_open_s: float = Field(default=2.0, gt=0, description="first pause of an open breaker; doubles")
    breaker_max_open_s: float = Field(default=60.0, gt=0)
    stuck_after_s: float = Field(default=STUCK_AFTER_S, gt=0, description="a job unchanged this long whose message is "
                                 "not live is published again")
    reconcile_every_s: float = Field(default=30.0, gt=0)
    max_recoveries: int = Field(default=3, ge=0, description="publications by the reconciler before a job fails")


class CompressionConfig(_Strict):
    """Summarising the older turns of long conversations with the cheapest tier's first model."""

    enabled: bool = Field(default=False, description="for task types not listed in task_types")
    task_types: dict[str, bool] = Field(default_factory=dict)
    max_turns: int = Field(default=12, ge=2, description="compress above this many non-system messages")
    max_tokens: int = Field(default=4000, ge=1, description="or above this many estimated prompt tokens")
    keep_last: int = Field(default=4, ge=1, description="the last turns, kept verbatim")
    summary_max_tokens: int = Field(default=400, ge=16)

    @model_validator(mode="after")
    def _leaves_room(self) -> CompressionConfig:
        if self.keep_last >= self.max_turns:
            raise ValueError(f"keep_last ({self.keep_last}) must be below max_turns ({self.max_turns})")
        return self

    def enabled_for(self, task_type: str) -> bool:
        """Whether jobs of `task_type` are compressed when a batch does not say."""
        return self.task_types.get(task_type, self.enabled)
