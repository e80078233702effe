"""The monitor's detail page over real HTTP, on SQLite and PostgreSQL: uptime, the 90-day bar
(grey for days without data), incidents with their duration, latest checks, alerts sent, and
the chart's data; only its owner (or an ADMIN) sees it."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx

from tests.api import rows
from tests.api.server import ApiServer
from tests.web.pages.web import Browser, new_browser, random_host

DAY = timedelta(days=1)


def _monitor(api: ApiServer, token: str, **fields: Any) -> str:
    with api.client(token) as client:
        answer = client.post("/websites", json={"url": random_host(), **fields})
    assert answer.status_code == 201, answer.text
    website_id: str = answer.json()["data"]["id"]
    return website_id


def _cells(page: str) -> list[str]:
    """The classes of the 90-day bar's cells, oldest first."""
    bar = page.split('<ol class="day-bar"', 1)[1].split("</ol>", 1)[0]
    return re.findall(r'<li class="day day-(\w+)"', bar)


def test_the_detail_page_shows_uptime_history_incidents_checks_and_alerts(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    now = datetime.now(UTC).replace(microsecond=0)
    website_id = _monitor(api, token, name="Shop front")
    # Added three days ago: the 87 days before have no data and must be grey, never green.
    rows.set_website_state(api, website_id, time_added=now - 3 * DAY, current_status="up")
    region = rows.local_region_id(api)
    checks = [
        rows.check(website_id, region, now - timedelta(minutes=m), response_time_ms=100 + m)
        for m in range(1, 6)
    ]
    rows.insert_checks(api, *checks)
    started = now - 2 * DAY
    incident = rows.incident(
        website_id,
        started,
        resolved_at=started + timedelta(minutes=42),
        is_active=False,
        cause="connection refused",
    )
    rows.insert(api, incident)
    rows.insert(
        api,
        rows.notification(
            website_id, incident.id, started, recipient="https://hooks.example.org/ops"
        ),
    )

    page = browser.get(f"/monitors/{website_id}")

    assert page.status_code == 200, page.text
    text = page.text
    assert "Shop front" in text
    cells = _cells(text)
    assert len(cells) == 90
    assert set(cells[:87]) == {"nodata"}, "days before the monitor existed are grey"
    assert "day-up" not in "".join(f"day-{c}" for c in cells[:87])
    assert cells[87] in ("minor", "major"), "the incident's day shows its downtime"
    assert re.search(
        r'<li class="day day-(minor|major)" tabindex="0" title="[^"]*42 min down', text
    )
    assert "42 min" in text  # the incident's duration
    assert "connection refused" in text
    assert "https://hooks.example.org/ops" in text  # the alert sent
    assert "105 ms" in text
    assert "101 ms" in text
    assert text.count("<dt>") == 5  # 24h, 7d, 30d, 90d, 365d
    browser.close()


def test_the_chart_data_is_the_apis_downsampled_response_times(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    now = datetime.now(UTC).replace(microsecond=0)
    website_id = _monitor(api, token, interval_seconds=300)
    rows.set_website_state(api, website_id, time_added=now - 40 * DAY)
    region = rows.local_region_id(api)
    rows.insert_checks(
        api,
        *(
            rows.check(website_id, region, now - timedelta(hours=h), response_time_ms=200)
            for h in range(1, 4)
        ),
        rows.check(website_id, region, now - 10 * DAY, response_time_ms=400),
    )

    day = browser.get(f"/monitors/{website_id}/response-times.json", range="24h").json()
    month = browser.get(f"/monitors/{website_id}/response-times.json", range="30d").json()

    # 24 h at a 300 s interval is 288 checks: few enough to draw each one.
    assert day["resolution"] == "raw"
    assert day["avg"] == [200, 200, 200]
    assert day["x"] == sorted(day["x"])
    # 30 days are hourly rollups, grouped into at most 300 points.
    assert month["resolution"] == "hour"
    assert len(month["x"]) == 2
    assert month["avg"] == [400.0, 200.0]
    with api.client(token) as client:
        answer = client.get(
            f"/websites/{website_id}/response-times",
            params={"resolution": "auto", "limit": 300, "since": (now - 30 * DAY).isoformat()},
        )
    assert [p["response_time_ms"] for p in answer.json()["data"]["points"]] == month["avg"]
    assert browser.get(f"/monitors/{website_id}/response-times.json", range="1y").status_code == 400
    browser.close()


def test_a_monitor_without_data_shows_no_data_not_100_percent(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    website_id = _monitor(api, token)

    text = browser.get(f"/monitors/{website_id}").text

    assert "no data" in text
    assert "100.00 %" not in text
    assert set(_cells(text)) == {"nodata"}
    browser.close()


def test_another_accounts_monitor_is_a_404_and_an_admin_sees_it(api: ApiServer) -> None:
    owner, _, token = new_browser(api)
    website_id = _monitor(api, token)
    stranger, _, _ = new_browser(api)

    for path in ("", "/edit", "/response-times.json"):
        assert stranger.get(f"/monitors/{website_id}{path}").status_code == 404
    for action in ("pause", "resume", "delete", "edit"):
        assert (
            stranger.post(f"/monitors/{website_id}/{action}", {"url": random_host()}).status_code
            == 404
        )
    assert owner.get(f"/monitors/{website_id}").status_code == 200
    assert stranger.get("/monitors/00000000-0000-0000-0000-000000000000").status_code == 404
    admin = Browser(api, "admin@example.com", "Admin-Passw0rd!")
    assert admin.get(f"/monitors/{website_id}").status_code == 200
    for browser in (owner, stranger, admin):
        browser.close()


def test_signed_out_the_detail_page_sends_to_the_sign_in_form(api: ApiServer) -> None:
    _, _, token = new_browser(api)
    website_id = _monitor(api, token)
    with httpx.Client(base_url=api.base_url) as client:
        answer = client.get(f"/monitors/{website_id}")
    assert answer.status_code == 303
    assert answer.headers["location"].startswith("/login?next=")
