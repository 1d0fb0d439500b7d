"""Engine and session factory; callers pass the URL, so tests point them at a database of their own."""

from __future__ import annotations

from typing import TYPE_CHECKING

from sqlalchemy import Engine, create_engine

if TYPE_CHECKING:
    from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 5, max_overflow: int | None = None, name: str | None = None) -> Engine:
    """An engine for `url` whose pool survives a database restart (stale connections are replaced);
    `name` is the connections' application_name, which pg_stat_activity shows."""
    overflow = pool_size if max_overflow is None else max_overflow
    args = {"application_name": name} if name else {}
    return create_engine(url, pool_size=pool_size, max_overflow=overflow, pool_pre_ping=True, connect_args=args)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, since tasks read them after writing."""
    from sqlalchemy.orm import sessionmaker  # the ORM only for callers that use it

    return sessionmaker(engine, expire_on_commit=False)
