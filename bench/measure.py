"""What the benchmarks read: job counts, call rates from the simulator's log, process memory, the anchor client."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from harness import BenchError
from sqlalchemy import Engine, text

HERE = Path(__file__).resolve().parent
FINAL = ("succeeded", "failed", "cancelled")


def count_jobs(engine: Engine, batch_id: uuid.UUID, statuses: Sequence[str]) -> int:
    """Jobs of the batch in any of `statuses`."""
    with engine.connect() as conn:
        return int(conn.execute(text("SELECT count(*) FROM jobs WHERE batch_id = :b AND status = ANY(:s)"),
                                {"b": batch_id, "s": list(statuses)}).scalar_one())


def steady_rate(calls: Sequence[dict[str, Any]], first_wave: int) -> float:
    """Calls per second once the first `first_wave` calls are done, from the simulator's finish times.

    With a fixed latency the calls finish in waves of the concurrency; counting from the end of the
    first wave to the last call leaves the ramp-up out and keeps the tail in (a benchmark of
    k full waves then gives exactly concurrency / latency for a client that never lets a slot idle).
    """
    times = sorted(float(c["at"]) for c in calls)
    if len(times) <= first_wave:
        raise BenchError(f"only {len(times)} calls reached the simulator, fewer than one wave of {first_wave}")
    return (len(times) - first_wave) / (times[-1] - times[first_wave - 1])


def span_rate(calls: Sequence[dict[str, Any]]) -> float:
    """Calls per second from the first finish to the last (the simulator's throughput while busy)."""
    times = sorted(float(c["at"]) for c in calls)
    return (len(times) - 1) / (times[-1] - times[0])


def rss_mb(pid: int) -> tuple[float, float]:
    """Resident memory of a process now and at its peak (VmRSS, VmHWM), in MB; (0, 0) once it is gone."""
    try:
        status = Path(f"/proc/{pid}/status").read_text()
    except FileNotFoundError:
        return 0.0, 0.0
    fields = dict(line.split(":", 1) for line in status.splitlines() if ":" in line)
    return tuple(int(fields[k].split()[0]) / 1024 for k in ("VmRSS", "VmHWM"))  # type: ignore[return-value]


def children(pid: int) -> list[int]:
    """Direct child processes (a prefork pool's); a thread pool has none."""
    found: list[int] = []
    for task in Path(f"/proc/{pid}/task").glob("*/children"):
        found += [int(p) for p in task.read_text().split()]
    return found


def start_anchor(base_url: str, calls: int, concurrency: int, *, client: str = "sdk",
                 tag: str = "anchor") -> subprocess.Popen[str]:
    """Start the raw asyncio client (anchor_client.py, with the given `--client`) in its own process."""
    command = [sys.executable, str(HERE / "anchor_client.py"), base_url, "--calls", str(calls),
               "--concurrency", str(concurrency), "--tag", tag, "--client", client]
    return subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


def finish_anchor(proc: subprocess.Popen[str], timeout_s: float) -> dict[str, float]:
    """Wait for the anchor client and read its JSON line; killed (by its id) if it overruns."""
    try:
        out, err = proc.communicate(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise BenchError(f"the anchor client did not finish within {timeout_s:.0f} s") from None
    except BaseException:  # the run's time limit or Ctrl-C: leave no client behind
        proc.kill()
        proc.communicate()
        raise
    if proc.returncode != 0 and not out.strip():
        last = next((line for line in reversed(err.splitlines()) if line.strip()), f"exit status {proc.returncode}")
        raise BenchError(f"the anchor client failed: {last.strip()[:300]}")
    result: dict[str, float] = json.loads(out.strip().splitlines()[-1])
    if result["errors"]:
        raise BenchError(f"the anchor client had {result['errors']:.0f} failed calls of {result['calls']:.0f}")
    return result
