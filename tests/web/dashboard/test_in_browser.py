"""The dashboard in Debian's chromium, on SQLite and PostgreSQL: the live refresh updates the
rows and the tab's title without a reload, dark mode is dark, and axe-core finds nothing
serious on the sign-in form and the list."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

import pytest
from playwright.sync_api import Browser, Page, expect, sync_playwright

from runstate.storage.tables import Website
from tests.api import rows
from tests.api.server import PASSWORD, ApiServer
from tests.web.browser.axe import assert_no_serious_violations
from tests.web.browser.harness import chromium_path
from tests.web.dashboard.browser import new_email

pytestmark = pytest.mark.browser
T = TypeVar("T")


@pytest.fixture
def chromium() -> Iterator[Browser]:
    executable = chromium_path()  # skips (or fails on CI) when there is none
    with sync_playwright() as driver:
        launched = driver.chromium.launch(
            executable_path=executable, headless=True, args=["--no-sandbox"]
        )
        yield launched
        launched.close()


def _signed_up(api: ApiServer, chromium: Browser, scheme: str = "light") -> tuple[Page, str]:
    page = chromium.new_page(color_scheme=scheme)  # type: ignore[arg-type]
    email = new_email()
    page.goto(f"{api.base_url}/signup")
    page.fill("#email", email)
    page.fill("#password", PASSWORD)
    page.click("button[type=submit]")
    expect(page.locator(".nav-email")).to_have_text(email)
    return page, email


def _off_the_loop(work: Callable[..., T], *args: Any, **kwargs: Any) -> T:
    """Run a database helper (which runs its own event loop) beside Playwright's."""
    with ThreadPoolExecutor(max_workers=1) as pool:
        return pool.submit(work, *args, **kwargs).result()


def _owner_id(api: ApiServer, email: str) -> uuid.UUID:
    with api.client() as client:
        token = client.post("/signin", json={"email": email, "password": PASSWORD})
    with api.client(token.json()["data"]["access_token"]) as client:
        return uuid.UUID(client.get("/me").json()["data"]["id"])


def test_the_live_refresh_shows_a_monitor_going_down_without_a_reload(
    api: ApiServer, chromium: Browser
) -> None:
    page, email = _signed_up(api, chromium)
    monitor = Website(
        id=uuid.uuid4(),
        user_id=_owner_id(api, email),
        url="https://shop.example/",
        name="Shop",
        current_status="up",
        last_checked_at=rows.seconds_ago(3),
    )
    _off_the_loop(rows.insert, api, monitor)
    page.goto(f"{api.base_url}/")
    expect(page).to_have_title("Monitors · runstate")
    row = page.locator("#monitor-rows tr", has_text="Shop")
    expect(row.locator(".status")).to_have_text("Up")
    page.evaluate("window.__notReloaded = true")
    _off_the_loop(rows.set_website_state, api, monitor.id, current_status="down")
    expect(page).to_have_title("(1 down) Monitors · runstate", timeout=15_000)
    expect(row.locator(".status")).to_have_text("Down")
    expect(page.locator("#status-summary")).to_contain_text("Down 1")
    assert page.evaluate("window.__notReloaded") is True
    assert_no_serious_violations(page, "the monitor list")
    page.close()


def test_dark_mode_and_the_sign_in_form_pass_axe(api: ApiServer, chromium: Browser) -> None:
    page = chromium.new_page(color_scheme="dark")
    page.goto(f"{api.base_url}/login")
    background = page.evaluate("getComputedStyle(document.body).backgroundColor")
    red, green, blue = (int(part) for part in background[4:-1].split(",")[:3])
    assert max(red, green, blue) < 60, background
    assert_no_serious_violations(page, "the sign-in form (dark)")
    light = chromium.new_page(color_scheme="light")
    light.goto(f"{api.base_url}/signup")
    assert_no_serious_violations(light, "the sign-up form (light)")
    page.close()
    light.close()
