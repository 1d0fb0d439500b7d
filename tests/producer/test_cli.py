"""The `tierq` command as users run it: a real subprocess against the test deployment."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from conftest import Stack
from sqlalchemy import text
from sqlalchemy.engine import make_url

TIERQ = Path(sys.executable).parent / "tierq"


def tierq(stack: Stack, cwd: Path, *args: str, stdin: bytes | None = None, timeout: float = 120) -> subprocess.CompletedProcess[str]:
    """Run `tierq ARGS` with the deployment's environment, from a directory without a .env file."""
    return subprocess.run([str(TIERQ), *args], env=stack.env, cwd=cwd, input=stdin.decode() if stdin else None,
                          capture_output=True, text=True, timeout=timeout, check=False)


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
    assert set(results[0]) == {"id", "status", "content", "tier", "model", "cached", "cost_usd", "attempts", "error"}

    text = tierq(clean, tmp_path, "status", batch)
    assert text.stdout.startswith(f"batch {batch}: 2/2 done, done"), text.stdout


def test_submit_from_standard_input_in_the_openai_batch_format(clean: Stack, tmp_path: Path) -> None:
    lines = [{"custom_id": f"req-{n}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": f"Question {n}: where is my parcel?"}],
                       "max_tokens": 200}} for n in range(3)]
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
    template = tierq(clean, tmp_path, "submit", "bad.jsonl", "--template", "{a.b}")
    assert template.returncode == 2 and "--template field {a.b} is not a plain field name" in template.stderr
    unknown = tierq(clean, tmp_path, "status", "not-a-batch")
    assert unknown.returncode == 1 and "is not a batch id" in unknown.stderr


def test_status_says_in_one_line_when_postgres_refuses_connections(clean: Stack, tmp_path: Path) -> None:
    role = f"tierq_full_{uuid.uuid4().hex[:6]}"  # a role Postgres lets no one in as: as good as a full server
    with clean.engine.begin() as conn:
        conn.execute(text(f'CREATE ROLE "{role}" LOGIN CONNECTION LIMIT 0'))
    try:
        url = make_url(clean.settings.database_url).set(username=role, password="pw").render_as_string(hide_password=False)
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
