"""A signed-in browser for the page tests: an HTTP client that keeps cookies, signs in
through the /login form and reads each form's CSRF token from the page's HTML."""

from __future__ import annotations

import html
import re
import uuid
from typing import Any

import httpx

from tests.api.server import PASSWORD, ApiServer

_CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(page: str) -> str:
    found = _CSRF.search(page)
    assert found, "the page has no form with a CSRF token"
    return found.group(1)


class Browser:
    """One signed-in user's browser on the test server."""

    def __init__(self, api: ApiServer, email: str, password: str = PASSWORD) -> None:
        self.client = httpx.Client(base_url=api.base_url, timeout=30)
        form = self.client.get("/login")
        answer = self.client.post(
            "/login",
            data={"email": email, "password": password, "csrf_token": csrf_of(form.text)},
        )
        assert answer.status_code == 303, answer.text
        self.token = csrf_of(self.client.get("/channels").text)

    def get(self, path: str, **params: Any) -> httpx.Response:
        return self.client.get(path, params=params)

    def post(
        self, path: str, data: dict[str, Any] | None = None, csrf: bool = True
    ) -> httpx.Response:
        """POST a form, with the session's CSRF token unless ``csrf`` is false."""
        fields = dict(data or {})
        if csrf:
            fields.setdefault("csrf_token", self.token)
        return self.client.post(path, data=fields)

    def close(self) -> None:
        self.client.close()


def new_browser(api: ApiServer) -> tuple[Browser, dict[str, Any], str]:
    """A fresh user, signed in on the web (the Browser) and on the API (the bearer token)."""
    user, token, _ = api.new_user()
    return Browser(api, user["email"]), user, token


def field_error(page: str, field: str) -> str | None:
    """The message shown next to the form field ``field``, or None."""
    found = re.search(rf'<p class="field-error" id="f-{re.escape(field)}-error">([^<]*)</p>', page)
    return html.unescape(found.group(1)) if found else None


def field_value(page: str, field: str) -> str | None:
    """The value the form shows again in the input ``field``."""
    found = re.search(
        rf'<input id="f-{re.escape(field)}" name="[^"]+" type="[^"]+" value="([^"]*)"', page
    )
    return html.unescape(found.group(1)) if found else None


def random_host() -> str:
    return f"https://{uuid.uuid4().hex[:12]}.example/"
