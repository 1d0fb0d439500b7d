"""Jobs that wait for a leader asking the same question (the waiting half of the state machine in
`models.lifecycle`).

A job whose prompt another job (its leader) is already answering parks as waiting instead of calling a
model; when the leader succeeds its followers share the answer, and when it fails or vanishes they are
routed again, one of them leading the next attempt.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence

from sqlalchemy import Connection, text

from models.enums import PENDING, SUCCEEDED, WAITING
from models.lifecycle import Outbox
from tierq.contract import classify_message


def _nth(values: str) -> str:
    """SQL for the element of the array parameter `values` at job `j`'s place in `:ids`: a row's own value
    without joining the jobs to a list (see `park`)."""
    return f"(CAST(:{values} AS bigint[]))[array_position(CAST(:ids AS bigint[]), j.id)]"


def park(conn: Connection, message: uuid.UUID, followers: Mapping[int, tuple[int, int]]) -> list[int]:
    """pending -> waiting: jobs (job -> (leader job, cache entry)) wait for a leader's answer."""
    if not followers:
        return []
    items = sorted(followers.items())
    # The jobs by id, each row's leader and entry looked up by its place in the list: joined with the list
    # instead, a classify chunk's followers (up to 500) were planned from the guard's estimate of one row,
    # which can read the whole table or run the list again for each row (as models.lifecycle._queue).
    return list(
        conn.execute(
            text(
                f"UPDATE jobs AS j SET status = '{WAITING}', follows = {_nth('leaders')}, "
                f"cache_entry = {_nth('entries')}, updated_at = now() "
                f"WHERE j.id = ANY(:ids) AND j.status = '{PENDING}' AND j.handoff = :me RETURNING j.id"
            ),
            {
                "ids": [i for i, _ in items],
                "leaders": [f[0] for _, f in items],
                "entries": [f[1] for _, f in items],
                "me": message,
            },
        ).scalars()
    )


def mark_leaders(conn: Connection, message: uuid.UUID, leaders: Mapping[int, int]) -> None:
    """Remember the cache entry each leading job must fill once answered (job -> entry)."""
    if leaders:
        items = sorted(leaders.items())
        conn.execute(
            text(f"UPDATE jobs AS j SET cache_entry = {_nth('entries')} WHERE j.id = ANY(:ids) AND j.handoff = :me"),
            {"ids": [i for i, _ in items], "entries": [e for _, e in items], "me": message},
        )


def answer_followers(conn: Connection, leader: int, content: str, model: str, tier: str) -> list[tuple[int, uuid.UUID]]:
    """waiting -> succeeded: the jobs that waited on `leader` share its answer; (job, batch) of each."""
    rows = conn.execute(
        text(f"UPDATE jobs SET status = '{SUCCEEDED}', content = :c, model = :m, tier = :t, follows = NULL, "
             "start_tier = COALESCE(start_tier, :t), attempts = attempts + 1, finished_at = now(), updated_at = now() "
             f"WHERE follows = :leader AND status = '{WAITING}' RETURNING id, batch_id"),
        {"c": content, "m": model, "t": tier, "leader": leader},
    ).all()
    return [(r[0], r[1]) for r in rows]


def release_followers(conn: Connection, outbox: Outbox, leaders: Sequence[int], chunk: int) -> int:
    """waiting -> pending: the followers of failed or vanished leaders are routed again, `chunk` to a
    classify message; one of each question's followers will lead."""
    return _release(conn, outbox, "follows = ANY(:ids)", leaders, chunk)


def release_jobs(conn: Connection, outbox: Outbox, ids: Sequence[int], chunk: int) -> int:
    """waiting -> pending for these followers only (they will not wait for their leader)."""
    return _release(conn, outbox, "id = ANY(:ids)", ids, chunk)


def _release(conn: Connection, outbox: Outbox, which: str, ids: Sequence[int], chunk: int) -> int:
    if not ids:
        return 0
    rows = conn.execute(
        text(f"SELECT id, batch_id FROM jobs WHERE {which} AND status = '{WAITING}' ORDER BY id FOR UPDATE"),
        {"ids": list(ids)},
    ).all()
    # One statement per new message, its jobs by id (as models.lifecycle._queue, for the same reason).
    statement = text(f"UPDATE jobs SET status = '{PENDING}', follows = NULL, cache_entry = NULL, handoff = :handoff, "
                     f"handoff_from = NULL, updated_at = now() WHERE id = ANY(:ids) AND status = '{WAITING}' "
                     "RETURNING id")
    moved = 0
    for i in range(0, len(rows), chunk):
        part = rows[i : i + chunk]
        message = uuid.uuid4()
        kept = sorted(conn.execute(statement, {"ids": [r[0] for r in part], "handoff": message}).scalars())
        if kept:
            outbox.add(classify_message(kept, part[0][1], message))
        moved += len(kept)
    return moved


def touch_waiting(conn: Connection, ids: Sequence[int]) -> None:
    """Note that a follow check looked at these waiting jobs (the reconciler's sign that one still will)."""
    if ids:
        conn.execute(text(f"UPDATE jobs SET updated_at = now() WHERE id = ANY(:ids) AND status = '{WAITING}'"),
                     {"ids": list(ids)})
