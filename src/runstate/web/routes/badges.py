"""Badges of a monitor, for READMEs and other pages: `/badge/{website_id}/{name}` where name
is status, uptime or response-time, with `.svg` (an image) or `.json` (a shields.io endpoint
badge). Query: `window` (uptime: 30d by default; response time: 24h), `label` (replaces the
label; empty: the message alone), `style` (flat or flat-square).

A badge answers only for a monitor shown on at least one public status page, which has made
its state public already; any other id (unknown, malformed, or a monitor on private pages or
none) is the same 404, so a badge tells nothing about monitors that are not public. Each
answer is read with one statement. Bodies carry an ETag (a hash of the body) and
`Cache-Control: no-cache`: caches (GitHub's image proxy among them) ask again every time,
and get a 304 when nothing changed.
"""

from __future__ import annotations

import hashlib
import unicodedata
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request, Response
from sqlalchemy import Select, exists, func, select, true
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.deps import StateDep
from runstate.history import uptime
from runstate.history.sql import rows_of
from runstate.history.windows import WINDOW_NAMES, Window, window
from runstate.storage.tables import (
    DailyRollup,
    HourlyRollup,
    StatusPage,
    StatusPageMonitor,
    Website,
)
from runstate.web.badges import (
    STALE_AFTER_INTERVALS,
    STYLES,
    Badge,
    Style,
    endpoint_json,
    render_svg,
    response_time_message,
    status_message,
    uptime_message,
)

router = APIRouter(include_in_schema=False)

KINDS = ("status", "uptime", "response-time")
DEFAULT_WINDOW = {"uptime": "30d", "response-time": "24h"}
MAX_LABEL_LENGTH = 40
MEDIA_TYPES = {
    "svg": "image/svg+xml; charset=utf-8",
    "json": "application/json; charset=utf-8",
}
HEADERS = {
    "Cache-Control": "no-cache",
    "X-Content-Type-Options": "nosniff",
    # An SVG opened on its own is a document: it may draw, never run or fetch anything.
    "Content-Security-Policy": "default-src 'none'; style-src 'unsafe-inline'",
    # The figures are public already (their page is); a script elsewhere may read the JSON.
    "Access-Control-Allow-Origin": "*",
}


class BadgeRefused(Exception):
    """A badge that cannot be made: ``status`` (404, 422) and what to show instead."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.message = message


def _not_found() -> BadgeRefused:
    """The one refusal for every id without a badge: it must not tell them apart."""
    return BadgeRefused(404, "not found")


@dataclass(frozen=True)
class Options:
    kind: str
    window: str | None
    label: str | None
    style: Style


def _name(name: str) -> tuple[str, str]:
    """(kind, format) of a badge's file name, e.g. ("uptime", "svg") for "uptime.svg"."""
    kind, _, extension = name.rpartition(".")
    if kind not in KINDS or extension not in MEDIA_TYPES:
        raise _not_found()
    return kind, extension


def _label(query: Mapping[str, str]) -> str | None:
    label = query.get("label")
    if label is None:
        return None
    if len(label) > MAX_LABEL_LENGTH:
        raise BadgeRefused(422, f"label: at most {MAX_LABEL_LENGTH} characters")
    # Control characters have no place in a label, and most cannot appear in XML at all.
    if any(unicodedata.category(character) in ("Cc", "Cs") for character in label):
        raise BadgeRefused(422, "label: control characters are not allowed")
    return label


def _options(kind: str, query: Mapping[str, str]) -> Options:
    window_name = None
    if kind in DEFAULT_WINDOW:
        window_name = query.get("window", DEFAULT_WINDOW[kind])
        if window_name not in WINDOW_NAMES:
            raise BadgeRefused(422, f"window: one of {', '.join(WINDOW_NAMES)}")
    style = query.get("style", "flat")
    if style not in STYLES:
        raise BadgeRefused(422, f"style: one of {', '.join(STYLES)}")
    return Options(kind, window_name, _label(query), style)


def _website_id(text: str) -> uuid.UUID:
    try:
        return uuid.UUID(text)
    except ValueError:
        raise _not_found() from None


# --- the statement ---------------------------------------------------------------------------


def _public_monitor(website_id: uuid.UUID) -> Select[*tuple[Any, ...]]:
    """The monitor, if at least one public status page shows it (else no row)."""
    on_a_public_page = exists().where(
        StatusPageMonitor.website_id == Website.id,
        StatusPage.id == StatusPageMonitor.status_page_id,
        StatusPage.is_public.is_(True),
    )
    checked = func.coalesce(Website.last_checked_at, Website.time_added)
    return select(
        Website.id,
        Website.paused,
        Website.current_status,
        Website.interval_seconds,
        checked.label("checked_at"),
    ).where(Website.id == website_id, on_a_public_page)


