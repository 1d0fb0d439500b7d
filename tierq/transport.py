"""kombu's Redis transport, with one fix: a worker must outlive a Redis restart.

When Redis goes away, Celery's consumer catches the connection error and closes the broker connection,
ignoring connection errors while it does. Closing the channel first tries to put its unacknowledged
messages back, which needs a new Redis client; by then the channel's transport may have lost its
connection settings (`transport.client` is None), and kombu raises AttributeError instead of a
connection error. Celery treats that as unrecoverable and the worker exits (seen in the Redis restart
fault test under load: "Unrecoverable error: AttributeError: 'NoneType' object has no attribute
'hostname'"). Raising a connection error there lets the close ignore it, as it means to: the messages
stay recorded as unacknowledged in Redis and come back after the visibility timeout.
"""

from __future__ import annotations

from typing import Any

from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

TRANSPORT = "tierq.transport:RedisTransport"
SCHEMES = ("redis://", "rediss://")


class RedisChannel(kombu_redis.Channel):
    """A Redis channel that reports a connection it no longer has as a connection error."""

    def _connparams(self, asynchronous: bool = False) -> dict[str, Any]:
        if self.connection.client is None:
            raise RedisConnectionError("the broker connection was closed while Redis was away")
        params: dict[str, Any] = super()._connparams(asynchronous=asynchronous)
        return params


class RedisTransport(kombu_redis.Transport):
    """kombu's Redis transport with `RedisChannel`."""

    Channel = RedisChannel


def transport_for(broker_url: str) -> str | None:
    """The transport Celery should use for `broker_url`: ours for Redis, kombu's choice for anything else."""
    return TRANSPORT if broker_url.startswith(SCHEMES) else None
