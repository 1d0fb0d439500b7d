"""A worker that could not serve its queues refuses to start, with one line that says why and how to fix
it, and takes no message: a missing API key, a queue its TOML does not define, an unreachable database.
Before, such a worker started, consumed its messages and failed them one by one, leaving their jobs behind.
A worker that starts holds only the Postgres connections its threads can use at once.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from decimal import Decimal
from pathlib import Path

import psycopg
import pytest
import redis
from conftest import ROOT, SIM_CONFIG, Stack, start_worker, stop_worker
from sqlalchemy import text
from sqlalchemy.engine import make_url

from producer.api import Tierq
from producer.submit import BatchOptions
from producer.views import status_lines
from tierq.contract import tier_message
from tierq.live import LiveMessages
from tierq.publish import Publisher
from workers.context import OVERFLOW, pool_size

EX_CONFIG = 78


def start(env: dict[str, str], queues: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            sys.executable,
            "-m",
            "celery",
            "-A",
            "workers",
            "worker",
            "-Q",
            queues,
            "-n",
            f"refused-{uuid.uuid4().hex[:6]}@%h",
            "--without-mingle",
        ],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=90,
    )


def our_lines(output: str) -> list[str]:
    """What tierq printed (Celery's own warning about running as root aside)."""
    return [line for line in output.splitlines() if line.startswith("error:")]


@pytest.fixture()
def broker(clean: Stack) -> str:
    url = clean.dbs.url(3)
    redis.Redis.from_url(url).flushdb()
    return url


def waiting_message(stack: Stack, broker: str, queue: str) -> None:
    """A message already waiting on `queue`, which a worker that refuses to start must leave there."""
    from celery import Celery

    from tierq.queues import celery_config

    app = Celery("producer")
    app.conf.update(celery_config(stack.config, broker))
    Publisher(app).publish([tier_message(queue, [1], None, uuid.uuid4())])
    app.close()


def test_a_worker_on_a_redis_that_evicts_keys_says_so_and_how_to_fix_it(clean: Stack, tmp_path: Path) -> None:
    # Before 2026-12-01 a worker started on a Redis with maxmemory-policy allkeys-lru without a word; that
    # Redis evicted classify messages and worker records mid-batch, and only `tierq doctor` named the cause.
    from reliability.fault_services import evicting_redis

    with evicting_redis(tmp_path / "redis") as url:
        worker = start_worker({**clean.env, "TIERQ_BROKER_URL": url, "TIERQ_REDIS_URL": url}, tmp_path / "w.log",
                              queues="classify", name="evicting")
        stop_worker(worker)
    log = (tmp_path / "w.log").read_text(errors="replace")
    assert (f"Redis at {url} evicts keys at maxmemory (allkeys-lru): it drops queued messages and the "
            "records of live messages and workers, so jobs wait for the reconciler; set maxmemory-policy "
            "noeviction (redis-cli CONFIG SET maxmemory-policy noeviction; docs/deployment.md)") in log, log[-3000:]


def test_a_missing_api_key_stops_start_up(clean: Stack, broker: str, tmp_path: Path) -> None:
    config = tmp_path / "keyed.toml"
    config.write_text(SIM_CONFIG.read_text().replace(
        'base_url_env = "TIERQ_SIM_URL"', 'base_url_env = "TIERQ_SIM_URL"\napi_key_env = "TIERQ_TEST_UNSET_KEY"'))
    waiting_message(clean, broker, "hot")
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_CONFIG": str(config)}
    env.pop("TIERQ_TEST_UNSET_KEY", None)
    done = start(env, "hot")
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout
    [line] = our_lines(done.stderr)
    assert line.endswith(f"{config}: provider 'sim' reads its API key from $TIERQ_TEST_UNSET_KEY, which is not set; "
                         "export TIERQ_TEST_UNSET_KEY=<your key> before starting")
    assert redis.Redis.from_url(broker).llen("hot") == 1  # the message is still there for a worker that can
    # With the key set, the same worker starts (start_worker fails the test if it does not).
    stop_worker(start_worker({**env, "TIERQ_TEST_UNSET_KEY": "sk-test"}, tmp_path / "keyed.log", queues="hot"))


def test_status_names_the_missing_key_that_kept_a_queues_worker_from_starting(
        clean: Stack, broker: str, tmp_path: Path) -> None:
    config = tmp_path / "keyed.toml"
    config.write_text(SIM_CONFIG.read_text().replace(
        'base_url_env = "TIERQ_SIM_URL"', 'base_url_env = "TIERQ_SIM_URL"\napi_key_env = "TIERQ_TEST_UNSET_KEY"'))
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_CONFIG": str(config)}
    env.pop("TIERQ_TEST_UNSET_KEY", None)
    assert start(env, "classify,warm").returncode == EX_CONFIG  # one worker for the batch's every queue
    settings = clean.settings.model_copy(update={"redis_url": broker, "broker_url": broker, "config": config})
    with Tierq(settings, clean.config) as tq:
        batch = tq.submit([{"id": "a", "prompt": "where is my parcel?"}], BatchOptions(force_tier="warm")).batch_id
        shown = status_lines(tq.status(batch))
    at = shown.index("  PROBLEM: no worker consumes queue classify (1 jobs wait there); start one: "
                     "celery -A workers worker -Q classify -n classify@%h")
    # Before, only the worker's own terminal said why: status said to start one, as if none had been.
    assert re.fullmatch(r"    worker refused-\w+@\S+ did not start for it \d+s ago: "
                        + re.escape(f"{config}: provider 'sim' reads its API key from $TIERQ_TEST_UNSET_KEY, which is "
                                    "not set; export TIERQ_TEST_UNSET_KEY=<your key> before starting"),
                        shown[at + 1]), shown


def test_a_queue_the_toml_does_not_define_stops_start_up(clean: Stack, broker: str, tmp_path: Path) -> None:
    config = tmp_path / "other.toml"
    config.write_text(SIM_CONFIG.read_text().replace('"hot"', '"fast"'))
    waiting_message(clean, broker, "hot")
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_CONFIG": str(config)}
    done = start(env, "classify,hot")
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    [line] = our_lines(done.stderr)
    assert line.endswith(f"{config} defines no queue 'hot' (its queues: classify, fast, warm, cold); start the "
                         "worker with the deployment's TOML (TIERQ_CONFIG) or -Q with queues it defines")
    assert redis.Redis.from_url(broker).llen("hot") == 1


def test_an_unreachable_database_stops_start_up(clean: Stack, broker: str) -> None:
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker,
           "TIERQ_DATABASE_URL": "postgresql+psycopg://tierq:secret@127.0.0.1:9/tierq"}
    done = start(env, "hot")
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    [line] = our_lines(done.stderr)
    assert "cannot reach Postgres at postgresql+psycopg://tierq:***@127.0.0.1:9/tierq" in line
    assert line.endswith("start it or fix TIERQ_DATABASE_URL") and "secret" not in done.stderr


