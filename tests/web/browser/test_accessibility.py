"""axe-core (vendored with the other static files) finds no serious or critical violation on
the pages people read most — the public status page in light and dark mode, the sign-in
page, the monitor list and a monitor's page — and the 90-day history bar can be read with
a keyboard: it has an accessible name, and Tab reaches each bad day with its description."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser, BrowserContext, Page, expect

from tests.api.server import PASSWORD
from tests.web.browser.axe import assert_no_serious_violations
from tests.web.browser.harness import RunningSystem, Target, running_system
from tests.web.browser.prepared import MONITOR_NAME, Account, Api, prepare_account
from tests.web.browser.public import (
    expect_page_shows,
    monitor_on_page,
    tab_to_a_bad_day,
    todays_day,
)

pytestmark = pytest.mark.browser


@pytest.fixture(scope="module")
def sqlite_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningSystem]:
    """The pages are the same on every database: one back end is enough here."""
    with running_system("sqlite", tmp_path_factory.mktemp("runstate-a11y")) as running:
        yield running


@pytest.fixture(scope="module")
def account(sqlite_system: RunningSystem) -> Iterator[Account]:
    target = Target()
    try:
        yield prepare_account(sqlite_system, target)
    finally:
        target.close()


def _context(browser: Browser, scheme: str = "light", width: int = 1280) -> BrowserContext:
    # The public page forbids scripts of its own (CSP): axe is injected past it.
    context = browser.new_context(
        bypass_csp=True, color_scheme=scheme, viewport={"width": width, "height": 900}
    )
    context.set_default_timeout(10_000)
    return context


@pytest.fixture
def signed_in(browser: Browser, sqlite_system: RunningSystem, account: Account) -> Iterator[Page]:
    """A tab of the account's owner, signed in through the form."""
    context = _context(browser)
    try:
        page = context.new_page()
        page.goto(f"{sqlite_system.base_url}/login")
        page.get_by_label("E-mail").fill(account.email)
        page.get_by_label("Password").fill(PASSWORD)
        page.get_by_role("button", name="Sign in").click()
        expect(page.get_by_role("heading", name="Monitors")).to_be_visible()
        yield page
    finally:
        context.close()


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_public_status_page_has_no_serious_accessibility_violation(
    browser: Browser,
    sqlite_system: RunningSystem,
    account: Account,
    scheme: str,
    screenshots: Path,
) -> None:
    context = _context(browser, scheme)
    try:
        page = context.new_page()
        page.goto(f"{sqlite_system.base_url}/status/{account.slug}")
        expect(page.get_by_role("article", name="Payments failing")).to_be_visible()
        page.screenshot(path=screenshots / f"public-page-{scheme}.png", full_page=True)
        assert_no_serious_violations(page, f"the public status page ({scheme})")
    finally:
        context.close()


def test_the_sign_in_page_has_no_serious_accessibility_violation(
    browser: Browser, sqlite_system: RunningSystem, screenshots: Path
) -> None:
    context = _context(browser)
    try:
        page = context.new_page()
        page.goto(f"{sqlite_system.base_url}/login")
        expect(page.get_by_role("heading", name="Sign in")).to_be_visible()
        page.screenshot(path=screenshots / "sign-in.png", full_page=True)
        assert_no_serious_violations(page, "the sign-in page")
    finally:
        context.close()


def test_the_monitor_list_has_no_serious_accessibility_violation(
    signed_in: Page, screenshots: Path
) -> None:
    expect(signed_in.locator("#monitor-rows tr", has_text=MONITOR_NAME)).to_be_visible()
    signed_in.screenshot(path=screenshots / "monitor-list.png", full_page=True)
    assert_no_serious_violations(signed_in, "the monitor list")


def test_a_monitor_page_has_no_serious_accessibility_violation(
    signed_in: Page, account: Account, screenshots: Path
) -> None:
    signed_in.get_by_role("link", name=MONITOR_NAME).click()
    expect(signed_in).to_have_url(re.compile(f"/monitors/{account.monitor_id}$"))
    expect(signed_in.get_by_role("heading", name=MONITOR_NAME, level=1)).to_be_visible()
    signed_in.screenshot(path=screenshots / "monitor-detail.png", full_page=True)
    assert_no_serious_violations(signed_in, "a monitor's page")


