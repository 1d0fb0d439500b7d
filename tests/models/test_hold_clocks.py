"""Each limited kind of wait (an outage, the budget, a provider's 429s) is measured on a clock of its own,
so hours in tierq's own rate schedule, or a wait of another kind, never count against a limit."""

from __future__ import annotations

import uuid
from typing import Any

from conftest import Stack, insert_job
from sqlalchemy import text

from models import lifecycle
from models.lifecycle import Lease, Outbox


def test_each_limited_wait_has_its_own_clock(clean: Stack) -> None:
    job = insert_job(clean, "Where is my parcel?", status="running", tier="hot", handoff=uuid.uuid4())

    def held(kind: str) -> dict[str, Any]:
        lease = Lease(uuid.uuid4())
        with clean.engine.begin() as conn:  # running under this delivery, as a worker's claim leaves it
            conn.execute(text("UPDATE jobs SET status = 'running', handoff = :m, lease_owner = :o WHERE id = :j"),
                         {"m": lease.message, "o": lease.owner, "j": job})
            assert lifecycle.hold(conn, Outbox(), lease, {job: kind}, "hot", 50, None, 1.0) == 1
            return dict(conn.execute(text("SELECT hold_clocks FROM jobs WHERE id = :j"), {"j": job}).scalar_one())

    outage = held("outage")
    assert set(outage) == {"outage"}
    assert held("outage") == outage  # still the same outage: its clock runs on
    assert held("rate_limit") == {}  # past the provider's breaker, waiting for a slot: the outage is over
    quota = held("provider_limit")
    assert set(quota) == {"provider_limit"}
    assert held("rate_limit") == quota  # the schedule's pause after a 429 does not restart the 429 clock
    both = held("outage")
    assert set(both) == {"provider_limit", "outage"} and both["provider_limit"] == quota["provider_limit"]
    assert set(held("budget")) == {"provider_limit", "budget"}
    with clean.engine.begin() as conn:  # what a tierq from before the clocks leaves when it escalates
        conn.execute(text("UPDATE jobs SET held_since = NULL WHERE id = :j"), {"j": job})
    assert set(held("outage")) == {"outage"}  # clocks count only while held_since does
    lease = Lease(uuid.uuid4())
    with clean.engine.begin() as conn:  # on to the next tier: its waits start afresh
        conn.execute(text("UPDATE jobs SET status = 'running', handoff = :m, lease_owner = :o WHERE id = :j"),
                     {"m": lease.message, "o": lease.owner, "j": job})
        assert lifecycle.escalate(conn, Outbox(), lease, [job], "warm", 50, None) == 1
        assert conn.execute(text("SELECT hold_clocks FROM jobs WHERE id = :j"), {"j": job}).scalar_one() is None
