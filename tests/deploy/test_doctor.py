"""`tierq doctor` against the real stack: all ready, then each dependency down in turn."""

from __future__ import annotations

import http.server
import json
import os
import socket
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
from conftest import SIM_CONFIG, Stack, start_worker, stop_worker
from deploy_support import closed_port, sim_variant, tierq
from sqlalchemy.engine import make_url

from migrations import upgrade

CANARY = "sk-canary-doctor-0c8b1f5e9a"
EVERY_CHECK = ["config", "redis", "postgres", "migrations", "provider sim", "stuck jobs",
               "queue classify", "queue hot", "queue warm", "queue cold", "worker config", "worker names"]
OTHER_TOML = "worker config"  # the session's workers run sim.toml, not the variant a case gives doctor


def doctor(env: dict[str, str], cwd: Path) -> tuple[int, dict[str, dict[str, Any]], str]:
    """Run `tierq doctor --json`; return the exit code, the checks by name and the raw output."""
    done = tierq(["doctor", "--json", "--timeout", "1"], env, cwd)
    assert done.stdout, done.stderr
    checks = {check["name"]: check for check in json.loads(done.stdout)["checks"]}
    return done.returncode, checks, done.stdout + done.stderr


def by_state(checks: dict[str, dict[str, Any]], state: str) -> set[str]:
    return {name for name, check in checks.items() if check["state"] == state}


class _Unauthorized(http.server.BaseHTTPRequestHandler):
    def do_GET(self) -> None:  # noqa: N802 (the name http.server calls)
        self.send_response(401)
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"error": {"message": "Incorrect API key provided"}}')

    def log_message(self, *args: Any) -> None:
        """Keep the test output quiet."""


@pytest.fixture()
def rejecting_provider() -> Iterator[str]:
    """A real HTTP server that answers 401 to every request, like a provider given a wrong key."""
    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Unauthorized)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}/v1"
    server.shutdown()
    server.server_close()


def test_a_healthy_deployment_passes_every_check(stack: Stack, tmp_path: Path) -> None:
    code, checks, output = doctor(stack.env, tmp_path)
    assert code == 0, output
    assert list(checks) == EVERY_CHECK
    assert by_state(checks, "ok") == set(EVERY_CHECK)
    text = tierq(["doctor", "--timeout", "1"], stack.env, tmp_path)
    assert text.returncode == 0 and text.stdout.rstrip().endswith("everything is ready"), text.stdout


Case = Callable[[Stack, Path], dict[str, str]]


def bad_setting(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"TIERQ_REDIS_URL": "127.0.0.1:6379"}


def redis_down(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"TIERQ_REDIS_URL": f"redis://127.0.0.1:{closed_port()}/0"}


def broker_down(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"TIERQ_BROKER_URL": f"amqp://guest:guest@127.0.0.1:{closed_port()}//"}


