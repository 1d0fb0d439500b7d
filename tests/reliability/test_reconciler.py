"""The safety net: jobs no message will ever move are found by the workers' reconciler and published again,
or failed with a reason once they have been published `max_recoveries` times. Each case writes the stuck
job straight into Postgres, as a lost message, a dead worker or a broken follow check would leave it.

These tests use a database of their own, so the session's worker (whose reconciler scans its database
every 30 s) never reaches their jobs first.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import Stack
from fault_support import Deployment, deployment, fault_config
from sqlalchemy import Engine, text
from sqlalchemy.engine import make_url

from migrations import upgrade
from models import make_engine
from models.enums import JobStatus
from producer.views import status_lines
from tierq.live import LiveMessages

FAST = {"stuck_after_s": 1, "reconcile_every_s": 0.5}


@pytest.fixture()
def own_db(stack: Stack) -> Iterator[str]:
    url = make_url(stack.settings.database_url)
    name = f"tierq_reconcile_{uuid.uuid4().hex[:8]}"
    admin = url.set(drivername="postgresql", database="postgres").render_as_string(hide_password=False)
    own = url.set(database=name).render_as_string(hide_password=False)
    upgrade(own)
    yield own
    with psycopg.connect(admin, autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def stuck_job(engine: Engine, status: str, **columns: object) -> int:
    """A job unchanged for an hour, owned by a message no one will deliver."""
    batch = uuid.uuid4()
    values = {"tier": None, "lease_owner": None, "lease_until": None, "follows": None, **columns}
    with engine.begin() as conn:
        conn.execute(text("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                          "VALUES (:id, 't', 'default', '{}', 1, 0, false)"), {"id": batch})
        return int(conn.execute(
            text("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, prompt_chars, "
                 "status, tier, start_tier, handoff, lease_owner, lease_until, follows, attempts, escalations, "
                 "updated_at, finished_at) VALUES (:b, 1, 'j', 't', 'default', CAST(:m AS jsonb), '{}', 10, :status, "
                 ":tier, :tier, :h, :owner, :until, :follows, 0, 0, now() - interval '1 hour', "
                 "CASE WHEN :final THEN now() - interval '1 hour' END) RETURNING id"),
            {"b": batch, "m": json.dumps([{"role": "user", "content": f"where is parcel {batch}?"}]),
             "status": status, "tier": values["tier"], "h": uuid.uuid4(), "owner": values["lease_owner"],
             "until": values["lease_until"], "follows": values["follows"], "final": status in JobStatus.final()},
        ).scalar_one())


def wait_for(engine: Engine, job: int, status: str, timeout: float = 30) -> tuple[str, str | None, int]:
    deadline = time.monotonic() + timeout
    while True:
        with engine.connect() as conn:
            row = conn.execute(text("SELECT status, error, recoveries FROM jobs WHERE id = :j"), {"j": job}).one()
        if row[0] == status:
            return row[0], row[1], row[2]
        assert time.monotonic() < deadline, row
        time.sleep(0.1)


@contextmanager
def run(stack: Stack, tmp_path: Path, own_db: str, **worker: object) -> Iterator[tuple[Deployment, Engine]]:
    """A deployment on its own database whose reconciler looks every half second."""
    broker = stack.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    config = fault_config(tmp_path / "reconcile.toml", worker={**FAST, **worker})
    engine = make_engine(own_db)
    try:
        with deployment(stack, tmp_path, config, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker,
                        TIERQ_DATABASE_URL=own_db) as dep:
            yield dep, engine
    finally:
        engine.dispose()


@pytest.mark.slow
def test_lost_messages_and_dead_workers_are_recovered(clean: Stack, tmp_path: Path, own_db: str) -> None:
    with run(clean, tmp_path, own_db) as (dep, engine):
        never_sent = stuck_job(engine, "pending")
        lost_on_its_tier = stuck_job(engine, "queued", tier="hot")
        dead_worker = stuck_job(engine, "running", tier="hot", lease_owner=uuid.uuid4(),
                                lease_until=time.strftime("%Y-%m-%d %H:%M:%S+00", time.gmtime(time.time() - 600)))
        leader = stuck_job(engine, "failed")
        follower = stuck_job(engine, "waiting", follows=leader)
        # Published (so live) an hour ago, then lost by the broker: taken from its queue by a worker that died
        # before the broker recorded it as unacknowledged.
        taken_and_lost = stuck_job(engine, "queued", tier="warm")
        with engine.connect() as conn:
            handoff = conn.execute(text("SELECT handoff FROM jobs WHERE id = :j"), {"j": taken_and_lost}).scalar_one()
        live = LiveMessages(redis.Redis.from_url(dep.env["TIERQ_REDIS_URL"]))
        live.add([(handoff, -3600.0)])
        live.sent([handoff])
        assert live.live([handoff]) == {handoff}
        dep.start("classify,hot,warm,cold", "all")
        for job in (never_sent, lost_on_its_tier, dead_worker, taken_and_lost):
            assert wait_for(engine, job, "succeeded")[2] == 1  # published again once
        assert wait_for(engine, follower, "succeeded")[0] == "succeeded"
        log = dep.log("all").read_text(errors="replace")
    assert "reconciler: " in log and "stuck jobs published again" in log


@pytest.mark.slow
def test_a_job_whose_message_is_lost_too_often_fails_with_its_reason(clean: Stack, tmp_path: Path, own_db: str) -> None:
    with run(clean, tmp_path, own_db, max_recoveries=0) as (dep, engine):
        job = stuck_job(engine, "queued", tier="hot")
        # Answered at hot (a paid call) and queued at the reference tier to be audited, then lost as well.
        audited = stuck_job(engine, "queued", tier="cold")
        with engine.begin() as conn:
            conn.execute(text("UPDATE jobs SET candidate = 'In transit.', candidate_model = 'sim-nano', "
                              "candidate_tier = 'hot', candidate_source = 'answer', audited = true, attempts = 1 "
                              "WHERE id = :j"), {"j": audited})
        dep.start("classify,hot,warm,cold", "all")
        status, error, _ = wait_for(engine, job, "failed")
        wait_for(engine, audited, "succeeded")  # the audit is lost, not the answer
        with engine.connect() as conn:
            kept = conn.execute(text("SELECT content, model, tier, candidate, error FROM jobs WHERE id = :j"),
                                {"j": audited}).one()
            calls = conn.execute(text("SELECT count(*) FROM calls")).scalar_one()
    assert error is not None and error.startswith("stuck: its message was lost or its task failed 1 times")
    assert tuple(kept) == ("In transit.", "sim-nano", "hot", None, None) and calls == 0


@pytest.mark.slow
def test_status_and_report_show_stuck_jobs_until_they_move(clean: Stack, tmp_path: Path, own_db: str) -> None:
    with run(clean, tmp_path, own_db) as (dep, engine), dep.client(database_url=own_db) as tq:
        job = stuck_job(engine, "pending")
        with engine.connect() as conn:
            batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": job}).scalar_one()
        status = tq.status(batch)
        assert status.stuck == 1 and status.as_dict()["stuck"] == 1
        assert any(line.startswith("  stuck: 1 jobs have no live message") for line in status_lines(status))
        assert tq.report(batch).as_dict()["totals"]["stuck_jobs"] == 1
        dep.start("classify,hot,warm,cold", "all")
        wait_for(engine, job, "succeeded")
        assert tq.status(batch).stuck == 0 and tq.report(batch).stuck == 0
