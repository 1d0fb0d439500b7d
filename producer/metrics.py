"""`tierq metrics`: a Prometheus endpoint with queue lengths per tier, jobs per state and spend per model.

Flower's own `/metrics` counts tasks and workers but not messages waiting in the broker, nor jobs and
money, which live in Postgres; this endpoint adds those. Every scrape reads them afresh.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable, Iterator, Sequence
from types import FrameType

import redis
from kombu.exceptions import KombuError
from prometheus_client import CollectorRegistry, start_http_server
from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from sqlalchemy import Engine, text
from sqlalchemy.exc import SQLAlchemyError

from models import make_engine
from tierq.broker import queue_lengths
from tierq.contract import CLASSIFY_QUEUE
from tierq.errors import TierqError
from tierq.settings import Settings

log = logging.getLogger(__name__)
JOBS_SQL = "SELECT status, coalesce(tier, ''), count(*) FROM jobs GROUP BY 1, 2"
CALLS_SQL = (
    "SELECT model, outcome, count(*), coalesce(sum(cost_usd), 0), coalesce(sum(saved_usd), 0) "
    "FROM calls GROUP BY 1, 2"
)


class TierqCollector:
    """Reads queue lengths from the broker and job and call totals from Postgres at every scrape."""

    def __init__(self, engine: Engine, broker_url: str, queues: Sequence[str], timeout: float = 3.0) -> None:
        self.engine = engine
        self.broker_url = broker_url
        self.queues = list(queues)
        self.timeout = timeout

    def collect(self) -> Iterator[Metric]:
        """One scrape: every metric family, and `tierq_up` per source so a dead source is visible."""
        up = GaugeMetricFamily("tierq_up", "1 when the source answered this scrape, else 0", labels=["source"])
        yield from self._broker(up)
        yield from self._database(up)
        yield up

    def _broker(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        lengths = GaugeMetricFamily(
            "tierq_queue_length", "Task messages waiting in each queue (a message carries a chunk of jobs)",
            labels=["queue"],
        )
        try:
            found = queue_lengths(self.broker_url, self.queues, self.timeout)
        except (redis.RedisError, KombuError, OSError) as exc:
            log.warning("broker did not answer the scrape: %s", exc)
            up.add_metric(["broker"], 0)
            return
        for queue, length in found.items():
            lengths.add_metric([queue], length)
        up.add_metric(["broker"], 1)
        yield lengths

    def _database(self, up: GaugeMetricFamily) -> Iterator[Metric]:
        jobs = GaugeMetricFamily("tierq_jobs", "Jobs in each state, by current tier", labels=["status", "tier"])
        calls = CounterMetricFamily(
            "tierq_calls", "Model calls (cost rows) by model and outcome", labels=["model", "outcome"]
        )
        spend = CounterMetricFamily("tierq_spend_usd", "USD spent on model calls, per model", labels=["model"])
        saved = CounterMetricFamily(
            "tierq_saved_usd", "USD not spent thanks to cache hits, per model", labels=["model"]
        )
        agreement = GaugeMetricFamily(
            "tierq_quality_agreement", "Share of audited answers that agreed with the reference tier, last 7 days",
            labels=["task_type", "tier", "source"])
        audited = GaugeMetricFamily("tierq_quality_audited", "Answers audited in the last 7 days",
                                    labels=["task_type", "tier", "source"])
        provider = GaugeMetricFamily("tierq_provider_batches_open",
                                     "Provider batches (batch-mode tiers) not ended, and the requests in them",
                                     labels=["tier", "what"])
        try:
            with self.engine.connect() as conn:
                # A scrape must not pile up behind a slow count on a huge table.
                conn.execute(
                    text("SELECT set_config('statement_timeout', :ms, true)"), {"ms": str(int(self.timeout * 1000))}
                )
                job_rows = conn.execute(text(JOBS_SQL)).all()
                call_rows = conn.execute(text(CALLS_SQL)).all()
                label_rows = conn.execute(text(LABELS_SQL)).all()
                provider_rows = conn.execute(text(PROVIDER_BATCHES_SQL)).all()
        except SQLAlchemyError as exc:
            log.warning("database did not answer the scrape: %s", str(exc).splitlines()[0])
            up.add_metric(["postgres"], 0)
            return
        for status, tier, count in job_rows:
            jobs.add_metric([status, tier], count)
        spent: dict[str, float] = {}
        kept: dict[str, float] = {}
        for model, outcome, count, cost, saving in call_rows:
            calls.add_metric([model, outcome], count)
            # Prometheus samples are floats; the exact bill is `tierq report`.
            spent[model] = spent.get(model, 0.0) + float(cost)
            kept[model] = kept.get(model, 0.0) + float(saving)
        for model in sorted(spent):
            spend.add_metric([model], spent[model])
            saved.add_metric([model], kept[model])
        for task, tier, source, count, agreed in label_rows:
            audited.add_metric([task, tier, source], count)
            agreement.add_metric([task, tier, source], agreed / count)
        for tier, batches, requests in provider_rows:
            provider.add_metric([tier, "batches"], batches)
            provider.add_metric([tier, "requests"], requests)
        up.add_metric(["postgres"], 1)
        yield from (jobs, calls, spend, saved, audited, agreement, provider)


PROVIDER_BATCHES_SQL = ("SELECT tier, count(*), coalesce(sum((SELECT count(*) FROM jsonb_object_keys(requests))), 0) "
                        "FROM provider_batches WHERE state <> 'ended' GROUP BY tier")
LABELS_SQL = ("SELECT task_type, candidate_tier, source, count(*), count(*) FILTER (WHERE agree) FROM labels "
              "WHERE created_at >= now() - interval '7 days' GROUP BY 1, 2, 3")


def build_registry(settings: Settings, timeout: float = 3.0) -> CollectorRegistry:
    """A registry holding the tierq collector for the deployment the settings describe."""
    config = settings.load_config()
    registry = CollectorRegistry(auto_describe=False)
    engine = make_engine(settings.database_url, pool_size=1)
    registry.register(TierqCollector(engine, settings.broker, [CLASSIFY_QUEUE, *config.tier_names], timeout))
    return registry


def serve(settings: Settings, host: str, port: int, on_ready: Callable[[str], None] = print) -> None:
    """Serve /metrics on host:port until SIGTERM or Ctrl-C."""
    registry = build_registry(settings)
    try:
        server, thread = start_http_server(port, addr=host, registry=registry)
    except OSError as exc:
        raise TierqError(f"cannot listen on {host}:{port}: {exc.strerror or exc}; choose another --port") from None
    on_ready(f"metrics on http://{host}:{port}/metrics")
    stop = threading.Event()

    def _stop(signum: int, frame: FrameType | None) -> None:
        stop.set()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    stop.wait()
    server.shutdown()
    thread.join(timeout=5)
