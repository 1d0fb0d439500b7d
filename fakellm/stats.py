"""Counters the simulator keeps so that tests can check what was billed.

Interactive calls (POST /v1/chat/completions) and the request lines of batches are counted apart: the
top level of /_sim/stats is the interactive ledger, `batch` the batch one, so a test can check that each
batch line was answered exactly once and what its answers were billed without interactive traffic mixed in.
"""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

OUTCOME_NAMES = ("ok", "refusal", "empty", "truncate", "hang")


def _zero_outcomes() -> dict[str, int]:
    """Return a fresh outcome counter with every known outcome at zero."""
    return dict.fromkeys(OUTCOME_NAMES, 0)


def _zero_status() -> dict[str, int]:
    """Return a fresh HTTP status counter with the common codes at zero."""
    return {"200": 0, "429": 0, "500": 0}


@dataclass
class ModelStats:
    """Per-model request, status, outcome and token counters."""

    requests: int = 0
    status: dict[str, int] = field(default_factory=_zero_status)
    outcomes: dict[str, int] = field(default_factory=_zero_outcomes)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0

    def count_status(self, status: int) -> None:
        """Count one response with the given HTTP status."""
        name = str(status)
        self.status[name] = self.status.get(name, 0) + 1

    def as_json(self) -> dict[str, Any]:
        """Return the counters as a JSON-ready mapping."""
        return {
            "requests": self.requests,
            "status": dict(self.status),
            "outcomes": dict(self.outcomes),
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cached_tokens": self.cached_tokens,
        }


@dataclass
class Ledger:
    """Per-model counters and the list of billed calls of one kind of traffic."""

    models: dict[str, ModelStats] = field(default_factory=dict)
    calls: list[dict[str, Any]] = field(default_factory=list)
    bad_requests: int = 0

    def model(self, name: str) -> ModelStats:
        """Return (creating if needed) the counters of one model."""
        stats = self.models.get(name)
        if stats is None:
            stats = self.models[name] = ModelStats()
        return stats

    def record_billed(
        self,
        call_id: str,
        model: str,
        outcome: str,
        usage: tuple[int, int, int],
        tags: Mapping[str, str] | None = None,
    ) -> None:
        """Record one HTTP 200 chat completion and its (prompt, completion, cached) usage."""
        prompt, completion, cached = usage
        stats = self.model(model)
        stats.count_status(200)
        stats.outcomes[outcome] = stats.outcomes.get(outcome, 0) + 1
        stats.prompt_tokens += prompt
        stats.completion_tokens += completion
        stats.cached_tokens += cached
        self.calls.append(
            {
                "id": call_id,
                "model": model,
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "cached_tokens": cached,
                "outcome": outcome,
                "at": time.time(),
                **(tags or {}),
            }
        )

    def requests(self) -> int:
        """Chat requests counted across models (a request rejected before it named a model is not one)."""
        return sum(m.requests for m in self.models.values())

    def ledger_json(self, include_calls: bool) -> dict[str, Any]:
        """The ledger's counters, optionally with the list of billed calls."""
        result: dict[str, Any] = {
            "requests": self.requests(),
            "bad_requests": self.bad_requests,
            "models": {name: m.as_json() for name, m in self.models.items()},
        }
        if include_calls:
            result["calls"] = list(self.calls)
        return result


@dataclass
class BatchStats(Ledger):
    """The ledger of batch request lines, with how often the chat logic was handed each line."""

    batches: int = 0  # batches created
    api_requests: int = 0  # requests to the Batch API routes, and downloads of batches' output and error files
    api_errors: int = 0  # of those, answered HTTP 500 by `batch_api_error_500_rate`
    # batch id -> custom_id -> times the chat logic was handed that line: 1 for every line it saw
    seen: dict[str, dict[str, int]] = field(default_factory=dict)
    # Lines without an answer because their batch expired or was cancelled first, by error code.
    unanswered: dict[str, int] = field(default_factory=lambda: {"batch_expired": 0, "batch_cancelled": 0})

    def saw(self, batch_id: str, custom_id: str) -> None:
        """Count one line of a batch handed to the chat logic."""
        lines = self.seen.setdefault(batch_id, {})
        lines[custom_id] = lines.get(custom_id, 0) + 1

    def as_json(self, include_calls: bool) -> dict[str, Any]:
        """Return the batch counters as a JSON-ready mapping."""
        result = self.ledger_json(include_calls)
        result["batches"] = self.batches
        result["api_requests"] = self.api_requests
        result["api_errors"] = self.api_errors
        result["lines"] = sum(sum(lines.values()) for lines in self.seen.values())
        result["unanswered"] = dict(self.unanswered)
        result["seen"] = {batch: dict(lines) for batch, lines in self.seen.items()}
        return result


@dataclass
class Stats(Ledger):
    """All counters of one simulator process since start or the last reset; itself the interactive ledger."""

    batch: BatchStats = field(default_factory=BatchStats)
    unauthorized: int = 0  # chat requests refused for want of the configured API key (HTTP 401)
    embedding_requests: int = 0
    embedding_inputs: int = 0
    in_flight: int = 0
    max_in_flight: int = 0

    def enter(self) -> None:
        """Count a chat request that started; tests read the peak to see how many calls a client keeps open."""
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)

    def leave(self) -> None:
        """Count a chat request that finished."""
        self.in_flight = max(0, self.in_flight - 1)

    def as_json(self, include_calls: bool) -> dict[str, Any]:
        """Return the whole snapshot, optionally with the lists of billed calls."""
        result = self.ledger_json(include_calls)
        result["in_flight"] = self.in_flight
        result["max_in_flight"] = self.max_in_flight
        result["embeddings"] = {"requests": self.embedding_requests, "inputs": self.embedding_inputs}
        result["unauthorized"] = self.unauthorized
        result["batch"] = self.batch.as_json(include_calls)
        return result
