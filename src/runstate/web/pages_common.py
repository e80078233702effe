"""What every dashboard page shares: `page()` renders a template with the user, the CSRF
token and the flash messages; `redirect()` answers a form with a message for the next page;
`PageRoute` turns what a page route raises (not signed in, CSRF refused, bad input) into a
page rather than the API's JSON envelope.

A page route module declares ``router = APIRouter(include_in_schema=False,
route_class=PageRoute)`` and depends on `OptionalUser` or `SignedInUser` (runstate.web.session)
before it calls `page()`, which reads the session they looked up.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import json
import logging
import time
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any

from fastapi import Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import HTMLResponse, RedirectResponse
from fastapi.routing import APIRoute
from markupsafe import Markup

from runstate.api.envelope import ApiError
from runstate.web.session import (
    CSRF_FIELD,
    PRESESSION_COOKIE,
    CsrfRefused,
    SignInRequired,
    WebSession,
    csrf_token_for,
    login_url,
    new_presession_value,
    set_presession_cookie,
)
from runstate.web.templating import render

log = logging.getLogger(__name__)

FLASH_COOKIE = "runstate_flash"
FLASH_KINDS = ("info", "success", "error")
MAX_FLASH_LENGTH = 500

# Every page: not framed by another site, no sniffing, the path only as a referrer, and no
# copy of a signed-in page kept by a shared cache or the back-forward cache of a shared box.
PAGE_HEADERS = {
    "X-Frame-Options": "DENY",
    "X-Content-Type-Options": "nosniff",
    "Referrer-Policy": "same-origin",
    "Cache-Control": "no-store",
}


@dataclass(frozen=True)
class Flash:
    kind: str  # info | success | error
    text: str


def _key(request: Request) -> str:
    secret: str = request.app.state.runstate.tokens.secret
    return secret


def _flash_mac(key: str, payload: str) -> str:
    return hmac.new(key.encode(), f"flash:{payload}".encode(), hashlib.sha256).hexdigest()[:32]


def _read_flashes(request: Request) -> list[Flash]:
    """The messages the previous answer left, when their signature holds (a forged cookie
    could otherwise put words in the dashboard's mouth)."""
    value = request.cookies.get(FLASH_COOKIE)
    if not value:
        return []
    payload, _, mac = value.rpartition(".")
    if not hmac.compare_digest(mac.encode(), _flash_mac(_key(request), payload).encode()):
        return []
    try:
        items = json.loads(base64.urlsafe_b64decode(payload.encode()))
    except (binascii.Error, ValueError):
        return []
    return [
        Flash(kind, text)
        for kind, text in items
        if isinstance(kind, str) and kind in FLASH_KINDS and isinstance(text, str)
    ]


def flash(request: Request, response: Response, text: str, kind: str = "success") -> None:
    """Show ``text`` on the next page this browser gets (one answer later)."""
    if kind not in FLASH_KINDS:
        raise ValueError(f"flash kind must be one of {FLASH_KINDS}")
    items = [[f.kind, f.text] for f in _read_flashes(request)]
    items.append([kind, text[:MAX_FLASH_LENGTH]])
    payload = base64.urlsafe_b64encode(json.dumps(items).encode()).decode()
    response.set_cookie(
        FLASH_COOKIE,
        f"{payload}.{_flash_mac(_key(request), payload)}",
        max_age=300,
        path="/",
        httponly=True,
        samesite="lax",
    )


def redirect(
    request: Request, url: str, message: str | None = None, kind: str = "success"
) -> RedirectResponse:
    """A 303 to ``url`` (after a POST: the browser GETs it), with an optional flash message."""
    response = RedirectResponse(url, status_code=303)
    if message:
        flash(request, response, message, kind)
    return response


def _web_session(request: Request) -> WebSession | None:
    web: WebSession | None = getattr(request.state, "web_session", None)
    return web


def page(request: Request, template: str, status_code: int = 200, **context: Any) -> HTMLResponse:
    """``template`` rendered as a full answer. Adds to ``context``: ``user`` (None when
    signed out), ``csrf_token``, ``csrf_field()`` (the hidden input every POST form
    carries), ``flashes`` and ``request``."""
    web = _web_session(request)
    presession = request.cookies.get(PRESESSION_COOKIE)
    new_presession = None
    if web is None and not presession:
        presession = new_presession = new_presession_value()
    token = csrf_token_for(_key(request), web, presession)
    context.setdefault("user", web.user if web else None)
    flashes = _read_flashes(request)
    html = render(
        template,
        request=request,
        csrf_token=token,
        csrf_field=lambda: Markup('<input type="hidden" name="{}" value="{}">').format(
            CSRF_FIELD, token
        ),
        flashes=flashes,
        **context,
    )
    response = HTMLResponse(html, status_code=status_code, headers=PAGE_HEADERS)
    if new_presession is not None:
        set_presession_cookie(response, request, new_presession)
    if flashes:
        response.delete_cookie(FLASH_COOKIE, path="/")
    return response


def fragment(request: Request, template: str, **context: Any) -> HTMLResponse:
    """``template`` rendered as a part of a page (an htmx swap): no flashes consumed."""
    web = _web_session(request)
    context.setdefault("user", web.user if web else None)
    html = render(template, request=request, **context)
    return HTMLResponse(html, headers=PAGE_HEADERS)


def error_page(request: Request, status_code: int, message: str) -> HTMLResponse:
    return page(
        request,
        "dashboard/error.html",
        status_code=status_code,
        status=status_code,
        message=message,
    )


def _signed_out_answer(request: Request) -> Response:
    if request.headers.get("hx-request") == "true":
        # htmx would swap a redirect's target into the row list: send the whole tab instead.
        return Response(status_code=204, headers={"HX-Redirect": login_url(request)})
    return RedirectResponse(login_url(request), status_code=303)


def _describe(exc: RequestValidationError) -> str:
    problems = []
    for error in exc.errors()[:5]:
        field = ".".join(str(p) for p in error.get("loc", ())[1:]) or "request"
        problems.append(
            f"{field}: {str(error.get('msg', 'is invalid')).removeprefix('Value error, ')}"
        )
    return "; ".join(problems)


class PageRoute(APIRoute):
    """A route answering with pages: what its dependencies and handler raise becomes a
    redirect to the sign-in form, a 403 page (CSRF) or an error page, not JSON."""

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def answer(request: Request) -> Response:
            started = time.perf_counter()
            response = await self._answer(handler, request)
            # The time the application spent on the page, database included (what the
            # dashboard's benchmark reads): see docs/dashboard.md.
            elapsed_ms = (time.perf_counter() - started) * 1000
            response.headers["Server-Timing"] = f"app;dur={elapsed_ms:.2f}"
            return response

        return answer

    @staticmethod
    async def _answer(
        handler: Callable[[Request], Coroutine[Any, Any, Response]], request: Request
    ) -> Response:
        try:
            return await handler(request)
        except SignInRequired:
            return _signed_out_answer(request)
        except CsrfRefused as exc:
            log.info("csrf refused", extra={"path": request.url.path, "reason": exc.reason})
            return error_page(request, 403, exc.reason)
        except RequestValidationError as exc:
            return error_page(request, 400, _describe(exc))
        except ApiError as exc:
            response = error_page(request, exc.status, exc.error)
            for name, value in (exc.headers or {}).items():
                response.headers[name] = value
            return response
