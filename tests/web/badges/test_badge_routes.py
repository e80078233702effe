"""Badges over real HTTP, on SQLite and PostgreSQL: only monitors on a public status page
have one; figures agree with the uptime and response-time API; ETag, 304, content types and
the shields.io endpoint JSON. Status pages and history rows are written straight into the
database, as the status page service and the pipeline would have written them."""

from __future__ import annotations

import json
import math
import uuid
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runstate.history.windows import window
from runstate.storage.tables import StatusPage, StatusPageMonitor
from runstate.web import badge_metrics
from runstate.web.badges import PADDING, uptime_text
from tests.api import rows
from tests.api.server import ApiServer

SVG = "{http://www.w3.org/2000/svg}"
NAMES = [
    f"{kind}.{ext}" for kind in ("status", "uptime", "response-time") for ext in ("svg", "json")
]
WINDOWS = ["24h", "7d", "30d", "90d", "365d"]


# --- set-up ----------------------------------------------------------------------------------


def _owner(api: ApiServer) -> tuple[str, str]:
    """A new account: (user id, access token)."""
    user, token, _ = api.new_user()
    return user["id"], token


def _monitor(api: ApiServer, token: str, added: datetime | None = None) -> str:
    with api.client(token) as client:
        answer = client.post("/websites", json={"url": f"https://{uuid.uuid4().hex}.example/"})
    assert answer.status_code == 201, answer.text
    website_id: str = answer.json()["data"]["id"]
    if added is not None:
        rows.set_website_state(api, website_id, time_added=added)
    return website_id


def _page(api: ApiServer, owner_id: str, *website_ids: str, public: bool = True) -> None:
    page = StatusPage(
        id=uuid.uuid4(),
        user_id=uuid.UUID(owner_id),
        slug=f"page-{uuid.uuid4().hex[:12]}",
        title="Status",
        is_public=public,
    )
    shown = [
        StatusPageMonitor(status_page_id=page.id, website_id=uuid.UUID(w), position=n)
        for n, w in enumerate(website_ids)
    ]
    rows.insert(api, page, *shown)


def _shown_monitor(api: ApiServer, added: datetime | None = None) -> tuple[str, str]:
    """A monitor on a public status page: (its id, its owner's token)."""
    owner_id, token = _owner(api)
    website_id = _monitor(api, token, added)
    _page(api, owner_id, website_id)
    return website_id, token


# --- reading badges --------------------------------------------------------------------------


def _get(api: ApiServer, path: str, **params: str) -> httpx.Response:
    return httpx.get(f"{api.base_url}{path}", params=params, timeout=30)


def _svg(answer: httpx.Response) -> ET.Element:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "image/svg+xml; charset=utf-8"
    return ET.fromstring(answer.text)  # noqa: S314 (the server's own output, checked as XML)


def _texts(root: ET.Element) -> list[str]:
    """The label and the message, each once (the flat style draws a shadow copy of each)."""
    texts = [t for t in root.iter(f"{SVG}text") if t.get("aria-hidden") != "true"]
    return [t.text or "" for t in texts]


def _endpoint(answer: httpx.Response) -> dict[str, Any]:
    assert answer.status_code == 200, answer.text
    assert answer.headers["content-type"] == "application/json; charset=utf-8"
    body: dict[str, Any] = answer.json()
    return body


def _box(text: str) -> int:
    widths = badge_metrics.WIDTHS
    total = sum(widths.get(ord(c), badge_metrics.FALLBACK_WIDTH) for c in text)
    return math.ceil(total) + 2 * PADDING


def _now() -> datetime:
    return datetime.now(UTC)


# --- who has a badge -------------------------------------------------------------------------


def test_a_monitor_on_no_status_page_has_no_badge(api: ApiServer) -> None:
    _, token = _owner(api)
    website_id = _monitor(api, token)
    for name in NAMES:
        answer = _get(api, f"/badge/{website_id}/{name}")
        assert answer.status_code == 404, (name, answer.text)
        assert answer.headers["cache-control"] == "no-cache"


def test_a_monitor_on_a_private_page_only_has_no_badge(api: ApiServer) -> None:
    owner_id, token = _owner(api)
    website_id = _monitor(api, token)
    _page(api, owner_id, website_id, public=False)
    for name in NAMES:
        assert _get(api, f"/badge/{website_id}/{name}").status_code == 404, name


def test_a_monitor_on_a_private_and_a_public_page_has_badges(api: ApiServer) -> None:
    owner_id, token = _owner(api)
    website_id = _monitor(api, token)
    _page(api, owner_id, website_id, public=False)
    _page(api, owner_id, website_id, public=True)
    for name in NAMES:
        assert _get(api, f"/badge/{website_id}/{name}").status_code == 200, name


