"""`tierq status` and `tierq results` start without loading what they do not use.

How long they take to start is the benchmark's business (bench/bench_startup.py: it depends on the machine);
here the real commands run with Python's import log on, and what they imported is checked.
"""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path

from conftest import Stack, insert_job, run_batch
from sqlalchemy import text

TIERQ = Path(sys.executable).parent / "tierq"
# Reading a batch goes through libpq (models.pq) and publishes nothing; it reads the settings and the TOML's
# outline (tierq.settings, tierq.outline) without pydantic, whose import and models took a third of its start,
# and without psycopg, whose import took two thirds of what was left.
NEVER = {"sqlalchemy", "celery", "kombu", "pydantic", "pydantic_core", "pydantic_settings", "psycopg",
         "psycopg_binary"}


def imported(stack: Stack, cwd: Path, *args: str) -> tuple[str, set[str]]:
    """Run `tierq ARGS`: its output and the top-level packages it imported."""
    out, modules = imported_modules(stack, cwd, *args)
    return out, {module.split(".")[0] for module in modules}


def imported_modules(stack: Stack, cwd: Path, *args: str) -> tuple[str, set[str]]:
    """Run `tierq ARGS`: its output and the modules it imported."""
    done = subprocess.run([str(TIERQ), *args], env={**stack.env, "PYTHONPROFILEIMPORTTIME": "1"}, cwd=cwd,
                          capture_output=True, text=True, timeout=60, check=False)
    log = [line for line in done.stderr.splitlines() if line.startswith("import time:")]
    assert done.returncode == 0 and log, done.stderr[-3000:]
    return done.stdout, {line.rsplit("|", 1)[1].strip() for line in log}


def test_status_and_results_of_a_finished_batch_load_no_database_driver_nor_redis(clean: Stack,
                                                                                    tmp_path: Path) -> None:
    with clean.client() as tq:
        run_batch(clean, tq, [{"id": "a", "prompt": "Where is my parcel?"}, {"id": "b", "prompt": "Refund please"}])
    batch, shown = str(_only_batch(clean)), {}
    for args in (("status",), ("status", "--json"), ("results",), ("results", "--format", "openai")):
        shown[args], modules = imported_modules(clean, tmp_path, args[0], batch, *args[1:])
        packages = {module.split(".")[0] for module in modules}
        assert not packages & (NEVER | {"redis"}), (args, sorted(packages & (NEVER | {"redis"})))
        assert "models.pq" in modules, args  # read through libpq
    assert shown[("status",)].startswith(f"batch {batch}: 2/2 done, done, ")
    assert json.loads(shown[("status", "--json")])["succeeded"] == 2
    assert [json.loads(line)["id"] for line in shown[("results",)].splitlines()] == ["a", "b"]
    assert [json.loads(line)["custom_id"] for line in shown[("results", "--format", "openai")].splitlines()] == [
        "a", "b"]


def test_status_of_a_running_batch_asks_redis_without_loading_redis_py(clean: Stack, tmp_path: Path) -> None:
    insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    out, modules = imported_modules(clean, tmp_path, "status", str(_only_batch(clean)), "--json")
    packages = {module.split(".")[0] for module in modules}
    assert not packages & (NEVER | {"redis"}), sorted(packages & (NEVER | {"redis"}))
    # It looked for workers and live messages through tierq's own small client (tierq.resp); that client
    # reads as redis-py does: tests/tierq/test_resp.py.
    assert json.loads(out)["pending"] == 1 and "tierq.resp" in modules


def test_help_loads_neither_a_database_driver_nor_pydantic(clean: Stack, tmp_path: Path) -> None:
    out, packages = imported(clean, tmp_path, "--help")
    assert "status" in out and not packages & (NEVER | {"redis", "ctypes"}), sorted(packages & (NEVER | {"redis"}))


def _only_batch(stack: Stack) -> uuid.UUID:
    with stack.engine.connect() as conn:
        return uuid.UUID(str(conn.execute(text("SELECT id FROM batches")).scalar_one()))
