"""The worker's consumer: Celery's own, without the gossip step.

Gossip lets workers watch each other (worker-lost events, leader election), which tierq does not use:
leases and the reconciler cover dead workers. Its fanout queue is closed and rebuilt on every broker
reconnect, which on a Redis restart logged "Error on restarting Gossip: 'NoneType' object has no
attribute ..." from kombu and once stopped a worker for good. Flower still sees workers and tasks:
heartbeats and task events have steps of their own.
"""

from __future__ import annotations

from celery.worker.consumer import Consumer

GOSSIP = "celery.worker.consumer.gossip:Gossip"


class TierqConsumer(Consumer):  # type: ignore[misc]  # Celery has no type hints
    """Celery's consumer with its blueprint's gossip step left out."""

    class Blueprint(Consumer.Blueprint):  # type: ignore[misc]
        """The default steps but gossip."""

        default_steps = [step for step in Consumer.Blueprint.default_steps if step != GOSSIP]
