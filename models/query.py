"""SQL that runs on a SQLAlchemy connection and on a bare psycopg one alike.

`tierq status` and `tierq results` read through psycopg alone (`models.db.connect`): importing SQLAlchemy
takes longer than their queries. The queries they share with the workers and the bill are written once,
in SQLAlchemy's `text()` form with `:name` parameters, and `rows` runs them on either kind of connection.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias

import psycopg

if TYPE_CHECKING:
    import sqlalchemy

Connection: TypeAlias = "sqlalchemy.Connection | psycopg.Connection[Any]"

# SQLAlchemy's own pattern for a text() parameter: `:name`, but not a `::type` cast nor an escaped `\:`.
_PARAMETER = re.compile(r"(?<![:\w\\]):(\w+)(?!:)")


@lru_cache(maxsize=256)
def pyformat(sql: str) -> str:
    """`sql` with psycopg's `%(name)s` parameters for SQLAlchemy's `:name` (and a literal % doubled)."""
    return _PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


def rows(conn: Connection, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, as tuples, on a SQLAlchemy or a psycopg connection."""
    if isinstance(conn, psycopg.Connection):
        return conn.execute(pyformat(sql), dict(params or {})).fetchall()
    from sqlalchemy import text  # loaded already by whoever holds a SQLAlchemy connection

    return [tuple(row) for row in conn.execute(text(sql), dict(params or {}))]


def stream(conn: psycopg.Connection[Any], sql: str, params: Mapping[str, Any], name: str,
           size: int = 1000) -> Iterator[tuple[Any, ...]]:
    """The rows of `sql` fetched `size` at a time from a server-side cursor called `name` (in a transaction)."""
    with conn.transaction(), conn.cursor(name) as cursor:
        cursor.itersize = size
        cursor.execute(pyformat(sql), dict(params))
        yield from cursor
