"""The badge renderer: widths from the font-metrics table, escaping, both styles, and what a
monitor's figures read as. Pure functions, no server."""

from __future__ import annotations

import importlib.util
import json
import math
import xml.etree.ElementTree as ET
from pathlib import Path
from types import ModuleType

import pytest

from runstate.web import badge_metrics
from runstate.web.badges import (
    COLORS,
    PADDING,
    Badge,
    endpoint_json,
    render_svg,
    response_time_message,
    status_message,
    text_width,
    uptime_message,
    uptime_text,
)

SVG = "{http://www.w3.org/2000/svg}"
ROOT = Path(__file__).resolve().parents[3]
SCRIPT = ROOT / "scripts" / "badge_font_metrics.py"


def _parse(svg: str) -> ET.Element:
    return ET.fromstring(svg)  # noqa: S314 (our own output, parsed to check it is XML)


def _box(text: str) -> int:
    """A box's width by the table's arithmetic, written out independently of the renderer."""
    widths = badge_metrics.WIDTHS
    total = sum(widths.get(ord(c), badge_metrics.FALLBACK_WIDTH) for c in text)
    return math.ceil(total) + 2 * PADDING


def _script() -> ModuleType:
    spec = importlib.util.spec_from_file_location("badge_font_metrics", SCRIPT)
    assert spec is not None
    assert spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_the_metrics_table_is_the_one_the_font_gives() -> None:
    script = _script()
    if not script.DEFAULT_FONT.is_file():
        pytest.skip(f"{script.DEFAULT_FONT} is not installed (apt-get install fonts-dejavu-core)")
    assert script.main(["--check"]) == 0, "badge_metrics.py is out of date: run the script"


def test_the_metrics_table_holds_printable_ascii_and_known_widths() -> None:
    assert all(code in badge_metrics.WIDTHS for code in range(0x20, 0x7F))
    # DejaVu Sans' advances are 1303 units (digits), 2048 (@), 651 (space) of 2048 per em.
    assert badge_metrics.WIDTHS[ord("0")] == 1303 * 11 / 2048
    assert badge_metrics.WIDTHS[ord("@")] == 11.0
    assert badge_metrics.WIDTHS[ord(" ")] == 651 * 11 / 2048
    assert badge_metrics.WIDTHS[ord("M")] == badge_metrics.FALLBACK_WIDTH


def test_text_width_is_the_sum_of_advances_with_a_fallback_for_unknown_characters() -> None:
    widths = badge_metrics.WIDTHS
    assert text_width("up") == widths[ord("u")] + widths[ord("p")]
    assert text_width("日本") == 2 * badge_metrics.FALLBACK_WIDTH
    assert text_width("") == 0


@pytest.mark.parametrize(
    ("label", "message"),
    [("uptime 30d", "99.95%"), ("status", "down"), ("response time 24h", "1.25 s"), ("Café", "é")],
)
def test_the_width_is_the_metrics_tables_arithmetic(label: str, message: str) -> None:
    root = _parse(render_svg(Badge(label, message, "green")))
    label_box, message_box = _box(label), _box(message)
    assert root.get("width") == str(label_box + message_box)
    rects = root.findall(f".//{SVG}g/{SVG}rect")
    assert [r.get("width") for r in rects[:2]] == [str(label_box), str(message_box)]
    assert rects[1].get("x") == str(label_box)
    lengths = {t.text: t.get("textLength") for t in root.iter(f"{SVG}text")}
    assert lengths == {
        label: str(round(text_width(label) * 10)),
        message: str(round(text_width(message) * 10)),
    }


def test_a_flat_badge_is_rounded_with_a_gradient_and_shadowed_text() -> None:
    svg = render_svg(Badge("status", "up", "brightgreen"))
    root = _parse(svg)
    assert root.find(f"{SVG}clipPath/{SVG}rect").get("rx") == "3"  # type: ignore[union-attr]
    assert root.find(f"{SVG}linearGradient") is not None
    assert len(root.findall(f".//{SVG}text")) == 4  # each text and its shadow
    # Inline in one page, badges of other widths must not share the clip.
    clip_id = f"r{root.get('width')}"
    assert root.find(f"{SVG}clipPath").get("id") == clip_id  # type: ignore[union-attr]
    assert root.find(f"{SVG}g").get("clip-path") == f"url(#{clip_id})"  # type: ignore[union-attr]
    assert f'fill="{COLORS["brightgreen"]}"' in svg


