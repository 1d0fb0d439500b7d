"""The broker transport: a Redis restart must never turn into a worker that exits.

Seen under load in the Redis restart fault test: Celery closed its broker connection after Redis went
away, the channel's transport had already lost its settings, and kombu raised AttributeError, which Celery
treats as unrecoverable. These tests put a channel in that state on a real (throwaway) Redis.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, cast

import pytest
import redis
from kombu import Connection, Exchange, Queue
from reliability.fault_services import RedisServer

from tierq.transport import RedisTransport, install


def _channel_holding_a_message(url: str, transport: str | None) -> tuple[Any, Any]:
    """A connection and channel that took one message from a queue and has not acknowledged it."""
    conn = cast(Any, Connection)(url, transport=transport)
    assert (type(conn.transport) is RedisTransport) == (transport is None)
    channel = conn.channel()
    queue = Queue("held", Exchange("held", type="direct"), routing_key="held", channel=channel)
    queue.declare()
    conn.Producer(channel).publish({"n": 1}, exchange=queue.exchange, routing_key="held")
    assert queue.get(no_ack=False) is not None
    return conn, channel


@pytest.mark.parametrize("ours", [True, False], ids=["tierq", "kombu"])
def test_closing_a_channel_after_redis_went_away_raises_only_a_connection_error(tmp_path: Path, ours: bool) -> None:
    server = RedisServer(tmp_path)
    server.start()
    install()
    conn, channel = _channel_holding_a_message(server.url, None if ours else "kombu.transport.redis:Transport")
    try:
        server.stop()
        conn.transport.client = None  # the state the crash left behind
        if ours:
            conn.maybe_close_channel(channel)  # ignores connection errors, as Celery's close means to
        else:
            with pytest.raises(AttributeError):  # kombu's own transport: the worker would exit
                conn.maybe_close_channel(channel)
        server.start()
        # The message is still recorded as unacknowledged, so the broker hands it out again later.
        assert redis.Redis.from_url(server.url).hlen("unacked") == 1
    finally:
        server.stop()


def test_redis_urls_get_the_fixed_transport_and_keep_their_scheme() -> None:
    install()
    for url in ("redis://127.0.0.1:6379/0", "rediss://example:6380/0"):
        conn = cast(Any, Connection)(url)
        assert conn.transport_cls == url.split(":")[0] and conn.as_uri().startswith(url.split("/")[0])
        assert type(conn.transport) is RedisTransport
    assert "amqp" in type(cast(Any, Connection)("amqp://guest@127.0.0.1:5672//").transport).__module__
