"""Alembic environment: the URL comes from tierq's settings unless the caller already set one."""

from __future__ import annotations

from alembic import context
from sqlalchemy import create_engine

import models.batch  # noqa: F401  (each model module registers its table on Base.metadata)
import models.call  # noqa: F401
import models.job  # noqa: F401
import models.label  # noqa: F401
import models.router  # noqa: F401
from models.base import Base
from models.db import connect_args
from tierq.settings import get_settings

config = context.config
url = config.get_main_option("sqlalchemy.url") or get_settings().database_url


def run_offline() -> None:
    """Emit SQL to stdout (`alembic upgrade head --sql`)."""
    context.configure(url=url, target_metadata=Base.metadata, literal_binds=True)
    with context.begin_transaction():
        context.run_migrations()


def run_online() -> None:
    """Apply migrations over a live connection, in one transaction."""
    engine = create_engine(url, connect_args=connect_args(url))
    with engine.connect() as connection:
        context.configure(connection=connection, target_metadata=Base.metadata)
        with context.begin_transaction():
            context.run_migrations()
    engine.dispose()


if context.is_offline_mode():
    run_offline()
else:
    run_online()
