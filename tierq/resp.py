"""A small Redis client for the reads `tierq status` makes, so that the command does not import redis-py.

redis-py takes longer to import than the rest of `status` together (0.15-0.25 s: its `__init__` loads the
asyncio client and every command module); `status` of a running batch asks Redis for a few things only
(which workers are alive, which messages are live, the queues' marks, which workers give messages back).
This client speaks RESP2 over one socket and offers just those calls, with the same names, arguments and
results as `redis.Redis`, so `Presence` and `LiveMessages` take it in place of one for reading. It never
writes.

Only plain `redis://` and `unix://` URLs are handled (`client_for` returns None for `rediss://` and
anything else, and the caller uses redis-py). Every error is a `RespError` whose text names no password.
"""

from __future__ import annotations

import socket
from collections.abc import Iterator, Sequence
from types import TracebackType
from typing import Any
from urllib.parse import parse_qs, unquote, urlsplit

from tierq.errors import Unavailable

CONNECT_TIMEOUT_S = 5.0
READ_TIMEOUT_S = 10.0
Reply = Any  # bytes | int | list[Reply] | None


class RespError(Unavailable):
    """Redis could not be reached or refused a command (the message holds no password)."""


class RespRefused(RespError):
    """Redis answered a command with an error reply (a wrong command, a permission the user lacks)."""


class ReadClient:
    """One connection to Redis, opened on the first command; a read-only subset of `redis.Redis`."""

    def __init__(self, address: tuple[str, int] | str, db: int = 0, username: str | None = None,
                 password: str | None = None) -> None:
        self.address, self.db, self._login = address, db, (username, password)
        self._sock: socket.socket | None = None
        self._reader: Any = None
        self._setting_up = False

    def __repr__(self) -> str:  # never the password
        return f"ReadClient({self.address!r}, db={self.db})"

    def ping(self) -> bool:
        """Whether Redis answers PONG."""
        return bool(self.execute("PING") == b"PONG")

    def scan_iter(self, match: str | None = None, count: int | None = None) -> Iterator[bytes]:
        """The keys matching `match`, as redis-py's `scan_iter` (SCAN until its cursor comes back to 0)."""
        cursor = b"0"
        while True:
            args: list[str | bytes | int] = ["SCAN", cursor]
            if match is not None:
                args += ["MATCH", match]
            if count is not None:
                args += ["COUNT", count]
            cursor, keys = self.execute(*args)
            yield from keys
            if cursor == b"0":
                return

    def mget(self, keys: Sequence[str | bytes]) -> list[bytes | None]:
        """The values of `keys` (None where a key is missing)."""
        return list(self.execute("MGET", *keys)) if keys else []

    def hgetall(self, key: str) -> dict[bytes, bytes]:
        """A hash's fields and values ({} when it is missing)."""
        flat = list(self.execute("HGETALL", key) or [])
        return dict(zip(flat[::2], flat[1::2], strict=True))

    def info(self, section: str) -> dict[str, str]:
        """One INFO section's fields, as text (redis-py would convert numbers; the callers convert)."""
        text = bytes(self.execute("INFO", section)).decode(errors="replace")
        return dict(line.split(":", 1) for line in text.splitlines() if ":" in line and not line.startswith("#"))

    def pipeline(self, transaction: bool = False) -> ReadPipeline:
        """Commands sent together; no transactions (nothing here needs one)."""
        if transaction:
            raise RespError("the read client sends no transactions")
        return ReadPipeline(self)

    def close(self) -> None:
        """Close the connection; the next command opens another."""
        if self._sock is not None:
            self._sock.close()
            self._sock = self._reader = None

    def execute(self, *args: str | bytes | int | float) -> Reply:
        """Send one command; its reply (an error reply raises RespError)."""
        return self.execute_many([args])[0]

    def execute_many(self, commands: Sequence[Sequence[str | bytes | int | float]]) -> list[Reply]:
        """Send the commands in one write, then read one reply per command. Every command here reads, so a
        connection that broke (a Redis restart, an idle connection a proxy closed) is opened again once."""
        for attempt in (1, 2):
            self._connect()
            try:
                assert self._sock is not None
                self._sock.sendall(b"".join(_encode(command) for command in commands))
                replies = [self._read() for _ in commands]
                break
            except OSError as exc:
                self.close()
                if attempt == 2 or self._setting_up:
                    raise RespError(f"lost the connection to Redis at {self._where()}: {_reason(exc)}") from None
            except ValueError as exc:  # a length or number that is not one: not Redis speaking
                self.close()
                raise RespError(f"Redis at {self._where()} sent a reply this client cannot read ({exc})") from None
        for reply in replies:
            refused = _first_error(reply)
            if refused is not None:
                raise RespRefused(f"Redis refused a command: {refused}")
        return replies

    def _connect(self) -> None:
        if self._sock is not None:
            return
        try:
            if isinstance(self.address, str):
                sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
                sock.settimeout(CONNECT_TIMEOUT_S)
                sock.connect(self.address)
            else:
                sock = socket.create_connection(self.address, timeout=CONNECT_TIMEOUT_S)
            sock.settimeout(READ_TIMEOUT_S)
        except OSError as exc:
            raise RespError(f"cannot connect to Redis at {self._where()}: {_reason(exc)}") from None
        self._sock, self._reader = sock, sock.makefile("rb")
        setup: list[list[str | bytes | int | float]] = []
        username, password = self._login
        if password is not None:
            setup.append(["AUTH", *([username] if username else []), password])
        if self.db:
            setup.append(["SELECT", self.db])
        if setup:
            self._setting_up = True
            try:
                self.execute_many(setup)
            except RespError:
                self.close()
                raise
            finally:
                self._setting_up = False

    def _read(self) -> Reply:
        line = self._reader.readline()
        if not line.endswith(b"\r\n"):
            raise ConnectionError("Redis closed the connection")
        kind, body = line[:1], line[1:-2]
        if kind == b"+":
            return body
        if kind == b"-":
            return _ErrorReply(body.decode(errors="replace"))
        if kind == b":":
            return int(body)
        if kind == b"$":
            size = int(body)
            if size < 0:
                return None
            data = self._reader.read(size + 2)
            if len(data) != size + 2:
                raise ConnectionError("Redis closed the connection")
            return data[:-2]
        if kind == b"*":
            size = int(body)
            return None if size < 0 else [self._read() for _ in range(size)]
        raise ConnectionError(f"unexpected reply from Redis: {line[:40]!r}")

    def _where(self) -> str:
        return self.address if isinstance(self.address, str) else f"{self.address[0]}:{self.address[1]}"

    def __enter__(self) -> ReadClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ReadPipeline:
    """Commands queued and sent together by `execute`, as redis-py's non-transactional pipeline."""

    def __init__(self, client: ReadClient) -> None:
        self.client = client
        self.commands: list[tuple[list[str | bytes | int | float], Any]] = []

    def zmscore(self, key: str, members: Sequence[str]) -> ReadPipeline:
        """Queue ZMSCORE: the members' scores as floats (None for a member not in the set)."""
        self.commands.append((["ZMSCORE", key, *members], _floats))
        return self

    def hmget(self, key: str, fields: Sequence[str]) -> ReadPipeline:
        """Queue HMGET: the fields' values (None for a missing field)."""
        self.commands.append((["HMGET", key, *fields], list))
        return self

    def execute(self) -> list[Any]:
        """Send the queued commands; their replies in order."""
        commands, self.commands = self.commands, []
        replies = self.client.execute_many([command for command, _ in commands]) if commands else []
        return [convert(reply) for (_, convert), reply in zip(commands, replies, strict=True)]

    def __enter__(self) -> ReadPipeline:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.commands = []


