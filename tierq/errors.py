"""The error tree: what went wrong and what the caller can do about it.

    TierqError
    ├── ConfigError        the settings or the TOML file are wrong; fix them and start again
    ├── InputError         a submitted record is unusable; it is rejected, the rest go on
    ├── NotFound           a batch or job id that does not exist
    └── CallError          a model call did not give a usable answer
        ├── Retryable      try the same model again after a pause (429, 5xx, timeout, network)
        └── Escalate       this model will not do; try the next model or the next tier
"""

from __future__ import annotations


class TierqError(Exception):
    """Base of every error tierq raises on purpose."""


class ConfigError(TierqError):
    """The settings or the TOML configuration are invalid; the message says where and how to fix it."""


class InputError(TierqError):
    """A submitted record cannot be processed; the message names the record, the field and the problem."""


class NotFound(TierqError):
    """A batch or job that does not exist."""


class CallError(TierqError):
    """A model call failed; `outcome` is the cost-row outcome it maps to."""

    outcome = "error"

    def __init__(self, message: str, *, outcome: str | None = None) -> None:
        super().__init__(message)
        if outcome is not None:
            self.outcome = outcome


class Retryable(CallError):
    """A transient failure: the same call may succeed after `retry_after` seconds."""

    def __init__(self, message: str, *, outcome: str = "error", retry_after: float | None = None) -> None:
        super().__init__(message, outcome=outcome)
        self.retry_after = retry_after


class Escalate(CallError):
    """The model answered, or failed for good, in a way that calls for a stronger model."""
