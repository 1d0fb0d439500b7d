"""Redis and PostgreSQL for the demo: the configured ones, or throwaway local servers."""

from __future__ import annotations

import contextlib
import dataclasses
import glob
import os
import pwd
import shlex
import shutil
import socket
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import psycopg
import redis
from sqlalchemy.engine import URL, make_url

from tierq.redact import masked_url

POSTGRES_BIN_GLOB = "/usr/lib/postgresql/*/bin"
"""Where Debian-style packages put initdb/pg_ctl; searched when they are not on PATH."""

START_TIMEOUT = 10.0
"""Seconds to wait for a throwaway redis-server to answer PING."""

_PG_CTL_TIMEOUT = 120.0
_TAIL_LINES = 20
_Log = Callable[[str], None]


class ServiceUnavailable(RuntimeError):
    """A required service is down and cannot be started here."""


@dataclasses.dataclass(frozen=True)
class _PgTools:
    initdb: str
    pg_ctl: str
    owner: pwd.struct_passwd | None  # run as this user (root only)


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _tail(text: str) -> str:
    lines = text.strip().splitlines()
    return "\n".join(lines[-_TAIL_LINES:]) or "(no output)"


def _make_workdir(owner: pwd.struct_passwd | None) -> Path:
    workdir = Path(tempfile.mkdtemp(prefix="tierq-", dir=tempfile.gettempdir()))
    if owner is not None:
        os.chown(workdir, owner.pw_uid, owner.pw_gid)
    return workdir


def _remove_workdir(workdir: Path, log: _Log) -> None:
    shutil.rmtree(workdir, ignore_errors=True)
    if workdir.exists():
        log(f"could not remove {workdir}; delete it by hand")


def _redis_problem(url: str) -> str | None:
    """Return why `url` does not answer PING, or None if it does."""
    client = redis.Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)
    try:
        client.ping()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        return _first_line(exc)
    finally:
        client.close()
    return None


def _stop_process(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()


def _spawn_redis(binary: str, workdir: Path, port: int) -> subprocess.Popen[bytes]:
    argv = [binary, "--port", str(port), "--bind", "127.0.0.1", "--save", "",
            "--appendonly", "no", "--dir", str(workdir), "--daemonize", "no"]
    with open(workdir / "redis-server.log", "wb") as out:
        # Own session: a terminal Ctrl-C must not kill the server before our cleanup stops it.
        return subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=out,
                                stderr=subprocess.STDOUT, cwd=workdir, start_new_session=True)


def _wait_for_redis(proc: subprocess.Popen[bytes], port: int, logfile: Path) -> None:
    deadline = time.monotonic() + START_TIMEOUT
    while _redis_problem(f"redis://127.0.0.1:{port}/0") is not None:
        if proc.poll() is not None:
            raise ServiceUnavailable(
                f"throwaway redis-server on port {port} exited with code {proc.returncode}:\n"
                + _tail(logfile.read_text(errors="replace")))
        if time.monotonic() > deadline:
            raise ServiceUnavailable(
                f"throwaway redis-server on port {port} did not answer within "
                f"{START_TIMEOUT:g} s; its output ends with:\n"
                + _tail(logfile.read_text(errors="replace")))
        time.sleep(0.05)


def _redis_server(why: str) -> str:
    binary = shutil.which("redis-server")
    if binary is None:
        raise ServiceUnavailable(
            f"{why} and redis-server is not installed here to start a throwaway one. Install redis-server "
            "(apt-get install redis-server) or point TIERQ_REDIS_URL at a running Redis.")
    return binary