def test_a_database_a_newer_tierq_migrated_stops_start_up_saying_so_not_asking_for_an_upgrade(
        clean: Stack, broker: str, empty_database: str) -> None:
    # An older worker restarted while a newer tierq had upgraded the database was told to run
    # `tierq db upgrade`, which had just been done and changes nothing.
    libpq = make_url(empty_database).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(libpq, autocommit=True) as conn:
        conn.execute("CREATE TABLE alembic_version (version_num varchar(32) PRIMARY KEY)")
        conn.execute("INSERT INTO alembic_version VALUES ('9999_from_the_future')")
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_DATABASE_URL": empty_database}
    done = start(env, "hot")
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    [line] = our_lines(done.stderr)
    assert "is at migration 9999_from_the_future, newer than this worker knows" in line, line
    assert line.endswith("run the worker from the tierq version that migrated it"), line


def test_a_database_that_never_answers_stops_start_up_in_seconds(clean: Stack, broker: str,
                                                                 silent_postgres: str) -> None:
    # It waited for the kernel to give up on the connection, minutes without a word.
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_DATABASE_URL": silent_postgres}
    started = time.monotonic()
    done = start(env, "hot")
    assert time.monotonic() - started < 30
    assert done.returncode == EX_CONFIG and "Traceback" not in done.stderr, done.stderr[-2000:]
    [line] = our_lines(done.stderr)
    assert "cannot reach Postgres at postgresql+psycopg://tierq:***@127.0.0.1:" in line and "timeout expired" in line
    assert line.endswith("start it or fix TIERQ_DATABASE_URL") and "s3cret" not in done.stderr


def _wrong_login() -> tuple[str, str]:
    """The test RabbitMQ's URL with a password it refuses, and that password."""
    url = make_url(os.environ.get("TIERQ_TEST_AMQP_URL", "amqp://guest:guest@127.0.0.1:5672//"))
    password = f"wrong-{uuid.uuid4().hex[:8]}"
    return url.set(password=password).render_as_string(hide_password=False), password


