"""One bad job fails alone, with its reason; the rest of its chunk goes on. Jobs are written straight into
Postgres with parameters `tierq submit` would reject, as if they came from an older version or by hand,
and one message carries them with good jobs to the session's real worker."""

from __future__ import annotations

import time
import uuid

from conftest import Stack, insert_job
from sqlalchemy import text

from tierq.contract import Message, classify_message, tier_message


def run(stack: Stack, message: Message, ids: list[int], timeout: float = 30) -> dict[int, tuple[str, str | None]]:
    with stack.client() as tq:
        tq.publisher.publish([message])
    deadline = time.monotonic() + timeout
    while True:
        with stack.engine.connect() as conn:
            rows = conn.execute(text("SELECT id, status, error FROM jobs WHERE id = ANY(:ids)"), {"ids": ids}).all()
        states = {r[0]: (r[1], r[2]) for r in rows}
        if all(s in ("succeeded", "failed") for s, _ in states.values()):
            return states
        assert time.monotonic() < deadline, states
        time.sleep(0.1)


def test_a_bad_job_fails_alone_at_routing(clean: Stack) -> None:
    message = uuid.uuid4()
    good = [insert_job(clean, f"ticket {n}: where is my parcel?", status="pending", tier=None, handoff=message)
            for n in range(5)]
    bad = insert_job(clean, "where is my refund?", status="pending", tier=None, handoff=message,
                     params={"max_tokens": "lots"})
    states = run(clean, classify_message([*good, bad], None, message), [*good, bad])
    assert {states[j][0] for j in good} == {"succeeded"}
    status, error = states[bad]
    assert status == "failed" and error.startswith("error: ValueError") and "lots" in error


def test_a_bad_job_fails_alone_at_its_tier(clean: Stack) -> None:
    message = uuid.uuid4()
    good = [insert_job(clean, f"ticket {n}: where is my parcel?", status="queued", tier="hot", handoff=message)
            for n in range(5)]
    bad = insert_job(clean, "where is my refund?", status="queued", tier="hot", handoff=message,
                     params={"max_tokens": [1]})
    states = run(clean, tier_message("hot", [*good, bad], None, message), [*good, bad])
    assert {states[j][0] for j in good} == {"succeeded"}
    status, error = states[bad]
    assert status == "failed" and error.startswith("error: TypeError")
    assert clean.sim_stats()["requests"] == 5


def test_a_request_the_provider_calls_invalid_fails_after_one_call_with_its_message(clean: Stack) -> None:
    # Every tier's models are on the same provider, so the same request would be refused six times over.
    message = uuid.uuid4()
    bad = insert_job(clean, "where is my refund?", status="queued", tier="hot", handoff=message,
                     params={"max_tokens": -5})
    states = run(clean, tier_message("hot", [bad], None, message), [bad])
    status, error = states[bad]
    assert status == "failed" and error.startswith("sim-nano: HTTP 400: ") and "max_tokens" in error
    with clean.engine.connect() as conn:
        outcomes = conn.execute(text("SELECT outcome FROM calls")).scalars().all()
    stats = clean.sim_stats()
    assert outcomes == ["http_4xx"] and (stats["bad_requests"], stats["requests"]) == (1, 0)