@contextlib.contextmanager
def _throwaway_redis(binary: str, db: int, reason: str, log: _Log) -> Iterator[str]:
    port = _free_port()
    workdir = _make_workdir(None)
    proc: subprocess.Popen[bytes] | None = None
    try:
        proc = _spawn_redis(binary, workdir, port)
        _wait_for_redis(proc, port, workdir / "redis-server.log")
        log(f"{reason}; started a throwaway redis-server on port {port}")
        yield f"redis://127.0.0.1:{port}/{db}"
    finally:
        if proc is not None:
            running = proc.poll() is None
            _stop_process(proc)
            if running:
                log(f"stopped the throwaway redis-server on port {port}")
        _remove_workdir(workdir, log)


@contextlib.contextmanager
def ensure_redis(url: str, *, log: Callable[[str], None] = print) -> Iterator[str]:
    """Yield a Redis URL that answers: `url` itself if it answers PING, else a throwaway redis-server."""
    problem = _redis_problem(url)
    if problem is None:
        yield url
        return
    shown = masked_url(url)
    binary = _redis_server(f"Redis at {shown} does not answer ({problem})")
    db = int(redis.ConnectionPool.from_url(url).connection_kwargs.get("db", 0))
    with _throwaway_redis(binary, db, f"redis at {shown} does not answer", log) as got:
        yield got


@contextlib.contextmanager
def throwaway_redis(*, log: Callable[[str], None] = print) -> Iterator[str]:
    """Yield the URL of a redis-server of this run's own (no persistence, a free loopback port), removed after it."""
    binary = _redis_server("a throwaway Redis is needed")
    with _throwaway_redis(binary, 0, "a Redis of this run's own", log) as url:
        yield url


def _postgres_problem(url: URL) -> str | None:
    """Return why the server of `url` refuses a connection, or None if it accepts one."""
    # Ask the maintenance database: the target database may legitimately not exist yet.
    admin = url.set(drivername="postgresql", database="postgres")
    try:
        with psycopg.connect(admin.render_as_string(hide_password=False), connect_timeout=2):
            return None
    except psycopg.OperationalError as exc:
        return _first_line(exc)


def _version_key(bindir: str) -> tuple[int, ...]:
    name = Path(bindir).parent.name
    try:
        return tuple(int(part) for part in name.split("."))
    except ValueError:
        return (-1,)


def _find_pg_binaries() -> tuple[str, str] | None:
    initdb, pg_ctl = shutil.which("initdb"), shutil.which("pg_ctl")
    if initdb is not None and pg_ctl is not None:
        return initdb, pg_ctl
    for bindir in sorted(glob.glob(POSTGRES_BIN_GLOB), key=_version_key, reverse=True):
        initdb, pg_ctl = os.path.join(bindir, "initdb"), os.path.join(bindir, "pg_ctl")
        if os.access(initdb, os.X_OK) and os.access(pg_ctl, os.X_OK):
            return initdb, pg_ctl
    return None


def _pg_owner(shown: str) -> pwd.struct_passwd | None:
    if os.geteuid() != 0:
        return None
    # initdb refuses to run as root, so the cluster belongs to the postgres system user.
    try:
        return pwd.getpwnam("postgres")
    except KeyError:
        raise ServiceUnavailable(
            f"PostgreSQL at {shown} does not answer, and a throwaway cluster cannot be made: "
            "running as root, initdb needs the 'postgres' system user, which does not exist. "
            "Create it (adduser --system --group postgres), run tierq as a normal user, "
            "or point TIERQ_DATABASE_URL at a running server.") from None


def _run_pg(tools: _PgTools, argv: Sequence[str], workdir: Path) -> subprocess.CompletedProcess[str]:
    owner = tools.owner
    try:
        return subprocess.run(
            argv, cwd=workdir, stdin=subprocess.DEVNULL, capture_output=True, text=True,
            timeout=_PG_CTL_TIMEOUT, check=False, start_new_session=True,
            user=None if owner is None else owner.pw_uid,
            group=None if owner is None else owner.pw_gid,
            extra_groups=None if owner is None else [])
    except subprocess.TimeoutExpired:
        raise ServiceUnavailable(
            f"{Path(argv[0]).name} did not finish within {_PG_CTL_TIMEOUT:g} s "
            f"(throwaway cluster in {workdir})") from None
    except OSError as exc:
        as_user = "" if owner is None else f" as user {owner.pw_name}"
        raise ServiceUnavailable(f"cannot run {argv[0]}{as_user} for a throwaway PostgreSQL: "
                                 f"{exc.strerror or exc}") from exc


