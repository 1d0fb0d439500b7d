"""The data layer: typed SQLAlchemy models for batches, jobs and cost rows, and the session factory."""

from models.base import Base
from models.batch import Batch
from models.call import Call
from models.db import make_engine, make_session_factory
from models.enums import CallOutcome, JobStatus
from models.job import Job

__all__ = [
    "Base",
    "Batch",
    "Call",
    "CallOutcome",
    "Job",
    "JobStatus",
    "make_engine",
    "make_session_factory",
]
