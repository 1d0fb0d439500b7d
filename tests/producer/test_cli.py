"""The `tierq` command as users run it: a real subprocess against the test deployment."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import psycopg
import pytest
import redis
from conftest import Stack, insert_job, start_worker, stop_worker
from sqlalchemy import text
from sqlalchemy.engine import make_url

from models import make_engine
from producer.services import throwaway_redis
from producer.submit import BatchOptions

TIERQ = Path(sys.executable).parent / "tierq"


def tierq(
    stack: Stack, cwd: Path, *args: str, stdin: bytes | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `tierq ARGS` with the deployment's environment, from a directory without a .env file."""
    return subprocess.run([str(TIERQ), *args], env=stack.env, cwd=cwd, input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=timeout, check=False)


def closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def json_lines(text: str) -> list[dict[str, Any]]:
    return [json.loads(line) for line in text.splitlines() if line.strip()]


def test_submit_a_csv_with_a_template_watch_it_and_fetch_results(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "tickets.csv").write_bytes(
        b"id,subject,body,customer\n"
        b"T1,Late parcel,My order 4411 has not arrived.,acme\n"
        b"T2,Refund,,bolt\n"
        b"T3,Address,Please ship to my new address.\n"
        b"T4,Double charge,I was charged twice for order 9921.,acme\n"
    )
    done = tierq(clean, tmp_path, "submit", "tickets.csv", "--template", "Subject: {subject}\n\n{body}",
                 "--rejects", "rejects.jsonl", "--tenant", "acme", "--wait", "--json")
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["rejected"], summary["format"]) == (2, 2, "csv")
    assert summary["rejected_by_kind"] == {"empty_prompt": 1, "ragged_row": 1}
    assert summary["status"]["done"] and summary["status"]["succeeded"] == 2
    assert json_lines((tmp_path / "rejects.jsonl").read_text()) == [
        {"line": 3, "id": "T2", "kind": "empty_prompt", "reason": 'line 3: column "body" used by --template is empty'},
        {"line": 4, "id": None, "kind": "ragged_row", "reason": "line 4: row has 3 fields, the header has 4"},
    ]
    assert 'rejected: line 3: column "body" used by --template is empty' in done.stderr
    batch = summary["batch_id"]

    status = tierq(clean, tmp_path, "status", batch, "--watch", "--json")
    last = json_lines(status.stdout)[-1]
    assert status.returncode == 0 and last["done"] and last["eta_s"] == 0
    assert {"batch_id", "total", "succeeded", "failed", "pending", "done", "by_tier", "rate_per_s"} <= set(last)

    out = tierq(clean, tmp_path, "results", batch, "-o", "results.jsonl")
    assert out.returncode == 0, out.stderr
    results = json_lines((tmp_path / "results.jsonl").read_text())
    assert [r["id"] for r in results] == ["T1", "T4"]
    assert set(results[0]) == {"id", "status", "content", "tier", "model", "cached", "cost_usd", "audited",
                               "replaced_by_reference", "attempts", "error"}

    text = tierq(clean, tmp_path, "status", batch)
    assert text.stdout.startswith(f"batch {batch}: 2/2 done, done"), text.stdout


