"""The broker side of the message contract: queues and Celery settings (the messages: tierq/contract.py,
sent by tierq/publish.py).

Both sides build their Celery app from `celery_config`, so a producer that never imports the workers
still sends messages the workers read.
"""

from __future__ import annotations

import math
from typing import Any

from kombu.entity import Exchange, Queue

from tierq.config import Config
from tierq.contract import CLASSIFY_QUEUE, CLASSIFY_TASK, FOLLOW_TASK
from tierq.transport import install as install_transport


def task_budget_s(config: Config) -> float:
    """The longest a tier task may take: every model of the slowest tier, each with its retries, once per
    wave of jobs a process's open-call limit lets through (a job may wait for a slot until the jobs claimed
    before it have ended: `threads × tier_chunk` jobs share `open_calls` slots)."""
    longest = 0.0
    for tier in config.tiers:
        per_model = []
        for name in tier.models:
            timeout = tier.timeout_s or config.providers[config.models[name].provider].timeout_s
            per_model.append((timeout + 30.0) * (tier.max_retries + 1))
        longest = max(longest, sum(per_model))
    worker = config.worker
    return longest * math.ceil(worker.threads * worker.tier_chunk / worker.open_calls)


def queue_names(config: Config) -> list[str]:
    """Every queue of `config`: classify, then one per tier (what a worker serving it all takes with -Q)."""
    return [CLASSIFY_QUEUE, *config.tier_names]


def queues(config: Config) -> list[Queue]:
    """The classify queue and one queue per tier, each bound to its own direct exchange.

    A bare `Queue(name)` would be bound to Celery's default exchange with the default routing key, and
    every message would then land in every queue.
    """
    return [Queue(name, Exchange(name, type="direct"), routing_key=name) for name in queue_names(config)]


def visibility_s(config: Config, visibility_timeout_s: float | None = None) -> float:
    """The Redis broker's redelivery delay: TIERQ_VISIBILITY_TIMEOUT_S, else twice the longest task."""
    return visibility_timeout_s or max(600.0, 2 * task_budget_s(config))


def longest_countdown_s(config: Config, visibility_timeout_s: float | None = None) -> float:
    """The longest delay a message may carry. A Redis broker worker holds a delayed message unacknowledged
    until it is due, and hands it out again once the visibility timeout passes, so stay well below it."""
    return max(1.0, min(300.0, visibility_s(config, visibility_timeout_s) / 2))


def celery_config(config: Config, broker_url: str, visibility_timeout_s: float | None = None) -> dict[str, Any]:
    """Celery settings shared by every tierq process."""
    # A message is redelivered only after the visibility timeout (Redis broker). A task that outlives
    # it runs twice; the lease on its jobs (models/lifecycle.py) makes the second run call nothing.
    visibility = visibility_s(config, visibility_timeout_s)
    install_transport()  # kombu's Redis transport with a fix (tierq/transport.py)
    return {
        "broker_url": broker_url,
        "broker_connection_retry_on_startup": True,
        # A broker that refuses a command (a Redis at maxmemory refuses the MULTI of an ack or of a delivery)
        # makes the consumer reconnect, as a lost connection does, instead of stopping the worker
        # ("Unrecoverable error: OutOfMemoryError"): the unacknowledged messages come back after the
        # visibility timeout, and the guarded state changes make their second run harmless.
        "broker_channel_error_retry": True,
        # kombu restores a dead worker's unacknowledged messages only in a sweep, by default about every
        # 100 s; sweeping more often brings them back soon after the visibility timeout.
        "broker_transport_options": {"visibility_timeout": visibility, "unacked_restore_throttle": 1,
                                     "unacked_restore_interval": min(10.0, visibility / 5)},
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "task_ignore_result": True,
        "task_store_errors_even_if_ignored": False,
        "result_backend": None,
        "task_default_queue": CLASSIFY_QUEUE,
        "task_default_exchange": CLASSIFY_QUEUE,
        "task_default_routing_key": CLASSIFY_QUEUE,
        "task_queues": queues(config),
        "task_routes": {CLASSIFY_TASK: {"queue": CLASSIFY_QUEUE}, FOLLOW_TASK: {"queue": CLASSIFY_QUEUE}},
        "worker_prefetch_multiplier": 1,
        # After a reconnect Celery lowers the prefetch count and raises it again from the thread that
        # acknowledges a task, with a basic.qos that reads the consumer's connection while the main thread
        # does: with RabbitMQ the two reads can split a frame, and the worker then spins in py-amqp for good
        # (tests/reliability/test_fault_rabbitmq_reconnect.py). One message per thread needs no such care.
        "worker_enable_prefetch_count_reduction": False,
        "worker_hijack_root_logger": False,
        "task_send_sent_event": True,
        "worker_send_task_events": True,
        "broker_pool_limit": 10,
    }
