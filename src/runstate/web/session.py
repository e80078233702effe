"""Sign-in sessions of the web pages, and the CSRF check of their forms.

A web session is a row of `refresh_tokens` (the table that already holds the API's sign-ins,
hashed, revocable, deleted with the account), in a family of its own. The cookie carries the
row's id and a random secret; the row keeps an HMAC of that secret keyed with the account's
password hash, never the secret itself. So:

- signing out sets the row's `revoked_at`: the cookie stops working at once, server-side;
- deleting the account deletes the row (and the join to `users` finds nothing anyway);
- changing the password changes the key: every web session of the account stops matching;
- the API's `/auth/refresh` looks tokens up by their SHA-256, which no web session row
  holds, so a cookie can never be traded for bearer tokens, and `/api/v1` never reads it.

Forms carry a `csrf_token`: an HMAC of the session's id with the server's JWT secret, or,
before signing in, of a random value in a `runstate_csrf` cookie (the sign-in and sign-up
forms are protected against login CSRF too). `CsrfChecked` checks it, and the request's
`Origin` (or `Referer`) host when the browser sends one.
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Annotated
from urllib.parse import quote, urlsplit

from fastapi import Depends, Request, Response
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.deps import SessionDep, StateDep
from runstate.storage.tables import RefreshToken, User

SESSION_COOKIE = "runstate_session"
PRESESSION_COOKIE = "runstate_csrf"  # signed out: what the sign-in form's token is bound to
CSRF_FIELD = "csrf_token"
SESSION_TOKEN_BYTES = 32
LOGIN_PATH = "/login"
# Long enough to fill in a sign-in form; renewed each time one is shown.
PRESESSION_MAX_AGE_SECONDS = 2 * 3600


# --- what a page route raises (PageRoute in pages_common turns them into answers) -----------


class SignInRequired(Exception):
    """The page needs a signed-in user: answered with a redirect to the sign-in form."""


class CsrfRefused(Exception):
    """A POST without the form's CSRF token, with a wrong one, or from another site."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason


# --- the session itself -----------------------------------------------------------------------


@dataclass(frozen=True)
class WebSession:
    """A signed-in browser: the account, and the session row it signed in with."""

    user: User
    session_id: uuid.UUID


def _bound_hash(secret: str, password_hash: str) -> str:
    """What the row keeps of a cookie's secret: keyed with the password hash, so that a new
    password ends every web session of the account."""
    key = b"runstate web session\x00" + password_hash.encode()
    return hmac.new(key, secret.encode(), hashlib.sha256).hexdigest()


def _cookie_value(session_id: uuid.UUID, secret: str) -> str:
    return f"{session_id.hex}.{secret}"


def _parse_cookie(value: str) -> tuple[uuid.UUID, str] | None:
    row_id, _, secret = value.partition(".")
    if not secret or len(secret) > 128:
        return None
    try:
        return uuid.UUID(hex=row_id), secret
    except ValueError:
        return None


def served_over_https(request: Request) -> bool:
    """Whether the browser talks https to us: directly, or to a proxy in front that says so.
    (uvicorn already applies X-Forwarded-Proto from trusted proxies to the scheme.)"""
    forwarded = request.headers.get("x-forwarded-proto", "").split(",")[0].strip().lower()
    return request.url.scheme == "https" or forwarded == "https"


def _set_cookie(response: Response, request: Request, name: str, value: str, max_age: int) -> None:
    response.set_cookie(
        name,
        value,
        max_age=max_age,
        path="/",
        httponly=True,
        samesite="lax",
        secure=served_over_https(request),
    )


async def start_session(
    session: AsyncSession, request: Request, response: Response, user: User, ttl_seconds: int
) -> uuid.UUID:
    """Sign ``user`` in: a new session row (committed) and its cookie set on ``response``."""
    secret = secrets.token_urlsafe(SESSION_TOKEN_BYTES)
    now = datetime.now(UTC)
    row_id = uuid.uuid4()
    session.add(
        RefreshToken(
            id=row_id,
            user_id=user.id,
            family_id=uuid.uuid4(),  # a family of one: nothing is ever rotated from it
            token_hash=_bound_hash(secret, user.password_hash),
            created_at=now,
            expires_at=now + timedelta(seconds=ttl_seconds),
        )
    )
    await session.commit()
    _set_cookie(response, request, SESSION_COOKIE, _cookie_value(row_id, secret), ttl_seconds)
    response.delete_cookie(PRESESSION_COOKIE, path="/")
    return row_id


async def end_session(session: AsyncSession, web: WebSession, response: Response) -> None:
    """Sign out: the row revoked (committed) and the cookie cleared."""
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == web.session_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    await session.commit()
    response.delete_cookie(SESSION_COOKIE, path="/")


