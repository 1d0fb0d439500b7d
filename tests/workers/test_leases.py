"""The lease keeper's thread outlives what goes wrong in it: once it stops, every lease of the process
lapses, and other deliveries take over jobs whose calls are already paid for and pay for them again."""

from __future__ import annotations

import time
import uuid

from conftest import Stack, insert_job
from sqlalchemy import create_engine, text

from workers.leases import LeaseKeeper

LEASE_S = 0.9  # renewed every 0.3 s


def lease_left_s(stack: Stack, job: int) -> float:
    with stack.engine.connect() as conn:
        return float(conn.execute(text("SELECT EXTRACT(EPOCH FROM lease_until - now()) FROM jobs WHERE id = :j"),
                                  {"j": job}).scalar_one())


def test_leases_are_renewed_again_after_the_pool_had_no_connection_free(clean: Stack) -> None:
    owner = uuid.uuid4()
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'running', lease_owner = :o, lease_until = now() + "
                          "interval '1 second' WHERE id = :j"), {"o": owner, "j": job})
    # One connection, and no wait for it: while the test holds it, a renewal fails with SQLAlchemy's pool
    # timeout, which is not a driver error (before, it ended the thread for good).
    engine = create_engine(clean.settings.database_url, pool_size=1, max_overflow=0, pool_timeout=0.05)
    keeper = LeaseKeeper(engine, LEASE_S)
    try:
        taken = engine.connect()  # before the thread starts: none of its renewals can get through
        with keeper.holding(owner, [job]):
            time.sleep(4 * LEASE_S / 3)  # several renewals fail: the lease runs out
            assert lease_left_s(clean, job) < 0
            taken.close()
            deadline = time.monotonic() + 30
            while lease_left_s(clean, job) < LEASE_S / 2:  # a renewal gets through again
                assert time.monotonic() < deadline, "the lease was never renewed once the pool had a connection"
                time.sleep(0.05)
    finally:
        engine.dispose()
