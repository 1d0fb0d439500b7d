"""The `[cache]` table of the TOML configuration: the shared Redis cache's embedder, index shape and lifetime.

Its own module, not in `tierq.cache`, so that reading the configuration does not import the cache store.
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, field_validator

VERIFY_BAND = 0.06  # how far under the threshold verification reaches by default


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class CacheConfig(_Strict):
    """The shared Redis cache: which embedder, its threshold, the LSH shape, lifetime and size."""

    enabled: bool = True
    semantic: bool = True
    embedder: str = Field(default="hashing", pattern=r"^(hashing|openai|minilm)$")
    embedding_provider: str | None = Field(default=None, description="provider of the openai embedder")
    embedding_model: str = "text-embedding-3-small"
    dim: int = Field(default=384, ge=16, le=4096)
    threshold: float | None = Field(default=None, gt=0, le=1, description="default: the embedder's own")
    # Index shape, probes and pages chosen by bench/bench_cache.py at 100k and 1M entries in one namespace:
    # p99 3.7 and 7.4 ms, recall 0.987 and 0.985, 2.4 and 2.1 KB per entry (docs/cache.md, "The index").
    bands: int = Field(default=24, ge=1, le=64)
    rows: int = Field(default=20, ge=1, le=62)
    probes: int = Field(default=400, ge=1, le=20_000, description="buckets searched per lookup, over all bands")
    pages: int = Field(default=16384, ge=1, le=2**20, description="index pages per band (a power of two)")
    max_candidates: int = Field(default=4000, ge=1, description="vectors re-ranked per lookup at most")
    centre_after: int = Field(default=1000, ge=2, description="entries of a namespace before its index is centred")
    ttl_s: int = Field(default=7 * 24 * 3600, gt=0)
    max_entries: int = Field(default=1_000_000, gt=0)
    lease_s: float = Field(default=30.0, gt=0, description="a leader silent this long is presumed dead")
    prefix: str = "tq:c"
    # The content-word guard (docs/cache.md, "Thresholds"): no semantic hit when one text has more content
    # words the other lacks than `added_words`, or `added_share` of the longer text's where that is more.
    # added_share = 1 turns it off.
    added_words: int = Field(default=3, ge=0, description="content words one text may add to the other")
    added_share: float = Field(default=0.25, ge=0, le=1, description="... or this share of the longer text's")
    # Gray-zone verification (docs/cache.md): a ready entry at least `verify_from` similar but under the
    # threshold is served only if `verify_model` (default: the cheapest model) says both requests ask for
    # the same answer, and only where the call it saves costs more than that check.
    verify: bool = False
    verify_from: float | None = Field(default=None, gt=0, lt=1, description="default: the threshold - 0.06")
    verify_model: str | None = Field(default=None, description="default: the model with the lowest list prices")

    def verify_floor(self, threshold: float) -> float | None:
        """The lowest similarity a candidate needs to be verified, or None when verification is off."""
        if not (self.enabled and self.semantic and self.verify):
            return None
        return self.verify_from if self.verify_from is not None else round(threshold - VERIFY_BAND, 4)

    @field_validator("pages")
    @classmethod
    def _power_of_two(cls, value: int) -> int:
        if value & (value - 1):
            raise ValueError(f"pages must be a power of two (1, 2, 4, ... 1048576), not {value}")
        return value