async def _session_of(session: AsyncSession, cookie: str | None) -> WebSession | None:
    parsed = _parse_cookie(cookie) if cookie else None
    if parsed is None:
        return None
    row_id, secret = parsed
    found = (
        await session.execute(
            select(RefreshToken.token_hash, RefreshToken.expires_at, RefreshToken.revoked_at, User)
            .join(User, User.id == RefreshToken.user_id)
            .where(RefreshToken.id == row_id)
        )
    ).first()
    if found is None:
        return None
    token_hash, expires_at, revoked_at, user = found
    if revoked_at is not None or expires_at <= datetime.now(UTC):
        return None
    if not hmac.compare_digest(token_hash, _bound_hash(secret, user.password_hash)):
        return None
    return WebSession(user=user, session_id=row_id)


async def get_web_session(request: Request, session: SessionDep) -> WebSession | None:
    """The request's signed-in session, or None. Kept on ``request.state`` for `page()`."""
    web = await _session_of(session, request.cookies.get(SESSION_COOKIE))
    request.state.web_session = web
    return web


OptionalSession = Annotated[WebSession | None, Depends(get_web_session)]


async def optional_user(web: OptionalSession) -> User | None:
    return web.user if web else None


async def signed_in_session(web: OptionalSession) -> WebSession:
    if web is None:
        raise SignInRequired
    return web


async def signed_in_user(web: Annotated[WebSession, Depends(signed_in_session)]) -> User:
    return web.user


OptionalUser = Annotated[User | None, Depends(optional_user)]
SignedInSession = Annotated[WebSession, Depends(signed_in_session)]
SignedInUser = Annotated[User, Depends(signed_in_user)]


def login_url(request: Request) -> str:
    """The sign-in form, to come back to this page afterwards."""
    here = request.url.path + (f"?{request.url.query}" if request.url.query else "")
    return f"{LOGIN_PATH}?next={quote(here, safe='')}"


def safe_next(target: str | None, default: str = "/") -> str:
    """``target`` when it is a path on this site, else ``default``: never an open redirect
    (no scheme, no host, no `//host`, no backslash tricks, no control characters)."""
    if not target or not target.startswith("/") or target.startswith(("//", "/\\")):
        return default
    if any(c == "\\" or ord(c) < 0x20 or ord(c) == 0x7F for c in target):
        return default
    parts = urlsplit(target)
    if parts.scheme or parts.netloc:
        return default
    return target


# --- CSRF -------------------------------------------------------------------------------------


def _mac(key: str, message: str) -> str:
    return hmac.new(key.encode(), message.encode(), hashlib.sha256).hexdigest()


def csrf_token_for(key: str, web: WebSession | None, presession: str | None) -> str:
    """The token forms carry: bound to the session, or before sign-in to the presession value."""
    if web is not None:
        return _mac(key, f"csrf:session:{web.session_id}")
    return _mac(key, f"csrf:presession:{presession or ''}")


def new_presession_value() -> str:
    return secrets.token_urlsafe(24)


def set_presession_cookie(response: Response, request: Request, value: str) -> None:
    _set_cookie(response, request, PRESESSION_COOKIE, value, PRESESSION_MAX_AGE_SECONDS)


def _origin_host(value: str) -> str | None:
    parts = urlsplit(value)
    return parts.netloc.lower() if parts.scheme and parts.netloc else None


def _check_same_origin(request: Request) -> None:
    """Refuse a POST whose Origin (or, lacking it, Referer) names another host."""
    host = request.headers.get("host", "").lower()
    origin = request.headers.get("origin")
    if origin is not None:
        if origin == "null" or _origin_host(origin) != host:
            raise CsrfRefused("The form was sent from another site.")
        return
    referer = request.headers.get("referer")
    if referer and _origin_host(referer) != host:
        raise CsrfRefused("The form was sent from another site.")


async def check_csrf(request: Request, state: StateDep, web: OptionalSession) -> None:
    """The CSRF check of a POST form (see the module's docstring)."""
    _check_same_origin(request)
    form = await request.form()  # Starlette keeps it: the route's Form fields read it again
    sent = form.get(CSRF_FIELD)
    if not isinstance(sent, str) or not sent:
        raise CsrfRefused("The form has no CSRF token; reload the page and try again.")
    presession = request.cookies.get(PRESESSION_COOKIE)
    if web is None and not presession:
        raise CsrfRefused("The form has expired; reload the page and try again.")
    expected = csrf_token_for(state.tokens.secret, web, presession)
    # As bytes: compare_digest refuses str holding anything but ASCII (a TypeError: a 500).
    if not hmac.compare_digest(sent.encode(), expected.encode()):
        raise CsrfRefused(
            "The form's CSRF token is wrong or has expired; reload the page and try again."
        )


CsrfChecked = Annotated[None, Depends(check_csrf)]
