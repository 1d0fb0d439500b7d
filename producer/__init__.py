"""What a user runs or imports to submit batches and read their progress, results and bill."""

from producer.api import Tierq
from producer.inputs import ReadOptions
from producer.submit import BatchOptions, SubmitResult

__all__ = ["BatchOptions", "ReadOptions", "SubmitResult", "Tierq"]