def test_a_flat_square_badge_has_square_corners_and_no_shadow() -> None:
    root = _parse(render_svg(Badge("status", "up", "brightgreen", "flat-square")))
    assert root.find(f"{SVG}clipPath") is None
    assert root.find(f"{SVG}linearGradient") is None
    assert [t.text for t in root.iter(f"{SVG}text")] == ["status", "up"]


def test_an_empty_label_shows_the_message_alone() -> None:
    root = _parse(render_svg(Badge("", "up", "brightgreen")))
    assert root.get("width") == str(_box("up"))
    assert [t.text for t in root.iter(f"{SVG}text")] == ["up", "up"]
    assert root.findtext(f"{SVG}title") == "up"


def test_markup_in_a_label_is_escaped_and_reads_back_as_text() -> None:
    label = "a<b>&\"c'</text><script>alert(1)</script>"
    svg = render_svg(Badge(label, "up", "brightgreen"))
    assert "<script>" not in svg
    assert "&lt;b&gt;&amp;&#34;c&#39;" in svg
    root = _parse(svg)
    assert root.findtext(f"{SVG}title") == f"{label}: up"
    assert root.get("aria-label") == f"{label}: up"
    assert {t.text for t in root.iter(f"{SVG}text")} == {label, "up"}
    assert not list(root.iter(f"{SVG}script"))


def test_the_endpoint_json_has_the_shields_schema() -> None:
    assert json.loads(endpoint_json(Badge("uptime 30d", "99.95%", "brightgreen"))) == {
        "schemaVersion": 1,
        "label": "uptime 30d",
        "message": "99.95%",
        "color": "brightgreen",
    }
    assert json.loads(endpoint_json(Badge("badge", "not found", "lightgrey"), is_error=True))[
        "isError"
    ]


@pytest.mark.parametrize(
    ("paused", "status", "shown"),
    [
        (False, "up", ("up", "brightgreen")),
        (False, "down", ("down", "red")),
        (False, None, ("pending", "lightgrey")),
        (True, "down", ("paused", "lightgrey")),
        (True, None, ("paused", "lightgrey")),
    ],
)
def test_status_reads_up_down_paused_or_pending(
    paused: bool, status: str | None, shown: tuple[str, str]
) -> None:
    assert status_message(paused, status) == shown


def test_a_stale_status_is_unknown_unless_paused() -> None:
    assert status_message(False, "up", stale=True) == ("unknown", "lightgrey")
    assert status_message(False, None, stale=True) == ("unknown", "lightgrey")
    assert status_message(True, "up", stale=True) == ("paused", "lightgrey")


@pytest.mark.parametrize(
    ("percent", "text"),
    [
        (100.0, "100%"),
        (99.9999, "99.99%"),  # cut, never rounded up to 100 %
        (99.99, "99.99%"),  # 99.99 * 100 is 9998.999… as a float: not 99.98 %
        (99.95, "99.95%"),
        (99.0, "99.00%"),
        (57.123, "57.12%"),
        (0.0, "0.00%"),
    ],
)
def test_uptime_is_cut_to_two_decimals(percent: float, text: str) -> None:
    assert uptime_text(percent) == text


@pytest.mark.parametrize(
    ("percent", "color"),
    [
        (100.0, "brightgreen"),
        (99.9, "brightgreen"),
        (99.89, "green"),
        (99.0, "green"),
        (98.0, "yellowgreen"),
        (96.0, "yellow"),
        (92.0, "orange"),
        (89.99, "red"),
        (0.0, "red"),
    ],
)
def test_uptime_colours_follow_the_thresholds(percent: float, color: str) -> None:
    assert uptime_message(percent)[1] == color


def test_no_uptime_data_is_grey_no_data_never_100() -> None:
    assert uptime_message(None) == ("no data", "lightgrey")


@pytest.mark.parametrize(
    ("ms", "shown"),
    [
        (None, ("no data", "lightgrey")),
        (120.4, ("120 ms", "brightgreen")),
        (450, ("450 ms", "green")),
        (999.6, ("1.00 s", "yellowgreen")),
        (1250, ("1.25 s", "yellow")),
        (4000, ("4.00 s", "orange")),
        (12000, ("12.00 s", "red")),
    ],
)
def test_response_time_reads_in_ms_or_seconds(ms: float | None, shown: tuple[str, str]) -> None:
    assert response_time_message(ms) == shown
