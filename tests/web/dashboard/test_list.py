"""The monitor list at `/` and its live fragment, on SQLite and PostgreSQL: only the
signed-in user's monitors, filtered, searched and paged on the server, with their uptime and
the "(N down)" count in the tab's title."""

from __future__ import annotations

import html
import re
import uuid
from datetime import timedelta

import pytest

from runstate.storage.tables import Website
from runstate.web.templating import uptime_percent
from tests.api import rows
from tests.api.server import ApiServer
from tests.web.dashboard.browser import Browser, signed_in

ROW = re.compile(r'<a href="/monitors/([0-9a-f-]{36})">')
TITLE = re.compile(r"<title>([^<]*)</title>")


def _user_id(api: ApiServer, token: str) -> uuid.UUID:
    with api.client(token) as client:
        return uuid.UUID(client.get("/me").json()["data"]["id"])


def _add(api: ApiServer, owner: uuid.UUID, count: int, prefix: str, **values: object) -> list[str]:
    """``count`` monitors of ``owner`` named ``prefix-000``…, added an hour ago."""
    added = rows.seconds_ago(3600)
    monitors = [
        Website(
            id=uuid.uuid4(),
            user_id=owner,
            url=f"https://{prefix}-{n:03}.example/",
            name=f"{prefix}-{n:03}",
            time_added=added,
            **values,
        )
        for n in range(count)
    ]
    rows.insert(api, *monitors)
    return [str(m.id) for m in monitors]


def _listed(page: str) -> list[str]:
    return ROW.findall(page)


def _title(page: str) -> str:
    found = TITLE.search(page)
    assert found, "no <title>"
    return html.unescape(found.group(1)).strip()


@pytest.fixture
def owner(api: ApiServer) -> tuple[Browser, uuid.UUID, str]:
    browser, _, token = signed_in(api)
    return browser, _user_id(api, token), token


def test_the_list_shows_the_users_monitors_and_never_anothers(
    api: ApiServer, owner: tuple[Browser, uuid.UUID, str]
) -> None:
    browser, user_id, _ = owner
    mine = _add(api, user_id, 3, "mine")
    someone_else, _, _ = signed_in(api)
    _, _, their_token = signed_in(api)
    theirs = _add(api, _user_id(api, their_token), 3, "theirs")
    page = browser.get("/").text
    assert sorted(_listed(page)) == sorted(mine)
    assert not set(theirs) & set(_listed(browser.get("/fragments/monitors").text))
    assert "theirs-" not in browser.get("/", params={"q": "theirs"}).text
    assert "All <strong>3</strong>" in page
    assert _listed(someone_else.get("/").text) == []


def test_an_empty_list_invites_to_add_a_monitor(api: ApiServer) -> None:
    browser, _, _ = signed_in(api)
    page = browser.get("/").text
    assert "No monitors yet." in page
    assert _title(page) == "Monitors · runstate"


def test_statuses_filter_and_the_down_count_in_the_title(
    api: ApiServer, owner: tuple[Browser, uuid.UUID, str]
) -> None:
    browser, user_id, _ = owner
    up = _add(api, user_id, 2, "up", current_status="up")
    down = _add(api, user_id, 3, "down", current_status="down")
    paused = _add(api, user_id, 1, "paused", current_status="down", paused=True)
    pending = _add(api, user_id, 2, "pending") + _add(
        api, user_id, 1, "odd", current_status="unknown"
    )
    page = browser.get("/").text
    assert _title(page) == "(3 down) Monitors · runstate"
    listed = _listed(page)
    assert listed[:3] == sorted(down, key=lambda i: down.index(i))  # down first
    assert set(listed) == set(up + down + paused + pending)
    for status, expected in (("up", up), ("down", down), ("paused", paused), ("pending", pending)):
        shown = browser.get("/", params={"status": status}).text
        assert sorted(_listed(shown)) == sorted(expected), status
        # The title counts every monitor down, whatever the filter.
        assert _title(shown) == "(3 down) Monitors · runstate"
        assert f'class="status status-{status}"' in shown
    assert sorted(_listed(browser.get("/", params={"status": "nonsense"}).text)) == sorted(listed)


