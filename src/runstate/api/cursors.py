"""Opaque cursors for the history lists, and the keyset conditions that continue after one.

A cursor is the url-safe base64 (unpadded) of a small JSON object:
``{"v": 1, "l": <list>, "t": <µs since the Unix epoch>, "k": <tie-breaker>}``, the sort key
of the last row of a page. It carries only that position and the name of the list it belongs
to: no filter, no account, no monitor. A cursor that does not decode to a position of the
list it is given to is a 422 naming `cursor`. A well-formed cursor is honoured as the
position it names; it reveals nothing a client has not already been sent.

Each list is ordered by a time and a unique tie-breaker, so a page continues strictly after
the cursor's row whatever is inserted meanwhile: no row is skipped or shown twice.
"""

from __future__ import annotations

import base64
import binascii
import json
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

from sqlalchemy import ColumnElement, and_, or_
from sqlalchemy.orm import InstrumentedAttribute

from runstate.api.envelope import invalid

CURSOR_VERSION = 1
# A real cursor is under 120 characters; the bound keeps decoding cheap.
MAX_CURSOR_LENGTH = 512
EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
ONE_MICROSECOND = timedelta(microseconds=1)
# region ids are 32-bit integers in the database: a larger one must not reach a query.
MAX_INT32 = 2**31 - 1

Row = TypeVar("Row")
Tiebreak = TypeVar("Tiebreak", int, uuid.UUID)


def microseconds(moment: datetime) -> int:
    """``moment`` as whole microseconds since the Unix epoch (exact, no float)."""
    return (moment - EPOCH) // ONE_MICROSECOND


def from_microseconds(value: int) -> datetime:
    return EPOCH + value * ONE_MICROSECOND


def encode(list_name: str, moment: datetime, tiebreak: int | uuid.UUID) -> str:
    """The cursor of the row whose sort key is (``moment``, ``tiebreak``) in ``list_name``."""
    key: int | str = tiebreak if isinstance(tiebreak, int) else str(tiebreak)
    payload = {"v": CURSOR_VERSION, "l": list_name, "t": microseconds(moment), "k": key}
    raw = json.dumps(payload, separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode("ascii")


def _payload(cursor: str) -> dict[str, Any]:
    if len(cursor) > MAX_CURSOR_LENGTH:
        raise invalid("cursor", f"must be at most {MAX_CURSOR_LENGTH} characters")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
        payload = json.loads(raw)
    except (binascii.Error, ValueError):  # bad base64, not UTF-8, not JSON
        raise invalid("cursor", "is not a cursor this API returned") from None
    if not isinstance(payload, dict) or payload.get("v") != CURSOR_VERSION:
        raise invalid("cursor", "is not a cursor this API returned (or is from an older one)")
    return payload


def _int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def decode(cursor: str, list_name: str, tiebreak: type[Tiebreak]) -> tuple[datetime, Tiebreak]:
    """The sort key (time, tie-breaker) ``cursor`` names in ``list_name``; a 422 naming
    `cursor` when it is malformed, belongs to another list or names no possible row."""
    payload = _payload(cursor)
    if payload.get("l") != list_name:
        raise invalid("cursor", f"does not belong to this list ({list_name})")
    moment_us = _int(payload.get("t"))
    try:
        if moment_us is None:
            raise ValueError
        moment = from_microseconds(moment_us)
        raw_key = payload.get("k")
        key: Any
        if tiebreak is uuid.UUID:
            key = uuid.UUID(raw_key) if isinstance(raw_key, str) else None
        else:
            key = _int(raw_key)
            if key is not None and not 0 <= key <= MAX_INT32:
                key = None
        if key is None:
            raise ValueError
    except (ValueError, OverflowError):
        raise invalid("cursor", "does not name a position in this list") from None
    return moment, key


def after(
    moment_column: InstrumentedAttribute[datetime],
    tiebreak_column: InstrumentedAttribute[Any],
    position: tuple[datetime | ColumnElement[datetime], Any],
    *,
    descending: bool,
) -> ColumnElement[bool]:
    """Rows strictly after ``position`` in the order (moment, tie-breaker), both descending or
    both ascending. Spelt as a bound on the moment plus a tie-break, so that an index led by
    (…, moment, tie-breaker) serves it and PostgreSQL prunes the partitions past the bound."""
    moment, tiebreak = position
    if descending:
        return and_(
            moment_column <= moment,
            or_(moment_column < moment, tiebreak_column < tiebreak),
        )
    return and_(
        moment_column >= moment,
        or_(moment_column > moment, tiebreak_column > tiebreak),
    )


def page(
    rows: Sequence[Row],
    limit: int | None,
    list_name: str,
    sort_key: Callable[[Row], tuple[datetime, int | uuid.UUID]],
) -> tuple[Sequence[Row], str | None]:
    """The first ``limit`` of ``rows`` (fetched as limit + 1) and the cursor after the last
    one, or None when no row follows (or no limit was asked for)."""
    if limit is None or len(rows) <= limit:
        return rows, None
    shown = rows[:limit]
    return shown, encode(list_name, *sort_key(shown[-1]))
