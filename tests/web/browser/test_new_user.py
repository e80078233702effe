"""The scenario of issue 12, played in a real browser against the whole of runstate (`runstate
up`) and a real site on loopback: a new user signs up, adds a monitor, publishes a status
page, lives through an outage and its recovery, and every page says so."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from playwright.sync_api import Browser

from tests.web.browser.harness import RunningSystem, Target
from tests.web.browser.scenario import NewUser

pytestmark = pytest.mark.browser


@pytest.fixture
def new_user(
    browser: Browser, system: RunningSystem, target: Target, screenshots: Path
) -> Iterator[NewUser]:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    context.set_default_timeout(10_000)
    try:
        yield NewUser(context, system, target, screenshots)
    finally:
        context.close()


def test_a_new_user_sees_an_outage_everywhere_and_then_the_recovery(new_user: NewUser) -> None:
    new_user.signs_up()
    new_user.adds_a_monitor()
    new_user.sees_it_up_without_reloading()