def test_search_matches_names_and_urls_case_blind_and_literally(
    api: ApiServer, owner: tuple[Browser, uuid.UUID, str]
) -> None:
    browser, user_id, _ = owner
    shop = _add(api, user_id, 2, "Shop")
    blog = _add(api, user_id, 1, "blog")
    rows.set_website_state(api, blog[0], name="Journal")  # found by its URL only
    assert sorted(_listed(browser.get("/", params={"q": "SHOP"}).text)) == sorted(shop)
    assert _listed(browser.get("/", params={"q": "blog-000.example"}).text) == blog
    assert _listed(browser.get("/", params={"q": "journal"}).text) == blog
    nothing = browser.get("/", params={"q": "%"}).text  # a wildcard matches itself only
    assert _listed(nothing) == []
    assert "No monitors match." in nothing
    searched = browser.get("/", params={"q": "shop", "status": "pending"}).text
    assert sorted(_listed(searched)) == sorted(shop)
    assert "1\u20132 of 2" in searched


def test_paging_fifty_a_page(api: ApiServer, owner: tuple[Browser, uuid.UUID, str]) -> None:
    browser, user_id, _ = owner
    ids = _add(api, user_id, 120, "site", current_status="up")  # named in list order
    first = browser.get("/").text
    assert _listed(first) == ids[:50]
    assert "Page 1 of 3" in first
    assert 'href="/?page=2" rel="next"' in first
    second = browser.get("/", params={"page": 2}).text
    assert _listed(second) == ids[50:100]
    last = browser.get("/", params={"page": 3}).text
    assert _listed(last) == ids[100:]
    assert "101\u2013120 of 120" in last
    assert 'rel="next"' not in last
    assert _listed(browser.get("/", params={"page": 99}).text) == ids[100:]  # the last page
    assert browser.get("/", params={"page": 0}).status_code == 400
    assert browser.get("/", params={"page": "x"}).status_code == 400
    fragment = browser.get("/fragments/monitors", params={"page": 2, "q": "site"}).text
    assert _listed(fragment) == ids[50:100]


def test_the_fragment_is_the_rows_title_summary_and_pager(
    api: ApiServer, owner: tuple[Browser, uuid.UUID, str]
) -> None:
    browser, user_id, _ = owner
    [first] = _add(api, user_id, 1, "live", current_status="up")
    fragment = browser.get("/fragments/monitors", params={"status": "down"})
    assert fragment.status_code == 200
    text = fragment.text
    assert text.lstrip().startswith("<title>Monitors · runstate</title>")
    assert "<html" not in text
    assert '<nav class="nav"' not in text
    assert '<tbody id="monitor-rows"' in text
    assert 'hx-get="/fragments/monitors?status=down"' in text  # it keeps polling the same list
    assert "every 5s [document.visibilityState === 'visible']" in text
    assert "every 60s [document.visibilityState === 'hidden']" in text
    assert 'id="status-summary" aria-label="Monitors by status" hx-swap-oob="true"' in text
    assert 'id="pager" aria-label="Pages" hx-swap-oob="true"' in text
    rows.set_website_state(api, first, current_status="down", last_checked_at=rows.seconds_ago(5))
    changed = browser.get("/fragments/monitors", params={"status": "down"}).text
    assert _title(changed) == "(1 down) Monitors · runstate"
    assert _listed(changed) == [first]
    assert "s ago</time>" in changed


def test_uptime_and_response_time_match_the_api(
    api: ApiServer, owner: tuple[Browser, uuid.UUID, str]
) -> None:
    browser, user_id, token = owner
    [watched, unwatched] = _add(api, user_id, 2, "figures", interval_seconds=60)
    region = rows.local_region_id(api)
    start = rows.seconds_ago(3000)
    checks = [
        rows.check(
            watched, region, start + timedelta(seconds=60 * n), status="up" if n % 10 else "down"
        )
        for n in range(45)
    ]
    rows.insert_checks(api, *checks)
    rows.insert(
        api,
        rows.incident(
            watched,
            start + timedelta(seconds=600),
            resolved_at=start + timedelta(seconds=900),
            is_active=False,
        ),
    )
    rows.set_website_state(
        api,
        watched,
        current_status="up",
        latest_response_time_ms=1234,
        last_checked_at=rows.seconds_ago(30),
    )
    with api.client(token) as client:
        windows = client.get(f"/websites/{watched}/uptime").json()["data"]["windows"]
    figures = {w["window"]: w["uptime_percent"] for w in windows}
    assert figures["24h"] is not None
    assert figures["24h"] < 100
    page = browser.get("/").text
    row = page[page.index(f"/monitors/{watched}") :]
    row = row[: row.index("</tr>")]
    assert "1,234 ms" in row
    assert uptime_percent(figures["24h"]) in row
    assert uptime_percent(figures["30d"]) in row
    other = page[page.index(f"/monitors/{unwatched}") :]
    assert other[: other.index("</tr>")].count("no data") == 2  # never 100 % without data