def _start_cluster(tools: _PgTools, workdir: Path, port: int) -> None:
    data, logfile = workdir / "data", workdir / "postgres.log"
    # --locale=C: an environment locale the server does not know would make initdb fail.
    init = _run_pg(tools, [tools.initdb, "-D", str(data), "-A", "trust", "-U", "postgres",
                           "--no-sync", "-E", "UTF8", "--locale=C"], workdir)
    if init.returncode != 0:
        raise ServiceUnavailable(
            f"initdb for a throwaway PostgreSQL failed (exit {init.returncode}):\n"
            + _tail(init.stdout + init.stderr))
    options = f"-p {port} -k {shlex.quote(str(workdir))} -c listen_addresses=127.0.0.1 -c fsync=off"
    start = _run_pg(tools, [tools.pg_ctl, "-D", str(data), "-o", options, "-w",
                            "-l", str(logfile), "start"], workdir)
    if start.returncode != 0:
        raise ServiceUnavailable(
            f"throwaway PostgreSQL on port {port} did not start (exit {start.returncode}):\n"
            + _tail(start.stdout + start.stderr + "\n"
                    + (logfile.read_text(errors="replace") if logfile.exists() else "")))


def _stop_cluster(tools: _PgTools, workdir: Path) -> str | None:
    """Stop the cluster; return pg_ctl's complaint if it would not stop."""
    for mode in ("fast", "immediate"):
        stop = _run_pg(tools, [tools.pg_ctl, "-D", str(workdir / "data"), "-m", mode, "stop"],
                       workdir)
        if stop.returncode == 0:
            return None
    return _tail(stop.stdout + stop.stderr)


@contextlib.contextmanager
def _throwaway_postgres(tools: _PgTools, reason: str, log: _Log) -> Iterator[int]:
    workdir = _make_workdir(tools.owner)
    try:
        port = _free_port()
        _start_cluster(tools, workdir, port)
        log(f"{reason}; started a throwaway PostgreSQL cluster on port {port} in {workdir}")
        yield port
    finally:
        # Also stops a server left half-started by a failed `pg_ctl start -w`.
        if (workdir / "data" / "postmaster.pid").exists():
            complaint = _stop_cluster(tools, workdir)
            log(f"stopped the throwaway PostgreSQL cluster in {workdir}" if complaint is None
                else f"could not stop the throwaway PostgreSQL in {workdir}:\n{complaint}")
        _remove_workdir(workdir, log)


@contextlib.contextmanager
def ensure_postgres(url: str, *, log: Callable[[str], None] = print) -> Iterator[str]:
    """Yield a PostgreSQL SQLAlchemy URL that answers: `url` if reachable, else a throwaway cluster."""
    parsed = make_url(url)
    problem = _postgres_problem(parsed)
    if problem is None:
        yield url
        return
    shown = masked_url(url)
    binaries = _find_pg_binaries()
    if binaries is None:
        raise ServiceUnavailable(
            f"PostgreSQL at {shown} does not answer ({problem}) and initdb/pg_ctl were found "
            f"neither on PATH nor under {POSTGRES_BIN_GLOB} to start a throwaway cluster. "
            "Install PostgreSQL (apt-get install postgresql) or point TIERQ_DATABASE_URL "
            "at a running server.")
    tools = _PgTools(binaries[0], binaries[1], _pg_owner(shown))
    with _throwaway_postgres(tools, f"postgres at {shown} does not answer", log) as port:
        yield URL.create(parsed.drivername, username="postgres", host="127.0.0.1", port=port,
                         database=parsed.database).render_as_string(hide_password=False)
