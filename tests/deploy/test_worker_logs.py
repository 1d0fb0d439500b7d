"""A worker's log at INFO says what tierq does, not every HTTP request its model calls make (the HTTP client
under the OpenAI SDK logs each one at INFO); TIERQ_LOG_LEVEL=DEBUG brings them back."""

from __future__ import annotations

from pathlib import Path

import pytest
from conftest import Stack, own_worker, run_batch


@pytest.mark.parametrize(("level", "expected"), [("INFO", False), ("DEBUG", True)])
def test_a_worker_logs_a_line_per_http_request_only_at_debug(clean: Stack, tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch, level: str,
                                                             expected: bool) -> None:
    clean.simulate({"latency_ms": 0})
    monkeypatch.setitem(clean.env, "TIERQ_LOG_LEVEL", level)
    with own_worker(clean, tmp_path, "", "logs") as (tq, _):
        results = run_batch(clean, tq, [{"id": str(n), "prompt": f"parcel {n} is late"} for n in range(5)],
                            force_tier="hot")
    assert {r["status"] for r in results.values()} == {"succeeded"}
    log = (tmp_path / "logs-worker.log").read_text()
    assert ("HTTP Request: POST" in log) is expected, log[-2000:]
