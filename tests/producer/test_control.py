"""Cancelling a batch and retrying its failed jobs, with a real worker and the simulator."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
import redis
from conftest import Stack, insert_job
from reliability.fault_support import deployment, wait_until
from sqlalchemy import text

from models import JobStatus
from producer.submit import BatchOptions
from tierq.errors import InputError, NotFound


def distinct(count: int) -> list[dict[str, str]]:
    """Tickets that share no text, so the cache can neither answer nor coalesce them."""
    return [{"id": f"t{n}", "prompt": f"{uuid.uuid4().hex} {uuid.uuid4().hex} order {n}"} for n in range(count)]


def test_cancel_stops_new_calls_and_keeps_what_finished(clean: Stack) -> None:
    clean.simulate({"latency_ms": 1500})
    with clean.client() as tq:
        batch = tq.submit(distinct(600), BatchOptions(force_tier="hot"))
        deadline = time.monotonic() + 20
        while tq.status(batch.batch_id).count(JobStatus.RUNNING) == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        cancelled = tq.cancel(batch.batch_id)
        status = clean.wait(tq, batch.batch_id, timeout=60)
        again = tq.cancel(batch.batch_id)
        results = list(tq.results(batch.batch_id))
    assert cancelled.cancelled > 0 and cancelled.running > 0 and cancelled.cancelled + cancelled.running <= 600
    assert again.cancelled == 0 and again.already and not cancelled.already
    assert status.cancelled and status.count_final() == 600
    assert status.by_status.get("cancelled") == cancelled.cancelled
    with clean.engine.connect() as conn:
        calls_of_cancelled = conn.execute(text(
            "SELECT count(*) FROM calls c JOIN jobs j ON j.id = c.job_id WHERE j.status = 'cancelled'")).scalar_one()
        succeeded = conn.execute(text("SELECT count(*) FROM jobs WHERE status = 'succeeded'")).scalar_one()
        calls = conn.execute(text("SELECT count(*) FROM calls")).scalar_one()
    assert calls_of_cancelled == 0
    assert calls == succeeded == 600 - cancelled.cancelled
    assert len(results) == 600
    assert {r["status"] for r in results} <= {"succeeded", "cancelled"}


def test_retry_failed_routes_the_failed_jobs_again(clean: Stack) -> None:
    clean.simulate({"latency_ms": 0, "refusal_rate": 1.0})
    with clean.client() as tq:
        batch = tq.submit(distinct(5), BatchOptions(use_cache=False))
        first = clean.wait(tq, batch.batch_id)
        assert first.count_final() == 5 and first.by_status == {"failed": 5}
        with clean.engine.begin() as conn:  # one failed holding an answer under audit, as before 2026-12-01
            conn.execute(text("UPDATE jobs SET candidate = 'In transit.', candidate_model = 'sim-nano', "
                              "candidate_tier = 'hot', candidate_source = 'answer' WHERE id = (SELECT min(id) "
                              "FROM jobs)"))
        clean.simulate({"latency_ms": 0})
        assert tq.retry_failed(batch.batch_id) == 5
        second = clean.wait(tq, batch.batch_id)
        results = {r["id"]: r for r in tq.results(batch.batch_id)}
        assert tq.retry_failed(batch.batch_id) == 0
    assert second.by_status == {"succeeded": 5}
    for result in results.values():
        assert result["error"] is None and result["content"]
        assert [a["outcome"] for a in result["attempts"]] == ["refusal", "refusal", "refusal", "ok"]
        assert result["tier"] == "hot"
    with clean.engine.connect() as conn:
        paths = set(conn.execute(text("SELECT start_tier, tier, escalations FROM jobs")).all())
        audits = conn.execute(text("SELECT count(*) FROM jobs WHERE candidate_source IS NOT NULL")).scalar_one()
        labels = conn.execute(text("SELECT count(*) FROM labels")).scalar_one()
    assert paths == {("hot", "hot", 2)}
    assert (audits, labels) == (0, 0)  # routed afresh, not run as an audit against an old answer


def test_retry_of_a_cancelled_or_unknown_batch_says_why_not(clean: Stack) -> None:
    clean.simulate({"latency_ms": 3000})  # still running when it is cancelled
    with clean.client() as tq:
        batch = tq.submit(distinct(1))
        assert not tq.cancel(batch.batch_id).finished
        with pytest.raises(InputError, match="is cancelled, so its jobs do not run again"):
            tq.retry_failed(batch.batch_id)
        with pytest.raises(NotFound, match="no batch"):
            tq.cancel(uuid.uuid4())


def test_retry_of_a_cancelled_batch_says_what_its_jobs_are_and_how_to_run_them(clean: Stack) -> None:
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.connect() as conn:
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": job}).scalar_one()
    with clean.client() as tq:
        assert tq.cancel(batch).cancelled == 1
        with pytest.raises(InputError) as refused:
            tq.retry_failed(batch)
    # Its job is cancelled, not failed, and `results` has no prompt to submit: the records come from the input.
    assert str(refused.value) == (f"batch {batch} is cancelled, so its jobs do not run again (1 cancelled); to run "
                                  "them, submit their records from your input file as a new batch (`tierq results "
                                  f"{batch}` gives each job's id and status)")


def test_retry_of_a_batch_that_keeps_no_texts_says_its_failed_jobs_cannot_run_again(clean: Stack) -> None:
    clean.simulate({"latency_ms": 0, "refusal_rate": 1.0})
    with clean.client() as tq:
        batch = tq.submit(distinct(2), BatchOptions(use_cache=False, store_text=False))
        assert clean.wait(tq, batch.batch_id).by_status == {"failed": 2}
        with pytest.raises(InputError, match="--no-store-text, so each job's prompt left Redis when the job ended"):
            tq.retry_failed(batch.batch_id)
        assert tq.status(batch.batch_id).by_status == {"failed": 2}  # nothing was re-queued


@pytest.mark.slow
def test_cancelling_a_batch_hands_its_questions_to_the_batch_that_waited_on_it(clean: Stack, tmp_path: Path) -> None:
    # Batch Y asks what batch X asks; Y's jobs wait on X's leaders. Cancelling X must not strand them: the
    # followers of X's cancelled leaders go back to routing (committed before their message is sent).
    # A deployment of its own whose only worker routes: X's leaders stay queued at warm until the cancel,
    # whatever the machine's speed; the worker that answers starts after it.
    broker = clean.dbs.url(2)
    redis.Redis.from_url(broker).flushdb()
    records = distinct(300)
    with deployment(clean, tmp_path, TIERQ_BROKER_URL=broker, TIERQ_REDIS_URL=broker) as run, run.client() as tq:
        run.start("classify", "router")
        x = tq.submit(records, BatchOptions(force_tier="warm"))
        wait_until(lambda: tq.status(x.batch_id).count(JobStatus.QUEUED) == 300, 60,
                   lambda: tq.status(x.batch_id).by_status)
        y = tq.submit(records, BatchOptions(force_tier="warm"))
        wait_until(lambda: tq.status(y.batch_id).count(JobStatus.WAITING) == 300, 60,
                   lambda: tq.status(y.batch_id).by_status)
        cancelled = tq.cancel(x.batch_id)
        run.start("warm", "answers")
        status = clean.wait(tq, y.batch_id, timeout=120)
    assert cancelled.cancelled == 300
    assert status.by_status == {"succeeded": 300}
    with clean.engine.connect() as conn:
        paid = conn.execute(text("SELECT count(*) FROM calls WHERE outcome = 'ok'")).scalar_one()
    assert paid == 300  # each question was paid for once, by one of Y's jobs


def test_the_clock_of_a_batch_with_nothing_to_run_stands_still(clean: Stack) -> None:
    with clean.client() as tq:
        empty = tq.submit([{"id": "blank", "prompt": ""}])
        assert empty.accepted == 0 and empty.rejected == 1
        first = tq.status(empty.batch_id)
        time.sleep(1.1)  # long enough for a clock read from now() to move past a second
        second = tq.status(empty.batch_id)
    assert first.done and second.done
    assert first.elapsed_s == second.elapsed_s == 0.0


def test_a_cancel_that_meets_a_classify_step_in_a_deadlock_is_run_again(clean: Stack) -> None:
    # Found by a CI run beside another: a classify step updates a job twice in one transaction, and the
    # second update's foreign-key check takes the batch row that a cancel (which locks the batch, then its
    # jobs) holds. Postgres ended the cancel as a deadlock, and `tierq cancel` failed.
    import threading

    from producer.control import CancelResult, cancel_batch

    job = insert_job(clean, "Where is my parcel?", status="pending", tier=None, handoff=uuid.uuid4())
    with clean.engine.connect() as conn:
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": job}).scalar_one()
    done: list[CancelResult | BaseException] = []

    def cancel() -> None:
        try:
            done.append(cancel_batch(clean.engine, batch))
        except BaseException as exc:  # noqa: BLE001 (the test looks at what the cancel raised)
            done.append(exc)

    step = clean.engine.connect()
    try:
        with step.begin():  # as a classify step: the job updated, then updated again
            step.execute(text("UPDATE jobs SET updated_at = now() WHERE id = :j"), {"j": job})
            canceller = threading.Thread(target=cancel)
            canceller.start()
            wait_until(lambda: bool(_waiting_on_a_lock(clean)), 20, lambda: "the cancel never waited for the job")
            step.execute(text("UPDATE jobs SET updated_at = now() WHERE id = :j"), {"j": job})
        canceller.join(30)
    finally:
        step.close()
    (result,) = done
    assert isinstance(result, CancelResult) and result.cancelled == 1, result


def _waiting_on_a_lock(stack: Stack) -> int:
    with stack.engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE datname = current_database() "
                                     "AND wait_event_type = 'Lock'")).scalar_one())
