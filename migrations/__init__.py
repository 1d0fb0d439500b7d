"""Alembic history of the tierq schema, and the functions `tierq db` uses to apply it."""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config as AlembicConfig
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from models.db import connect_args

HERE = Path(__file__).resolve().parent


def alembic_config(database_url: str) -> AlembicConfig:
    """An Alembic configuration for this package's history, aimed at `database_url`."""
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(HERE))
    # Percent signs in a URL (escaped passwords) would be read as interpolation by ConfigParser.
    cfg.set_main_option("sqlalchemy.url", database_url.replace("%", "%%"))
    return cfg


def create_database_if_missing(database_url: str) -> bool:
    """Create the URL's database when the server has none of that name; True when it was created."""
    url = make_url(database_url)
    admin_url = url.set(database="postgres")
    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT", connect_args=connect_args(admin_url))
    try:
        with admin.connect() as conn:
            exists = conn.execute(text("SELECT 1 FROM pg_database WHERE datname = :n"), {"n": url.database}).first()
            if exists:
                return False
            quoted = conn.dialect.identifier_preparer.quote(url.database or "")
            conn.execute(text(f"CREATE DATABASE {quoted}"))
            return True
    finally:
        admin.dispose()


def upgrade(database_url: str, revision: str = "head") -> None:
    """Apply migrations up to `revision`, creating the database first when it does not exist."""
    create_database_if_missing(database_url)
    command.upgrade(alembic_config(database_url), revision)


def head_revision() -> str | None:
    """The newest revision in this package's history."""
    return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_current_head()


def known_revision(revision: str) -> bool:
    """Whether `revision` is in this package's history (a database at one that is not was migrated by a newer
    tierq)."""
    from alembic.util import CommandError

    try:
        return ScriptDirectory.from_config(alembic_config("postgresql://unused")).get_revision(revision) is not None
    except CommandError:
        return False


def current_revision(database_url: str) -> str | None:
    """The revision the database is at, or None before the first migration."""
    engine = create_engine(database_url, connect_args=connect_args(database_url))
    try:
        with engine.connect() as conn:
            return MigrationContext.configure(conn).get_current_revision()
    finally:
        engine.dispose()
