"""The pipeline benchmark's anchor: a Celery app with one no-op task on tierq's broker.

    celery -A bench.noop_app worker -Q bench-noop              Celery's defaults (the anchor)
    celery -A bench.noop_app:tierq_app worker -Q bench-noop    tierq's broker settings (a diagnostic)

Both run tierq's pool (the config's `[worker] threads`) with a tier worker's TIERQ_ variables. `app` keeps Celery's
defaults (early acks, prefetch 4, no events): the plain Celery ceiling. `tierq_app` uses
`tierq.queues.celery_config` (late acks, prefetch 1, task events), to tell what those settings cost
apart from tierq's own work. A task does one Redis INCR, which the benchmark reads to count runs.
"""

from __future__ import annotations

import functools
from typing import Any

import redis
from celery import Celery
from kombu.entity import Exchange, Queue

from tierq.config import Config
from tierq.queues import celery_config
from tierq.settings import get_settings

QUEUE = "bench-noop"
TASK = "bench.noop"
COUNTER = "bench:noop:done"


def make_app(
    broker_url: str, config: Config, counter_url: str | None = None, *, tierq_settings: bool = False
) -> Celery:
    """The app, for the sender (no `counter_url`) or the worker (counting into `counter_url`)."""
    app = Celery("bench-noop")
    # kombu and Celery carry no type hints (pyproject.toml's mypy overrides say the same of the workers).
    queue = Queue(QUEUE, Exchange(QUEUE, type="direct"), routing_key=QUEUE)  # type: ignore[no-untyped-call]
    if tierq_settings:
        conf = celery_config(config, broker_url)
        app.conf.update(conf, task_queues=[*conf["task_queues"], queue])
    else:
        app.conf.update(broker_url=broker_url, task_queues=[queue], task_ignore_result=True,
                        broker_connection_retry_on_startup=True, worker_hijack_root_logger=False)
    app.conf.update(worker_pool="threads", worker_concurrency=config.worker.threads)  # as workers/celery_app.py
    counter = redis.Redis.from_url(counter_url) if counter_url else None

    @app.task(name=TASK)  # type: ignore[untyped-decorator]
    def noop(n: int) -> None:
        if counter is not None:
            counter.incr(COUNTER)

    return app


def __getattr__(name: str) -> Any:
    # `celery -A bench.noop_app[:tierq_app]` asks for the app; it is built on that request, from the
    # worker's environment, so that the benchmark process can import `make_app` without it.
    if name in ("app", "tierq_app"):
        return _worker_app(name == "tierq_app")
    raise AttributeError(name)


@functools.cache
def _worker_app(tierq_settings: bool) -> Celery:
    settings = get_settings()
    return make_app(settings.broker, settings.load_config(), settings.redis_url, tierq_settings=tierq_settings)
