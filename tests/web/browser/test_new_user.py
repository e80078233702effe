"""The scenario of issue 12, played in a real browser against the whole of runstate (`runstate
up`) and a real site on loopback: a new user signs up, adds a monitor, publishes a status
page, lives through an outage and its recovery, and every page says so."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Page, expect

from tests.web.browser.conftest import failed
from tests.web.browser.harness import RunningSystem, Target, record_errors, shoot_every_tab
from tests.web.browser.public import (
    LOADED_MS,
    PublicSide,
    background_luminance,
    expect_page_shows,
    feed_titles,
    monitor_on_page,
    refresh,
    rss_titles,
    show_badges,
    svg_text,
    todays_day,
)
from tests.web.browser.scenario import NewUser

pytestmark = pytest.mark.browser

GROUP = "Storefront"
INCIDENT = "Checkout errors"
DOWN_TITLE = re.compile(r"^\(1 down\) ")
NOT_DOWN_TITLE = re.compile(r"^(?!\(\d+ down\)).*Monitors")


@pytest.fixture
def new_user(
    request: pytest.FixtureRequest,
    browser: Browser,
    system: RunningSystem,
    target: Target,
    screenshots: Path,
) -> Iterator[NewUser]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield NewUser(context, system, target, screenshots)
        if failed(request):
            shoot_every_tab(context, screenshots / "failed-user")
    finally:
        context.close()


@pytest.fixture
def visitor(request: pytest.FixtureRequest, browser: Browser, screenshots: Path) -> Iterator[Page]:
    """Someone else, signed out, reading the public status page in a browser of their own."""
    context = browser.new_context(viewport={"width": 1024, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield context.new_page()
        if failed(request):
            shoot_every_tab(context, screenshots / "failed-visitor")
    finally:
        context.close()


def test_a_new_user_sees_an_outage_everywhere_and_then_the_recovery(
    new_user: NewUser, visitor: Page, browser: Browser, target: Target
) -> None:
    name = new_user.monitor_name
    visitor_errors = record_errors(visitor.context)
    # 1. Sign up, add a monitor through the form, and see it UP in a list never reloaded.
    new_user.signs_up()
    new_user.adds_a_monitor()
    new_user.opens_the_list_and_sees_it_up()

    # 2. A public status page with the monitor in a group.
    slug = f"shop-{uuid.uuid4().hex[:8]}"
    new_user.creates_a_status_page(slug, "Shop status", GROUP)
    public = PublicSide(new_user.system.base_url, slug, new_user.monitor_id)
    visitor.goto(public.page_url)
    expect_page_shows(visitor, name, "Operational", "All Systems Operational")
    expect(visitor.get_by_role("heading", name=GROUP)).to_be_visible()
    new_user.shoot("02-public-page-up", visitor)
    etag_before_outage = public.get(public.page_url).headers["etag"]

    # 3. The site breaks: the list's row and the tab's title, the public page after one
    #    refresh, the badge and the feed all say so.
    target.stop()
    new_user.sees_the_list_say("Down", DOWN_TITLE)
    new_user.shoot("03-dashboard-down", new_user.dashboard)
    visitor.reload()
    expect_page_shows(visitor, name, "Down", "Major System Outage")
    new_user.shoot("03-public-page-down", visitor)
    assert "down" in svg_text(public.get(public.badge_url).text)
    assert public.component_status(name) == ("major_outage", "critical")
    show_badges(visitor, public)
    new_user.shoot("03-badges-down", visitor)
    assert f"{name} is down" in feed_titles(public.get(public.feed_url).text)
    visitor.goto(public.feed_url)
    new_user.shoot("03-feed-down", visitor, full_page=False)

    # 4. An incident and an update on it, posted through the forms, on the public page.
    new_user.posts_an_incident(INCIDENT, "Card payments fail at checkout.")
    new_user.posts_an_update(INCIDENT, "identified", "A database failover; rolling back.")
    new_user.shoot("04-incident-posted")
    refresh(visitor, public.page_url)
    posted = visitor.get_by_role("region", name="Active incidents").get_by_role(
        "article", name=INCIDENT
    )
    for words in ("Identified", "A database failover; rolling back.", "Card payments fail"):
        expect(posted).to_contain_text(words, timeout=LOADED_MS)
    new_user.shoot("04-public-page-incident", visitor)

    # 5. The site recovers and the incident is resolved.
    target.recover()
    new_user.sees_the_list_say("Up", NOT_DOWN_TITLE)
    new_user.shoot("05-dashboard-recovered", new_user.dashboard)
    new_user.posts_an_update(INCIDENT, "resolved", "Payments work again.")
    new_user.opens_the_monitor_page_after_the_outage()
    visitor.reload()
    expect_page_shows(visitor, name, "Operational", "All Systems Operational")
    past = visitor.get_by_role("region", name="Past incidents")
    expect(past.get_by_role("article", name=INCIDENT)).to_contain_text(
        "Payments work again.", timeout=LOADED_MS
    )
    expect(visitor.get_by_role("region", name="Active incidents")).to_have_count(0)
    new_user.shoot("05-public-page-recovered", visitor)
    # Today's day of the bar now holds the outage: a bad day, with its description.
    today = todays_day(visitor, name)
    expect(today).to_have_attribute("tabindex", "0")
    expect(today).to_contain_text(re.compile(r"% uptime, .* down$"))
    assert "up" in svg_text(public.get(public.badge_url).text)
    assert public.component_status(name) == ("operational", "none")
    for titles in (
        feed_titles(public.get(public.feed_url).text),
        rss_titles(public.get(public.rss_url).text),
    ):
        assert any(t.startswith(f"{name} was down for") for t in titles), titles
        assert INCIDENT in titles, titles

    # 6. Conditional requests: the ETag a reader holds gets a 304 while nothing changed,
    #    and the ETag from before the outage is out of date.
    for url in (public.page_url, public.feed_url, public.summary_url, public.badge_url):
        first = public.get(url)
        assert first.status_code == 200, (url, first.status_code)
        again = public.get(url, **{"if-none-match": first.headers["etag"]})
        assert again.status_code == 304, (url, again.status_code)
        assert again.content == b"", url
    outdated = public.get(public.page_url, **{"if-none-match": etag_before_outage})
    assert outdated.status_code == 200
    assert outdated.headers["etag"] != etag_before_outage

    # 7. Without JavaScript the public page is complete (it has no script at all).
    no_script = browser.new_context(java_script_enabled=False)
    try:
        page = no_script.new_page()
        page.goto(public.page_url)
        expect_page_shows(page, name, "Operational", "All Systems Operational")
        expect(page.get_by_role("article", name=INCIDENT)).to_be_visible()
        expect(monitor_on_page(page, name).get_by_role("group")).to_have_count(1)
        assert page.locator("script").count() == 0
        new_user.shoot("07-public-page-without-javascript", page)
    finally:
        no_script.close()

    # 8. Dark mode follows the reader's preference; light stays light.
    for scheme, dark in (("dark", True), ("light", False)):
        context = browser.new_context(color_scheme=scheme)
        try:
            page = context.new_page()
            page.goto(public.page_url)
            luminance = background_luminance(page)
            assert (luminance < 0.05) if dark else (luminance > 0.8), (scheme, luminance)
            new_user.shoot(f"08-public-page-{scheme}", page)
        finally:
            context.close()

    # The user signs out, and every tab of theirs knows it.
    new_user.signs_out()

    # 9. Every page of the scenario left a screenshot behind, and none reported an error.
    assert len(new_user.shots) >= 19
    for shot in new_user.shots:
        assert shot.stat().st_size > 1_000, shot
    reported = new_user.errors + visitor_errors
    assert not reported, "the browser reported:\n" + "\n".join(reported)