def test_a_refused_badge_tells_nothing_about_why(api: ApiServer) -> None:
    """Unknown, malformed, on no page, on a private page: the same 404 and the same body."""
    owner_id, token = _owner(api)
    hidden = _monitor(api, token)
    private = _monitor(api, token)
    _page(api, owner_id, private, public=False)
    for name in ("status.svg", "uptime.json"):
        answers = [
            _get(api, f"/badge/{website_id}/{name}")
            for website_id in (hidden, private, str(uuid.uuid4()), "not-a-uuid", "1")
        ]
        assert {a.status_code for a in answers} == {404}
        assert len({a.content for a in answers}) == 1, [a.text for a in answers]
        assert all("etag" not in a.headers for a in answers)
    svg = _get(api, f"/badge/{hidden}/status.svg")
    assert _texts(ET.fromstring(svg.text)) == ["badge", "not found"]  # noqa: S314
    assert _get(api, f"/badge/{hidden}/status.json").json()["isError"] is True


def test_an_unknown_badge_name_is_a_404(api: ApiServer) -> None:
    website_id, _ = _shown_monitor(api)
    for name in ("status.png", "status", "latency.svg", "uptime.svg.json", ".svg"):
        assert _get(api, f"/badge/{website_id}/{name}").status_code == 404, name


# --- what they say ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("state", "shown"),
    [
        ({"current_status": "up", "checked": 30}, ("up", "brightgreen")),
        ({"current_status": "down", "checked": 30}, ("down", "red")),
        ({"current_status": None}, ("pending", "lightgrey")),
        ({"current_status": "down", "paused": True}, ("paused", "lightgrey")),
        # No check for more than three intervals (60 s here): the checks have stopped.
        ({"current_status": "up", "checked": 181}, ("unknown", "lightgrey")),
        ({"current_status": None, "added": 600}, ("unknown", "lightgrey")),
        ({"current_status": "up", "checked": 3600, "paused": True}, ("paused", "lightgrey")),
    ],
)
def test_the_status_badge_shows_the_monitors_status(
    api: ApiServer, state: dict[str, Any], shown: tuple[str, str]
) -> None:
    website_id, _ = _shown_monitor(api)
    values = dict(state)
    for key, column in (("checked", "last_checked_at"), ("added", "time_added")):
        if key in values:
            values[column] = rows.seconds_ago(values.pop(key))
    rows.set_website_state(api, website_id, **values)
    assert _texts(_svg(_get(api, f"/badge/{website_id}/status.svg"))) == ["status", shown[0]]
    assert _endpoint(_get(api, f"/badge/{website_id}/status.json")) == {
        "schemaVersion": 1,
        "label": "status",
        "message": shown[0],
        "color": shown[1],
    }


def _history(api: ApiServer, website_id: str, region: int, now: datetime) -> None:
    """Three hours of checks a minute apart, ten of them down inside a resolved incident,
    and four UP checks 40 days ago (in the 90d and 365d windows only)."""
    start = now.replace(second=0, microsecond=0) - timedelta(hours=3)
    checks = []
    for minute in range(180):
        down = 60 <= minute < 70
        checks.append(
            rows.check(
                website_id,
                region,
                start + timedelta(minutes=minute),
                status="down" if down else "up",
                response_time_ms=None if down else 100 + minute,
            )
        )
    old = start - timedelta(days=40)
    checks += [rows.check(website_id, region, old + timedelta(minutes=m)) for m in range(4)]
    rows.insert_checks(api, *checks)
    rows.insert(
        api,
        rows.incident(
            website_id,
            start + timedelta(minutes=60),
            resolved_at=start + timedelta(minutes=70),
            is_active=False,
        ),
    )


def test_the_uptime_badge_agrees_with_the_uptime_api_in_every_window(api: ApiServer) -> None:
    now = _now()
    website_id, token = _shown_monitor(api, added=now - timedelta(days=60))
    _history(api, website_id, rows.local_region_id(api), now)
    with api.client(token) as client:
        answer = client.get(f"/websites/{website_id}/uptime")
    assert answer.status_code == 200, answer.text
    percents = {w["window"]: w["uptime_percent"] for w in answer.json()["data"]["windows"]}
    assert all(percent is not None and percent < 100 for percent in percents.values())
    for name in WINDOWS:
        expected = uptime_text(percents[name])
        root = _svg(_get(api, f"/badge/{website_id}/uptime.svg", window=name))
        assert _texts(root) == [f"uptime {name}", expected]
        body = _endpoint(_get(api, f"/badge/{website_id}/uptime.json", window=name))
        assert body["message"] == expected
    default = _endpoint(_get(api, f"/badge/{website_id}/uptime.json"))
    assert (default["label"], default["message"]) == ("uptime 30d", uptime_text(percents["30d"]))


def test_a_window_without_data_shows_no_data_in_grey_not_100(api: ApiServer) -> None:
    website_id, _ = _shown_monitor(api)
    rows.set_website_state(api, website_id, current_status="up")
    for name in WINDOWS:
        body = _endpoint(_get(api, f"/badge/{website_id}/uptime.json", window=name))
        assert (body["message"], body["color"]) == ("no data", "lightgrey"), name
    for name in ("24h", "30d"):
        body = _endpoint(_get(api, f"/badge/{website_id}/response-time.json", window=name))
        assert (body["message"], body["color"]) == ("no data", "lightgrey"), name


