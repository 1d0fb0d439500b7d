"""The producer's Celery app: sends messages only, with the same settings as the workers."""

from __future__ import annotations

from celery import Celery

from tierq.config import Config
from tierq.queues import celery_config


def make_sender(config: Config, broker_url: str, visibility_timeout_s: float | None = None) -> Celery:
    """A Celery app that publishes classify messages without importing the workers."""
    app = Celery("tierq-producer")
    app.conf.update(celery_config(config, broker_url, visibility_timeout_s))
    return app
