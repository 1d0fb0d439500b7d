"""One simulated batch: its status, counts, timestamps and the results of its lines."""

from __future__ import annotations

import asyncio
import enum
import math
import os
import time
from dataclasses import dataclass, field
from typing import Any

from fakellm.batch_config import BatchTiming

UNANSWERED_MESSAGES = {
    "batch_expired": "This request could not be executed before the completion window expired.",
    "batch_cancelled": "This request was not executed because the batch was cancelled.",
}


class BatchStatus(enum.StrEnum):
    """The statuses of an OpenAI batch; each has a `<status>_at` timestamp but validating (`created_at`)."""

    VALIDATING = "validating"
    FAILED = "failed"
    IN_PROGRESS = "in_progress"
    FINALIZING = "finalizing"
    COMPLETED = "completed"
    EXPIRED = "expired"
    CANCELLING = "cancelling"
    CANCELLED = "cancelled"


FINAL_STATUSES = frozenset({BatchStatus.FAILED, BatchStatus.COMPLETED, BatchStatus.EXPIRED, BatchStatus.CANCELLED})
_STAMPED = [s for s in BatchStatus if s is not BatchStatus.VALIDATING]


def new_id(prefix: str) -> str:
    """A fresh OpenAI-looking id."""
    return prefix + os.urandom(12).hex()


@dataclass(frozen=True)
class LineResult:
    """The result of one request line: an HTTP answer of the chat logic, or an error without one."""

    custom_id: str
    status_code: int | None  # None: the line was never answered (`error` says why)
    body: dict[str, Any] | None = None
    error_code: str | None = None

    @property
    def succeeded(self) -> bool:
        """Whether the line goes to the output file rather than the error file."""
        return self.status_code == 200

    def as_json(self) -> dict[str, Any]:
        """The line of the output or error file, in OpenAI's format."""
        response = None
        if self.status_code is not None:
            response = {"status_code": self.status_code, "request_id": new_id("req_"), "body": self.body}
        error = None
        if self.error_code is not None:
            error = {"code": self.error_code, "message": UNANSWERED_MESSAGES[self.error_code]}
        return {"id": new_id("batch_req_"), "custom_id": self.custom_id, "response": response, "error": error}


@dataclass
class BatchJob:
    """The state of one batch, changed only by its runner (fakellm.batch_runner) and the cancel route."""

    id: str
    input_file_id: str
    endpoint: str
    completion_window: str
    metadata: dict[str, str] | None
    timing: BatchTiming
    created_at: int = field(default_factory=lambda: int(time.time()))
    status: BatchStatus = BatchStatus.VALIDATING
    stamps: dict[BatchStatus, int] = field(default_factory=dict)
    model: str | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    usage: list[int] = field(default_factory=lambda: [0, 0, 0])  # input, cached input, output tokens
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    cancel_requested: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None

    def move(self, status: BatchStatus) -> None:
        """Enter a status, stamping when."""
        self.status = status
        self.stamps[status] = int(time.time())

    def count(self, result: LineResult) -> None:
        """Count one finished line in `request_counts` and, if it was billed, in `usage`."""
        if result.succeeded:
            self.completed += 1
        else:
            self.failed += 1
        usage = result.body.get("usage") if result.succeeded and result.body else None
        if isinstance(usage, dict):
            self.usage[0] += usage["prompt_tokens"]
            self.usage[1] += usage["prompt_tokens_details"]["cached_tokens"]
            self.usage[2] += usage["completion_tokens"]

    def as_json(self) -> dict[str, Any]:
        """The OpenAI `batch` object."""
        input_tokens, cached, output_tokens = self.usage
        body: dict[str, Any] = {
            "id": self.id,
            "object": "batch",
            "endpoint": self.endpoint,
            "model": self.model,
            "errors": None if self.errors is None else {"object": "list", "data": self.errors},
            "input_file_id": self.input_file_id,
            "completion_window": self.completion_window,
            "status": self.status.value,
            "output_file_id": self.output_file_id,
            "error_file_id": self.error_file_id,
            "created_at": self.created_at,
            "expires_at": self.created_at + int(window) if math.isfinite(window := self.timing.window_s) else None,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "usage": {
                "input_tokens": input_tokens,
                "input_tokens_details": {"cached_tokens": cached},
                "output_tokens": output_tokens,
                "output_tokens_details": {"reasoning_tokens": 0},
                "total_tokens": input_tokens + output_tokens,
            },
            "metadata": self.metadata,
        }
        for status in _STAMPED:
            body[f"{status.value}_at"] = self.stamps.get(status)
        return body