def test_submit_wait_exits_non_zero_when_jobs_failed_so_a_pipeline_stops(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text("".join(f'{{"id": "t{n}", "prompt": "{uuid.uuid4()} order {n}"}}\n'
                                              for n in range(2)))
    ok = tierq(clean, tmp_path, "submit", "t.jsonl", "--no-cache", "--wait")
    assert ok.returncode == 0, ok.stderr
    batch = ok.stdout.splitlines()[0].split(":")[0].removeprefix("batch ")
    assert ok.stdout.splitlines()[-1] == f"batch {batch}: all 2 jobs succeeded"

    clean.simulate({"latency_ms": 0, "refusal_rate": 1.0})  # every call refused: both jobs fail
    failed = tierq(clean, tmp_path, "submit", "t.jsonl", "--no-cache", "--wait")
    assert failed.returncode == 3, failed.stderr
    batch = failed.stdout.splitlines()[0].split(":")[0].removeprefix("batch ")
    assert failed.stdout.splitlines()[-1] == (f"batch {batch}: 0 of 2 jobs succeeded, 2 failed, 0 cancelled; exit "
                                              f"status 3 (`tierq results {batch}` gives each job's reason)")
    watched = tierq(clean, tmp_path, "status", batch, "--watch")  # waits for a batch as `submit --wait` does
    assert watched.returncode == 3, watched.stderr
    assert watched.stdout.splitlines()[-1] == failed.stdout.splitlines()[-1]
    assert tierq(clean, tmp_path, "status", batch).returncode == 0  # without --watch it reports, whatever the jobs did
    as_json = tierq(clean, tmp_path, "submit", "t.jsonl", "--no-cache", "--wait", "--json")
    assert as_json.returncode == 3, as_json.stderr
    summary = json.loads(as_json.stdout)
    assert summary["status"]["failed"] == 2
    assert as_json.stderr.splitlines()[-1] == (f"batch {summary['batch_id']}: 0 of 2 jobs succeeded, 2 failed, "
                                               f"0 cancelled; exit status 3 (`tierq results {summary['batch_id']}` "
                                               "gives each job's reason)")


def test_submit_from_standard_input_in_the_openai_batch_format(clean: Stack, tmp_path: Path) -> None:
    lines = [
        {
            "custom_id": f"req-{n}",
            "method": "POST",
            "url": "/v1/chat/completions",
            "body": {
                "model": "gpt-4o-mini",
                "messages": [{"role": "user", "content": f"Question {n}: where is my parcel?"}],
                "max_tokens": 200,
            },
        }
        for n in range(3)
    ]
    lines.append({"custom_id": "emb", "method": "POST", "url": "/v1/embeddings", "body": {"input": "x"}})
    stdin = "\n".join(json.dumps(line) for line in lines).encode()
    done = tierq(clean, tmp_path, "submit", "-", "--json", stdin=stdin)
    assert done.returncode == 0, done.stderr
    summary = json.loads(done.stdout)
    assert (summary["accepted"], summary["rejected"], summary["format"]) == (3, 1, "openai")
    assert "rejected: line 4: url '/v1/embeddings' is not chat completions" in done.stderr


def test_an_empty_or_wholly_bad_file_exits_non_zero_with_a_clear_message(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "empty.jsonl").write_bytes(b"\n\n")
    (tmp_path / "bad.jsonl").write_bytes(b'{"prompt": ""}\n[1]\n')
    empty = tierq(clean, tmp_path, "submit", "empty.jsonl")
    assert empty.returncode == 1
    assert "error: empty.jsonl has no records (it is empty or has only blank lines)" in empty.stderr
    bad = tierq(clean, tmp_path, "submit", "bad.jsonl", "--json")
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["rejected"] == 2
    assert "error: none of the 2 records of bad.jsonl was accepted" in bad.stderr
    options = tierq(clean, tmp_path, "submit", "bad.jsonl", "--max-tier", "hot", "--min-tier", "cold")
    assert options.returncode == 2 and "error: --min-tier 'cold' is above --max-tier 'hot'" in options.stderr
    # A forced tier outside the bounds was submitted, and ran at the forced tier: above the ceiling, below the floor.
    (tmp_path / "good.jsonl").write_bytes(b'{"prompt": "Where is my parcel?"}\n')
    with clean.engine.connect() as conn:
        batches = conn.execute(text("SELECT count(*) FROM batches")).scalar_one()
    above = tierq(clean, tmp_path, "submit", "good.jsonl", "--tier", "cold", "--max-tier", "warm")
    assert above.returncode == 2 and above.stderr == (
        "error: --tier 'cold' is above --max-tier 'warm'; give one of them\n"), above.stderr
    below = tierq(clean, tmp_path, "submit", "good.jsonl", "--tier", "hot", "--min-tier", "warm")
    assert below.returncode == 2 and "error: --tier 'hot' is below --min-tier 'warm'" in below.stderr
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batches")).scalar_one() == batches
    template = tierq(clean, tmp_path, "submit", "bad.jsonl", "--template", "{a.b}")
    assert template.returncode == 2 and "--template field {a.b} is not a plain field name" in template.stderr
    unknown = tierq(clean, tmp_path, "status", "not-a-batch")
    assert unknown.returncode == 1 and "is not a batch id" in unknown.stderr


def test_status_says_in_one_line_when_postgres_refuses_connections(clean: Stack, tmp_path: Path) -> None:
    role = f"tierq_full_{uuid.uuid4().hex[:6]}"  # a role Postgres lets no one in as: as good as a full server
    with clean.engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
    try:
        url = (
            make_url(clean.settings.database_url)
            .set(username=role, password="pw")
            .render_as_string(hide_password=False)
        )
        done = subprocess.run([str(TIERQ), "status", str(uuid.uuid4())], env={**clean.env, "TIERQ_DATABASE_URL": url},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60, check=False)
    finally:
        with clean.engine.begin() as conn:
            conn.execute(text(f'DROP ROLE "{role}"'))
    assert done.returncode == 2 and done.stdout == ""
    assert done.stderr.count("\n") == 1 and "Traceback" not in done.stderr
    shown = make_url(url).render_as_string(hide_password=True)
    assert done.stderr.startswith(f"error: Postgres at {shown} refuses new connections (too many connections for role")
    assert "raise max_connections" in done.stderr and ":pw@" not in done.stderr


def test_status_names_a_queue_no_worker_consumes_and_how_to_start_one(clean: Stack, tmp_path: Path) -> None:
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker}
    router = start_worker(env, tmp_path / "router.log", queues="classify", name="router")  # and no tier worker
    try:
        (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n{"prompt": "Refund please"}\n')
        submitted = subprocess.run([str(TIERQ), "submit", "t.jsonl", "--tier", "hot", "--json"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=60, check=True)
        batch = json.loads(submitted.stdout)["batch_id"]
        deadline = time.monotonic() + 30
        while True:
            status = json.loads(subprocess.run([str(TIERQ), "status", batch, "--json"], env=env, cwd=tmp_path,
                                               capture_output=True, text=True, timeout=60, check=True).stdout)
            if status["unserved_queues"] or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        text_view = subprocess.run([str(TIERQ), "status", batch], env=env, cwd=tmp_path, capture_output=True,
                                   text=True, timeout=60, check=True).stdout
    finally:
        stop_worker(router)
    assert status["unserved_queues"] == {"hot": 2}
    assert ("  PROBLEM: no worker consumes queue hot (2 jobs wait there); start one: "
            "celery -A workers worker -Q hot -n hot@%h") in text_view.splitlines()


def test_status_says_that_an_evicting_redis_drops_queued_messages_rather_than_that_no_worker_runs(
    clean: Stack, tmp_path: Path
) -> None:
    # Before 2026-12-01, on a Redis with maxmemory-policy allkeys-lru as broker and cache, `status` said of
    # a batch whose classify messages Redis had evicted nothing at all, and "PROBLEM: no worker consumes
    # queue hot" of a queue whose worker ran (its record evicted): the cause was only in `tierq doctor`.
    from reliability.fault_services import evicting_redis

    with evicting_redis(tmp_path / "redis") as url:
        env = {**clean.env, "TIERQ_BROKER_URL": url, "TIERQ_REDIS_URL": url}
        (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
        submitted = subprocess.run([str(TIERQ), "submit", "t.jsonl", "--json"], env=env, cwd=tmp_path,
                                   capture_output=True, text=True, timeout=60, check=True)
        batch = json.loads(submitted.stdout)["batch_id"]
        shown = subprocess.run([str(TIERQ), "status", batch], env=env, cwd=tmp_path, capture_output=True,
                               text=True, timeout=60, check=True)
        as_json = json.loads(subprocess.run([str(TIERQ), "status", batch, "--json"], env=env, cwd=tmp_path,
                                            capture_output=True, text=True, timeout=60, check=True).stdout)
    assert (f"  PROBLEM: Redis at {url} evicts keys at maxmemory (allkeys-lru): it may drop queued messages "
            "and the records of live messages and workers, so jobs wait for the reconciler and a queue's worker "
            "may look gone; set maxmemory-policy noeviction (redis-cli CONFIG SET maxmemory-policy noeviction; "
            "docs/deployment.md)") in shown.stdout.splitlines(), shown.stdout
    # Worker records are among what such a Redis evicts, but a queue may also really have no worker (a
    # review found the first version hid that line, and a worker's reason for not starting with it).
    assert ("  PROBLEM: no worker consumes queue classify (or its record was evicted: see above) (1 jobs wait "
            "there)") in shown.stdout, shown.stdout
    assert as_json["redis_evicts"] == "allkeys-lru" and as_json["unserved_queues"] == {"classify": 1}


def test_status_names_a_queue_whose_only_worker_is_stopping_while_it_finishes_its_calls(
    clean: Stack, tmp_path: Path
) -> None:
    # A warm shutdown takes no new message but may take minutes to end its calls; the worker went on saying
    # it consumed its queue until then (and for 20 s after), so status was silent about the jobs left queued.
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker}
    worker = start_worker(env, tmp_path / "hot.log", queues="classify,hot", name="hot", args=("-c", "1"))
    clean.simulate({"latency_ms": 30_000})  # calls out for far longer than the checks below take, however slow
    try:
        records = "".join(f'{{"prompt": "ticket {n}: where is my parcel?"}}\n' for n in range(60))
        (tmp_path / "t.jsonl").write_text(records)
        submitted = subprocess.run([str(TIERQ), "submit", "t.jsonl", "--tier", "hot", "--no-cache", "--json"],
                                   env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60, check=True)
        batch = json.loads(submitted.stdout)["batch_id"]
        deadline = time.monotonic() + 30
        while clean.sim_stats()["in_flight"] == 0:  # one thread: one chunk of 50 calls out, the rest queued
            assert time.monotonic() < deadline, "no call was made"
            time.sleep(0.1)
        worker.send_signal(signal.SIGTERM)
        time.sleep(1.5)
        status = json.loads(subprocess.run([str(TIERQ), "status", batch, "--json"], env=env, cwd=tmp_path,
                                           capture_output=True, text=True, timeout=60, check=True).stdout)
        assert worker.poll() is None, "the worker stopped before its calls ended"
    finally:
        if worker.poll() is None:
            os.killpg(worker.pid, signal.SIGKILL)  # its calls would take half a minute to end
        stop_worker(worker)
    assert status["by_status"] == {"running": 50, "queued": 10}
    assert status["unserved_queues"] == {"hot": 60}


def test_in_a_pipe_progress_counts_what_was_read_and_watch_prints_a_line_per_change(
    clean: Stack, tmp_path: Path
) -> None:
    (tmp_path / "t.jsonl").write_text(
        "".join(f'{{"prompt": "ticket {n}: where is my parcel?"}}\n' for n in range(2500))
    )
    done = tierq(clean, tmp_path, "submit", "t.jsonl", "--tier", "hot", "--no-cache", "--wait")
    assert done.returncode == 0, done.stderr
    progress = [line for line in done.stderr.splitlines() if " records, " in line]
    assert progress and progress[-1].startswith("[########################] 100%  2,500 records, ")
    assert progress[-1].endswith(", 2,500 accepted, 0 rejected")
    changes = [line for line in done.stdout.splitlines() if line.startswith("batch ") and "; hot: " in line]
    assert changes and len(set(changes)) == len(changes)  # a line per change, none repeated
    assert "  hot:     2,500  (succeeded 2,500)" in done.stdout.splitlines()  # the whole block at the end


def test_ctrl_c_while_waiting_stops_the_command_and_says_the_batch_goes_on(clean: Stack, tmp_path: Path) -> None:
    # A broker no worker reads: the batch cannot finish while the command waits on it.
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker}
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')

    def interrupted(*args: str) -> str:
        """Run the command until it has said something about the batch, press Ctrl-C; the batch id."""
        # SIGINT as a terminal sends it: a test run started in the background (`cmd &`) ignores SIGINT, and
        # Python keeps an ignored SIGINT ignored, so the child gets the default back before it starts.
        proc = subprocess.Popen([str(TIERQ), *args], env=env, cwd=tmp_path, stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        assert proc.stdout is not None
        first = proc.stdout.readline()
        batch = first.split()[1].rstrip(":")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
        assert proc.returncode == 130, (first, out, err)
        assert err.rstrip().endswith(f"stopped watching: batch {batch} goes on (`tierq status {batch} --watch` follows "
                                     f"it again, `tierq cancel {batch}` stops it)"), err
        assert "Traceback" not in err and "Aborted" not in err
        return batch

    batch = interrupted("submit", "t.jsonl", "--wait")
    assert interrupted("status", batch, "--watch", "--interval", "0.2") == batch
    redis.Redis.from_url(broker).flushdb()


@pytest.mark.parametrize(("sig", "code"), [(signal.SIGINT, 130), (signal.SIGTERM, 143)], ids=["ctrl-c", "sigterm"])
def test_a_submission_stopped_by_a_signal_names_its_batch_and_keeps_every_job_it_read(
    clean: Stack, tmp_path: Path, sig: signal.Signals, code: int
) -> None:
    # SIGTERM (`timeout`, `kill`, a CI job stopped) killed the command silently, leaving a batch whose jobs run
    # with no word of its id. A broker no worker reads: the jobs stay where the submission left them.
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    proc = subprocess.Popen([str(TIERQ), "submit", "-", "--json"], env={**clean.env, "TIERQ_BROKER_URL": broker},
                            cwd=tmp_path, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
    assert proc.stdin is not None
    # One COPY's worth and a part of the next; standard input stays open, as a producer that is still writing.
    proc.stdin.write("".join(f'{{"id": "t{n}", "prompt": "ticket {n}: where is my parcel?"}}\n' for n in range(5000)))
    proc.stdin.flush()
    deadline = time.monotonic() + 60
    with clean.engine.connect() as conn:
        while not conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() and time.monotonic() < deadline:
            conn.rollback()
            time.sleep(0.1)
    time.sleep(1.0)  # the rest of what was written is read
    proc.send_signal(sig)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == code and "Traceback" not in err, (out, err)
    summary = json.loads(out)
    batch = summary["batch_id"]
    assert summary["interrupted"] is True and summary["format"] == "jsonl"
    assert err.rstrip().endswith(f"interrupted: batch {batch} keeps the {summary['accepted']:,} jobs accepted so "
                                 f"far (the input through its record at line 5,000; the rest is not in it), and "
                                 f"they will run; stop them with `tierq cancel {batch}`"), err
    with clean.engine.connect() as conn:
        total = conn.execute(text("SELECT total FROM batches WHERE id = :b"), {"b": batch}).scalar_one()
        jobs = conn.execute(text("SELECT count(*) FROM jobs WHERE batch_id = :b AND handoff IS NOT NULL"),
                            {"b": batch}).scalar_one()
    assert summary["accepted"] == total == jobs == 5000
    redis.Redis.from_url(broker).flushdb()


def test_a_sigterm_in_the_middle_of_writing_a_large_file_loses_no_job_it_read(clean: Stack, tmp_path: Path) -> None:
    # Python raises the interrupt wherever the command is; inside a COPY or its commit the rows rolled back
    # after they had left the reader's memory (about one run in eight lost thousands of jobs, unsaid). The
    # signal now waits for the write to end. Sent at a few points of a file submitted at full speed.
    broker = clean.dbs.url(3)
    (tmp_path / "big.jsonl").write_text("".join(f'{{"id": "b{n}", "prompt": "ticket {n}: where is my parcel?"}}\n'
                                                 for n in range(60_000)))
    interrupted = 0
    # After so many jobs are stored, and then a little later: while the next rows are read, copied or committed.
    for after, later in ((2_000, 0.0), (4_000, 0.03), (8_000, 0.06), (12_000, 0.09), (16_000, 0.12),
                         (20_000, 0.15)):
        redis.Redis.from_url(broker).flushdb()
        proc = subprocess.Popen([str(TIERQ), "submit", "big.jsonl", "--json"],
                                env={**clean.env, "TIERQ_BROKER_URL": broker}, cwd=tmp_path,
                                stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        with clean.engine.connect() as conn:
            before = conn.execute(text("SELECT coalesce(max(id), 0) FROM jobs")).scalar_one()
            while proc.poll() is None and conn.execute(
                    text("SELECT count(*) FROM jobs WHERE id > :n"), {"n": before}).scalar_one() < after:
                conn.rollback()
                time.sleep(0.01)
        time.sleep(later)
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=60)
        summary = json.loads(out)
        with clean.engine.connect() as conn:
            total, stored = conn.execute(text("SELECT b.total, (SELECT count(*) FROM jobs j WHERE j.batch_id = b.id) "
                                              "FROM batches b WHERE b.id = :b"), {"b": summary["batch_id"]}).one()
        if proc.returncode == 0:  # it was through before the signal came: nothing to compare
            continue
        assert proc.returncode == 143 and summary["interrupted"] is True and "Traceback" not in err, (out, err)
        assert summary["accepted"] == total == stored > 0, (summary, total, stored)
        # Every line read is stored: the file can be taken up again right after the line it names.
        assert summary["last_line"] == stored, (summary, stored)
        assert f"(the input through its record at line {stored:,}; the rest is not in it" in err, err
        interrupted += 1
    assert interrupted >= 4  # stopped mid-way, not after the file was through
    redis.Redis.from_url(broker).flushdb()


def test_intervals_timeouts_and_ports_out_of_range_are_refused_before_anything_runs(
    clean: Stack, tmp_path: Path
) -> None:
    # -1 ran until its first sleep and ended in a traceback (sleep length must be non-negative); 0 queried
    # Postgres and Redis in a busy loop.
    insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.connect() as conn:
        batch = str(conn.execute(text("SELECT id FROM batches")).scalar_one())
    for interval, problem in (("-1", "-1.0 is not in the range 0.1<=x<=86400"),
                              ("0", "0.0 is not in the range 0.1<=x<=86400"),
                              ("nan", "'nan' is not a number of seconds"), ("inf", "inf is not in the range")):
        done = tierq(clean, tmp_path, "status", batch, "--watch", "--interval", interval, timeout=30)
        assert done.returncode == 2 and "Traceback" not in done.stderr, done.stderr
        assert f"Invalid value for '--interval': {problem}" in done.stderr, done.stderr
    # The same tracebacks: socket's "Timeout value out of range" and bind()'s OverflowError.
    for args, problem in ((("doctor", "--timeout", "-1"), "'--timeout': -1.0 is not in the range 0<x<=3600."),
                          (("doctor", "--timeout", "nan"), "'--timeout': 'nan' is not a number of seconds"),
                          (("metrics", "--port", "99999"), "'--port': 99999 is not in the range 0<=x<=65535.")):
        done = tierq(clean, tmp_path, *args, timeout=30)
        assert done.returncode == 2 and f"Invalid value for {problem}" in done.stderr, done.stderr


def test_results_of_a_batch_still_running_say_which_jobs_have_no_line_yet(clean: Stack, tmp_path: Path) -> None:
    # An empty or partial file with exit 0 and no word: `tierq submit F && tierq results B -o out` looked done.
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.connect() as conn:
        batch = str(conn.execute(text("SELECT id FROM batches")).scalar_one())
    early = tierq(clean, tmp_path, "results", batch)
    assert early.returncode == 0 and early.stdout == "", early.stderr
    assert early.stderr == (f"note: batch {batch} is not finished: its 1 jobs still waiting or running have no line "
                            f"here; `tierq status {batch} --watch` follows it to its end\n")
    with clean.engine.begin() as conn:
        conn.execute(text("UPDATE jobs SET status = 'succeeded', content = 'It left today.', finished_at = now() "
                          "WHERE id = :j"), {"j": job})
    done = tierq(clean, tmp_path, "results", batch, "--format", "openai")
    assert done.returncode == 0 and done.stderr == "" and len(json_lines(done.stdout)) == 1, done.stderr


def test_tierq_log_level_is_applied_and_checked(clean: Stack, tmp_path: Path) -> None:
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    env = {**clean.env, "TIERQ_LOG_LEVEL": "debug"}
    loud = subprocess.run([str(TIERQ), "submit", "t.jsonl"], env=env, cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=True)
    quiet = tierq(clean, tmp_path, "submit", "t.jsonl")
    assert "DEBUG producer.submit: batch " in loud.stderr and "DEBUG" not in quiet.stderr
    wrong = subprocess.run([str(TIERQ), "status", str(uuid.uuid4())], env={**clean.env, "TIERQ_LOG_LEVEL": "loud"},
                           cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert wrong.returncode == 2 and wrong.stderr.startswith("error: invalid settings: TIERQ_LOG_LEVEL: ")


@pytest.mark.parametrize("command", [["submit", "t.jsonl"], ["status", "0b6f1c8e-0000-0000-0000-000000000000"]])
@pytest.mark.parametrize(
    ("make", "problem"),
    [
        (lambda path: path.mkdir(), "a directory, not a TOML file; set TIERQ_CONFIG to the TOML file itself"),
        (lambda path: path.write_bytes(b'[worker]\n# caf\xe9 (Latin-1)\nthreads = 4\n'),
         "not UTF-8 text; save it as UTF-8 (a TOML file is UTF-8 by definition)"),
    ],
    ids=["directory", "not-utf8"],
)
def test_a_config_that_is_not_a_readable_toml_file_is_one_line(
    clean: Stack, tmp_path: Path, command: list[str], make: Any, problem: str
) -> None:
    # Both were tracebacks (IsADirectoryError, UnicodeDecodeError).
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    config = tmp_path / "tierq.toml"
    make(config)
    done = subprocess.run([str(TIERQ), *command], env={**clean.env, "TIERQ_CONFIG": str(config)}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "Traceback" not in done.stderr and done.stderr.count("\n") == 1, done.stderr
    where = f"{config}:2" if config.is_file() else str(config)  # the line of the first byte that is not UTF-8
    assert done.stderr == f"error: {where}: {problem}\n"


@pytest.mark.skipif(os.geteuid() == 0, reason="root reads a file whatever its permissions")
def test_a_config_this_user_cannot_read_is_one_line(clean: Stack, tmp_path: Path) -> None:
    config = tmp_path / "tierq.toml"
    config.write_text("[worker]\n")
    config.chmod(0)
    done = subprocess.run([str(TIERQ), "status", "0b6f1c8e-0000-0000-0000-000000000000"],
                          env={**clean.env, "TIERQ_CONFIG": str(config)}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and done.stderr == (
        f"error: {config}: cannot read it (Permission denied); make it readable by this user, or set TIERQ_CONFIG "
        "to a TOML file it can read\n"), done.stderr


@pytest.mark.parametrize(
    "args",
    [
        ["db", "upgrade"],
        ["submit", "t.jsonl"],
        ["status", "0b6f1c8e-0000-0000-0000-000000000000"],
        ["results", "0b6f1c8e-0000-0000-0000-000000000000"],
        ["report"],
    ],
)
def test_every_command_says_in_one_line_that_postgres_does_not_answer(
    clean: Stack, tmp_path: Path, args: list[str]
) -> None:
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    url = f"postgresql+psycopg://tierq:s3cret@127.0.0.1:{closed_port()}/tierq"
    done = subprocess.run([str(TIERQ), *args], env={**clean.env, "TIERQ_DATABASE_URL": url}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "s3cret" not in done.stderr, done.stderr
    assert done.stderr.startswith("error: cannot reach Postgres at postgresql+psycopg://tierq:***@127.0.0.1:")
    assert done.stderr.rstrip().endswith("start it or fix TIERQ_DATABASE_URL")


@pytest.mark.parametrize(
    "args",
    [
        ["submit", "t.jsonl"],
        ["cancel", "0b6f1c8e-0000-0000-0000-000000000000"],
        ["retry", "0b6f1c8e-0000-0000-0000-000000000000", "--failed"],
        ["recover"],
        ["report"],
        ["status", "0b6f1c8e-0000-0000-0000-000000000000"],
    ],
)
def test_every_command_on_a_database_not_yet_upgraded_asks_for_the_upgrade(
    clean: Stack, tmp_path: Path, empty_database: str, args: list[str]
) -> None:
    # The commands that go through SQLAlchemy printed psycopg's UndefinedTable as a traceback.
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    done = subprocess.run([str(TIERQ), *args], env={**clean.env, "TIERQ_DATABASE_URL": empty_database}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1, done.stderr
    assert done.stderr.startswith("error: Postgres at ")
    assert "does not hold tierq's current tables (relation " in done.stderr
    assert done.stderr.rstrip().endswith("; run: tierq db upgrade")


def test_a_redis_that_wants_a_password_says_so_rather_than_to_start_it(clean: Stack, tmp_path: Path) -> None:
    # Both were "cannot use Redis ...; start it or fix TIERQ_REDIS_URL", one with Redis's HELLO protocol text.
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.connect() as conn:
        running = str(conn.execute(text("SELECT id FROM batches")).scalar_one())  # status asks Redis for workers
    with throwaway_redis(log=lambda _: None) as url:
        redis.Redis.from_url(url).config_set("requirepass", "right-pw")
        wrong = url.replace("redis://", "redis://:wrong-pw@")
        for args in (["submit", "t.jsonl"], ["cache", "stats"], ["status", running]):
            shown = {}
            for given in (url, wrong):
                done = subprocess.run([str(TIERQ), *args], env={**clean.env, "TIERQ_REDIS_URL": given}, cwd=tmp_path,
                                      capture_output=True, text=True, timeout=60)
                assert done.returncode == 2 and done.stderr.count("\n") == 1, (args, done.stderr)
                assert "wrong-pw" not in done.stderr, (args, done.stderr)
                shown[given] = done.stderr
            assert shown[url] == (f"error: Redis at {url} asks for a password and TIERQ_REDIS_URL gives none; "
                                  "put it there: redis://:PASSWORD@HOST:PORT/DB\n"), args
            assert shown[wrong].startswith("error: Redis at redis://:***@127.0.0.1:"), args
            assert shown[wrong].rstrip().endswith("; fix the user or password in TIERQ_REDIS_URL"), args
        # The password given as a user name (its colon forgotten): not printed, and the slip is named.
        slip = url.replace("redis://", "redis://right-pw@")
        done = subprocess.run([str(TIERQ), "submit", "t.jsonl"], env={**clean.env, "TIERQ_REDIS_URL": slip},
                              cwd=tmp_path, capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and "right-pw" not in done.stderr, done.stderr
        assert done.stderr.startswith("error: Redis at redis://***@127.0.0.1:"), done.stderr
        assert "gives a user name without a password; a password goes after a colon" in done.stderr, done.stderr


def test_a_password_in_the_query_of_the_database_url_is_never_printed(clean: Stack, tmp_path: Path) -> None:
    # libpq takes ?password= as well as user:password@; only the latter was masked.
    refused = f"postgresql+psycopg://tierq@127.0.0.1:{closed_port()}/tierq?password=QuerySecret9&sslmode=disable"
    done = subprocess.run([str(TIERQ), "status", "0b6f1c8e-0000-0000-0000-000000000000"],
                          env={**clean.env, "TIERQ_DATABASE_URL": refused}, cwd=tmp_path, capture_output=True,
                          text=True, timeout=60)
    assert done.returncode == 2 and "QuerySecret9" not in done.stdout + done.stderr, done.stderr
    assert done.stderr.startswith("error: cannot reach Postgres at postgresql+psycopg://tierq@127.0.0.1:")
    assert "/tierq?password=***&sslmode=disable (" in done.stderr
    # The server trusts local logins, so the password is not needed, but it is still not shown when all is well.
    answers = f"{clean.settings.database_url}?password=QuerySecret9"
    checked = subprocess.run([str(TIERQ), "doctor", "--timeout", "1"], env={**clean.env, "TIERQ_DATABASE_URL": answers},
                             cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert "QuerySecret9" not in checked.stdout + checked.stderr
    assert re.search(r"^ok +postgres +\S+\?password=\*\*\* accepts connections$", checked.stdout, re.M), checked.stdout


def test_commands_that_write_give_up_in_seconds_on_a_postgres_that_never_answers(
    clean: Stack, tmp_path: Path, silent_postgres: str
) -> None:
    # They waited for the kernel to give up on the connection (2 min 11 s), printing nothing.
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    batch = "0b6f1c8e-0000-0000-0000-000000000000"
    commands = [["submit", "t.jsonl"], ["cancel", batch], ["retry", batch, "--failed"], ["db", "upgrade"]]
    started = time.monotonic()
    running = [subprocess.Popen([str(TIERQ), *args], env={**clean.env, "TIERQ_DATABASE_URL": silent_postgres},
                                cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for args in commands]
    for args, proc in zip(commands, running, strict=True):
        try:
            stdout, stderr = proc.communicate(timeout=max(1.0, started + 30 - time.monotonic()))
        except subprocess.TimeoutExpired:
            for other in running:
                other.kill()
            pytest.fail(f"tierq {' '.join(args)} still waits for Postgres after 30 s")
        assert proc.returncode == 2 and stderr.count("\n") == 1 and stdout == "", (args, stderr)
        assert stderr.startswith("error: cannot reach Postgres at postgresql+psycopg://tierq:***@127.0.0.1:"), args
        assert "timeout expired" in stderr and stderr.rstrip().endswith("start it or fix TIERQ_DATABASE_URL"), stderr
        assert "s3cret" not in stderr


@pytest.mark.parametrize("variable", ["TIERQ_REDIS_URL", "TIERQ_BROKER_URL"])
def test_submit_says_in_one_line_that_redis_or_the_broker_does_not_answer(clean: Stack, tmp_path: Path,
                                                                           variable: str) -> None:
    (tmp_path / "t.jsonl").write_text('{"prompt": "Where is my parcel?"}\n')
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0" if variable == "TIERQ_REDIS_URL" else \
        f"amqp://guest:s3cret@127.0.0.1:{closed_port()}//"
    done = subprocess.run([str(TIERQ), "submit", "t.jsonl"], env={**clean.env, variable: url}, cwd=tmp_path,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and done.stderr.count("\n") == 1 and "s3cret" not in done.stderr, done.stderr
    assert done.stderr.rstrip().endswith(f"start it or fix {variable}")
    with clean.engine.connect() as conn:  # nothing was stored half-way
        assert conn.execute(text("SELECT count(*) FROM batches")).scalar_one() == 0


def test_status_of_a_running_batch_says_in_one_line_that_redis_does_not_answer(clean: Stack, tmp_path: Path) -> None:
    insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.connect() as conn:
        batch = str(conn.execute(text("SELECT id FROM batches")).scalar_one())
    url = f"redis://:s3cret@127.0.0.1:{closed_port()}/0"
    for args in (["status", batch], ["status", batch, "--json"]):
        done = subprocess.run([str(TIERQ), *args], env={**clean.env, "TIERQ_REDIS_URL": url}, cwd=tmp_path,
                              capture_output=True, text=True, timeout=60)
        assert done.returncode == 2 and done.stderr.count("\n") == 1 and "s3cret" not in done.stderr, done.stderr
        assert done.stderr.startswith("error: cannot use Redis at redis://:***@127.0.0.1:"), done.stderr
        assert done.stderr.rstrip().endswith("start it or fix TIERQ_REDIS_URL")


def test_report_and_status_show_calls_by_outcome_and_warn_about_a_failing_model(clean: Stack, tmp_path: Path) -> None:
    clean.simulate({"latency_ms": 0, "models": {"sim-nano": {"error_500_rate": 0.5}}})
    (tmp_path / "t.jsonl").write_text("".join(f'{{"prompt": "ticket {n}: where is my parcel?"}}\n' for n in range(60)))
    submitted = tierq(clean, tmp_path, "submit", "t.jsonl", "--tier", "hot", "--no-cache", "--wait", "--json")
    batch = json.loads(submitted.stdout)["batch_id"]
    report = json.loads(tierq(clean, tmp_path, "report", batch, "--json").stdout)
    nano = next(m for m in report["by_model"] if m["model"] == "sim-nano")
    assert nano["jobs"] == 60 and nano["outcomes"]["http_5xx"] > 10 and nano["outcomes"]["ok"] > 0
    assert report["totals"]["outcomes"]["http_5xx"] == nano["outcomes"]["http_5xx"]
    text_report = tierq(clean, tmp_path, "report", batch).stdout
    assert f"  sim-nano: ok {nano['outcomes']['ok']:,}, http_5xx {nano['outcomes']['http_5xx']:,}" in text_report
    status = json.loads(tierq(clean, tmp_path, "status", batch, "--json").stdout)
    assert status["warnings"] and status["warnings"][0].startswith("sim-nano: ")
    assert "calls failed (http_5xx " in status["warnings"][0]
    assert any(
        line.startswith("  warning: sim-nano: ") for line in tierq(clean, tmp_path, "status", batch).stdout.splitlines()
    )


@pytest.fixture()
def demo_database(clean: Stack) -> Iterator[str]:
    """A name for the demo's Postgres database (it stands in for the default, tierq_demo), dropped after."""
    name = f"tierq_demo_test_{uuid.uuid4().hex[:8]}"
    yield name
    admin = make_url(clean.settings.database_url).set(drivername="postgresql", database="postgres")
    with psycopg.connect(admin.render_as_string(hide_password=False), autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.mark.slow
def test_the_demo_keeps_its_queues_cache_and_batches_apart_from_a_users(clean: Stack, tmp_path: Path,
                                                                          demo_database: str) -> None:
    user_db = redis.Redis.from_url(clean.settings.redis_url)
    demo_url = clean.dbs.url(3)  # a spare database of this session stands in for the default, 15
    demo_db = redis.Redis.from_url(demo_url)
    demo_db.flushdb()
    number = demo_url.rsplit("/", 1)[1]
    done = tierq(clean, tmp_path, "demo", "--jobs", "20", "--redis-db", number, "--database", demo_database,
                 timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert f"(database {number}: the demo's queues and cache, apart from yours)" in done.stdout
    assert f"/{demo_database} (the demo's batches, apart from yours)" in done.stdout
    prefix = clean.config.cache.prefix
    assert list(demo_db.scan_iter(match=f"{prefix}:e:*")), "the demo filled its own cache"
    assert not list(user_db.scan_iter(match=f"{prefix}:e:*")), "and none of the user's"
    demo_db.flushdb()
    # Its batch went into a database of its own: the user's bill does not count it.
    demo_engine = make_engine(make_url(clean.settings.database_url).set(database=demo_database)
                              .render_as_string(hide_password=False))
    try:
        with demo_engine.connect() as conn:
            assert conn.execute(text("SELECT count(*) FROM jobs")).scalar_one() == 20
    finally:
        demo_engine.dispose()
    with clean.engine.connect() as conn:
        assert conn.execute(text("SELECT count(*) FROM batches WHERE source = 'demo'")).scalar_one() == 0
    # The command it prints for the results names that database and the demo's TOML, and works as printed
    # in a shell where neither is set.
    printed = next(line for line in done.stdout.splitlines() if line.startswith("results: "))
    command = printed.removeprefix("results: ")
    assert re.match(rf"TIERQ_DATABASE_URL=\S+/{demo_database} TIERQ_CONFIG=\S+ \S+ results ", command), command
    bare = {k: v for k, v in clean.env.items() if k not in ("TIERQ_DATABASE_URL", "TIERQ_CONFIG")}
    shown = subprocess.run(["bash", "-c", command], env=bare, cwd=tmp_path, capture_output=True, text=True,
                           timeout=60, check=False)
    assert shown.returncode == 0 and len(shown.stdout.splitlines()) == 20, shown.stderr[-2000:]


@pytest.mark.slow
def test_the_demo_in_batch_mode_answers_through_the_batch_api_and_bills_the_saving(clean: Stack, tmp_path: Path,
                                                                                   demo_database: str) -> None:
    demo_url = clean.dbs.url(3)
    redis.Redis.from_url(demo_url).flushdb()
    done = tierq(clean, tmp_path, "demo", "--jobs", "60", "--batch-mode", "--redis-db", demo_url.rsplit("/", 1)[1],
                 "--database", demo_database, timeout=300)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "batch mode: tiers cold send their jobs to the provider's batch API" in done.stdout
    line = next(x for x in done.stdout.splitlines() if x.startswith("provider batch APIs: "))
    calls, paid, listed, saved = re.fullmatch(
        r"provider batch APIs: (\d+) calls, \$([\d.]+) at batch prices \(\$([\d.]+) at list prices, \$([\d.]+) saved\)",
        line).groups()
    assert int(calls) > 0 and Decimal(listed) == 2 * Decimal(paid) and Decimal(saved) == Decimal(paid)
    redis.Redis.from_url(demo_url).flushdb()


def test_cancelling_a_finished_batch_changes_nothing_and_its_failed_jobs_can_still_run_again(
        clean: Stack, tmp_path: Path) -> None:
    clean.simulate({"latency_ms": 0, "refusal_rate": 1.0})
    with clean.client() as tq:
        batch = tq.submit([{"id": f"t{n}", "prompt": f"{uuid.uuid4()} order {n}"} for n in range(2)],
                         BatchOptions(use_cache=False))
        assert clean.wait(tq, batch.batch_id).by_status == {"failed": 2}
        done = tierq(clean, tmp_path, "cancel", str(batch.batch_id))
        assert (done.returncode, done.stderr) == (0, "")
        assert done.stdout == (f"batch {batch.batch_id} has finished: nothing to cancel (its results stay; "
                               f"`tierq retry {batch.batch_id} --failed` runs its failed jobs again)\n")
        assert tq.cancel(batch.batch_id).as_dict() == {"batch_id": str(batch.batch_id), "cancelled": 0,
                                                       "running": 0, "finished": True, "already_cancelled": False,
                                                       "kept_answers": 0}
        assert not tq.status(batch.batch_id).cancelled
        clean.simulate({"latency_ms": 0})
        assert tq.retry_failed(batch.batch_id) == 2
        assert clean.wait(tq, batch.batch_id).by_status == {"succeeded": 2}


def test_status_says_what_a_waiting_job_waits_for(clean: Stack, tmp_path: Path) -> None:
    # The same question asked in two batches: the second's job waits for the first's, which waits at hot.
    leader = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    follower = insert_job(clean, "Where is my parcel?", status="waiting", tier=None, handoff=uuid.uuid4())
    with clean.engine.begin() as conn:
        first = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": leader}).scalar_one()
        second = conn.execute(text("UPDATE jobs SET follows = :l WHERE id = :j RETURNING batch_id"),
                              {"l": leader, "j": follower}).scalar_one()
    shown = json.loads(tierq(clean, tmp_path, "status", str(second), "--json").stdout)
    assert shown["waiting_for"] == [{"batch_id": str(first), "status": "queued", "tier": "hot", "jobs": 1}]
    lines = tierq(clean, tmp_path, "status", str(second)).stdout.splitlines()
    assert f"  waiting: 1 job waits for the answer to the same question from batch {first}, queued at hot; " \
           f"`tierq status {first}` shows how that one goes" in lines, lines


def test_status_says_when_running_jobs_lost_their_worker(clean: Stack, tmp_path: Path) -> None:
    # As after a SIGKILL: a running job, claimed 70 s ago, whose worker stopped renewing its lease 40 s ago.
    job = insert_job(clean, "Where is my parcel?", status="running", tier="hot", handoff=uuid.uuid4(), age_s=70)
    with clean.engine.begin() as conn:
        batch = conn.execute(text("UPDATE jobs SET lease_owner = :o, lease_until = now() - interval '40 seconds' "
                                  "WHERE id = :j RETURNING batch_id"), {"j": job, "o": uuid.uuid4()}).scalar_one()
    shown = json.loads(tierq(clean, tmp_path, "status", str(batch), "--json").stdout)
    assert (shown["lease_expired"], shown["stuck"], shown["eta_s"]) == (1, 0, None)  # no ETA rather than a wrong one
    lines = tierq(clean, tmp_path, "status", str(batch)).stdout.splitlines()
    assert any(re.fullmatch(r"  stopped worker: 1 running job's worker stopped renewing their lease 4\ds ago \(it "
                            r"died or hangs\); they are sent again once they have been still for \[worker\] "
                            rf"stuck_after_s \(`tierq recover {batch} --older-than 0m` does it now\)", line)
               for line in lines), lines


def test_status_does_not_ask_for_a_recover_that_was_just_done(clean: Stack, tmp_path: Path) -> None:
    # A running job whose worker died, recovered by hand onto a broker no worker reads: it stays running.
    job = insert_job(clean, "Where is my parcel?", status="running", tier="hot", handoff=uuid.uuid4())
    with clean.engine.begin() as conn:
        batch = conn.execute(text("UPDATE jobs SET lease_owner = :o, lease_until = now() - interval '40 seconds', "
                                  "updated_at = now() - interval '5 minutes' WHERE id = :j RETURNING batch_id"),
                             {"j": job, "o": uuid.uuid4()}).scalar_one()
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker}

    def run(*args: str) -> str:
        return subprocess.run([str(TIERQ), *args], env=env, cwd=tmp_path, capture_output=True, text=True,
                              timeout=60, check=True).stdout

    assert f"`tierq recover {batch} --older-than 0m` does it now" in run("status", str(batch))
    assert run("recover", str(batch), "--older-than", "0m") == "published 1 messages again for 1 waiting jobs\n"
    shown = json.loads(run("status", str(batch), "--json"))
    assert (shown["lease_expired"], shown["lease_expired_resent"], shown["stuck"]) == (0, 1, 0)
    lines = run("status", str(batch)).splitlines()
    assert not any("tierq recover" in line for line in lines), lines
    assert ("  sent again: 1 running job's worker stopped renewing their lease, and their message has been "
            "published again since; a worker of their queue takes them up") in lines


def test_status_shows_jobs_held_by_an_outage_and_a_model_whose_every_call_failed(clean: Stack, tmp_path: Path) -> None:
    # As with a provider that cannot be reached: a few calls, all refused, and the job put back to wait.
    job = insert_job(clean, "Where is my parcel?", status="queued", tier="hot", handoff=uuid.uuid4())
    with clean.engine.begin() as conn:
        batch = conn.execute(text("UPDATE jobs SET held_since = now() - interval '125 seconds', holds = 2 "
                                  "WHERE id = :j RETURNING batch_id"), {"j": job}).scalar_one()
        for attempt in (1, 2, 3):
            conn.execute(text(
                "INSERT INTO calls (id, job_id, batch_id, attempt, tier, model, provider, prompt_tokens, "
                "completion_tokens, cached_tokens, usage_estimated, cost_usd, saved_usd, latency_ms, outcome, error) "
                "VALUES (:id, :j, :b, :a, 'hot', 'sim-nano', 'sim', 0, 0, 0, false, 0, 0, 3, 'connection', "
                "'connection: the provider refused the connection (is it running?)')"),
                {"id": uuid.uuid4(), "j": job, "b": batch, "a": attempt})
    shown = json.loads(tierq(clean, tmp_path, "status", str(batch), "--json").stdout)
    assert shown["held"] == 1 and shown["held_longest_s"] >= 125 and shown["held_reason"] is None
    assert shown["warnings"] == ["sim-nano: 3 of 3 calls failed (connection 3)"]
    lines = tierq(clean, tmp_path, "status", str(batch)).stdout.splitlines()
    assert any(re.match(r"  held: 1 job waits out a provider outage, a rate limit or the budget \(the longest for "
                        r"\d+m \d\ds\)", line) for line in lines), lines
    assert any(line.startswith("  warning: sim-nano: 3 of 3 calls failed (connection 3)") for line in lines)


def test_status_tells_jobs_held_at_two_tiers_each_their_own_reason(clean: Stack, tmp_path: Path) -> None:
    # The hot tier waits out a 429 while the cold tier's provider is down: the reason most jobs share is not
    # the cold jobs' reason.
    hot = [insert_job(clean, f"Where is parcel {n}?", status="queued", tier="hot", handoff=uuid.uuid4())
           for n in range(3)]
    cold = insert_job(clean, "Explain the refund rules", status="queued", tier="cold", handoff=uuid.uuid4())
    with clean.engine.begin() as conn:
        batch = conn.execute(text("SELECT batch_id FROM jobs WHERE id = :j"), {"j": hot[0]}).scalar_one()
        conn.execute(text("UPDATE jobs SET batch_id = :b, seq = id, custom_id = 'j' || id, "
                          "held_since = now() - interval '90 seconds', holds = 1, "
                          "held_until = now() + interval '1 hour', error = CASE WHEN tier = 'hot' "
                          "THEN 'rate limit: sim-nano asked to wait 20 s (HTTP 429)' "
                          "ELSE 'connection: provider ''sim'' cannot be reached' END WHERE id = ANY(:ids)"),
                     {"b": batch, "ids": [*hot, cold]})
        conn.execute(text("UPDATE batches SET total = 4 WHERE id = :b"), {"b": batch})
    shown = json.loads(tierq(clean, tmp_path, "status", str(batch), "--json").stdout)
    assert shown["held"] == 4 and shown["held_reason"] == "rate limit: sim-nano asked to wait 20 s (HTTP 429)"
    assert [(q["queue"], q["jobs"], q["reason"], q["longest_s"] >= 90) for q in shown["held_by_queue"]] == [
        ("hot", 3, "rate limit: sim-nano asked to wait 20 s (HTTP 429)", True),
        ("cold", 1, "connection: provider 'sim' cannot be reached", True)]
    lines = tierq(clean, tmp_path, "status", str(batch)).stdout.splitlines()
    at = next(n for n, line in enumerate(lines) if line.startswith("  held: 4 jobs wait (the longest for 1m "))
    assert lines[at + 1].startswith("    at hot: 3 (the longest for 1m ")
    assert lines[at + 1].endswith("): rate limit: sim-nano asked to wait 20 s (HTTP 429)")
    assert lines[at + 2].startswith("    at cold: 1 (the longest for 1m ")
    assert lines[at + 2].endswith("): connection: provider 'sim' cannot be reached; if it should be up, "
                                  "`tierq doctor` tries each provider's base_url")
