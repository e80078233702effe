"""The public status page on a real server, on SQLite and on PostgreSQL: the banner, the
groups, each monitor's 90-day bar (grey where there is no data, never green) and uptime,
incidents with their timeline, the stale notice, 404s for anything not public, and the
size of a large page."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

import httpx

from tests.api import rows
from tests.api.server import ApiServer
from tests.web.status_public.conftest import Owner, day_start, wait_for_revalidation
from tests.web.status_public.seed import added, checked_days, day_rollup

NOT_FOUND = "Status page not found"


def bar_of(html: str, name: str) -> str:
    """The markup of the bar of the monitor called ``name``."""
    found = re.search(
        r'<div class="bar" role="group" aria-label="' + re.escape(name) + r',[^"]*">(.*?)</div>',
        html,
    )
    assert found, f"no bar for {name}"
    return found.group(1)


def test_it_shows_the_banner_groups_statuses_and_uptime(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    api_up, api_down, blog = owner.monitor("API"), owner.monitor("Checkout"), owner.monitor("Blog")
    now = datetime.now(UTC)
    for website_id in (api_up, api_down, blog):
        added(status_api, website_id, now - timedelta(days=10), last_checked_at=now)
    rows.set_website_state(status_api, api_up, current_status="up")
    rows.set_website_state(status_api, api_down, current_status="down")
    rows.insert(status_api, *checked_days(status_api, api_up, day_start(9), 9))
    page = owner.page([("Core", [api_up, api_down]), ("", [blog])], title="Acme & Co")

    answer = public.get(f"/status/{page['slug']}")

    assert answer.status_code == 200
    assert answer.headers["content-type"] == "text/html; charset=utf-8"
    html = answer.text
    assert '<html lang="en">' in html
    assert "<title>Acme &amp; Co status</title>" in html
    assert "Partial System Outage" in html  # one of the two watched monitors is down
    assert '<h3 id="g1">Core</h3>' in html
    assert '<span class="s s-down">Down</span>' in html
    assert '<span class="s s-up">Operational</span>' in html
    assert '<span class="s s-unknown">No data yet</span>' in html  # the blog: no status yet
    assert "prefers-color-scheme:dark" in html
    assert "<script" not in html
    assert re.search(r"Updated <time datetime=\"[^\"]+\">\d\d:\d\d UTC</time>", html)
    # Nine whole days up: a green run of nine; the day before it was added: grey, not green.
    assert "<i class=u style=--n:9>" in bar_of(html, "API")
    assert re.search(r"30 d <b>100\.00 %</b>", html)
    # The blog was never checked: its days are grey, and a focusable run says so.
    blog_bar = bar_of(html, "Blog")
    assert "class=u" not in blog_bar
    assert re.search(
        r"<span class=n style=--n:11 tabindex=0><span class=t>[^<]+ to [^<]+: no data</span>",
        blog_bar,
    )
    assert "24 h <b>no data</b>" in html


def test_days_without_data_are_grey_and_bad_days_are_described(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    website_id = owner.monitor("Shop")
    now = datetime.now(UTC)
    added(status_api, website_id, day_start(5), current_status="up", last_checked_at=now)
    rollups = checked_days(status_api, website_id, day_start(5), 5)
    rollups[1] = day_rollup(status_api, website_id, day_start(4), up_s=86_400 - 3_600, down_s=3_600)
    del rollups[3]  # two days ago: no check at all
    outage_start = day_start(4) + timedelta(hours=2)
    incident = rows.incident(
        website_id, outage_start, resolved_at=outage_start + timedelta(hours=1), is_active=False
    )
    rows.insert(status_api, *rollups, incident)
    page = owner.page([("", [website_id])])

    bar = bar_of(public.get(f"/status/{page['slug']}").text, "Shop")

    four_days_ago = day_start(4)
    assert (
        f"<span class=d tabindex=0><span class=t>{four_days_ago.day} {four_days_ago:%b %Y}:"
        " 95.83 % uptime, 1 h down</span></span>"
    ) in bar
    two_days_ago = day_start(2)
    assert (
        f"<span class=n tabindex=0><span class=t>{two_days_ago.day} {two_days_ago:%b %Y}:"
        " no data</span></span>"
    ) in bar
    assert bar.count("tabindex=0") >= 2


def test_incidents_show_with_their_timeline_newest_first(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    website_id = owner.monitor("API")
    page = owner.page([("", [website_id])])
    open_one = owner.incident(
        page["id"], title="Slow <checkout>", impact="major", status="investigating",
        body="Looking into it.",
    )  # fmt: skip
    owner.update(page["id"], open_one["id"], "identified", "A full disk.")
    done = owner.incident(
        page["id"], title="Login errors", impact="minor", status="investigating", body="Seen."
    )
    owner.update(page["id"], done["id"], "resolved", "Fixed.")

    html = public.get(f"/status/{page['slug']}").text

    active, past = html.split('<h2 id="past">')
    assert "Active incidents" in active
    assert "Slow &lt;checkout&gt;" in active
    assert active.index("A full disk.") < active.index("Looking into it.")
    assert "Login errors" in past
    assert "Fixed." in past
    assert "lasted" in past
    assert "Partial System Outage" in html  # the open incident's major impact


def test_unknown_private_and_malformed_pages_are_404(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    private = owner.page([("", [owner.monitor("x")])], public=False)
    paths = [
        "/status/no-such-page",
        f"/status/{private['slug']}",
        f"/status/{private['slug']}/feed.atom",
        f"/status/{private['slug']}/feed.rss",
        f"/status/{private['slug']}/summary.json",
        "/status/Not_A_Slug!",
        "/status/a",
    ]
    for path in paths:
        answer = public.get(path)
        assert answer.status_code == 404, path
        assert answer.headers["content-type"] == "text/html; charset=utf-8"
        assert NOT_FOUND in answer.text
        assert private["title"] not in answer.text
    assert public.get(f"/status/{private['slug']}/other.json").status_code == 404


def test_a_page_whose_monitors_stopped_being_checked_says_it_is_stale(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    website_id = owner.monitor("API", interval_seconds=60)
    long_ago = datetime.now(UTC) - timedelta(minutes=10)
    added(status_api, website_id, long_ago, current_status="up", last_checked_at=long_ago)
    page = owner.page([("", [website_id])])

    stale = public.get(f"/status/{page['slug']}")

    assert "This page may be out of date." in stale.text
    assert re.search(r'-s-\d+(-gzip)?"$', stale.headers["etag"])

    rows.set_website_state(status_api, website_id, last_checked_at=datetime.now(UTC))
    wait_for_revalidation()
    fresh = public.get(f"/status/{page['slug']}")

    assert "This page may be out of date." not in fresh.text
    assert re.search(r'-f-\d+(-gzip)?"$', fresh.headers["etag"])


def test_a_page_of_many_monitors_stays_under_a_kilobyte_per_monitor(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    monitors = [owner.monitor(f"service number {n}") for n in range(60)]
    now = datetime.now(UTC)
    history = []
    for n, website_id in enumerate(monitors):
        added(status_api, website_id, day_start(120), current_status="up", last_checked_at=now)
        days = checked_days(status_api, website_id, day_start(89), 89)
        for bad in {n % 89, (n * 7) % 89, (n * 13) % 89}:  # days with a 30-minute outage
            start = day_start(89 - bad) + timedelta(hours=n % 20)
            days[bad] = day_rollup(status_api, website_id, day_start(89 - bad), 84_600, 1_800)
            history.append(
                rows.incident(website_id, start, resolved_at=start + timedelta(minutes=30),
                              is_active=False)
            )  # fmt: skip
        history += days
    rows.insert(status_api, *history)
    page = owner.page([(f"Region {g}", monitors[g::6]) for g in range(6)])

    size = len(public.get(f"/status/{page['slug']}").content)

    # 500 such monitors, as the issue asks, stay under 500 KB.
    assert size < 60 * 1_000, size