def _with_mean_response_time(
    monitor: Select[*tuple[Any, ...]], website_id: uuid.UUID, span: Window
) -> Select[Any]:
    """``monitor`` with the total and the count of the response times its rollups measured in
    ``span`` (hourly rollups for 24h, daily ones else, as the uptime windows read them). The
    sums are one row whether or not there are rollups (NULL then)."""
    r = (HourlyRollup if span.hourly else DailyRollup).__table__.c
    sums = (
        select(
            func.sum(r.response_time_sum_ms).label("rt_sum"),
            func.sum(r.timed_checks).label("timed_checks"),
        )
        .where(
            r.website_id == website_id,
            r.bucket_start >= span.since,
            r.bucket_start <= span.until,
        )
        .subquery("latency")
    )
    return monitor.add_columns(sums.c.rt_sum, sums.c.timed_checks).join(sums, true())


@dataclass(frozen=True)
class Shown:
    """What a public monitor's badge is made from."""

    paused: bool
    current_status: str | None
    stale: bool
    uptime_percent: float | None = None
    mean_response_time_ms: float | None = None


def _is_stale(checked_at: datetime, interval_seconds: int, now: datetime) -> bool:
    return now - checked_at > timedelta(seconds=interval_seconds * STALE_AFTER_INTERVALS)


async def read_shown(
    session: AsyncSession, kind: str, website_id: uuid.UUID, span: Window | None, now: datetime
) -> Shown | None:
    """What the ``kind`` badge of a monitor shows at ``now`` over ``span`` (None for status),
    or None when no public status page shows the monitor. One statement."""
    monitor = _public_monitor(website_id)
    if span is None:
        statement = monitor
    elif kind == "uptime":
        statement = uptime.windows_statement(monitor, [span], website_id=website_id)
    else:
        statement = _with_mean_response_time(monitor, website_id, span)
    rows = await rows_of(session, statement)
    if not rows:
        return None
    row = rows[0]
    stale = _is_stale(row.checked_at, row.interval_seconds, now)
    shown = Shown(bool(row.paused), row.current_status, stale)
    if kind == "uptime":  # rounded as the uptime API shows it, so the two always agree
        return replace(shown, uptime_percent=uptime.figures_of(row).uptime_percent)
    if kind == "response-time" and row.timed_checks:
        return replace(shown, mean_response_time_ms=float(row.rt_sum) / float(row.timed_checks))
    return shown


# --- the answer ------------------------------------------------------------------------------


def compose(options: Options, shown: Shown) -> Badge:
    """The badge ``options`` ask for, saying what ``shown`` holds."""
    if options.kind == "status":
        label = "status"
        message, color = status_message(shown.paused, shown.current_status, stale=shown.stale)
    elif options.kind == "uptime":
        label = f"uptime {options.window}"
        message, color = uptime_message(shown.uptime_percent)
    else:
        label = f"response time {options.window}"
        message, color = response_time_message(shown.mean_response_time_ms)
    if options.label is not None:
        label = options.label
    return Badge(label, message, color, options.style)


def _body(badge: Badge, extension: str, *, is_error: bool = False) -> bytes:
    text = render_svg(badge) if extension == "svg" else endpoint_json(badge, is_error=is_error)
    return text.encode()


def entity_tag(body: bytes) -> str:
    return f'"{hashlib.sha256(body).hexdigest()[:32]}"'


def _matches(if_none_match: str | None, tag: str) -> bool:
    """Whether an If-None-Match header names ``tag`` (compared weakly, as RFC 9110 asks)."""
    if not if_none_match:
        return False
    listed = {item.strip().removeprefix("W/") for item in if_none_match.split(",")}
    return "*" in listed or tag in listed


def _answer(badge: Badge, extension: str, request: Request) -> Response:
    body = _body(badge, extension)
    tag = entity_tag(body)
    headers = {**HEADERS, "ETag": tag}
    if _matches(request.headers.get("if-none-match"), tag):
        return Response(status_code=304, headers=headers)
    return Response(body, media_type=MEDIA_TYPES[extension], headers=headers)


def _refusal(refused: BadgeRefused, extension: str) -> Response:
    """A badge saying why there is none: an image still shows something where it is embedded
    (and a shields.io endpoint reads the error)."""
    color = "lightgrey" if refused.status == 404 else "red"
    body = _body(Badge("badge", refused.message, color), extension, is_error=True)
    return Response(
        body, status_code=refused.status, media_type=MEDIA_TYPES[extension], headers=HEADERS
    )


@router.get("/badge/{website_id}/{name}")
async def badge(website_id: str, name: str, request: Request, state: StateDep) -> Response:
    extension = "json" if name.endswith(".json") else "svg"
    try:
        kind, extension = _name(name)
        options = _options(kind, request.query_params)
        monitor_id = _website_id(website_id)
        now = datetime.now(UTC)
        span = window(options.window, now) if options.window else None
        async with state.sessions() as session:
            shown = await read_shown(session, kind, monitor_id, span, now)
        if shown is None:
            raise _not_found()
    except BadgeRefused as refused:
        return _refusal(refused, extension)
    return _answer(compose(options, shown), extension, request)
