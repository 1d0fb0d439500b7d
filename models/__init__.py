"""The data layer: typed SQLAlchemy models for batches, jobs and cost rows, the job state machine
(`models.lifecycle`) and the session factory.

Names are imported on first use: a command that only reads a batch needs no SQLAlchemy at all (it reads
through psycopg, `models.query`), and most of the workers' code needs its core, not its ORM.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from models import lifecycle
    from models.base import Base
    from models.batch import Batch
    from models.call import Call
    from models.db import make_engine, make_session_factory
    from models.enums import CallOutcome, JobStatus
    from models.job import Job
    from models.label import Label
    from models.router import RouterVersion

__all__ = [
    "Base",
    "Batch",
    "Call",
    "CallOutcome",
    "Job",
    "JobStatus",
    "Label",
    "RouterVersion",
    "lifecycle",
    "make_engine",
    "make_session_factory",
]
_HOMES = {"Base": "models.base", "Batch": "models.batch", "Call": "models.call", "make_engine": "models.db",
          "make_session_factory": "models.db", "CallOutcome": "models.enums", "JobStatus": "models.enums",
          "Job": "models.job", "Label": "models.label",
          "RouterVersion": "models.router"}


def __getattr__(name: str) -> Any:
    if name == "lifecycle":
        return import_module("models.lifecycle")
    if name in _HOMES:
        return getattr(import_module(_HOMES[name]), name)
    raise AttributeError(f"module 'models' has no attribute {name!r}")
