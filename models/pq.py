"""Reading Postgres through libpq itself, for the commands that only read (`tierq status`, `tierq results`).

Importing psycopg takes most of such a command's start-up (its package loads asyncio and
importlib.metadata whatever is used). libpq is the library psycopg drives; loaded with ctypes (psycopg-binary's
own copy, else the system's `libpq.so.5`), it connects with the same URL, options, password file and TLS
that psycopg would use. Queries take SQLAlchemy's `:name` parameters, sent apart from the SQL as text
(the server parses them, no quoting here), and their text results come back as the Python types psycopg
gives for the types tierq reads (numbers, numeric as Decimal, text, uuid, json, dates and times, booleans
and one-dimensional arrays of them); any other type comes back as its text.

`load()` is None where no libpq can be found; `models.db.connect` then uses psycopg.
"""

from __future__ import annotations

import contextlib
import ctypes
import json
import re
import uuid
from collections.abc import Callable, Iterator, Mapping, Sequence
from datetime import date, datetime, time
from decimal import Decimal
from functools import lru_cache
from pathlib import Path
from types import TracebackType
from typing import Any

from tierq.errors import Unavailable

_CONNECTION_OK = 0
_EMPTY_QUERY, _COMMAND_OK, _TUPLES_OK = 0, 1, 2
CONNECT_TIMEOUT_S = 10  # unless the URL says otherwise: a host that does not answer is an error, not a wait
_SQLSTATE, _PRIMARY = ord("C"), ord("M")
# SQLAlchemy's pattern for a text() parameter: `:name`, but not a `::type` cast nor an escaped `\:`.
PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?![:\w])")


class PqError(Exception):
    """A query the server refused: its message, and its SQLSTATE code."""

    def __init__(self, message: str, sqlstate: str | None = None) -> None:
        super().__init__(message)
        self.sqlstate = sqlstate


class PqConnectError(PqError, Unavailable):
    """No connection: libpq's own message, which names the host and the reason (never the password)."""


def _library_paths() -> list[str]:
    """psycopg-binary's libpq (in the wheel's `psycopg_binary.libs`, found without importing psycopg), then the
    system's."""
    from importlib.util import find_spec

    found: list[str] = []
    spec = find_spec("psycopg_binary")
    if spec is not None and spec.origin:
        libs = Path(spec.origin).parent.parent / "psycopg_binary.libs"
        found += sorted(str(p) for p in libs.glob("libpq*.so*"))
    return [*found, "libpq.so.5"]


@lru_cache(maxsize=1)
def load() -> ctypes.CDLL | None:
    """libpq with the signatures used here, or None when it cannot be loaded."""
    for path in _library_paths():
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        p, i, s = ctypes.c_void_p, ctypes.c_int, ctypes.c_char_p
        for name, restype, argtypes in (
            ("PQconnectdb", p, [s]), ("PQstatus", i, [p]), ("PQerrorMessage", s, [p]), ("PQfinish", None, [p]),
            ("PQsetClientEncoding", i, [p, s]),
            ("PQexecParams", p, [p, s, i, ctypes.POINTER(ctypes.c_uint), ctypes.POINTER(s), p, p, i]),
            ("PQresultStatus", i, [p]), ("PQresultErrorMessage", s, [p]), ("PQresultErrorField", s, [p, i]),
            ("PQntuples", i, [p]), ("PQnfields", i, [p]), ("PQftype", ctypes.c_uint, [p, i]),
            # A text-format value never holds a NUL byte, so its C string is the whole value.
            ("PQgetvalue", s, [p, i, i]), ("PQgetisnull", i, [p, i, i]),
            ("PQclear", None, [p]),
        ):
            function = getattr(lib, name)
            function.restype, function.argtypes = restype, argtypes
        return lib
    return None


