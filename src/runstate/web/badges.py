"""Badges: a label and a message on coloured boxes, as SVG (shaped like shields.io's flat and
flat-square styles) or as a shields.io endpoint JSON. Pure: no I/O, no database.

A box is as wide as its text measured with the font-metrics table (badge_metrics, generated
from DejaVu Sans at 11 px) plus PADDING on each side, rounded up to a whole pixel.

What a monitor's badge says (figures from runstate.history; no data is never shown as up):
- status: up (bright green), down (red), paused, pending (no check yet) or unknown (no
  check for STALE_AFTER_INTERVALS of the monitor's interval: the checks have stopped), grey;
- uptime over a window: the percentage, cut (never rounded up) to two decimals, so that
  99.999 % reads 99.99 %, never 100 %; grey "no data" when the window has none;
- response time over a window: the mean of the checks that measured one; grey "no data".
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass
from decimal import ROUND_DOWN, Decimal
from typing import Literal

from runstate.web.badge_metrics import FALLBACK_WIDTH, WIDTHS
from runstate.web.templating import render

Style = Literal["flat", "flat-square"]
STYLES: tuple[Style, ...] = ("flat", "flat-square")

# shields.io's named colours (an endpoint JSON names them; the SVG fills with their value).
COLORS = {
    "brightgreen": "#4c1",
    "green": "#97ca00",
    "yellowgreen": "#a4a61d",
    "yellow": "#dfb317",
    "orange": "#fe7d37",
    "red": "#e05d44",
    "blue": "#007ec6",
    "lightgrey": "#9f9f9f",
}
PADDING = 5  # pixels on each side of a text
# A status whose last check (or, never checked, the monitor's creation) is older than this
# many of its intervals is unknown: the checks have stopped, the last status may be wrong.
STALE_AFTER_INTERVALS = 3
NO_DATA = "no data"

# The lowest uptime (percent) of each colour, best first; below the last: red.
UPTIME_COLORS: tuple[tuple[float, str], ...] = (
    (99.9, "brightgreen"),
    (99.0, "green"),
    (97.0, "yellowgreen"),
    (95.0, "yellow"),
    (90.0, "orange"),
)
# The highest mean response time (ms) of each colour, best first; above the last: red.
RESPONSE_TIME_COLORS: tuple[tuple[float, str], ...] = (
    (300, "brightgreen"),
    (500, "green"),
    (1000, "yellowgreen"),
    (2000, "yellow"),
    (5000, "orange"),
)


@dataclass(frozen=True)
class Badge:
    """What a badge shows. ``label`` may be empty (the message alone); ``color`` is one of
    COLORS' names."""

    label: str
    message: str
    color: str
    style: Style = "flat"


def text_width(text: str) -> float:
    """The width in pixels of ``text`` at 11 px: the sum of its characters' advances."""
    return sum(WIDTHS.get(ord(character), FALLBACK_WIDTH) for character in text)


def box_width(text: str) -> int:
    """The width of the box that holds ``text``: 0 for no text."""
    return math.ceil(text_width(text)) + 2 * PADDING if text else 0


@dataclass(frozen=True)
class _Text:
    text: str
    x: int  # the centre, in tenths of a pixel
    length: int  # textLength, in tenths of a pixel


@dataclass(frozen=True)
class Layout:
    """The numbers the template draws a badge with."""

    title: str
    width: int
    label_width: int
    message_width: int
    fill: str
    rounded: bool
    texts: tuple[_Text, ...]


def _text(text: str, left: int, width: int) -> _Text:
    return _Text(text, x=round((left + width / 2) * 10), length=round(text_width(text) * 10))


def layout(badge: Badge) -> Layout:
    label_width = box_width(badge.label)
    message_width = box_width(badge.message)
    texts = [_text(badge.message, label_width, message_width)]
    if badge.label:
        texts.insert(0, _text(badge.label, 0, label_width))
    return Layout(
        title=f"{badge.label}: {badge.message}" if badge.label else badge.message,
        width=label_width + message_width,
        label_width=label_width,
        message_width=message_width,
        fill=COLORS[badge.color],
        rounded=badge.style == "flat",
        texts=tuple(texts),
    )


def render_svg(badge: Badge) -> str:
    """The SVG document of ``badge``; its texts escaped by the template's autoescaping."""
    return render("badges/badge.svg", b=layout(badge))


def endpoint_json(badge: Badge, *, is_error: bool = False) -> str:
    """``badge`` as the JSON a shields.io endpoint badge reads
    (https://shields.io/badges/endpoint-badge)."""
    body: dict[str, object] = {
        "schemaVersion": 1,
        "label": badge.label,
        "message": badge.message,
        "color": badge.color,
    }
    if is_error:
        body["isError"] = True
    return json.dumps(body, ensure_ascii=False, separators=(",", ":"))


# --- what a monitor's badges say -------------------------------------------------------------


def status_message(
    paused: bool, current_status: str | None, *, stale: bool = False
) -> tuple[str, str]:
    """(message, colour) of a monitor's status. Paused wins over the last status, which a
    paused monitor no longer checks; a status not checked again for too long (``stale``:
    the checks have stopped) is unknown rather than the last one seen; no status yet is
    pending."""
    if paused:
        return "paused", "lightgrey"
    if stale:
        return "unknown", "lightgrey"
    if current_status == "up":
        return "up", "brightgreen"
    if current_status == "down":
        return "down", "red"
    return "pending", "lightgrey"


def uptime_text(percent: float) -> str:
    """``percent`` cut to two decimals ("99.99%"); "100%" only when it is exactly 100."""
    if percent >= 100:
        return "100%"
    # Decimal from the shown (repr) value: 99.99 * 100 is 9998.999… in binary floating point.
    cut = Decimal(repr(max(percent, 0.0))).quantize(Decimal("0.01"), rounding=ROUND_DOWN)
    return f"{cut}%"


def uptime_message(percent: float | None) -> tuple[str, str]:
    if percent is None:
        return NO_DATA, "lightgrey"
    color = next((name for least, name in UPTIME_COLORS if percent >= least), "red")
    return uptime_text(percent), color


def response_time_text(milliseconds: float) -> str:
    """Whole milliseconds under a second ("231 ms"), else seconds to two decimals ("1.25 s")."""
    shown = round(milliseconds)
    if shown < 1000:
        return f"{shown} ms"
    return f"{shown / 1000:.2f} s"


def response_time_message(milliseconds: float | None) -> tuple[str, str]:
    if milliseconds is None:
        return NO_DATA, "lightgrey"
    color = next((name for most, name in RESPONSE_TIME_COLORS if milliseconds <= most), "red")
    return response_time_text(milliseconds), color