def test_the_history_bar_is_named_and_its_bad_days_are_reached_with_tab(
    browser: Browser, sqlite_system: RunningSystem, account: Account, screenshots: Path
) -> None:
    context = _context(browser)
    try:
        page = context.new_page()
        page.goto(f"{sqlite_system.base_url}/status/{account.slug}")
        bar = monitor_on_page(page, MONITOR_NAME).get_by_role("group")
        expect(bar).to_have_accessible_name(re.compile(rf"^{MONITOR_NAME}, last 90 days: "))
        # Today the monitor was up, then down for some seconds (and still is).
        expect(bar).to_have_accessible_name(re.compile(r"\b1 with downtime\b"))
        day = tab_to_a_bad_day(page)
        expect(day).to_be_visible()
        # Today: up for a few checks, then down. Its description says when and how much.
        expect(day).to_contain_text(re.compile(r"\d+\.\d\d % uptime"))
        expect(day).to_contain_text(re.compile(r" down\b"))
        page.screenshot(path=screenshots / "bad-day-focused.png")
    finally:
        context.close()


def test_today_is_a_bad_day_on_the_bar_from_the_first_second_of_an_outage(
    browser: Browser, sqlite_system: RunningSystem, screenshots: Path
) -> None:
    """The public page is rendered once per version: the rendering made as the monitor goes
    down is the one every reader gets until the next change, so today must already be shown
    as a day with downtime then (focusable, described), not as an operational one."""
    target, api = Target(), Api(sqlite_system)
    context = _context(browser)
    try:
        monitor_id = api.add_monitor(target, "Search")
        api.wait_for_status(monitor_id, "up")
        slug = f"search-{uuid.uuid4().hex[:8]}"
        api.add_page(slug, "Search status", "Search", monitor_id)
        target.stop()
        api.wait_for_status(monitor_id, "down")
        page = context.new_page()
        page.goto(f"{sqlite_system.base_url}/status/{slug}")
        expect_page_shows(page, "Search", "Down", "Major System Outage")
        page.screenshot(path=screenshots / "down-right-now.png", full_page=True)
        today = todays_day(page, "Search")
        expect(today).to_have_attribute("tabindex", "0")
        expect(today).not_to_contain_text("100.00 % uptime")
    finally:
        context.close()
        api.close()
        target.close()


# WCAG 2.1 success criterion 1.4.10 (Reflow): content reads at 320 CSS pixels wide without
# scrolling sideways (a phone, or a desktop window zoomed to 400 %).
REFLOW_WIDTH = 320


def _sideways_overflow(page: Page) -> list[str]:
    """The elements that reach past the right edge of the window (the first few)."""
    found: list[str] = page.evaluate(
        """() => [...document.querySelectorAll('body *')]
            .filter(e => e.getBoundingClientRect().right > innerWidth + 1)
            .slice(0, 5)
            .map(e => `${e.tagName.toLowerCase()}.${e.className} ends at ${
                Math.round(e.getBoundingClientRect().right)} px`)"""
    )
    return found


@pytest.mark.parametrize("path", ["public page", "monitor list", "monitor page"])
def test_pages_reflow_at_320_px_without_scrolling_sideways(
    browser: Browser,
    sqlite_system: RunningSystem,
    account: Account,
    path: str,
    screenshots: Path,
) -> None:
    urls = {
        "public page": f"/status/{account.slug}",
        "monitor list": "/",
        "monitor page": f"/monitors/{account.monitor_id}",
    }
    context = _context(browser, width=REFLOW_WIDTH)
    try:
        page = context.new_page()
        if path != "public page":
            page.goto(f"{sqlite_system.base_url}/login")
            page.get_by_label("E-mail").fill(account.email)
            page.get_by_label("Password").fill(PASSWORD)
            page.get_by_role("button", name="Sign in").click()
            expect(page.get_by_role("heading", name="Monitors")).to_be_visible()
        page.goto(f"{sqlite_system.base_url}{urls[path]}")
        page.screenshot(path=screenshots / "narrow.png", full_page=True)
        wide = page.evaluate("document.documentElement.scrollWidth")
        assert wide <= REFLOW_WIDTH, f"{wide} px wide: {_sideways_overflow(page)}"
        if path == "public page":
            # A bad day's description, shown on focus, stays on the screen.
            tip = tab_to_a_bad_day(page).locator(".t")
            box = tip.bounding_box()
            assert box is not None
            assert box["x"] >= 0, box
            assert box["x"] + box["width"] <= REFLOW_WIDTH, box
    finally:
        context.close()
