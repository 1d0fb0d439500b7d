"""The Celery app: `celery -A workers worker -Q classify,hot,warm,cold` and `celery -A workers flower`."""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from tierq.queues import celery_config
from tierq.settings import get_settings


def create_app() -> Celery:
    """Build the app from the settings and the TOML file; a bad configuration stops start-up here."""
    settings = get_settings()
    config = settings.load_config()
    app = Celery("tierq")
    app.conf.update(celery_config(config, settings.broker, settings.visibility_timeout_s))
    app.conf.update(
        # Model calls run on one asyncio loop per process; pool threads only wait on it and write to
        # Postgres, so a few threads keep hundreds of calls in flight. 16 rather than 8: a thread waits
        # for the slowest call of its chunk, so with uneven latencies 8 left slots idle (docs/benchmarks.md).
        worker_pool="threads",
        worker_concurrency=16,
    )
    return app


app = create_app()


@signals.worker_init.connect
def _check_keys(**_: Any) -> None:
    # Fail at start-up, not at the first task, when a provider's API key variable is missing.
    from workers.context import get_context

    get_context(app)


import workers.tasks  # noqa: E402, F401  (registers the tasks on `app`)
