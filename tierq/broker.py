"""How many task messages wait in each queue of the broker, for Redis and RabbitMQ alike.

`tierq metrics` and `tierq doctor` show it; the workers' reconciler asks it before it treats a live
message as lost (tierq/live.py).
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any, cast

import redis
from kombu.connection import Connection
from kombu.exceptions import KombuError
from kombu.transport.redis import PRIORITY_STEPS, Channel

log = logging.getLogger(__name__)
REDIS_SCHEMES = ("redis://", "rediss://", "unix://")


def _redis_keys(queue: str) -> list[str]:
    # kombu keeps one Redis list per priority step; a message without a priority sits in the plain name.
    return [f"{queue}{Channel.sep}{step}" if step else queue for step in PRIORITY_STEPS]


def queue_lengths(broker_url: str, queues: Sequence[str], timeout: float = 3.0) -> dict[str, int]:
    """Messages waiting in each queue (each message is a chunk of jobs); unknown queues count as empty."""
    if broker_url.startswith(REDIS_SCHEMES):
        client = redis.Redis.from_url(broker_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        try:
            with client.pipeline(transaction=False) as pipe:
                for queue in queues:
                    for key in _redis_keys(queue):
                        pipe.llen(key)
                sizes = [int(size) for size in pipe.execute()]
        finally:
            client.close()
        steps = len(PRIORITY_STEPS)
        return {queue: sum(sizes[i * steps : (i + 1) * steps]) for i, queue in enumerate(queues)}
    return _declared_lengths(broker_url, queues, timeout)


def _declared_lengths(broker_url: str, queues: Sequence[str], timeout: float) -> dict[str, int]:
    lengths: dict[str, int] = {}
    with cast(Any, Connection)(broker_url, connect_timeout=timeout) as conn:  # kombu has no type hints
        for queue in queues:
            # A passive declare of a missing queue closes its channel, so each queue gets its own.
            channel = conn.channel()
            try:
                lengths[queue] = int(channel.queue_declare(queue=queue, passive=True).message_count)
            except conn.channel_errors:
                lengths[queue] = 0
            finally:
                channel.close()
    return lengths


UNKNOWN = -1  # a queue's length when the broker did not answer


def lengths_or_unknown(broker_url: str, queues: Sequence[str], timeout: float = 3.0) -> dict[str, int]:
    """`queue_lengths`, or UNKNOWN for every queue while the broker does not answer (never taken for empty)."""
    try:
        return queue_lengths(broker_url, queues, timeout)
    except (KombuError, OSError, redis.RedisError) as exc:
        log.warning("broker did not say how many messages wait in %s: %s", ", ".join(queues), type(exc).__name__)
        return dict.fromkeys(queues, UNKNOWN)



def refusal(exc: BaseException) -> tuple[str, str] | None:
    """(what a broker's refusal of a connection says, how to fix it) when `exc` is one (AMQP: a login or
    virtual host it does not accept); None for anything else. Such a refusal does not pass with time, unlike
    a broker that is down or restarting."""
    import amqp.exceptions

    if not isinstance(exc, amqp.exceptions.AMQPError):
        return None
    said = str(getattr(exc, "reply_text", "") or exc).strip() or type(exc).__name__
    if isinstance(exc, amqp.exceptions.AccessRefused):
        return f"refused the login ({said})", "put the right user and password in TIERQ_BROKER_URL"
    if isinstance(exc, amqp.exceptions.NotAllowed):
        return (f"refused the connection ({said})",
                "name a virtual host the broker has (the URL's path) in TIERQ_BROKER_URL")
    return None  # a channel's error (a queue declared otherwise, ...) is not about the URL


def check_login(broker_url: str, timeout: float = 5.0) -> tuple[str, str] | None:
    """Connect once to a broker that is not Redis: its refusal of the login (`refusal`), or None when it
    accepted it or could not be reached (a broker that is down is waited for, not refused)."""
    import amqp.exceptions

    if broker_url.startswith(REDIS_SCHEMES):
        return None
    conn: Any = cast(Any, Connection)(broker_url, connect_timeout=timeout)
    try:
        conn.ensure_connection(max_retries=0, timeout=timeout)
    except (KombuError, OSError, amqp.exceptions.AMQPError, *conn.connection_errors) as exc:
        return refusal(exc)
    finally:
        conn.release()
    return None
