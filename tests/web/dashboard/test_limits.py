"""Sign-in limits and a server without sign-up, through the forms, on SQLite and
PostgreSQL: the API's rate limits (AUTH_RATE_LIMIT_*) and SIGNUP_ENABLED apply to the web
forms as they do to /api/v1."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from tests.api.conftest import serve_on
from tests.api.server import ADMIN_EMAIL, ADMIN_PASSWORD, ApiServer
from tests.web.dashboard.browser import Browser, new_email

PER_IP = 5
PER_ACCOUNT = 3
WRONG = "Wrong-passw0rd!"


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def strict(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(
        request,
        tmp_path_factory,
        request.param,
        AUTH_RATE_LIMIT_PER_IP=PER_IP,
        AUTH_RATE_LIMIT_PER_ACCOUNT=PER_ACCOUNT,
        SIGNUP_ENABLED=False,
    ) as server:
        yield server


def test_sign_in_attempts_are_limited_per_address(strict: ApiServer) -> None:
    browser = Browser(strict)
    answers = [browser.sign_in(new_email(), WRONG) for _ in range(PER_IP + 1)]
    assert [a.status_code for a in answers[:PER_IP]] == [401] * PER_IP
    refused = answers[-1]
    assert refused.status_code == 429
    assert int(refused.headers["retry-after"]) > 0
    assert "Too many attempts; try again later." in refused.text
    assert 'action="/login"' in refused.text  # the form again, not a bare error
    assert Browser(strict).sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303


def test_failed_sign_ins_are_limited_per_account(strict: ApiServer) -> None:
    failures = [Browser(strict).sign_in(ADMIN_EMAIL, WRONG) for _ in range(PER_ACCOUNT + 1)]
    assert [a.status_code for a in failures[:PER_ACCOUNT]] == [401] * PER_ACCOUNT
    assert failures[-1].status_code == 429
    assert "too many failed sign-ins for this account" in failures[-1].text.lower()
    # Only failures count: the right password still gets in.
    assert Browser(strict).sign_in(ADMIN_EMAIL, ADMIN_PASSWORD).status_code == 303


def test_sign_up_is_closed_when_disabled(strict: ApiServer) -> None:
    browser = Browser(strict)
    form = browser.get("/signup")
    assert form.status_code == 404
    assert "SIGNUP_ENABLED=false" in form.text
    assert 'href="/signup"' not in browser.get("/login").text
    answer = browser.form_post("/login", "/signup", {"email": new_email(), "password": WRONG})
    assert answer.status_code == 404
    assert browser.session_cookie is None
