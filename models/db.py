"""Engine and session factory; callers pass the URL, so tests point them at a database of their own."""

from __future__ import annotations

from sqlalchemy import Engine, create_engine
from sqlalchemy.orm import Session, sessionmaker


def make_engine(url: str, *, pool_size: int = 5) -> Engine:
    """An engine for `url` whose pool survives a database restart (stale connections are replaced)."""
    return create_engine(url, pool_size=pool_size, max_overflow=pool_size, pool_pre_ping=True)


def make_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, since tasks read them after writing."""
    return sessionmaker(engine, expire_on_commit=False)
