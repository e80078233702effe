"""What a visitor of a public status page sees and fetches: the page itself (with and
without JavaScript, light and dark), its feed, its monitors' badges, and the answers to
conditional requests. A visitor is signed out: a browser context of their own."""

from __future__ import annotations

import re
import xml.etree.ElementTree as ET
from dataclasses import dataclass

import httpx
from playwright.sync_api import Locator, Page, expect

ATOM = "{http://www.w3.org/2005/Atom}"
# What is on the page when it loads is what one refresh shows: expectations on a loaded page
# get only the time the browser needs to paint it, never the pipeline's.
LOADED_MS = 2_000


@dataclass
class PublicSide:
    """The public URLs of one status page and of one monitor on it."""

    base_url: str
    slug: str
    monitor_id: str

    @property
    def page_url(self) -> str:
        return f"{self.base_url}/status/{self.slug}"

    @property
    def feed_url(self) -> str:
        return f"{self.page_url}/feed.atom"

    @property
    def rss_url(self) -> str:
        return f"{self.page_url}/feed.rss"

    @property
    def summary_url(self) -> str:
        return f"{self.page_url}/summary.json"

    def component_status(self, name: str) -> tuple[str, str]:
        """summary.json's status of the component ``name``, and the page's indicator."""
        summary = self.get(self.summary_url).json()
        found = [c["status"] for c in summary["components"] if c["name"] == name]
        assert len(found) == 1, summary["components"]
        return found[0], summary["status"]["indicator"]

    @property
    def badge_url(self) -> str:
        return self.badge("status.svg")

    def badge(self, name: str) -> str:
        return f"{self.base_url}/badge/{self.monitor_id}/{name}"

    def get(self, url: str, **headers: str) -> httpx.Response:
        return httpx.get(url, headers=headers, timeout=10)


def refresh(page: Page, url: str) -> None:
    """Show ``url`` as it is now, the way a reader does: open it and press reload. Opening
    alone may show the browser's copy, as the page's `max-age=30` allows; a reload asks the
    server again (with If-None-Match)."""
    if page.url != url:
        page.goto(url)
    page.reload()


def monitor_on_page(page: Page, name: str) -> Locator:
    """A monitor's entry on the status page: its heading, status word, bar and uptimes."""
    return page.locator("li.m").filter(has=page.get_by_role("heading", name=name, exact=True))


def expect_page_shows(page: Page, monitor: str, status: str, banner: str) -> None:
    """The loaded page shows ``monitor`` as ``status`` under the overall ``banner``."""
    expect(page.locator("#overall")).to_have_text(banner, timeout=LOADED_MS)
    expect(monitor_on_page(page, monitor).locator(".s")).to_have_text(status, timeout=LOADED_MS)


def svg_text(svg: str) -> str:
    """The words an SVG badge shows (its <text> elements), lower case, one space apart."""
    root = ET.fromstring(svg)  # noqa: S314 (the server under test wrote it)
    words = [t.text or "" for t in root.iter() if t.tag.rsplit("}", 1)[-1] == "text"]
    return " ".join(" ".join(words).lower().split())


def feed_titles(atom: str) -> list[str]:
    """The titles of an Atom feed's entries, newest first as the feed orders them."""
    root = ET.fromstring(atom)  # noqa: S314 (the server under test wrote it)
    return [(entry.findtext(f"{ATOM}title") or "") for entry in root.iter(f"{ATOM}entry")]


def rss_titles(rss: str) -> list[str]:
    root = ET.fromstring(rss)  # noqa: S314 (the server under test wrote it)
    return [(item.findtext("title") or "") for item in root.iter("item")]


def todays_day(page: Page, monitor: str) -> Locator:
    """The last day of the monitor's 90-day bar: today."""
    return monitor_on_page(page, monitor).locator(".bar > *").last


def background_luminance(page: Page) -> float:
    """The relative luminance (0 black to 1 white, as WCAG defines it) of the computed
    background colour of the page's body."""
    colour: str = page.evaluate("getComputedStyle(document.body).backgroundColor")
    found = re.fullmatch(r"rgba?\((\d+), (\d+), (\d+)(?:, [\d.]+)?\)", colour)
    assert found, f"unexpected computed background colour {colour!r}"

    def linear(channel: str) -> float:
        c = int(channel) / 255
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(found.group(n)) for n in (1, 2, 3))
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def tab_to_a_bad_day(page: Page, presses: int = 20) -> Locator:
    """Press Tab from the top of the page until the focus is on a day of a history bar;
    that day's element (the test fails when no Tab reaches one)."""
    page.locator("body").focus()
    for _ in range(presses):
        page.keyboard.press("Tab")
        if page.evaluate("!!document.activeElement.closest('.bar')"):
            return page.locator(":focus")
    raise AssertionError(f"{presses} presses of Tab never reached a day of a history bar")


def show_badges(page: Page, public: PublicSide) -> None:
    """The monitor's badges embedded as images in a page, as a README embeds them; each one
    must load and be drawn (a badge that is not valid SVG has no natural width)."""
    names = ("status.svg", "uptime.svg?window=30d", "response-time.svg")
    images = "".join(f'<p><img alt="{n}" src="{public.badge(n)}"></p>' for n in names)
    page.set_content(f"<!doctype html><title>Badges</title><body>{images}</body>")
    for name in names:
        image = page.get_by_alt_text(name)
        expect(image).to_have_js_property("complete", True)
        width = image.evaluate("img => img.naturalWidth")
        assert width > 0, f"the badge {name} is not drawn"