def test_the_response_time_badge_is_the_mean_over_the_window(api: ApiServer) -> None:
    now = _now()
    website_id, token = _shown_monitor(api, added=now - timedelta(days=60))
    _history(api, website_id, rows.local_region_id(api), now)
    # The 170 UP checks of the last three hours measured 100..179 and 190..279 ms.
    timed = [100 + m for m in range(180) if not 60 <= m < 70]
    mean = sum(timed) / len(timed)
    body = _endpoint(_get(api, f"/badge/{website_id}/response-time.json"))
    assert (body["label"], body["message"]) == ("response time 24h", f"{round(mean)} ms")
    # The same mean as the response-time API's one point over the window.
    span = window("24h", now)
    with api.client(token) as client:
        answer = client.get(
            f"/websites/{website_id}/response-times",
            params={"resolution": "hour", "since": span.since.isoformat(), "limit": 1},
        )
    assert answer.status_code == 200, answer.text
    (point,) = answer.json()["data"]["points"]
    assert round(point["response_time_ms"]) == round(mean)
    # 90 days hold the four old checks (120 ms each) too.
    body = _endpoint(_get(api, f"/badge/{website_id}/response-time.json", window="90d"))
    assert body["message"] == f"{round((sum(timed) + 4 * 120) / (len(timed) + 4))} ms"


# --- how they are served ---------------------------------------------------------------------


def test_a_badge_has_an_etag_and_answers_304_when_it_matches(api: ApiServer) -> None:
    website_id, _ = _shown_monitor(api)
    rows.set_website_state(api, website_id, current_status="up")
    path = f"{api.base_url}/badge/{website_id}/status.svg"
    first = httpx.get(path)
    assert first.status_code == 200
    assert first.headers["cache-control"] == "no-cache"
    tag = first.headers["etag"]
    assert tag.startswith('"')
    assert tag.endswith('"')
    assert httpx.get(path).headers["etag"] == tag  # the same body, the same tag
    for header in (tag, f"W/{tag}", f'"other", {tag}', "*"):
        again = httpx.get(path, headers={"if-none-match": header})
        assert again.status_code == 304, header
        assert again.content == b""
        assert again.headers["etag"] == tag
        assert again.headers["cache-control"] == "no-cache"
    assert httpx.get(path, headers={"if-none-match": '"other"'}).status_code == 200
    rows.set_website_state(api, website_id, current_status="down")
    changed = httpx.get(path, headers={"if-none-match": tag})
    assert changed.status_code == 200
    assert changed.headers["etag"] != tag
    assert _texts(_svg(changed)) == ["status", "down"]


def test_the_svg_width_is_the_metrics_tables_arithmetic(api: ApiServer) -> None:
    website_id, _ = _shown_monitor(api)
    rows.set_website_state(api, website_id, current_status="up")
    for params, label in (({}, "status"), ({"label": "Checkout API"}, "Checkout API")):
        root = _svg(_get(api, f"/badge/{website_id}/status.svg", **params))
        assert root.get("width") == str(_box(label) + _box("up"))
        assert root.get("height") == "20"


def test_a_label_is_escaped_and_read_back_as_given(api: ApiServer) -> None:
    website_id, _ = _shown_monitor(api)
    rows.set_website_state(api, website_id, current_status="up")
    label = '<b onload="x()">&\'"'
    answer = _get(api, f"/badge/{website_id}/status.svg", label=label)
    assert "<b " not in answer.text
    assert "&lt;b onload=&#34;x()&#34;&gt;&amp;&#39;&#34;" in answer.text
    assert _texts(_svg(answer)) == [label, "up"]
    assert _endpoint(_get(api, f"/badge/{website_id}/status.json", label=label))["label"] == label
    # An empty label leaves the message alone.
    assert _texts(_svg(_get(api, f"/badge/{website_id}/status.svg", label=""))) == ["up"]


def test_flat_square_is_drawn_without_rounded_corners(api: ApiServer) -> None:
    website_id, _ = _shown_monitor(api)
    root = _svg(_get(api, f"/badge/{website_id}/status.svg", style="flat-square"))
    assert root.find(f"{SVG}clipPath") is None


@pytest.mark.parametrize(
    ("name", "params", "problem"),
    [
        ("uptime.svg", {"window": "1y"}, "window: one of 24h, 7d, 30d, 90d, 365d"),
        ("response-time.json", {"window": ""}, "window: one of 24h, 7d, 30d, 90d, 365d"),
        ("status.svg", {"style": "plastic"}, "style: one of flat, flat-square"),
        ("status.json", {"label": "x" * 41}, "label: at most 40 characters"),
        ("status.svg", {"label": "a\x07b"}, "label: control characters are not allowed"),
    ],
)
def test_bad_options_are_a_422_that_says_what_is_wrong(
    api: ApiServer, name: str, params: dict[str, str], problem: str
) -> None:
    website_id, _ = _shown_monitor(api)
    answer = _get(api, f"/badge/{website_id}/{name}", **params)
    assert answer.status_code == 422, answer.text
    if name.endswith(".json"):
        assert json.loads(answer.text)["message"] == problem
    else:
        assert _texts(ET.fromstring(answer.text)) == ["badge", problem]  # noqa: S314
