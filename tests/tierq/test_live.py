"""Live messages: what the reconciler trusts to be on its way. A message whose publisher died after its
transaction committed, before the broker took it, must not count as live for ever."""

from __future__ import annotations

import time
import uuid

import redis
from conftest import Stack

from tierq.live import LiveMessages


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
