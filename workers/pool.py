"""Celery's thread pool, told what to do when asked to kill a running task.

A second Ctrl-C (or SIGQUIT), or a revoke with terminate (Flower's "terminate"), asks Celery to kill
running tasks, which a thread pool cannot do: Celery's own raises NotImplementedError for each, with a
traceback. Here a running task is left to finish, and a worker stopping cold stops after it. Its model
calls are paid for either way, and a task whose process ends first is redelivered and finds its jobs by
their leases (models/lifecycle.py), so nothing is paid twice.
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
            log.warning("a running task cannot be killed in a thread pool: it runs to its end (a worker stopping "
                        "cold waits for it; a task revoked with terminate is only marked). Said once per process")
