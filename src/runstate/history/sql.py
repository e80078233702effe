"""Portable SQL for time arithmetic, compiled for PostgreSQL and for SQLite.

SQLite keeps times as UTC text ('YYYY-MM-DD HH:MM:SS.ffffff') and has no GREATEST or LEAST;
these elements let the history queries be written once with SQLAlchemy Core. Every value is
a float of seconds; none of them accepts NULL (SQLite's multi-argument max() and min() answer
NULL when any argument is, PostgreSQL's GREATEST and LEAST ignore it), so callers COALESCE.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import Float, Integer, Row, literal
from sqlalchemy.ext.asyncio import AsyncSession
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql import Executable
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.functions import FunctionElement

# The Julian day of 1970-01-01 00:00 UTC.
UNIX_EPOCH_JULIAN_DAY = 2440587.5


class epoch_seconds(FunctionElement[float]):
    """Seconds since the Unix epoch of a UTC time column, as a float."""

    type = Float()
    inherit_cache = True
    name = "epoch_seconds"


@compiles(epoch_seconds)
def _epoch_seconds_postgresql(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    # date_part answers a float; EXTRACT answers a numeric, several times slower to sum.
    return f"date_part('epoch', {compiler.process(element.clauses, **kw)})"


@compiles(epoch_seconds, "sqlite")
def _epoch_seconds_sqlite(element: epoch_seconds, compiler: SQLCompiler, **kw: Any) -> str:
    moment = compiler.process(element.clauses, **kw)
    return f"((julianday({moment}) - {UNIX_EPOCH_JULIAN_DAY}) * 86400.0)"


class greatest(FunctionElement[float]):
    """The largest of its (non-NULL) arguments."""

    type = Float()
    inherit_cache = True
    name = "greatest"


class least(FunctionElement[float]):
    """The smallest of its (non-NULL) arguments."""

    type = Float()
    inherit_cache = True
    name = "least"


@compiles(greatest)
def _greatest(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"GREATEST({compiler.process(element.clauses, **kw)})"


@compiles(greatest, "sqlite")
def _greatest_sqlite(element: greatest, compiler: SQLCompiler, **kw: Any) -> str:
    return f"max({compiler.process(element.clauses, **kw)})"


@compiles(least)
def _least(element: least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"LEAST({compiler.process(element.clauses, **kw)})"


@compiles(least, "sqlite")
def _least_sqlite(element: least, compiler: SQLCompiler, **kw: Any) -> str:
    return f"min({compiler.process(element.clauses, **kw)})"


def seconds(value: float) -> ColumnElement[float]:
    """A bound float parameter (typed, so PostgreSQL knows what it is in any position)."""
    return literal(float(value), Float())


def overlap(
    starts: Sequence[ColumnElement[float]], ends: Sequence[ColumnElement[float]]
) -> ColumnElement[float]:
    """The length in seconds of the intersection of the intervals [starts[i], ends[i]) (at
    least two), 0 when they do not all meet."""
    return greatest(seconds(0), least(*ends) - greatest(*starts))


class floor_int(FunctionElement[int]):
    """The largest integer not above its argument, which must not be negative (SQLite's CAST
    truncates, which is the floor only there)."""

    type = Integer()
    inherit_cache = True
    name = "floor_int"


@compiles(floor_int)
def _floor_int(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST(FLOOR({compiler.process(element.clauses, **kw)}) AS INTEGER)"


@compiles(floor_int, "sqlite")
def _floor_int_sqlite(element: floor_int, compiler: SQLCompiler, **kw: Any) -> str:
    return f"CAST({compiler.process(element.clauses, **kw)} AS INTEGER)"


async def rows_of(
    session: AsyncSession, statement: Executable, parameters: Mapping[str, Any] | None = None
) -> Sequence[Row[Any]]:
    """The rows of a Core ``statement`` (with the values of its bound ``parameters``), run on
    the session's connection: plain columns need none of the ORM's handling of results,
    which costs milliseconds over hundreds of rows."""
    connection = await session.connection()
    return (await connection.execute(statement, parameters)).all()
