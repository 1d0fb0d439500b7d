"""Publishing task messages: only after the transaction that assigned their jobs has committed.

Both sides publish through a `Publisher`, which also records each message as live (tierq/live.py) so
the reconciler can tell a job whose message was lost from one whose message waits in a queue.
"""

from __future__ import annotations

from collections.abc import Sequence

from celery import Celery
from kombu.exceptions import OperationalError as BrokerError

from tierq.contract import Message
from tierq.live import LiveMessages


class Publisher:
    """Sends `Message`s with one broker connection per call."""

    def __init__(self, app: Celery, live: LiveMessages | None = None) -> None:
        self.app, self.live = app, live

    def publish(self, messages: Sequence[Message]) -> None:
        """Send every message; on a broker error the ones not sent are no longer counted as live."""
        if not messages:
            return
        if self.live is not None:
            self.live.add(m.id for m in messages)
        sent = 0
        try:
            with self.app.producer_or_acquire() as producer:
                for message in messages:
                    self.app.send_task(message.task, args=list(message.args), kwargs=message.kwargs,
                                       task_id=str(message.id), queue=message.queue, countdown=message.countdown,
                                       producer=producer)
                    sent += 1
        except (BrokerError, OSError):
            if self.live is not None:
                self.live.sent(m.id for m in messages[:sent])
                self.live.finish(m.id for m in messages[sent:])
            raise
        if self.live is not None:
            self.live.sent(m.id for m in messages)
