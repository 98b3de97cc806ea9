"""Declarative base with a constraint naming convention and shared column types."""

from __future__ import annotations

import datetime as dt
from typing import Annotated, Any

from sqlalchemy import JSON, BigInteger, DateTime, Integer, MetaData, String
from sqlalchemy.orm import DeclarativeBase, mapped_column

NAMING_CONVENTION = {
    "ix": "ix_%(column_0_label)s",
    "uq": "uq_%(table_name)s_%(column_0_name)s",
    "ck": "ck_%(table_name)s_%(constraint_name)s",
    "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
    "pk": "pk_%(table_name)s",
}


def utcnow() -> dt.datetime:
    """Current time in UTC, without tzinfo (stored naive, always UTC)."""
    return dt.datetime.now(dt.UTC).replace(tzinfo=None)


IntPk = Annotated[int, mapped_column(Integer, primary_key=True)]
Str64 = Annotated[str, mapped_column(String(64))]
Str255 = Annotated[str, mapped_column(String(255))]
Created = Annotated[dt.datetime, mapped_column(DateTime(), default=utcnow, nullable=False)]
Json = Annotated[dict[str, Any], mapped_column(JSON(), default=dict, nullable=False)]
BigInt = Annotated[int, mapped_column(BigInteger())]


class Base(DeclarativeBase):
    """Base of every oscdeep model."""

    metadata = MetaData(naming_convention=NAMING_CONVENTION)
    type_annotation_map = {str: String(255), dict[str, Any]: JSON()}
