"""Claims on Redis databases, so that runs sharing one Redis server never share a database.

The demo (its queues and cache), the benchmarks (flushed before and after) and test sessions (flushed at
their start) each take databases of a Redis server that is also the user's. Before any of them uses or
flushes a database it claims it here; a database another live run holds is refused with who holds it.

A claim is the key `tierq:db-claim:<n>` in database 0 of the same server, whose value names the holder
(what it is, host and process id, since when). It expires on its own after `CLAIM_TTL_S` (6 h: longer
than any test session or benchmark; it is not renewed), and a claim whose process has ended on this host
is taken over at once, so a run that was killed does not lock its database until then. Processes are told
apart by host name and process id: runs in containers that share a host name but not a process namespace
(`--network host`) should use Redis servers of their own.
"""

from __future__ import annotations

import contextlib
import json
import os
import socket
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import redis

CLAIM_TTL_S = 6 * 3600
KEY = "tierq:db-claim:{db}"


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a database."""

    owner: str
    host: str
    pid: int
    since: float

    def alive(self) -> bool:
        """False only when the process is known to have ended (same host, no such process)."""
        if self.host != socket.gethostname():
            return True  # another machine's process: only the claim's expiry can tell
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True  # it exists, under another user
        return True

    def describe(self) -> str:
        started = time.strftime("%H:%M:%S", time.localtime(self.since))
        where = "" if self.host == socket.gethostname() else f" on {self.host}"
        return f"{self.owner} (pid {self.pid}{where}, since {started})"


class DatabaseInUse(RuntimeError):
    """A database is claimed by another live run (the message says which and by whom)."""


def _holder(raw: bytes | str | None) -> Holder | None:
    if raw is None:
        return None
    try:
        data = json.loads(raw)
        return Holder(str(data["owner"]), str(data["host"]), int(data["pid"]), float(data["since"]))
    except (ValueError, KeyError, TypeError):
        return Holder("an unreadable claim", "?", 0, 0.0)  # not ours to take over: delete the key to free it


def _me(owner: str) -> str:
    return json.dumps({"owner": owner, "host": socket.gethostname(), "pid": os.getpid(), "since": time.time()})


# Replace the claim only if it still holds the value read (the holder found dead), or delete it only if it
# is still ours: two steps that must not interleave with another run's.
_SWAP = "if redis.call('get', KEYS[1]) == ARGV[1] then redis.call('set', KEYS[1], ARGV[2], 'EX', ARGV[3]) " \
        "return 1 end return 0"
_DROP = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


def _ancestors() -> set[int]:
    """This process and the processes that started it (Linux: read from /proc; elsewhere the parent only)."""
    found = {os.getpid(), os.getppid()}
    pid = os.getppid()
    while pid > 1:
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            break
        pid = int(stat.rsplit(")", 1)[1].split()[1])  # the field after the state: the parent's pid
        found.add(pid)
    return found


def claim(client: redis.Redis, db: int, owner: str) -> str | None:
    """Claim database `db` of `client`'s server (any database of it: claims live in database 0) for this
    process; the claim's value, which `release` needs, or None when this process or one that started it
    already holds it (a test session running the demo on one of its databases). Raises DatabaseInUse when
    another live run holds it."""
    key = KEY.format(db=db)
    value = _me(owner)
    while not client.set(key, value, nx=True, ex=CLAIM_TTL_S):
        raw = client.get(key)
        if raw is None:
            continue  # released meanwhile: try again
        holder = _holder(raw)
        if holder is not None and holder.host == socket.gethostname() and holder.pid in _ancestors():
            return None
        if holder is not None and holder.pid == 0:
            raise DatabaseInUse(f"Redis database {db} is claimed by a value tierq cannot read; if no run uses the "
                                f"database, delete the key {key} (in database 0)")
        if holder is not None and holder.alive():
            raise DatabaseInUse(f"Redis database {db} is in use by {holder.describe()}")
        if client.eval(_SWAP, 1, key, raw, value, CLAIM_TTL_S):
            break  # its holder had ended: the claim is ours
    return value


def release(client: redis.Redis, db: int, value: str | None) -> None:
    """Give up a claim made by `claim`, unless it has since passed to another run (or was never this
    process's: `value` None)."""
    if value is not None:
        client.eval(_DROP, 1, KEY.format(db=db), value)


def registry(url: str) -> redis.Redis:
    """A client of database 0 of the server of `url` (where the claims are kept)."""
    pool = redis.ConnectionPool.from_url(url)
    pool.connection_kwargs["db"] = 0
    pool.connection_kwargs.setdefault("socket_connect_timeout", 3)
    return redis.Redis(connection_pool=pool)


def database_of(url: str) -> int:
    """The database number a Redis URL names (0 when it names none)."""
    return int(redis.ConnectionPool.from_url(url).connection_kwargs.get("db", 0) or 0)


@contextlib.contextmanager
def claimed(url: str, owner: str) -> Iterator[str]:
    """Hold the database `url` names for the duration of the block; DatabaseInUse if another run holds it."""
    client = registry(url)
    db = database_of(url)
    try:
        value = claim(client, db, owner)
        try:
            yield url
        finally:
            release(client, db, value)
    finally:
        client.close()


def claim_free(client: redis.Redis, candidates: Iterable[int], most: int,
               owner: str) -> tuple[list[tuple[int, str | None]], list[str]]:
    """Claim the first free ones of `candidates`, `most` at most: the claims made (each database with the
    value `release` needs) and, for each database found in use on the way, why."""
    held: list[tuple[int, str | None]] = []
    refused: list[str] = []
    for db in candidates:
        if len(held) == most:
            break
        try:
            held.append((db, claim(client, db, owner)))
        except DatabaseInUse as exc:
            refused.append(str(exc))
    return held, refused


@contextlib.contextmanager
def claimed_any(server: str, count: int, candidates: Iterable[int], owner: str) -> Iterator[list[int]]:
    """Hold `count` databases of `server`, the first free ones of `candidates`, for the duration of the
    block. Raises DatabaseInUse, naming the first holder met, when fewer than `count` are free."""
    client = registry(server)
    held: list[tuple[int, str | None]] = []
    try:
        held, refused = claim_free(client, candidates, count, owner)
        if len(held) < count:
            more = f", and {len(refused) - 1} more in use" if len(refused) > 1 else ""
            raise DatabaseInUse(f"only {len(held)} of the {count} Redis databases needed are free"
                                + (f" ({refused[0]}{more})" if refused else ""))
        yield [db for db, _ in held]
    finally:
        for db, value in held:
            release(client, db, value)
        client.close()
