"""The one Jinja2 environment every page, fragment and feed is rendered with.

Autoescaping is on for HTML, XML and SVG templates (feeds and badges included), so that a
monitor's name or an incident's text can never become markup."""

from __future__ import annotations

import math
from datetime import UTC, datetime
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from runstate.web import TEMPLATES_DIR

environment = Environment(
    loader=FileSystemLoader(TEMPLATES_DIR),
    autoescape=select_autoescape(["html", "xml", "svg", "atom", "rss"]),
    undefined=StrictUndefined,  # a missing variable is an error in tests, not an empty string
    trim_blocks=True,
    lstrip_blocks=True,
    auto_reload=False,
    enable_async=False,
)


def uptime_percent(value: float | None) -> str:
    """An uptime figure as shown: "no data" for None (never 100 %), else two decimals
    rounded down, so that 99.999 % is not shown as a perfect 100.00 %."""
    if value is None:
        return "no data"
    shown = math.floor(value * 100) / 100
    return f"{shown:.2f} %"


def response_ms(value: int | None) -> str:
    return "\u2013" if value is None else f"{value:,} ms"


def ago(moment: datetime | None, now: datetime | None = None) -> str:
    """How long ago ``moment`` was, in the largest whole unit: "12 s ago", "3 min ago"."""
    if moment is None:
        return "never"
    if moment.tzinfo is None:  # SQLite hands back naive UTC
        moment = moment.replace(tzinfo=UTC)
    seconds = int(((now or datetime.now(UTC)) - moment).total_seconds())
    if seconds < 0:
        return "just now"
    for unit, size in (("d", 86_400), ("h", 3_600), ("min", 60)):
        if seconds >= size:
            return f"{seconds // size} {unit} ago"
    return f"{seconds} s ago"


def iso_utc(moment: datetime | None) -> str:
    """``moment`` as ISO 8601 in UTC (``2026-12-01T08:05:00Z``), for `<time datetime>`."""
    if moment is None:
        return ""
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


environment.filters.update(
    uptime_percent=uptime_percent, response_ms=response_ms, ago=ago, iso_utc=iso_utc
)


def render(template: str, **context: Any) -> str:
    """``template`` (a path under templates/) rendered with ``context``."""
    return environment.get_template(template).render(**context)
