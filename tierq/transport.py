"""kombu's Redis transport, with one fix: a worker must outlive a Redis restart.

When Redis goes away, Celery's consumer catches the connection error and closes the broker connection,
ignoring connection errors while it does. Closing the channel first tries to put its unacknowledged
messages back, which needs a new Redis client; by then the channel's transport may have lost its
connection settings (`transport.client` is None), and kombu raises AttributeError instead of a
connection error. Celery treats that as unrecoverable and the worker exits (seen in the Redis restart
fault test under load: "Unrecoverable error: AttributeError: 'NoneType' object has no attribute
'hostname'"). Raising a connection error there lets the close ignore it, as it means to: the messages
stay recorded as unacknowledged in Redis and come back after the visibility timeout.

`install` (called by `tierq.queues.celery_config`, so by every tierq process before it connects) makes
this transport the one behind the `redis` and `rediss` schemes.
"""

from __future__ import annotations

from typing import Any

from kombu import transport as kombu_transports
from kombu.transport import redis as kombu_redis
from redis.exceptions import ConnectionError as RedisConnectionError

TRANSPORT = "tierq.transport:RedisTransport"
SCHEMES = ("redis", "rediss")


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


def install() -> None:
    """Make `redis://` and `rediss://` broker URLs use `RedisTransport` in this process. Through kombu's table
    of transport names, so URLs stay as they are (Flower reads the scheme to show the queues)."""
    for scheme in SCHEMES:
        if kombu_transports.TRANSPORT_ALIASES.get(scheme) != TRANSPORT:
            kombu_transports.TRANSPORT_ALIASES[scheme] = TRANSPORT
            kombu_transports._transport_cache.pop(scheme, None)  # resolved again on next use
