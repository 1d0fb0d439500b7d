"""Live messages: what the reconciler trusts to be on its way. A message whose publisher died after its
transaction committed, before the broker took it, must not count as live for ever; nor may one the broker
lost after a worker took it from its queue."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest
import redis
from celery import Celery
from conftest import Stack
from reliability.fault_services import RedisServer

from tierq.broker import UNKNOWN
from tierq.contract import Message
from tierq.live import LiveMessages
from tierq.publish import BROKER_DOWN, Publisher


def test_a_message_whose_publisher_died_mid_send_stops_counting_as_live(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.dbs.url(4))
    client.flushdb()
    live = LiveMessages(client, prefix="t", send_grace_s=0.3)
    delivered, half_sent, finished = uuid.uuid4(), uuid.uuid4(), uuid.uuid4()
    live.add((m, None) for m in (delivered, half_sent, finished))
    live.sent([delivered, finished])  # `half_sent`: the process died before the broker took it
    live.finish([finished])
    assert live.live([delivered, half_sent, finished]) == {delivered, half_sent}  # within the grace
    time.sleep(0.4)
    assert live.live([delivered, half_sent, finished]) == {delivered}
    assert live.prune() == 1 and live.count() == 1 and client.zcard("t:sending") == 0
    assert live.live([delivered, half_sent]) == {delivered}
    client.flushdb()
    client.close()


def test_a_live_message_is_overdue_once_its_queue_is_empty_or_later_messages_started(stack: Stack) -> None:
    client = redis.Redis.from_url(stack.dbs.url(4))
    client.flushdb()
    live = LiveMessages(client, prefix="t")
    lost, waiting, held, fresh, later = (uuid.uuid4() for _ in range(5))
    live.add([(lost, None), (waiting, None), (held, 300.0), (fresh, None), (later, None)])
    hour_ago = time.time() - 3600
    client.zadd("t:live", {str(lost): hour_ago, str(waiting): hour_ago, str(later): hour_ago + 100})
    asked: list[list[str]] = []

    def lengths(depth: dict[str, int]) -> Callable[[Sequence[str]], dict[str, int]]:
        def answer(queues: Sequence[str]) -> dict[str, int]:
            asked.append(list(queues))
            return {q: depth.get(q, 0) for q in queues}
        return answer

    messages = [(lost, "hot"), (waiting, "warm"), (held, "hot"), (fresh, "hot")]
    # Due an hour ago on a queue that still has messages, nothing later started: it may be waiting there.
    assert live.overdue(messages, 60, lengths({"hot": 5, "warm": 5})) == set()
    # An empty queue holds none of them: the late ones are overdue, the held and the fresh ones are not.
    assert live.overdue(messages, 60, lengths({"warm": 5})) == {lost}
    assert asked[-1] == ["hot", "warm"]
    # A message of "warm" due 100 s after `waiting` started: not past 60 s of margin... then past it.
    live.started("warm", later)
    assert live.overdue(messages, 120, lengths({"hot": 5, "warm": 5})) == set()
    assert live.overdue(messages, 60, lengths({"hot": 5, "warm": 5})) == {waiting}
    assert asked[-1] == ["hot"]  # "warm" needed no question
    live.started("warm", fresh)  # a later message raises the mark; an unknown one changes nothing
    live.started("warm", uuid.uuid4())
    live.started("warm", later)  # nor does an earlier one
    assert float(client.hget("t:started", "warm") or 0) > time.time() - 5
    # A broker that does not answer is not taken for an empty queue.
    assert live.overdue(messages, 60, lengths({"hot": UNKNOWN})) == {waiting}
    assert live.overdue(messages, 60, None) == {waiting}
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
