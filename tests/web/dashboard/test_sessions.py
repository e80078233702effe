"""Signing up, in and out through the forms, on SQLite and PostgreSQL: the session cookie's
flags, its revocation, and that it never opens the bearer-only API."""

from __future__ import annotations

import httpx
import pytest

from runstate.auth.passwords import HASHER
from runstate.web.session import PRESESSION_COOKIE, SESSION_COOKIE
from tests.api import rows
from tests.api.server import ADMIN_EMAIL, PASSWORD, ApiServer
from tests.web.dashboard.browser import Browser, csrf_of, new_email, signed_in

WRONG = "Wrong-passw0rd!"
NEW_PASSWORD = "N3w-Passw0rd!"


def _set_cookie_header(answer: httpx.Response, name: str) -> str:
    found = [h for h in answer.headers.get_list("set-cookie") if h.startswith(f"{name}=")]
    assert found, f"no {name} cookie set: {answer.headers.get_list('set-cookie')}"
    return found[0].lower()


def test_signed_out_visitor_is_sent_to_the_sign_in_form(api: ApiServer) -> None:
    browser = Browser(api)
    answer = browser.get("/")
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    form = browser.get("/login")
    assert form.status_code == 200
    assert 'action="/login"' in form.text
    assert PRESESSION_COOKIE in form.cookies


def test_sign_up_signs_in_and_shows_the_email_in_the_nav(api: ApiServer) -> None:
    browser, email, _ = signed_in(api)
    page = browser.get("/")
    assert page.status_code == 200
    assert email in page.text
    assert 'action="/logout"' in page.text
    assert "Welcome to runstate" in page.text  # the flash, shown once
    assert "Welcome to runstate" not in browser.get("/").text


def test_sign_up_shows_the_api_validation_messages(api: ApiServer) -> None:
    browser = Browser(api)
    weak = browser.sign_up(new_email(), "short")
    assert weak.status_code == 422
    assert "Password must be at least 8 characters." in weak.text
    bad_email = browser.sign_up("not-an-email", PASSWORD)
    assert bad_email.status_code == 422
    assert "Email is not a valid e-mail address." in bad_email.text
    assert 'value="not-an-email"' in bad_email.text  # kept, to be corrected
    taken = browser.sign_up(ADMIN_EMAIL, PASSWORD)
    assert taken.status_code == 409
    assert "already exists" in taken.text
    assert browser.session_cookie is None


def test_wrong_password_is_refused_with_one_message_for_both_failures(api: ApiServer) -> None:
    _, email, _ = signed_in(api)
    browser = Browser(api)
    wrong = browser.sign_in(email, WRONG)
    unknown = browser.sign_in(new_email(), WRONG)
    for answer in (wrong, unknown):
        assert answer.status_code == 401
        assert "Wrong e-mail or password." in answer.text
    assert browser.session_cookie is None
    assert browser.sign_in(email.upper()).status_code == 303  # e-mails match case-blind
    assert browser.get("/").status_code == 200


def test_cookie_is_httponly_lax_and_not_secure_over_plain_http(api: ApiServer) -> None:
    browser = Browser(api)
    answer = browser.sign_up(new_email())
    cookie = _set_cookie_header(answer, SESSION_COOKIE)
    assert "httponly" in cookie
    assert "samesite=lax" in cookie
    assert "path=/" in cookie
    assert "secure" not in cookie


def test_cookie_is_secure_behind_an_https_proxy(api: ApiServer) -> None:
    browser = Browser(api, **{"x-forwarded-proto": "https"})
    form = browser.get("/signup")
    presession = _set_cookie_header(form, PRESESSION_COOKIE)
    assert "secure" in presession
    # A client keeps Secure cookies for https only: this one talks http to the test server.
    value = form.headers["set-cookie"].split(";")[0]
    answer = browser.client.post(
        "/signup",
        data={"csrf_token": csrf_of(form.text), "email": new_email(), "password": PASSWORD},
        headers={"cookie": value},
    )
    assert answer.status_code == 303, answer.text
    cookie = _set_cookie_header(answer, SESSION_COOKIE)
    assert "secure" in cookie
    assert "httponly" in cookie
    assert "samesite=lax" in cookie


def test_sign_out_revokes_the_session_server_side(api: ApiServer) -> None:
    browser, _, _ = signed_in(api)
    stolen = browser.session_cookie
    assert stolen
    answer = browser.sign_out()
    assert answer.status_code == 303
    assert answer.headers["location"] == "/login"
    assert browser.session_cookie is None
    # The old cookie, replayed by whoever kept a copy, no longer signs anyone in.
    replay = httpx.Client(base_url=api.base_url, cookies={SESSION_COOKIE: stolen})
    assert replay.get("/").status_code == 303
    assert replay.get("/fragments/monitors").headers.get("location", "").startswith("/login")


def test_a_new_password_ends_every_web_session(api: ApiServer) -> None:
    browser, email, _ = signed_in(api)
    assert browser.get("/").status_code == 200
    rows.set_password_hash(api, email, HASHER.hash(NEW_PASSWORD))
    assert browser.get("/").status_code == 303
    assert browser.sign_in(email, NEW_PASSWORD).status_code == 303
    assert browser.get("/").status_code == 200


