"""Publishing task messages: only after the transaction that assigned their jobs has committed.

Both sides publish through a `Publisher`, which also records each message as live (tierq/live.py) so
the reconciler can tell a job whose message was lost from one whose message waits in a queue.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError
from redis.exceptions import RedisError

from tierq.contract import Message
from tierq.live import LiveMessages

log = logging.getLogger(__name__)
# What a publish meets when the broker (or the Redis of the live-message records) is away.
BROKER_DOWN = (BrokerError, OSError, RedisError)


class Publisher:
    """Sends `Message`s with one broker connection per call.

    A message the broker could not take is kept (in this process, up to MAX_UNSENT) and sent again first
    by the next `publish` or by `resend`, which the worker's reconciler thread calls on every pass: after
    a broker outage the jobs move on within seconds of its return, not after `stuck_after_s`. Sending a
    message twice is harmless (its jobs' handoff makes the second delivery a no-op), and a process that
    dies with messages kept leaves them to the reconciler of another.
    """

    MAX_UNSENT = 100_000

    def __init__(self, app: Celery, live: LiveMessages | None = None) -> None:
        self.app, self.live = app, live
        self._unsent: list[Message] = []
        self._lock = threading.Lock()

    @property
    def unsent(self) -> int:
        """Messages kept after a broker error, not sent yet."""
        with self._lock:
            return len(self._unsent)

    def resend(self) -> int:
        """Send the messages kept after a broker error; how many were sent (raises while it is still down)."""
        with self._lock:
            waiting = len(self._unsent)
        if waiting:
            self.publish(())
        return waiting

    def publish(self, messages: Sequence[Message]) -> None:
        """Send every message (those kept from an earlier broker error first); on a broker error the ones
        not sent are kept for the next try, and the error is raised."""
        with self._lock:
            pending, self._unsent = [*self._unsent, *messages], []
        if not pending:
            return
        sent = 0
        try:
            if self.live is not None:
                self.live.add((m.id, m.countdown) for m in pending)
            with self.app.producer_or_acquire() as producer:
                for message in pending:
                    self.app.send_task(message.task, args=list(message.args), kwargs=message.kwargs,
                                       task_id=str(message.id), queue=message.queue, countdown=message.countdown,
                                       producer=producer)
                    sent += 1
        except BROKER_DOWN:
            self._keep(pending[sent:])
            if self.live is not None:
                self.live.sent(m.id for m in pending[:sent])
                self.live.finish(m.id for m in pending[sent:])
            raise
        if self.live is not None:
            self.live.sent(m.id for m in pending)

    def _keep(self, messages: Sequence[Message]) -> None:
        with self._lock:
            merged = [*messages, *self._unsent]
            self._unsent = merged[: self.MAX_UNSENT]
        if len(merged) > self.MAX_UNSENT:
            log.warning("publisher: %d unsent messages dropped past %d kept; the reconciler publishes their jobs "
                        "again after stuck_after_s", len(merged) - self.MAX_UNSENT, self.MAX_UNSENT)
