"""Tests for producer.services against real redis-server and PostgreSQL processes."""

from __future__ import annotations

import glob
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import psycopg
import pytest
import redis
import sqlalchemy

from producer import services
from producer.services import ServiceUnavailable, ensure_postgres, ensure_redis

LOCAL_REDIS = "redis://127.0.0.1:6379/0"
LOCAL_POSTGRES = "postgresql+psycopg://postgres@127.0.0.1:5432/postgres"


@pytest.fixture(autouse=True)
def own_tempdir(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """Throwaway servers' folders in a temporary folder of this test's own, so the folder a test finds is
    the one it made, even while another test session makes its own (short: a socket path must fit)."""
    folder = tempfile.mkdtemp(prefix="tq-")
    os.chmod(folder, 0o755)  # initdb may run as another user (postgres, when the tests run as root)
    monkeypatch.setattr(tempfile, "tempdir", folder)
    yield
    shutil.rmtree(folder, ignore_errors=True)


def _redis_up(url: str) -> bool:
    try:
        return bool(redis.Redis.from_url(url, socket_connect_timeout=1).ping())
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError):
        return False


def _postgres_up(port: int) -> bool:
    try:
        with psycopg.connect(f"postgresql://postgres@127.0.0.1:{port}/postgres", connect_timeout=2):
            return True
    except psycopg.OperationalError:
        return False


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    # An exited daemon may linger as a zombie when PID 1 does not reap orphans.
    stat = Path(f"/proc/{pid}/stat")
    return not (stat.exists() and stat.read_text().rsplit(")", 1)[1].split()[0] == "Z")


def _workdirs() -> set[str]:
    return set(glob.glob(os.path.join(tempfile.gettempdir(), "tierq-*")))


def _need_redis_server() -> None:
    if shutil.which("redis-server") is None:
        pytest.skip("redis-server is not installed")


def _need_pg_binaries() -> None:
    if services._find_pg_binaries() is None:
        pytest.skip("initdb/pg_ctl are not installed")


def test_redis_uses_configured_server_when_it_answers() -> None:
    if not _redis_up(LOCAL_REDIS):
        pytest.skip("no local Redis on 6379")
    lines: list[str] = []
    with ensure_redis(LOCAL_REDIS, log=lines.append) as url:
        assert url == LOCAL_REDIS
    assert lines == []


def test_redis_starts_and_removes_a_throwaway() -> None:
    _need_redis_server()
    dead = f"redis://127.0.0.1:{services._free_port()}/3"
    before = _workdirs()
    lines: list[str] = []
    with ensure_redis(dead, log=lines.append) as url:
        assert url != dead and url.endswith("/3")
        client = redis.Redis.from_url(url)
        assert client.ping()
        client.set("tierq:test", "hello")
        assert client.get("tierq:test") == b"hello"
        pid = int(client.info("server")["process_id"])
        client.close()
        (workdir,) = _workdirs() - before
    assert not _alive(pid)
    assert not _redis_up(url)
    assert not os.path.exists(workdir)
    assert len(lines) == 2 and "does not answer; started a throwaway redis-server" in lines[0]


def test_postgres_uses_configured_server_when_it_answers() -> None:
    missing_db = LOCAL_POSTGRES.rsplit("/", 1)[0] + "/tierq_no_such_database"
    for configured in (LOCAL_POSTGRES, missing_db):
        lines: list[str] = []
        try:
            with ensure_postgres(configured, log=lines.append) as url:
                assert url == configured
        except ServiceUnavailable:
            pytest.skip("no local PostgreSQL on 5432")
        assert lines == []


def test_postgres_starts_and_removes_a_throwaway() -> None:
    _need_pg_binaries()
    port = services._free_port()
    dead = f"postgresql+psycopg://someone:s3cret@127.0.0.1:{port}/postgres"
    before = _workdirs()
    lines: list[str] = []
    with ensure_postgres(dead, log=lines.append) as url:
        assert url.startswith("postgresql+psycopg://postgres@127.0.0.1:")
        assert url.endswith("/postgres")
        engine = sqlalchemy.create_engine(url)
        with engine.begin() as conn:
            conn.execute(sqlalchemy.text("CREATE TABLE t (id int PRIMARY KEY, name text)"))
            conn.execute(sqlalchemy.text("INSERT INTO t VALUES (1, 'one'), (2, 'two')"))
            rows = conn.execute(sqlalchemy.text("SELECT name FROM t ORDER BY id")).all()
        engine.dispose()
        assert [r.name for r in rows] == ["one", "two"]
        thrown_port = sqlalchemy.engine.make_url(url).port
        assert thrown_port is not None and _postgres_up(thrown_port)
        (workdir,) = _workdirs() - before
        pid = int((Path(workdir) / "data" / "postmaster.pid").read_text().split()[0])
    assert not _postgres_up(thrown_port)
    assert not _alive(pid)
    assert not os.path.exists(workdir)
    assert len(lines) == 2 and "started a throwaway PostgreSQL cluster" in lines[0]
    assert "s3cret" not in "".join(lines)


def test_postgres_throwaway_is_removed_when_the_body_raises() -> None:
    _need_pg_binaries()
    dead = f"postgresql://postgres@127.0.0.1:{services._free_port()}/tierq"
    before = _workdirs()
    with pytest.raises(KeyError), ensure_postgres(dead, log=lambda _: None) as url:
        assert url.startswith("postgresql://") and url.endswith("/tierq")
        (workdir,) = _workdirs() - before
        raise KeyError("boom")
    assert not os.path.exists(workdir)


def test_unavailable_without_binaries(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(services, "POSTGRES_BIN_GLOB", str(tmp_path / "nothing" / "*" / "bin"))
    dead_redis = f"redis://:s3cret@127.0.0.1:{services._free_port()}/0"
    with pytest.raises(ServiceUnavailable) as redis_err, ensure_redis(dead_redis):
        pass
    assert "TIERQ_REDIS_URL" in str(redis_err.value)
    assert "apt-get install redis-server" in str(redis_err.value)
    assert "s3cret" not in str(redis_err.value)
    dead_pg = f"postgresql+psycopg://postgres:s3cret@127.0.0.1:{services._free_port()}/tierq"
    with pytest.raises(ServiceUnavailable) as pg_err, ensure_postgres(dead_pg):
        pass
    assert "TIERQ_DATABASE_URL" in str(pg_err.value)
    assert "apt-get install postgresql" in str(pg_err.value)
    assert "s3cret" not in str(pg_err.value)