class Connection:
    """One libpq connection in autocommit mode; `with` closes it."""

    def __init__(self, lib: ctypes.CDLL, conninfo: str) -> None:
        self._lib = lib
        self._conn = lib.PQconnectdb(_with_timeout(conninfo).encode())
        if not self._conn:
            raise PqConnectError("libpq could not allocate a connection")
        if lib.PQstatus(self._conn) != _CONNECTION_OK:
            message = _without_password(_text(lib.PQerrorMessage(self._conn)), conninfo)
            self.close()
            raise PqConnectError(f"connection failed: {message}")
        if lib.PQsetClientEncoding(self._conn, b"UTF8") != 0:
            message = _text(lib.PQerrorMessage(self._conn))
            self.close()
            raise PqConnectError(f"the server cannot send UTF-8: {message}")
        # Dates and times are read in ISO form, whatever DateStyle the server or the role has.
        self._run("SELECT set_config('datestyle', 'ISO', false)", [])

    def __enter__(self) -> Connection:
        return self

    def __exit__(self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None) -> None:
        self.close()

    def close(self) -> None:
        """Close the connection (again is harmless)."""
        if self._conn:
            self._lib.PQfinish(self._conn)
            self._conn = None

    def rows(self, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
        """Every row `sql` (with `:name` parameters) returns, as tuples of Python values."""
        text, values = positional(sql, params or {})
        return self._run(text, values)

    def stream(self, sql: str, params: Mapping[str, Any], name: str, size: int = 1000) -> Iterator[tuple[Any, ...]]:
        """The rows of `sql` fetched `size` at a time from a server-side cursor called `name`."""
        if not re.fullmatch(r"[a-z_][a-z0-9_]*", name):
            raise ValueError(f"cursor name {name!r} is not a plain identifier")
        text, values = positional(sql, params)
        self._run("BEGIN", [])
        try:
            self._run(f"DECLARE {name} NO SCROLL CURSOR FOR {text}", values)
            while True:
                batch = self._run(f"FETCH {int(size)} FROM {name}", [])
                yield from batch
                if len(batch) < size:
                    break
            self._run("COMMIT", [])
        except BaseException:
            if self._conn:
                # What went wrong is the error raised; a connection that died with it cannot roll back either.
                with contextlib.suppress(PqConnectError):
                    self._run("ROLLBACK", [])
            raise

    def _run(self, sql: str, values: Sequence[tuple[bytes | None, int]]) -> list[tuple[Any, ...]]:
        lib = self._lib
        if not self._conn:
            raise PqConnectError("the connection is closed")
        count = len(values)
        types = (ctypes.c_uint * count)(*(oid for _, oid in values))
        texts = (ctypes.c_char_p * count)(*(value for value, _ in values))
        result = lib.PQexecParams(self._conn, sql.encode(), count, types, texts, None, None, 0)
        if not result:
            raise PqConnectError(f"connection lost: {_text(lib.PQerrorMessage(self._conn))}")
        try:
            status = lib.PQresultStatus(result)
            if status in (_EMPTY_QUERY, _COMMAND_OK):
                return []
            if status != _TUPLES_OK:
                message = _text(lib.PQresultErrorField(result, _PRIMARY)) or _text(lib.PQresultErrorMessage(result))
                state = _text(lib.PQresultErrorField(result, _SQLSTATE)) or None
                # No SQLSTATE (libpq's own: the server went away) or a connection exception: the connection,
                # not the query. A protocol violation (08P01) is the query's.
                if state is None or (state.startswith("08") and state != "08P01"):
                    raise PqConnectError(message or _text(lib.PQerrorMessage(self._conn)), state)
                raise PqError(message, state)
            columns = [(col, decoder(lib.PQftype(result, col))) for col in range(lib.PQnfields(result))]
            value, isnull = lib.PQgetvalue, lib.PQgetisnull

            def read(row: int, col: int, decode: Callable[[str], Any]) -> Any:
                raw = value(result, row, col)  # NULL reads as b"": only an empty value needs asking which
                return decode(raw.decode()) if raw or not isnull(result, row, col) else None

            return [tuple(read(row, col, decode) for col, decode in columns) for row in range(lib.PQntuples(result))]
        finally:
            lib.PQclear(result)


def connect(conninfo: str) -> Connection | None:
    """A connection through libpq to `conninfo` (a libpq URL), or None when libpq cannot be loaded."""
    lib = load()
    return None if lib is None else Connection(lib, conninfo)


def _with_timeout(conninfo: str) -> str:
    """`conninfo` (a URL) with libpq's connect_timeout when it names none."""
    if "connect_timeout=" in conninfo:
        return conninfo
    return f"{conninfo}{'&' if '?' in conninfo else '?'}connect_timeout={CONNECT_TIMEOUT_S}"


def _without_password(message: str, conninfo: str) -> str:
    """libpq's message with the URL's passwords taken out, in the user part or the query (a malformed URL is
    quoted back in full)."""
    from tierq.redact import scrubbed

    return scrubbed(message, conninfo)


def _text(value: bytes | None) -> str:
    return value.decode(errors="replace").strip() if value else ""


# Parameters: SQLAlchemy's `:name` become `$n`, each value goes as text with the type psycopg would send
# (0, "unknown", lets the server decide: psycopg sends str that way too).

_ARRAY_OIDS = {int: 1016, str: 1009, uuid.UUID: 2951, bool: 1000, float: 1022, Decimal: 1231}


@lru_cache(maxsize=256)
def _numbered(sql: str) -> tuple[str, tuple[str, ...]]:
    names: list[str] = []

    def number(match: re.Match[str]) -> str:
        if match.group(1) not in names:
            names.append(match.group(1))
        return f"${names.index(match.group(1)) + 1}"

    return PARAMETER.sub(number, sql), tuple(names)


def positional(sql: str, params: Mapping[str, Any]) -> tuple[str, list[tuple[bytes | None, int]]]:
    """`sql` with `$n` for its `:name` parameters, and each value as (text or NULL, type oid)."""
    text, names = _numbered(sql)
    missing = [name for name in names if name not in params]
    if missing:
        raise KeyError(f"no value for parameter :{missing[0]}")
    return text, [_param(params[name]) for name in names]


def _param(value: Any) -> tuple[bytes | None, int]:
    if value is None:
        return None, 0
    if isinstance(value, bool):
        return (b"t" if value else b"f"), 16
    if isinstance(value, int):  # the smallest type that holds it, as psycopg sends it
        oid = 21 if -2**15 <= value < 2**15 else 23 if -2**31 <= value < 2**31 else 20 if -2**63 <= value < 2**63 \
            else 1700
        return str(value).encode(), oid
    if isinstance(value, float):
        return repr(value).encode(), 701
    if isinstance(value, Decimal):
        return str(value).encode(), 1700
    if isinstance(value, str):
        return value.encode(), 0
    if isinstance(value, uuid.UUID):
        return str(value).encode(), 2950
    if isinstance(value, datetime):
        return value.isoformat().encode(), 1184 if value.tzinfo else 1114
    if isinstance(value, date):
        return value.isoformat().encode(), 1082
    if isinstance(value, (list, tuple)):
        kinds = {type(item) for item in value if item is not None}
        oid = _ARRAY_OIDS.get(kinds.pop(), 0) if len(kinds) == 1 else 0
        return _array_literal(value).encode(), oid
    raise TypeError(f"cannot send a {type(value).__name__} as a query parameter")


def _array_literal(values: Sequence[Any]) -> str:
    items = []
    for value in values:
        if value is None:
            items.append("NULL")
        else:
            text, _ = _param(value)
            assert text is not None
            items.append('"' + text.decode().replace("\\", "\\\\").replace('"', '\\"') + '"')
    return "{" + ",".join(items) + "}"


# Results: text as Postgres writes it (DateStyle ISO, the server's default) into Python values.

def _bool(text: str) -> bool:
    return text == "t"


def _timestamp(text: str) -> datetime | str:
    try:
        return datetime.fromisoformat(text)
    except ValueError:  # infinity, or a year beyond Python's
        return text


def _parse_array(text: str, element: Callable[[str], Any]) -> list[Any] | str:
    """A one-dimensional array literal (`{1,2}`, `{"a b",NULL}`) into a list."""
    if not (text.startswith("{") and text.endswith("}")) or text.startswith("{{"):
        return text  # with explicit bounds, or of more than one dimension: left as text
    items: list[Any] = []
    body, i = text[1:-1], 0
    while i < len(body):
        if body[i] == '"':
            j, chars = i + 1, []
            while body[j] != '"':
                if body[j] == "\\":
                    j += 1
                chars.append(body[j])
                j += 1
            items.append(element("".join(chars)))
            i = j + 2  # the quote and the comma
        else:
            j = body.find(",", i)
            j = len(body) if j < 0 else j
            raw = body[i:j]
            items.append(None if raw == "NULL" else element(raw))
            i = j + 1
    return items


_SCALARS: dict[int, Callable[[str], Any]] = {
    16: _bool, 20: int, 21: int, 23: int, 26: int, 700: float, 701: float, 1700: Decimal, 2950: uuid.UUID,
    114: json.loads, 3802: json.loads, 1184: _timestamp, 1114: _timestamp, 1082: date.fromisoformat,
    1083: time.fromisoformat,
}
_ARRAYS = {1000: 16, 1005: 21, 1007: 23, 1016: 20, 1021: 700, 1022: 701, 1231: 1700, 2951: 2950, 1009: 25,
           1015: 1043, 1185: 1184, 1115: 1114, 1182: 1082, 1183: 1083, 199: 114, 3807: 3802}


def _same(text: str) -> str:
    return text


def decoder(oid: int) -> Callable[[str], Any]:
    """How a column of type `oid` is read from its text."""
    if oid in _ARRAYS:
        element = _SCALARS.get(_ARRAYS[oid], _same)
        return lambda text: _parse_array(text, element)
    return _SCALARS.get(oid, _same)
