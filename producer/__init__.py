"""What a user runs or imports to submit batches and read their progress, results and bill.

The names below are imported on first use, so the `tierq` command starts without loading SQLAlchemy,
Celery and the rest for a command (like `--help`) that needs none of them.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from producer.api import Tierq
    from producer.inputs.stream import ReadOptions
    from producer.submit import BatchOptions, SubmitResult

__all__ = ["BatchOptions", "ReadOptions", "SubmitResult", "Tierq"]
_HOMES = {"Tierq": "producer.api", "ReadOptions": "producer.inputs.stream", "BatchOptions": "producer.submit",
          "SubmitResult": "producer.submit"}


def __getattr__(name: str) -> Any:
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'producer' has no attribute {name!r}")