def test_deleting_the_account_ends_its_web_sessions(api: ApiServer) -> None:
    browser, email, _ = signed_in(api)
    with api.client(api.admin_token()) as admin:
        users = admin.get("/admin/users").json()["data"]
        user_id = next(u["id"] for u in users if u["email"] == email)
        assert admin.delete(f"/admin/users/{user_id}").status_code in (200, 204)
    assert browser.get("/").status_code == 303


def test_the_cookie_never_authenticates_the_api(api: ApiServer) -> None:
    browser, _, _ = signed_in(api)
    cookie = browser.session_cookie
    assert cookie
    with httpx.Client(base_url=f"{api.base_url}/api/v1", cookies={SESSION_COOKIE: cookie}) as c:
        assert c.get("/me").status_code == 401
        assert c.get("/websites").status_code == 401
        assert c.post("/websites", json={"url": "https://example.com/"}).status_code == 401
    with api.client(cookie) as bearer:  # nor as a bearer token
        assert bearer.get("/me").status_code == 401
    with api.client() as client:  # nor can it be traded for tokens
        for token in (cookie, cookie.partition(".")[2]):
            answer = client.post("/auth/refresh", json={"refresh_token": token})
            assert answer.status_code == 401
    assert browser.get("/").status_code == 200  # and trying left the session alone


@pytest.mark.parametrize(
    "next_url",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example/",
        "\\\\evil.example/",
        "javascript:alert(1)",
        "http:/evil.example",
        "/\tevil",
        " //evil.example/",
    ],
)
def test_next_never_leaves_the_site(api: ApiServer, next_url: str) -> None:
    _, email, _ = signed_in(api)
    browser = Browser(api)
    answer = browser.sign_in(email, next_url=next_url)
    assert answer.status_code == 303
    assert answer.headers["location"] == "/"
    assert browser.get("/login", params={"next": next_url}).headers["location"] == "/"


def test_next_keeps_a_local_path(api: ApiServer) -> None:
    _, email, _ = signed_in(api)
    browser = Browser(api)
    sent_away = browser.get("/fragments/monitors?status=down")
    assert sent_away.status_code == 303
    assert sent_away.headers["location"] == "/login?next=%2Ffragments%2Fmonitors%3Fstatus%3Ddown"
    form = browser.get(sent_away.headers["location"])
    assert 'name="next" value="/fragments/monitors?status=down"' in form.text
    answer = browser.sign_in(email, next_url="/?status=down&q=x")
    assert answer.headers["location"] == "/?status=down&q=x"


def test_htmx_requests_are_sent_to_sign_in_as_a_whole_tab(api: ApiServer) -> None:
    answer = Browser(api).get("/fragments/monitors", headers={"hx-request": "true"})
    assert answer.status_code == 204
    assert answer.headers["hx-redirect"].startswith("/login?next=")


@pytest.mark.parametrize("action", ["/logout", "/login", "/signup"])
def test_posts_without_or_with_a_wrong_csrf_token_are_refused(api: ApiServer, action: str) -> None:
    browser, _, _ = signed_in(api)
    browser.get("/login")  # a presession value too, for the signed-out forms
    fields = {"email": new_email(), "password": PASSWORD}
    missing = browser.client.post(action, data=fields)
    wrong = browser.client.post(action, data={**fields, "csrf_token": "0" * 64})
    not_ascii = browser.client.post(action, data={**fields, "csrf_token": "é" * 64})
    for answer in (missing, wrong, not_ascii):
        assert answer.status_code == 403
        assert "CSRF token" in answer.text
        assert "text/html" in answer.headers["content-type"]
    assert browser.get("/").status_code == 200  # not signed out


def test_a_token_of_another_session_is_refused(api: ApiServer) -> None:
    mine, _, _ = signed_in(api)
    theirs, _, _ = signed_in(api)
    their_token = csrf_of(theirs.get("/").text)
    answer = mine.client.post("/logout", data={"csrf_token": their_token})
    assert answer.status_code == 403
    assert mine.get("/").status_code == 200


def test_a_form_sent_from_another_site_is_refused(api: ApiServer) -> None:
    browser, _, _ = signed_in(api)
    token = csrf_of(browser.get("/").text)
    for header in (
        {"origin": "https://evil.example"},
        {"origin": "null"},
        {"referer": "https://evil.example/page"},
    ):
        answer = browser.client.post("/logout", data={"csrf_token": token}, headers=header)
        assert answer.status_code == 403, header
        assert "another site" in answer.text
    same = browser.client.post(
        "/logout", data={"csrf_token": token}, headers={"origin": api.base_url}
    )
    assert same.status_code == 303


def test_the_sign_in_form_is_bound_to_its_own_browser(api: ApiServer) -> None:
    """Login CSRF: a token read by an attacker on their own visit does not work in the
    victim's browser, which has another presession cookie."""
    _, email, _ = signed_in(api)
    attacker, victim = Browser(api), Browser(api)
    token = csrf_of(attacker.get("/login").text)
    victim.get("/login")
    answer = victim.client.post(
        "/login", data={"csrf_token": token, "email": email, "password": PASSWORD}
    )
    assert answer.status_code == 403
    assert victim.session_cookie is None


def test_pages_are_not_framed_nor_cached(api: ApiServer) -> None:
    browser, _, _ = signed_in(api)
    page = browser.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["cache-control"] == "no-store"
    assert page.headers["server-timing"].startswith("app;dur=")
