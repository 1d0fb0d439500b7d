"""SQL that runs on a SQLAlchemy connection, a bare psycopg one and a libpq one (models.pq) alike.

`tierq status` and `tierq results` read without SQLAlchemy (`models.db.connect`): importing it takes longer
than their queries. The queries they share with the workers and the bill are written once, in SQLAlchemy's
`text()` form with `:name` parameters, and `rows` runs them on any of these connections.
"""

from __future__ import annotations

import sys
from collections.abc import Iterator, Mapping
from functools import lru_cache
from typing import TYPE_CHECKING, Any, TypeAlias, TypeGuard, cast

from models import pq

if TYPE_CHECKING:
    import psycopg
    import sqlalchemy

Connection: TypeAlias = "sqlalchemy.Connection | psycopg.Connection[Any] | pq.Connection"
ReadConnection: TypeAlias = "psycopg.Connection[Any] | pq.Connection"



@lru_cache(maxsize=256)
def pyformat(sql: str) -> str:
    """`sql` with psycopg's `%(name)s` parameters for SQLAlchemy's `:name` (and a literal % doubled)."""
    return pq.PARAMETER.sub(r"%(\1)s", sql.replace("%", "%%"))


def rows(conn: Connection, sql: str, params: Mapping[str, Any] | None = None) -> list[tuple[Any, ...]]:
    """Every row `sql` returns, as tuples, on a SQLAlchemy, a psycopg or a libpq connection."""
    if isinstance(conn, pq.Connection):
        return conn.rows(sql, params)
    if _is_psycopg(conn):
        return conn.execute(pyformat(sql), dict(params or {})).fetchall()
    from sqlalchemy import text  # loaded already by whoever holds a SQLAlchemy connection

    return [tuple(row) for row in cast("sqlalchemy.Connection", conn).execute(text(sql), dict(params or {}))]


def _is_psycopg(conn: object) -> TypeGuard[psycopg.Connection[Any]]:
    # Without importing psycopg: a process that has not imported it holds no psycopg connection.
    module = sys.modules.get("psycopg")
    return module is not None and isinstance(conn, module.Connection)


def stream(conn: ReadConnection, sql: str, params: Mapping[str, Any], name: str,
           size: int = 1000) -> Iterator[tuple[Any, ...]]:
    """The rows of `sql` fetched `size` at a time from a server-side cursor called `name` (in a transaction)."""
    if isinstance(conn, pq.Connection):
        yield from conn.stream(sql, params, name, size)
        return
    with conn.transaction(), conn.cursor(name) as cursor:
        cursor.itersize = size
        cursor.execute(pyformat(sql), dict(params))
        yield from cursor