class _ErrorReply(str):
    """An error reply, read in order with the others and raised once all are read."""


def _first_error(reply: Reply) -> _ErrorReply | None:
    """The first error in a reply, however deep in its arrays."""
    if isinstance(reply, _ErrorReply):
        return reply
    if isinstance(reply, list):
        return next((found for item in reply if (found := _first_error(item)) is not None), None)
    return None


def _floats(reply: list[bytes | None]) -> list[float | None]:
    return [None if value is None else float(value) for value in reply]


def _encode(command: Sequence[str | bytes | int | float]) -> bytes:
    parts = [b"*%d\r\n" % len(command)]
    for arg in command:
        data = arg if isinstance(arg, bytes) else str(arg).encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(data), data))
    return b"".join(parts)


def _reason(exc: OSError) -> str:
    return exc.strerror or str(exc) or type(exc).__name__


def client_for(url: str) -> ReadClient | None:
    """A read client for a `redis://` or `unix://` URL (with its user, password and database), or None for
    any other kind (TLS, sentinel...): those go through redis-py."""
    parts = urlsplit(url)
    query = parse_qs(parts.query)
    if set(query) - {"db"}:
        return None  # options (timeouts, TLS settings...) this client would ignore: leave them to redis-py
    username = unquote(parts.username) if parts.username else None
    password = unquote(parts.password) if parts.password is not None else None
    try:
        if parts.scheme == "redis":
            path = parts.path.strip("/")
            db = int(query["db"][0]) if "db" in query else int(path or 0)
            return ReadClient((parts.hostname or "localhost", parts.port or 6379), db, username, password)
        if parts.scheme == "unix":
            return ReadClient(parts.path, int(query.get("db", ["0"])[0]), username, password)
    except ValueError:
        return None  # redis-py will say what is wrong with the URL
    return None