def test_a_broker_that_refuses_the_login_stops_start_up_and_submit_in_one_line(clean: Stack, tmp_path: Path) -> None:
    url, password = _wrong_login()
    env = {**clean.env, "TIERQ_BROKER_URL": url}
    done = start(env, "hot")
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    assert "Traceback" not in done.stderr + done.stdout and password not in done.stderr + done.stdout
    [line] = our_lines(done.stderr)
    assert re.search(r"the broker at amqp://guest:\*\*@[^ ]+ refused the login \(ACCESS_REFUSED - .*\); put the "
                     r"right user and password in TIERQ_BROKER_URL$", line), line
    records = tmp_path / "one.jsonl"
    records.write_text('{"id": "a", "prompt": "hi"}\n')
    submitted = subprocess.run([str(ROOT / ".venv" / "bin" / "tierq"), "submit", str(records)], env=env, cwd=tmp_path,
                               capture_output=True, text=True, timeout=60, check=False)
    assert submitted.returncode == 2 and "Traceback" not in submitted.stderr, submitted.stderr[-2000:]
    assert submitted.stderr.startswith("error: the broker at amqp://guest:**@") and password not in submitted.stderr
    assert submitted.stderr.rstrip().endswith("refused the login (ACCESS_REFUSED - Login was refused using "
                                              "authentication mechanism PLAIN. For details see the broker logfile.); "
                                              "put the right user and password in TIERQ_BROKER_URL")


def test_a_worker_holds_no_more_connections_than_its_threads_need(clean: Stack, tmp_path: Path) -> None:
    threads = 3
    broker = clean.dbs.url(3)
    redis.Redis.from_url(broker).flushdb()
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker}
    worker = start_worker(env, tmp_path / "pool.log", queues="classify,hot,warm,cold", args=("-c", str(threads)))
    seen = 0
    try:
        settings = clean.settings.model_copy(update={"broker_url": broker, "redis_url": broker})
        with Tierq(settings, clean.config) as tq:
            batch = tq.submit([{"prompt": f"ticket {n}: where is my parcel?"} for n in range(400)],
                              BatchOptions(use_cache=False, budget_usd=Decimal(10)))
            while not tq.status(batch.batch_id).done:
                with clean.engine.connect() as conn:
                    seen = max(seen, conn.execute(text("SELECT count(*) FROM pg_stat_activity WHERE application_name "
                                                       "= :n"), {"n": f"tierq worker {worker.pid}"}).scalar_one())
                time.sleep(0.02)
    finally:
        stop_worker(worker)
    assert 0 < seen <= pool_size(threads) + OVERFLOW


def test_a_typo_in_the_toml_is_one_line_with_a_suggestion(clean: Stack, broker: str, tmp_path: Path) -> None:
    config = tmp_path / "typo.toml"
    config.write_text(
        SIM_CONFIG.read_text().replace('models = ["sim-nano", "sim-mini"]', 'models = ["sim-nanoo", "sim-mini"]')
    )
    done = start(
        {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker, "TIERQ_CONFIG": str(config)}, "hot"
    )
    assert done.returncode == EX_CONFIG and "Traceback" not in done.stderr + done.stdout
    assert our_lines(done.stderr) == [
        f"error: {config}: tier 'hot' uses unknown model 'sim-nanoo'; did you mean 'sim-nano'?"
    ]


@pytest.mark.slow
def test_a_classify_worker_whose_toml_lacks_the_batchs_tier_gives_its_message_back_and_status_says_why(
    clean: Stack, broker: str, tmp_path: Path
) -> None:
    # A worker left on an older TOML while the producer's has a new tier (a rolling change): it failed every
    # job of a batch sent to that tier, `error: ConfigError: ...`, for good, where a worker with the
    # deployment's TOML would have answered them.
    stale = tmp_path / "stale.toml"
    stale.write_text(SIM_CONFIG.read_text().replace('"cold"', '"top"'))
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker}
    settings = clean.settings.model_copy(update={"broker_url": broker, "redis_url": broker})
    old = start_worker({**env, "TIERQ_CONFIG": str(stale)}, tmp_path / "stale.log", queues="classify", name="stale")
    try:
        with Tierq(settings, clean.config) as tq:
            batch = tq.submit([{"prompt": f"ticket {n}: where is my parcel?"} for n in range(3)],
                              BatchOptions(use_cache=False, force_tier="cold"))
            deadline = time.monotonic() + 30
            while not (status := tq.status(batch.batch_id)).refused and time.monotonic() < deadline:
                time.sleep(0.2)
            assert status.by_status == {"pending": 3}, status.as_dict()
            [(worker, reason)] = status.refused["classify"].items()
            assert worker.startswith("stale-")
            assert reason == f"{stale}: no tier named 'cold'; tiers are ['hot', 'warm', 'top']"
            assert (f"  PROBLEM: worker {worker} gives the messages of queue classify back, for a worker that can run "
                    f"them: {reason}; start it with the deployment's TOML (TIERQ_CONFIG)") in status_lines(status)
            with clean.engine.connect() as conn:
                [handoff] = conn.execute(text("SELECT DISTINCT handoff FROM jobs WHERE batch_id = :b"),
                                         {"b": batch.batch_id}).scalars().all()
            # Another batch, which that worker routes: its status names no refusal.
            other = tq.submit([{"prompt": "where is my parcel?"}], BatchOptions(use_cache=False, force_tier="hot"))
            deadline = time.monotonic() + 30
            while (mine := tq.status(other.batch_id)).by_status.get("pending") and time.monotonic() < deadline:
                time.sleep(0.2)
            assert mine.by_status == {"queued": 1} and not mine.refused, mine.as_dict()
            # Live and due again when it comes back, so the reconciler does not take it for a lost message.
            live = LiveMessages(redis.Redis.from_url(broker))
            assert live.live([handoff]) == {handoff} and not live.overdue([(handoff, "classify")], 0.0, lambda q: {})
    finally:
        stop_worker(old)
    new = start_worker(env, tmp_path / "new.log", queues="classify,cold", name="new")
    try:
        with Tierq(settings, clean.config) as tq:
            status = clean.wait(tq, batch.batch_id, timeout=90)
            assert status.by_status == {"succeeded": 3} and status.by_tier == {"cold": 3}
    finally:
        stop_worker(new)


