"""Declarative base with the column types the models share."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

from sqlalchemy import MetaData, Numeric
from sqlalchemy.dialects.postgresql import JSONB
from sqlalchemy.orm import DeclarativeBase

from tierq.money import COST_PLACES

# Named constraints keep Alembic's autogenerate and downgrades deterministic.
NAMING = {
    "ix": "ix_%(table_name)s_%(column_0_N_name)s",
    "uq": "uq_%(table_name)s_%(column_0_N_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}

Money = Numeric(24, COST_PLACES, asdecimal=True)


class Base(DeclarativeBase):
    """Base of every tierq table."""

    metadata = MetaData(naming_convention=NAMING)
    type_annotation_map = {Decimal: Money, dict[str, Any]: JSONB, list[Any]: JSONB}
