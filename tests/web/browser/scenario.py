"""The steps a new user plays in the browser, each one a method that acts as the user would
(through the forms) and then waits for what the user should see."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.api.server import PASSWORD
from tests.web.browser.harness import RunningSystem, Target, record_errors

# The pipeline checks every second and the list refreshes every 5 s: 30 s is ample, and a
# failure still comes well before the module's time budget.
PIPELINE_WAIT_MS = 30_000
CHECK_INTERVAL_SECONDS = 1


@dataclass
class NewUser:
    """One person with one browser tab on runstate, who saves a screenshot of every page."""

    context: BrowserContext
    system: RunningSystem
    target: Target
    screenshots: Path
    email: str = field(default_factory=lambda: f"new-{uuid.uuid4().hex[:10]}@example.com")
    monitor_name: str = "Shop front"
    monitor_id: str = ""
    shots: list[Path] = field(default_factory=list)
    # What the browser reported as broken on any of the user's pages: script errors, failed
    # loads of a page's resources, console errors.
    errors: list[str] = field(default_factory=list)

    def __post_init__(self) -> None:
        self.errors = record_errors(self.context)
        self.page: Page = self.context.new_page()
        self.dashboard: Page = self.page  # its own tab from step 1 on

    def url(self, path: str) -> str:
        return f"{self.system.base_url}{path}"

    def shoot(self, step: str, page: Page | None = None, full_page: bool = True) -> Path:
        """Save the page (the whole of it, or what the window shows of a document that is not
        HTML) as ``<step>.png``: the artefact a reviewer looks at."""
        path = self.screenshots / f"{step}.png"
        (page or self.page).screenshot(path=path, full_page=full_page)
        self.shots.append(path)
        return path

    # --- step 1 ------------------------------------------------------------------------------

    def signs_up(self) -> None:
        page = self.page
        page.goto(self.url("/"))
        expect(page).to_have_url(re.compile(r"/login"))
        self.shoot("01-sign-in")
        page.get_by_role("link", name="Sign up").click()
        expect(page.get_by_role("heading", name="Create an account")).to_be_visible()
        page.get_by_label("E-mail").fill(self.email)
        page.get_by_label("Password").fill(PASSWORD)
        self.shoot("01-sign-up")
        page.get_by_role("button", name="Sign up").click()
        expect(page).to_have_url(self.url("/"))
        expect(page.get_by_role("heading", name="Monitors")).to_be_visible()
        expect(page.get_by_text("No monitors yet")).to_be_visible()
        self.shoot("01-empty-dashboard")

    def adds_a_monitor(self) -> None:
        page = self.page
        page.get_by_role("link", name="Add a monitor").first.click()
        expect(page.get_by_role("heading", name="Add a monitor")).to_be_visible()
        # The field's limits reach the browser as attributes it understands.
        expect(page.get_by_label("URL")).to_have_attribute("maxlength", "2048")
        expect(page.get_by_label("URL")).to_have_attribute("autocomplete", "url")
        page.get_by_label("URL").fill(self.target.url)
        page.get_by_label("Name").fill(self.monitor_name)
        page.get_by_label("Check every (seconds)").fill(str(CHECK_INTERVAL_SECONDS))
        page.get_by_label("Timeout (ms)").fill("1000")
        page.get_by_label("Failures before down").fill("1")
        page.get_by_label("Successes before up").fill("1")
        self.shoot("01-add-monitor-form")
        page.get_by_role("button", name="Add monitor").click()
        expect(page).to_have_url(re.compile(r"/monitors/[0-9a-f-]{36}$"))
        self.monitor_id = page.url.rsplit("/", 1)[1]
        expect(page.get_by_role("heading", name=self.monitor_name)).to_be_visible()
        self.shoot("01-monitor-detail-new")

    def monitor_row(self) -> Locator:
        """The monitor's row in the list of the dashboard's tab."""
        return self.dashboard.locator("#monitor-rows tr", has_text=self.monitor_name)

    def opens_the_list_and_sees_it_up(self) -> None:
        """In a second tab, the list shows the monitor pending (no check yet) or already up;
        the live refresh turns it UP while the tab stays the same document, and the tab
        stays open, never reloaded, for the rest of the scenario."""
        self.dashboard = self.context.new_page()
        self.dashboard.goto(self.url("/"))
        expect(self.monitor_row()).to_have_count(1)
        # A mark on this document: a reload or a navigation would wipe it.
        self.dashboard.evaluate("window.sameDocument = true")
        self.sees_the_list_say("Up", re.compile(r"^Monitors"))
        self.shoot("01-dashboard-up", self.dashboard)

    # --- step 2 ------------------------------------------------------------------------------

    def creates_a_status_page(self, slug: str, title: str, group: str) -> None:
        """Through the form: an address, a title, and the monitor ticked into a group."""
        page = self.page
        page.get_by_role("navigation", name="Main").get_by_role("link", name="Status pages").click()
        page.get_by_role("link", name="New status page").click()
        expect(page.get_by_role("heading", name="New status page")).to_be_visible()
        page.get_by_label("Address", exact=True).fill(slug)
        page.get_by_label("Title", exact=True).fill(title)
        expect(page.get_by_label("Public")).to_be_checked()
        page.get_by_label(self.monitor_name, exact=True).check()
        page.get_by_label(f"Group of {self.monitor_name}").fill(group)
        self.shoot("02-new-status-page-form")
        page.get_by_role("button", name="Create status page").click()
        expect(page.get_by_role("heading", name=title, level=1)).to_be_visible()
        expect(page.get_by_role("link", name=f"/status/{slug}")).to_be_visible()
        self.shoot("02-status-page-manage")

    # --- steps 3 and 5 -----------------------------------------------------------------------

    def sees_the_list_say(self, status: str, title: re.Pattern[str]) -> None:
        """The list, never reloaded since step 1, shows the monitor as ``status`` and the tab's
        title matches ``title``."""
        page = self.dashboard
        expect(self.monitor_row().locator(".status")).to_have_text(status, timeout=PIPELINE_WAIT_MS)
        expect(page).to_have_title(title)
        assert page.evaluate("window.sameDocument === true"), "the list was reloaded"

    # --- step 4 ------------------------------------------------------------------------------

    def posts_an_incident(self, title: str, body: str) -> None:
        page = self.page
        form = page.get_by_role("form", name="New incident")
        form.get_by_label("Title").fill(title)
        form.get_by_label("Impact").select_option("major")
        form.get_by_label("Status").select_option("investigating")
        form.get_by_label("Message").fill(body)
        form.get_by_role("button", name="Post incident").click()
        expect(self.incident(title)).to_contain_text(body)

    def incident(self, title: str) -> Locator:
        return self.page.get_by_role("article", name=title)

    def posts_an_update(self, title: str, status: str, body: str) -> None:
        incident = self.incident(title)
        incident.get_by_text("Post an update").click()
        incident.get_by_label("Status").select_option(status)
        incident.get_by_label("Message").fill(body)
        incident.get_by_role("button", name="Post update").click()
        expect(self.incident(title)).to_contain_text(body)

    # --- step 5 ------------------------------------------------------------------------------

    def opens_the_monitor_page_after_the_outage(self) -> None:
        """The monitor's page tells the outage: uptime under 100 %, today focusable on its
        bar, the incident resolved with its duration, and the chart drawn (and redrawn in
        place for another range)."""
        page = self.page
        page.goto(self.url(f"/monitors/{self.monitor_id}"))
        expect(page.get_by_role("heading", name=self.monitor_name, level=1)).to_be_visible()
        windows = page.get_by_role("region", name="Uptime")
        expect(windows.locator(".window").first).to_contain_text(" down")
        bar = page.get_by_role("list", name=re.compile(r"^Last \d+ days$"))
        expect(bar.locator("[tabindex='0']").last).to_contain_text(" down")
        incidents = page.get_by_role("region", name="Incidents")
        expect(incidents.locator("tbody tr")).to_have_count(1)
        expect(incidents.locator("tbody tr")).not_to_contain_text("Ongoing")
        chart = page.locator("#chart canvas").first
        expect(chart).to_be_visible()
        page.evaluate("window.sameDocument = true")
        ranges = page.get_by_role("navigation", name="Chart range")
        ranges.get_by_role("link", name="7d").click()
        expect(ranges.get_by_role("link", name="7d")).to_have_attribute("aria-current", "true")
        expect(page.locator("#chart canvas").first).to_be_visible()
        assert page.evaluate("window.sameDocument === true"), "the range reloaded the page"
        self.shoot("05-monitor-detail-after-outage")

    # --- the end -----------------------------------------------------------------------------

    def signs_out(self) -> None:
        """Signing out in one tab ends the session in every tab: the list's next refresh
        takes its tab to the sign-in form too."""
        page = self.page
        page.get_by_role("button", name="Sign out").click()
        expect(page).to_have_url(re.compile(r"/login"))
        expect(page.get_by_role("status")).to_have_text("You are signed out.")
        page.goto(self.url("/"))
        expect(page).to_have_url(re.compile(r"/login"))
        expect(self.dashboard).to_have_url(re.compile(r"/login"), timeout=PIPELINE_WAIT_MS)
        expect(self.dashboard.get_by_role("heading", name="Sign in")).to_be_visible()
        self.shoot("10-signed-out", self.dashboard)