def test_a_redis_that_refuses_writes_stops_start_up_in_one_line(clean: Stack, broker: str, tmp_path: Path) -> None:
    # A replica (of a primary that is not there) answers PING and reads, and refuses every write: not an
    # outage to wait out, as a full Redis is, so the worker says so instead of running unannounced.
    from fakellm.testing import free_port

    port = free_port()
    replica = subprocess.Popen(["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
                                "--appendonly", "no", "--dir", str(tmp_path), "--replicaof", "127.0.0.1", "9"],
                               stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        client = redis.Redis(port=port, socket_connect_timeout=1)
        deadline = time.monotonic() + 20
        while True:
            try:
                if client.ping():
                    break
            except redis.ConnectionError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        done = start({**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": f"redis://127.0.0.1:{port}/0"},
                     "hot")
    finally:
        replica.terminate()
        replica.wait(10)
    assert done.returncode == EX_CONFIG, done.stderr[-2000:]
    [line] = our_lines(done.stderr)
    assert "refuses writes (ReadOnlyError" in line and line.endswith("a primary this user may write to"), line
    assert "Traceback" not in done.stderr


RUN_THAT_STARTS_A_WORKER = """
import json, sys
from pathlib import Path
from producer.localstack import start_worker
env, log = json.loads(sys.argv[1]), Path(sys.argv[2])
worker = start_worker(env, log, "classify", name="orphan", cwd=Path(sys.argv[3]))
print(worker.pid, flush=True)
sys.stdin.read()  # until killed
"""


def gone(pid: int) -> bool:
    """Whether the process has exited (a zombie no one has reaped yet counts: it runs nothing)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except FileNotFoundError:
        return True
    return state in ("Z", "X")


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="reads process states from /proc")
def test_a_worker_a_run_started_stops_when_the_run_is_killed(clean: Stack, broker: str, tmp_path: Path) -> None:
    # A test session, `tierq demo` or a benchmark killed outright (SIGKILL, a CI timeout, a closed pipe) left
    # its workers running in their own process groups, taking messages from a Redis database the next run
    # claims: that run's jobs then went to a worker with another database and simulator, and its tests failed.
    env = {**clean.env, "TIERQ_BROKER_URL": broker, "TIERQ_REDIS_URL": broker}
    run = subprocess.Popen([sys.executable, "-c", RUN_THAT_STARTS_A_WORKER, json.dumps(env), str(tmp_path / "o.log"),
                            str(ROOT)], env={**os.environ, "PYTHONPATH": str(ROOT)}, cwd=ROOT,
                           stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)
    try:
        assert run.stdout is not None
        pid = int(run.stdout.readline())  # the worker answered: it is ready
        assert not gone(pid)
        run.kill()
        run.wait()
        deadline = time.monotonic() + 60  # a warm shutdown of an idle worker; the loaded machine's margin
        while not gone(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        stopped = gone(pid)
        if not stopped:
            os.killpg(pid, 9)
    finally:
        run.kill()
        run.wait()
    assert stopped, (tmp_path / "o.log").read_text(errors="replace")[-3000:]
    assert "the process that started this worker" in (tmp_path / "o.log").read_text(errors="replace")
