"""The steps a new user plays in the browser, each one a method that acts as the user would
(through the forms) and then waits for what the user should see."""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from playwright.sync_api import BrowserContext, Locator, Page, expect

from tests.api.server import PASSWORD
from tests.web.browser.harness import RunningSystem, Target

# The pipeline checks every 2 s and the list refreshes every 5 s: 30 s is ample, and a
# failure still comes well before the module's time budget.
PIPELINE_WAIT_MS = 30_000
CHECK_INTERVAL_SECONDS = 2


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

    def __post_init__(self) -> None:
        self.page: Page = self.context.new_page()

    def url(self, path: str) -> str:
        return f"{self.system.base_url}{path}"

    def shoot(self, step: str, page: Page | None = None) -> Path:
        """Save the whole page as ``<step>.png``: the artefact a reviewer looks at."""
        path = self.screenshots / f"{step}.png"
        (page or self.page).screenshot(path=path, full_page=True)
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
        """The monitor's row in the dashboard's list."""
        return self.page.locator("#monitor-rows tr", has_text=self.monitor_name)

    def sees_it_up_without_reloading(self) -> None:
        """The list opened right after adding shows the monitor pending (no check yet, or
        already up); the live refresh turns it UP while the page stays the same document."""
        page = self.page
        page.goto(self.url("/"))
        row = self.monitor_row()
        expect(row).to_have_count(1)
        # A mark on this document: a reload or a navigation would wipe it.
        page.evaluate("window.sameDocument = true")
        expect(row.locator(".status")).to_have_text("Up", timeout=PIPELINE_WAIT_MS)
        assert page.evaluate("window.sameDocument === true"), "the list was reloaded"
        expect(page).not_to_have_title(re.compile(r"down"))
        self.shoot("01-dashboard-up")
