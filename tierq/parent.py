"""A worker started for a run (the tests, `tierq demo`, the benchmarks) stops once the process that started it
is gone.

Such workers lead process groups of their own (so that a terminal's Ctrl-C reaches the run first, and the run
stops them in order), so nothing stops them when the run itself is killed (SIGKILL, a CI timeout, a closed pipe).
Left running, they go on taking messages from the run's Redis database, which the next run on the machine may
claim: its jobs then end in processes with another configuration, database and simulator. A run sets
`TIERQ_STOP_WITH_PID` to its own process id in the worker's environment; the worker then checks once a second
that this process is still its parent, and shuts down warmly (SIGTERM to itself) once it is not. A deployment's
workers do not have the variable and are not watched.
"""

from __future__ import annotations

import logging
import os
import signal
import threading
import time

ENV = "TIERQ_STOP_WITH_PID"
POLL_S = 1.0

log = logging.getLogger(__name__)


def started_by_me() -> dict[str, str]:
    """The environment entry that makes a worker this process starts stop once this process is gone."""
    return {ENV: str(os.getpid())}


def follow(poll_s: float = POLL_S) -> threading.Thread | None:
    """When `TIERQ_STOP_WITH_PID` names this process's parent, a thread that sends this process SIGTERM once that
    parent is gone (at once if it is gone already); None when the variable is not set."""
    value = os.environ.get(ENV, "").strip()
    if not value:
        return None
    if not value.isdigit():
        log.warning("%s=%r is not a process id; this worker does not stop with the process that started it",
                    ENV, value)
        return None
    parent = int(value)

    def watch() -> None:
        while os.getppid() == parent:
            time.sleep(poll_s)
        log.warning("the process that started this worker (pid %d) is gone; shutting down", parent)
        os.kill(os.getpid(), signal.SIGTERM)

    thread = threading.Thread(target=watch, name="tierq-parent", daemon=True)
    thread.start()
    return thread
