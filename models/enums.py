"""Job states and call outcomes, stored as checked text columns."""

from __future__ import annotations

from enum import StrEnum


class JobStatus(StrEnum):
    """Where a job is; succeeded, failed and cancelled are final."""

    PENDING = "pending"  # accepted, waiting for the classify step
    QUEUED = "queued"  # on its tier's queue
    RUNNING = "running"  # a tier worker is calling a model for it
    WAITING = "waiting"  # the same question is being answered for another job; it will share the answer
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @classmethod
    def final(cls) -> tuple[JobStatus, ...]:
        """States a job never leaves."""
        return (cls.SUCCEEDED, cls.FAILED, cls.CANCELLED)


PENDING, QUEUED, RUNNING, WAITING = JobStatus.PENDING, JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.WAITING
SUCCEEDED, FAILED, CANCELLED = JobStatus.SUCCEEDED, JobStatus.FAILED, JobStatus.CANCELLED


class CallOutcome(StrEnum):
    """What one model call (one cost row) came to."""

    OK = "ok"
    REFUSAL = "refusal"
    EMPTY = "empty"
    TRUNCATED = "truncated"
    INVALID = "invalid"
    ERROR = "error"  # an unusable response, or a connection dropped mid-call
    HTTP_4XX = "http_4xx"  # the provider rejected the request (400, 401, 404, 422, ...; 429 is rate_limited)
    HTTP_5XX = "http_5xx"  # the provider failed (500, 502, 503, ...)
    CONNECTION = "connection"  # no connection to the provider could be made (refused, host unknown)
    RATE_LIMITED = "rate_limited"  # HTTP 429
    TIMEOUT = "timeout"
    CACHE_HIT = "cache_hit"
    AUDIT = "audit"  # the reference tier's answer to a job under audit
    JUDGE = "judge"  # the reference model asked whether a candidate answer is acceptable
    CACHE_VERIFY = "cache_verify"  # the verifier asked whether a near cache entry answers the job (docs/cache.md)

    @property
    def escalates(self) -> bool:
        """True when the answer came back but is not good enough, so the next tier should try."""
        return self in (CallOutcome.REFUSAL, CallOutcome.EMPTY, CallOutcome.TRUNCATED, CallOutcome.INVALID)
