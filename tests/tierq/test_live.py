"""Live messages: what the reconciler trusts to be on its way. A message whose publisher died after its
transaction committed, before the broker took it, must not count as live for ever."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from celery import Celery
from conftest import Stack
from reliability.fault_services import RedisServer

from tierq.contract import Message
from tierq.live import LiveMessages
from tierq.publish import BROKER_DOWN, Publisher


def test_a_message_whose_publisher_died_mid_send_stops_counting_as_live(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.dbs.url(4))
    client.flushdb()
    live = LiveMessages(client, prefix="t", send_grace_s=0.3)
    delivered, half_sent, finished = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    live.add([delivered, half_sent, finished])
    live.sent([delivered, finished])  # `half_sent`: the process died before the broker took it
    live.finish([finished])
    assert live.live([delivered, half_sent, finished]) == {delivered, half_sent}  # within the grace
    time.sleep(0.4)
    assert live.live([delivered, half_sent, finished]) == {delivered}
    assert live.prune() == 1 and live.count() == 1 and client.zcard("t:sending") == 0
    assert live.live([delivered, half_sent]) == {delivered}
    client.flushdb()
    client.close()


def test_a_message_the_broker_refused_is_sent_once_it_is_back(tmp_path: Path) -> None:
    server = RedisServer(tmp_path)
    server.start()
    app = Celery("publish-test", broker=server.url)
    client = redis.Redis.from_url(server.url)
    publisher = Publisher(app, LiveMessages(client, prefix="t"))
    first, second = (Message("tierq.tier", "hot", ("hot", [n])) for n in (1, 2))
    try:
        publisher.publish([first])
        server.stop()
        with pytest.raises(BROKER_DOWN):
            publisher.publish([second])
        assert publisher.unsent == 1
        with pytest.raises(BROKER_DOWN):
            publisher.resend()  # still down: kept again
        assert publisher.unsent == 1
        server.start()
        assert publisher.resend() == 1 and publisher.unsent == 0
        assert client.llen("hot") == 2  # both on the queue (the AOF kept the first through the restart)
        assert LiveMessages(client, prefix="t").live([first.id, second.id]) == {first.id, second.id}
    finally:
        app.close()
        client.close()
        server.stop()
