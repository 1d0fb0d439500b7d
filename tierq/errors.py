"""The error tree: what went wrong and what the caller can do about it.

    TierqError             a problem tierq explains in one line (the CLI prints it and exits non-zero)
    ├── ConfigError        the settings or the TOML file are wrong; fix them and start again
    ├── InputError         a submitted record or option is unusable; it is rejected, the rest go on
    ├── NotFound           a batch or job id that does not exist
    └── Unavailable        Postgres, Redis or the broker cannot be reached; start it or fix its URL

Model calls do not raise: each attempt becomes a cost row whose outcome says whether to retry the same
model, try the next one or escalate (workers/llm.py, workers/calls.py).
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


class Unavailable(TierqError):
    """A service tierq needs cannot be reached; the message names it (URL without password) and the fix."""
