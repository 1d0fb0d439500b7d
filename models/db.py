"""Engine and session factory, and plain connections for the commands that only read; callers pass
the URL, so tests point them at a database of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import psycopg
    from sqlalchemy import URL, Engine
    from sqlalchemy.orm import Session, sessionmaker

    from models import pq


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int | None = None, name: str | None = None) -> Engine:
    """An engine for `url` whose pool survives a database restart (stale connections are replaced);
    `name` is the connections' application_name, which pg_stat_activity shows."""
    from sqlalchemy import create_engine  # here: `tierq status` and `results` read without SQLAlchemy (connect)

    overflow = pool_size if max_overflow is None else max_overflow
    args = connect_args(url, name=name)
    return create_engine(url, pool_size=pool_size, max_overflow=overflow, pool_pre_ping=True, connect_args=args)


def connect_args(url: str | URL, *, name: str | None = None) -> dict[str, Any]:
    """psycopg's arguments for a connection to `url`: libpq's connect_timeout unless the URL sets its own, and
    `name` as the application_name.

    Without a timeout, a server that accepts the TCP connection and never answers (hung, or behind a firewall
    that drops its packets) holds a command or a worker's start-up silent for minutes, until the kernel gives
    up; with it, they fail in seconds with the usual "cannot reach Postgres" line. The same bound as the
    commands that read through libpq (models.pq).
    """
    from sqlalchemy.engine import make_url

    from models.pq import CONNECT_TIMEOUT_S

    args: dict[str, Any] = {} if "connect_timeout" in make_url(url).query else {"connect_timeout": CONNECT_TIMEOUT_S}
    if name:
        args["application_name"] = name
    return args


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, since tasks read them after writing."""
    from sqlalchemy.orm import sessionmaker  # the ORM only for callers that use it

    return sessionmaker(engine, expire_on_commit=False)


def libpq_url(url: str) -> str:
    """The settings' SQLAlchemy URL (`postgresql+psycopg://...`) as libpq reads it: without the driver name.

    The rest is the same URI for both (percent-encoded user, password and database, options as query
    parameters), so a connection made from either reaches the same database as the same user.
    """
    scheme, separator, rest = url.partition("://")
    return scheme.split("+", 1)[0] + separator + rest


def connect(url: str) -> pq.Connection | psycopg.Connection[Any]:
    """A new connection to the database at `url` (a SQLAlchemy URL) for reading; close it, or use it in `with`.

    Through libpq directly (models.pq) where it can be loaded, which spares a command psycopg's import; else
    through psycopg. `models.query.rows` and `stream` run a query on either.
    """
    from models import pq

    conn = pq.connect(libpq_url(url))
    if conn is not None:
        return conn
    import psycopg

    return psycopg.connect(libpq_url(url), **connect_args(url))
