"""Celery's thread pool, told what to do on a cold shutdown.

A second Ctrl-C (or SIGQUIT) asks Celery to terminate the running tasks, which a thread pool cannot do:
Celery's own raises NotImplementedError for each task, with a traceback. Here the running tasks are left
to finish while the worker stops: their model calls are already paid for, and a task whose process ends
first is redelivered and finds its jobs by their leases (models/lifecycle.py), so nothing is paid twice.
"""

from __future__ import annotations

import logging
from typing import Any

from celery.concurrency.thread import TaskPool

log = logging.getLogger(__name__)


class ThreadPool(TaskPool):  # type: ignore[misc]  # Celery has no type hints
    """The thread pool, whose `terminate_job` leaves a running task to finish (a thread cannot be killed)."""

    _told = False

    def terminate_job(self, pid: Any, signal: Any = None) -> None:
        """Say once that running tasks are not killed, instead of raising for each."""
        if not self._told:
            self._told = True
            log.warning("cold shutdown: running tasks cannot be killed in a thread pool; the worker stops when "
                        "they end (their jobs are safe: a task cut off is redelivered and finds them by their leases)")
