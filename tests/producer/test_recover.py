"""`tierq recover` publishes again the message of a job whose message was lost, and nothing else."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from pathlib import Path

from conftest import Stack, insert_job
from sqlalchemy import text

from producer.recover import recover


def lost_job(stack: Stack, status: str, tier: str | None) -> int:
    return insert_job(stack, "Where is my parcel?", status=status, tier=tier, handoff=uuid.uuid4(), age_s=3600)


def test_recover_requeues_lost_messages_once_they_are_old_enough(clean: Stack) -> None:
    pending, queued = lost_job(clean, "pending", None), lost_job(clean, "queued", "warm")
    with clean.client() as tq:
        assert recover(tq.engine, tq.publisher, None, 2 * 3600).jobs == 0
        done = recover(tq.engine, tq.publisher, None, 0)
        assert (done.messages, done.jobs) == (2, 2)
        for _ in range(100):
            with clean.engine.connect() as conn:
                states = dict(conn.execute(text("SELECT id, status FROM jobs")).all())
            if set(states.values()) == {"succeeded"}:
                break
            time.sleep(0.2)
    assert states == {pending: "succeeded", queued: "succeeded"}
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM calls")).scalar_one() == 2


def test_recover_names_a_bad_older_than_in_one_line(clean: Stack, tmp_path: Path) -> None:
    done = subprocess.run([str(Path(sys.executable).parent / "tierq"), "recover", "--older-than", "10x"],
                          env=clean.env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    assert (done.returncode, done.stdout) == (2, "")
    assert done.stderr == "error: --older-than '10x' is not a duration; use 30m, 2h or 1d\n"