def broker_refuses_login(stack: Stack, tmp: Path) -> dict[str, str]:
    url = make_url(os.environ.get("TIERQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    return {"TIERQ_BROKER_URL": url.set(password="not-the-password").render_as_string(hide_password=False)}


def postgres_down(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"TIERQ_DATABASE_URL": f"postgresql+psycopg://postgres@127.0.0.1:{closed_port()}/tierq"}


def database_missing(stack: Stack, tmp: Path) -> dict[str, str]:
    url = make_url(stack.settings.database_url).set(database=f"tierq_missing_{uuid.uuid4().hex[:8]}")
    return {"TIERQ_DATABASE_URL": url.render_as_string(hide_password=False)}


def provider_down(stack: Stack, tmp: Path) -> dict[str, str]:
    return {"TIERQ_SIM_URL": f"http://127.0.0.1:{closed_port()}/v1"}


def key_missing(stack: Stack, tmp: Path) -> dict[str, str]:
    config = sim_variant(tmp / "keyed.toml", provider='api_key_env = "TIERQ_DOCTOR_KEY"')
    return {"TIERQ_CONFIG": str(config)}


def queue_without_worker(stack: Stack, tmp: Path) -> dict[str, str]:
    config = sim_variant(tmp / "frozen.toml", append='[[tiers]]\nname = "frozen"\nmodels = ["sim-flagship"]\n')
    return {"TIERQ_CONFIG": str(config)}


@pytest.mark.parametrize(
    ("case", "problem", "fix", "skipped"),
    [
        (bad_setting, "settings", "fix the variables named above", set()),
        (redis_down, "redis", "TIERQ_REDIS_URL", {"workers", "stuck jobs"}),
        (broker_down, "broker", "TIERQ_BROKER_URL", {"workers"}),
        (broker_refuses_login, "broker", "put the right user and password in TIERQ_BROKER_URL", {"workers"}),
        (postgres_down, "postgres", "start PostgreSQL", {"migrations", "stuck jobs"}),
        (database_missing, "postgres", "tierq db upgrade", {"migrations", "stuck jobs"}),
        (provider_down, "provider sim", "TIERQ_SIM_URL", set()),
        (key_missing, "provider sim", "export TIERQ_DOCTOR_KEY=", set()),
        (queue_without_worker, "queue frozen", "celery -A workers worker -Q frozen", set()),
    ],
    ids=lambda value: value.__name__ if callable(value) else None,
)
def test_each_dependency_down_is_named_with_its_fix(
    stack: Stack, tmp_path: Path, case: Case, problem: str, fix: str, skipped: set[str]
) -> None:
    code, checks, output = doctor({**stack.env, **case(stack, tmp_path)}, tmp_path)
    assert code == 1, output
    other_toml = {OTHER_TOML} if case in (key_missing, queue_without_worker) else set()
    assert by_state(checks, "problem") == {problem} | other_toml, output
    assert fix in checks[problem]["fix"], checks[problem]
    assert by_state(checks, "skipped") == skipped, output


def test_an_unmigrated_database_asks_for_an_upgrade(stack: Stack, tmp_path: Path, empty_database: str) -> None:
    code, checks, output = doctor({**stack.env, "TIERQ_DATABASE_URL": empty_database}, tmp_path)
    assert code == 1, output
    assert by_state(checks, "problem") == {"migrations"}, output
    assert "none (no tables)" in checks["migrations"]["detail"]
    assert checks["migrations"]["fix"] == "run tierq db upgrade"


def test_a_rejected_key_is_reported_without_printing_it(stack: Stack, tmp_path: Path, rejecting_provider: str) -> None:
    config = sim_variant(tmp_path / "keyed.toml", provider='api_key_env = "TIERQ_DOCTOR_KEY"')
    env = {**stack.env, "TIERQ_CONFIG": str(config), "TIERQ_SIM_URL": rejecting_provider, "TIERQ_DOCTOR_KEY": CANARY}
    code, checks, output = doctor(env, tmp_path)
    assert code == 1, output
    assert by_state(checks, "problem") == {"provider sim", OTHER_TOML}, output
    assert "rejected the key in $TIERQ_DOCTOR_KEY (HTTP 401)" in checks["provider sim"]["detail"]
    text = tierq(["doctor", "--timeout", "1"], env, tmp_path)
    assert text.returncode == 1 and "fix: put a valid key in $TIERQ_DOCTOR_KEY" in text.stdout
    assert CANARY not in output + text.stdout + text.stderr


def test_a_database_migrated_by_a_newer_tierq_is_named(stack: Stack, tmp_path: Path, empty_database: str) -> None:
    libpq = make_url(empty_database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    code, checks, output = doctor({**stack.env, "TIERQ_DATABASE_URL": empty_database}, tmp_path)
    assert code == 1, output
    assert "newer than this tierq knows" in checks["migrations"]["detail"]
    assert "install the tierq version" in checks["migrations"]["fix"]


def test_workers_that_run_another_toml_are_named(stack: Stack, tmp_path: Path) -> None:
    config = sim_variant(tmp_path / "pricier.toml", append="")
    config.write_text(config.read_text().replace("input_usd_per_mtok = 0.10", "input_usd_per_mtok = 0.11", 1))
    code, checks, output = doctor({**stack.env, "TIERQ_CONFIG": str(config)}, tmp_path)
    assert code == 1 and by_state(checks, "problem") == {OTHER_TOML}, output
    detail = checks[OTHER_TOML]["detail"]
    assert detail.startswith(f"1 worker(s) run another configuration than {config}") and str(SIM_CONFIG) in detail
    assert "same TOML (TIERQ_CONFIG)" in checks[OTHER_TOML]["fix"]


def test_two_workers_under_one_name_are_named(stack: Stack, tmp_path: Path) -> None:
    # Celery only warns in the workers' logs; doctor counted them as one worker, and checked the TOML of only
    # one of them.
    other = sim_variant(tmp_path / "pricier.toml", append="")
    other.write_text(other.read_text().replace("input_usd_per_mtok = 0.10", "input_usd_per_mtok = 0.11", 1))
    twins = [start_worker({**stack.env, **env}, tmp_path / f"twin{n}.log", queues="hot", name="twin",
                          args=("-c", "1", "-n", "twin@%h"))
             for n, env in enumerate([{}, {"TIERQ_CONFIG": str(other)}])]
    try:
        code, checks, output = doctor(stack.env, tmp_path)
    finally:
        for twin in twins:
            stop_worker(twin)
    assert code == 1 and by_state(checks, "problem") == {"worker names", OTHER_TOML}, output
    host = socket.gethostname()
    assert checks["worker names"]["detail"] == f"1 name(s) used by more than one worker: twin@{host} (2 workers)"
    assert "-n hot2@%h" in checks["worker names"]["fix"]
    assert checks["queue hot"]["detail"].startswith("3 worker(s): ")
    assert checks[OTHER_TOML]["detail"].startswith("1 worker(s) run another configuration") and str(other) in output


def test_stuck_jobs_are_named_with_their_batch(stack: Stack, tmp_path: Path, empty_database: str) -> None:
    upgrade(empty_database)  # a database of its own: the session's reconciler must not fix the job first
    batch = uuid.uuid4()
    libpq = make_url(empty_database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("INSERT INTO batches (id, tenant, task_type, params, total, rejected, cancelled) "
                     "VALUES (%s, 't', 'default', '{}', 1, 0, false)", (batch,))
        conn.execute("INSERT INTO jobs (batch_id, seq, custom_id, tenant, task_type, messages, params, prompt_chars, "
                     "status, handoff, attempts, escalations, updated_at) VALUES (%s, 1, 'j', 't', 'default', "
                     "'[]', '{}', 1, 'pending', %s, 0, 0, now() - interval '1 hour')", (batch, uuid.uuid4()))
    code, checks, output = doctor({**stack.env, "TIERQ_DATABASE_URL": empty_database}, tmp_path)
    assert code == 1 and by_state(checks, "problem") == {"stuck jobs"}, output
    assert checks["stuck jobs"]["detail"] == (
        f"1 job(s) unchanged for over 120 s with no live message, in batch(es) {batch}")
    assert "tierq recover --older-than 0m" in checks["stuck jobs"]["fix"]


def test_doctor_on_a_redis_that_evicts_still_checks_the_stuck_jobs_and_the_workers(
    stack: Stack, tmp_path: Path
) -> None:
    # Before 2026-12-01 doctor skipped both ("needs the broker") on a Redis that answered and served as the
    # broker but evicted keys: what that Redis had cost (stuck jobs, a queue left without its worker's record)
    # was not shown.
    from reliability.fault_services import evicting_redis

    with evicting_redis(tmp_path / "redis") as url:
        code, checks, out = doctor({**stack.env, "TIERQ_REDIS_URL": url, "TIERQ_BROKER_URL": url}, tmp_path)
    assert code == 1 and checks["redis"]["state"] == "problem" and "allkeys-lru" in checks["redis"]["detail"], out
    assert checks["stuck jobs"]["state"] == "ok", out
    assert "workers" not in checks and checks["queue classify"]["state"] == "problem", out  # no worker there


def test_doctor_names_a_full_redis_and_one_that_evicts(tmp_path: Path) -> None:
    # Before 2026-12-01 doctor said "ok ... answers PING" of a Redis whose every write was refused
    # (maxmemory reached, noeviction), and of one that evicts tierq's queues and records (allkeys-lru).
    import redis
    from reliability.fault_services import RedisServer

    from producer.doctor import State, check_redis

    server = RedisServer(tmp_path)
    server.start()
    url = server.url
    admin = redis.Redis.from_url(url)
    try:
        assert check_redis("redis", url, "TIERQ_REDIS_URL", 3).state == State.OK
        admin.config_set("maxmemory", "1")
        full = check_redis("redis", url, "TIERQ_REDIS_URL", 3)
        assert full.state == State.PROBLEM and "is full" in full.detail and "raise its maxmemory" in (full.fix or "")
        admin.config_set("maxmemory-policy", "allkeys-lru")
        evicting = check_redis("redis", url, "TIERQ_REDIS_URL", 3)
        assert evicting.state == State.PROBLEM and "allkeys-lru" in evicting.detail, evicting
        assert "noeviction" in (evicting.fix or "")
    finally:
        admin.close()
        server.stop()
