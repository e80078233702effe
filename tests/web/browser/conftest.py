"""Fixtures of the browser tests: Debian's chromium through Playwright, `runstate up` on
SQLite and on PostgreSQL, and a site to watch."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest
from playwright.sync_api import Browser, Playwright, sync_playwright

from tests.api.server import postgres_database
from tests.web.browser.harness import (
    SCREENSHOTS,
    RunningSystem,
    Target,
    chromium_path,
    running_system,
)

BACKENDS = ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)]


@pytest.fixture(scope="module")
def playwright() -> Iterator[Playwright]:
    executable = chromium_path()  # skips (or fails on CI) before anything starts
    del executable
    with sync_playwright() as driver:
        yield driver


@pytest.fixture(scope="module")
def browser(playwright: Playwright) -> Iterator[Browser]:
    """Headless chromium, the one the system provides: Playwright never downloads one."""
    launched = playwright.chromium.launch(
        executable_path=chromium_path(), headless=True, args=["--no-sandbox"]
    )
    yield launched
    launched.close()


@pytest.fixture(scope="module", params=BACKENDS)
def system(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[RunningSystem]:
    """The whole of runstate in one process, on each database."""
    backend: str = request.param
    data_dir = tmp_path_factory.mktemp(f"runstate-{backend}")
    if backend == "sqlite":
        with running_system(backend, data_dir) as running:
            yield running
        return
    admin_url: str = request.getfixturevalue("postgres_admin_url")
    # Made and dropped on a thread of its own: Playwright's synchronous API keeps an event
    # loop running on this one, where asyncio.run() may not start another.
    database = postgres_database(admin_url)
    with ThreadPoolExecutor(1) as thread:
        database_url = thread.submit(database.__enter__).result()
        try:
            with running_system(backend, data_dir, database_url) as running:
                yield running
        finally:
            thread.submit(database.__exit__, None, None, None).result()


@pytest.fixture
def target() -> Iterator[Target]:
    site = Target()
    yield site
    site.close()


@pytest.fixture
def screenshots(request: pytest.FixtureRequest) -> Path:
    """Where this test saves its screenshots: test-artifacts/screenshots/<test>/ and, for a
    parametrised test, a folder per parameter set (the back end, say) within it."""
    folder = SCREENSHOTS / str(request.node.originalname)
    callspec = getattr(request.node, "callspec", None)
    if callspec is not None:
        folder = folder / str(callspec.id)
    shutil.rmtree(folder, ignore_errors=True)  # only this run's pictures, none left over
    folder.mkdir(parents=True)
    return folder


@pytest.hookimpl(wrapper=True, tryfirst=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]) -> Iterator[None]:
    """Keep each phase's report on the test, so that its fixtures know it failed."""
    report = yield
    setattr(item, f"report_{report.when}", report)
    return report


def failed(request: pytest.FixtureRequest) -> bool:
    report = getattr(request.node, "report_call", None)
    return report is None or report.failed
