"""A browser for the dashboard tests: an HTTP client that keeps its cookies, reads each
form's CSRF token from the page it came on, and signs up or in through the forms."""

from __future__ import annotations

import re
import secrets
import uuid
from typing import Any

import httpx

from runstate.web.session import SESSION_COOKIE
from tests.api.server import PASSWORD, ApiServer

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


def fresh_ip() -> str:
    """A client address of its own (uvicorn trusts X-Forwarded-For from loopback), so that
    per-address limits of one test never meet another's."""
    n = secrets.randbits(24)
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


def new_email() -> str:
    return f"web-{uuid.uuid4().hex[:12]}@example.com"


class Browser:
    def __init__(self, api: ApiServer, **headers: str) -> None:
        self.api = api
        self.client = httpx.Client(
            base_url=api.base_url, timeout=30, headers={"x-forwarded-for": fresh_ip(), **headers}
        )

    def get(self, path: str, **kwargs: Any) -> httpx.Response:
        return self.client.get(path, **kwargs)

    def form_post(
        self, form_path: str, action: str, fields: dict[str, str], **kwargs: Any
    ) -> httpx.Response:
        """GET the page at ``form_path`` and POST ``fields`` to ``action`` with its token."""
        token = csrf_of(self.get(form_path).text)
        return self.client.post(action, data={"csrf_token": token, **fields}, **kwargs)

    def sign_up(self, email: str, password: str = PASSWORD) -> httpx.Response:
        return self.form_post("/signup", "/signup", {"email": email, "password": password})

    def sign_in(self, email: str, password: str = PASSWORD, next_url: str = "/") -> httpx.Response:
        return self.form_post(
            "/login", "/login", {"email": email, "password": password, "next": next_url}
        )

    def sign_out(self) -> httpx.Response:
        return self.form_post("/", "/logout", {})

    @property
    def session_cookie(self) -> str | None:
        return self.client.cookies.get(SESSION_COOKIE)

    def close(self) -> None:
        self.client.close()


def signed_in(api: ApiServer) -> tuple[Browser, str, str]:
    """A new account, signed up through the form: (browser, e-mail, API access token)."""
    browser = Browser(api)
    email = new_email()
    answer = browser.sign_up(email)
    assert answer.status_code == 303, answer.text
    with api.client() as client:
        tokens = client.post("/signin", json={"email": email, "password": PASSWORD})
    return browser, email, tokens.json()["data"]["access_token"]
