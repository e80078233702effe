"""The dashboard's own pages: sign in, sign up, sign out, and the monitor list at `/`."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from typing import Annotated, Any, Literal
from urllib.parse import urlencode, urlsplit

from fastapi import APIRouter, Form, Query, Request, Response
from pydantic import ValidationError
from sqlalchemy import ColumnElement, Row, Select, bindparam, case, func, or_, select, text
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.deps import SessionDep, StateDep, count_failed_signin, limit_by_ip
from runstate.api.envelope import ApiError
from runstate.api.schemas import SignupRequest
from runstate.auth.passwords import hash_password, verify_and_rehash
from runstate.history import uptime
from runstate.history.sql import rows_of
from runstate.storage.tables import User, Website
from runstate.web.pages_common import PageRoute, fragment, page, redirect
from runstate.web.session import (
    CsrfChecked,
    OptionalSession,
    OptionalUser,
    SignedInUser,
    end_session,
    safe_next,
    start_session,
)

router = APIRouter(include_in_schema=False, route_class=PageRoute)

BAD_CREDENTIALS = "Wrong e-mail or password."
MAX_EMAIL_LENGTH = 320
MAX_PASSWORD_LENGTH = 256

FormText = Annotated[str, Form(max_length=MAX_PASSWORD_LENGTH)]
FormEmail = Annotated[str, Form(max_length=MAX_EMAIL_LENGTH)]


def _login_form(
    request: Request,
    state: StateDep,
    next_url: str,
    email: str = "",
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        "auth/login.html",
        status_code=status_code,
        next=next_url,
        email=email,
        error=error,
        signup_enabled=state.settings.SIGNUP_ENABLED,
    )


@router.get("/login")
async def login_form(
    request: Request, state: StateDep, user: OptionalUser, next: str | None = None
) -> Response:
    target = safe_next(next)
    if user is not None:
        return redirect(request, target)
    return _login_form(request, state, target)


def _refusal(exc: ApiError) -> str:
    return exc.error[:1].upper() + exc.error[1:] + "."


@router.post("/login")
async def login(
    request: Request,
    state: StateDep,
    session: SessionDep,
    _: CsrfChecked,
    email: FormEmail = "",
    password: FormText = "",
    next: Annotated[str, Form(max_length=2048)] = "/",
) -> Response:
    target = safe_next(next)
    email = email.strip().lower()
    try:
        await limit_by_ip(state, "signin", request)
    except ApiError as exc:
        return _with_headers(
            _login_form(request, state, target, email, _refusal(exc), exc.status), exc
        )
    user = await session.scalar(select(User).where(User.email == email)) if email else None
    # An unknown e-mail is checked against a dummy hash: same answer, same time.
    matches, new_hash = await verify_and_rehash(user.password_hash if user else None, password)
    if user is None or not matches:
        try:
            await count_failed_signin(state, email)
        except ApiError as exc:
            return _with_headers(
                _login_form(request, state, target, email, _refusal(exc), exc.status), exc
            )
        return _login_form(request, state, target, email, BAD_CREDENTIALS, 401)
    if new_hash is not None:
        user.password_hash = new_hash
    response = redirect(request, target)
    await start_session(session, request, response, user, state.settings.REFRESH_TOKEN_TTL_SECONDS)
    return response


def _with_headers(response: Response, exc: ApiError) -> Response:
    for name, value in (exc.headers or {}).items():
        response.headers[name] = value
    return response


@router.post("/logout")
async def logout(
    request: Request, session: SessionDep, web: OptionalSession, _: CsrfChecked
) -> Response:
    response = redirect(request, "/login", "You are signed out.", "info")
    if web is not None:
        await end_session(session, web, response)
    return response


def _signup_form(
    request: Request,
    email: str = "",
    errors: dict[str, str] | None = None,
    error: str | None = None,
    status_code: int = 200,
) -> Response:
    return page(
        request,
        "auth/signup.html",
        status_code=status_code,
        email=email,
        errors=errors or {},
        error=error,
    )


def _field_errors(exc: ValidationError) -> dict[str, str]:
    """The API's validation messages, one per field, worded for a form."""
    errors: dict[str, str] = {}
    for problem in exc.errors():
        field = str(problem["loc"][0]) if problem["loc"] else "email"
        message = str(problem.get("msg", "is invalid")).removeprefix("Value error, ")
        if field == "email" and problem.get("type") != "string_too_long":
            message = "is not a valid e-mail address"
        errors.setdefault(field, f"{field.capitalize()} {message}.")
    return errors


@router.get("/signup")
async def signup_form(request: Request, state: StateDep, user: OptionalUser) -> Response:
    if user is not None:
        return redirect(request, "/")
    if not state.settings.SIGNUP_ENABLED:
        return page(request, "auth/signup_disabled.html", status_code=404)
    return _signup_form(request)


@router.post("/signup")
async def signup(
    request: Request,
    state: StateDep,
    session: SessionDep,
    _: CsrfChecked,
    email: FormEmail = "",
    password: FormText = "",
) -> Response:
    if not state.settings.SIGNUP_ENABLED:
        return page(request, "auth/signup_disabled.html", status_code=404)
    email = email.strip()
    try:
        await limit_by_ip(state, "signup", request)
        body = SignupRequest.model_validate({"email": email, "password": password})
    except ApiError as exc:
        return _with_headers(_signup_form(request, email, None, _refusal(exc), exc.status), exc)
    except ValidationError as exc:
        return _signup_form(request, email, _field_errors(exc), None, 422)
    address = body.email.lower()
    taken = "An account with this e-mail already exists."
    if await session.scalar(select(User.id).where(User.email == address)) is not None:
        return _signup_form(request, email, {"email": taken}, None, 409)
    user = User(email=address, password_hash=await hash_password(body.password), role="USER")
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        return _signup_form(request, email, {"email": taken}, None, 409)
    response = redirect(request, "/", "Welcome to runstate: add your first monitor.")
    await start_session(session, request, response, user, state.settings.REFRESH_TOKEN_TTL_SECONDS)
    return response


# --- the monitor list ------------------------------------------------------------------------

PAGE_SIZE = 50
MAX_SEARCH_LENGTH = 200
# The order the list shows them in.
STATUSES: tuple[Literal["down", "pending", "up", "paused"], ...] = (
    "down",
    "pending",
    "up",
    "paused",
)
LIST_WINDOWS = ("24h", "30d")

StatusFilter = Literal["all", "down", "pending", "up", "paused"]


def _shown_status() -> ColumnElement[str]:
    """The status a monitor is listed under: paused wins; no check yet (or an unknown
    answer) is pending."""
    return case(
        (Website.paused.is_(True), "paused"),
        (Website.current_status == "down", "down"),
        (Website.current_status == "up", "up"),
        else_="pending",
    )


@dataclass(frozen=True)
class ListQuery:
    """What the list is asked for: a status, a search over names and URLs, and a page."""

    status: StatusFilter = "all"
    search: str = ""
    page: int = 1

    def params(self, **changes: Any) -> str:
        """The query string of this list, with ``changes``; defaults left out."""
        values = {"status": self.status, "q": self.search, "page": self.page, **changes}
        kept = {k: v for k, v in values.items() if v not in ("all", "", 1)}
        return urlencode(kept)


async def _status_counts(session: AsyncSession, user_id: uuid.UUID) -> dict[str, int]:
    """How many of the user's monitors are in each status: one GROUP BY over the owner's
    index, whatever the filter (the summary and the tab's "(N down)" count them all)."""
    shown = _shown_status()
    rows = await session.execute(
        select(shown, func.count()).where(Website.user_id == user_id).group_by(shown)
    )
    counts: dict[str, int] = dict.fromkeys(STATUSES, 0)
    counts.update({status: count for status, count in rows})
    return counts


def _filtered(user_id: uuid.UUID, query: ListQuery) -> list[ColumnElement[bool]]:
    conditions = [Website.user_id == user_id]
    if query.status != "all":
        conditions.append(_shown_status() == query.status)
    if query.search:
        conditions.append(
            or_(
                Website.name.icontains(query.search, autoescape=True),
                Website.url.icontains(query.search, autoescape=True),
            )
        )
    return conditions


def _list_order() -> list[Any]:
    """Down first, then pending, up and paused; by name (or URL) within each. The rank reads
    the columns directly (not through the shown status) to keep the sort of every monitor
    of a large account cheap."""
    rank = case(
        (Website.paused.is_(True), 3),
        (Website.current_status == "down", 0),
        (Website.current_status == "up", 2),
        else_=1,
    )
    return [rank, func.lower(func.coalesce(Website.name, Website.url)), Website.id]


async def _page_ids(session: AsyncSession, user_id: uuid.UUID, query: ListQuery) -> list[uuid.UUID]:
    """The monitors of the page, in the list's order: one sort of the account's monitors."""
    found = await session.scalars(
        select(Website.id)
        .where(*_filtered(user_id, query))
        .order_by(*_list_order())
        .limit(PAGE_SIZE)
        .offset((query.page - 1) * PAGE_SIZE)
    )
    return list(found)


@lru_cache(maxsize=1)
def _figures_statement() -> Select[Any]:
    """One statement for the page's monitors (the parameter ``ids``): their columns and
    their 24 h and 30 d uptime; built once, its moments bound when it runs.

    The monitors are named by id rather than by the list's query: the statement reads the
    query's monitors twice (for themselves and to pick their rollups), and a sort of every
    monitor of a large account twice over costs more than the figures of fifty. Fifty
    monitors' 30 days are summed row by row (1,500 rows by primary key), which is cheaper
    than building the running-totals form of the statement."""
    monitors = select(
        Website.id,
        Website.name,
        Website.url,
        _shown_status().label("shown_status"),
        Website.last_checked_at,
        Website.latest_response_time_ms,
    ).where(Website.id.in_(bindparam("ids", expanding=True)))
    return uptime.windows_statement(monitors, [uptime.BoundWindow(n) for n in LIST_WINDOWS])


async def _figures(session: AsyncSession, page_ids: list[uuid.UUID]) -> Sequence[Row[Any]]:
    if session.get_bind().dialect.name == "postgresql":
        # Fifty monitors' figures take a millisecond or two of work; PostgreSQL's estimate
        # of the statement is high enough to plan parallel workers, whose start costs more
        # (~7 ms measured) than the work. For this transaction only.
        await session.execute(text("SET LOCAL max_parallel_workers_per_gather = 0"))
    values = uptime.bound_window_values(LIST_WINDOWS, datetime.now(UTC))
    return await rows_of(session, _figures_statement(), {**values, "ids": page_ids})


@dataclass(frozen=True)
class MonitorRow:
    id: uuid.UUID
    name: str
    url: str
    status: str
    last_checked_at: datetime | None
    response_time_ms: int | None
    uptime_24h: float | None
    uptime_30d: float | None


def _rows(page_ids: list[uuid.UUID], found: Sequence[Row[Any]]) -> list[MonitorRow]:
    """One MonitorRow per monitor, in the order of ``page_ids``, from the statement's
    (monitor, window) rows."""
    by_id: dict[uuid.UUID, dict[str, Any]] = {}
    for row in found:
        by_id.setdefault(row.id, {"row": row})[row.period] = row.uptime_percent
    ordered = [by_id[i] for i in page_ids if i in by_id]
    return [
        MonitorRow(
            id=entry["row"].id,
            name=entry["row"].name or urlsplit(entry["row"].url).hostname or entry["row"].url,
            url=entry["row"].url,
            status=entry["row"].shown_status,
            last_checked_at=entry["row"].last_checked_at,
            response_time_ms=entry["row"].latest_response_time_ms,
            uptime_24h=entry.get("24h"),
            uptime_30d=entry.get("30d"),
        )
        for entry in ordered
    ]


async def _matching(
    session: AsyncSession, user_id: uuid.UUID, query: ListQuery, counts: dict[str, int]
) -> int:
    """How many monitors the filter and search match (the status counts answer it unless
    there is a search)."""
    if not query.search:
        return sum(counts.values()) if query.status == "all" else counts[query.status]
    total = await session.scalar(
        select(func.count()).select_from(Website).where(*_filtered(user_id, query))
    )
    return int(total or 0)


async def _list_context(session: AsyncSession, user: User, query: ListQuery) -> dict[str, Any]:
    counts = await _status_counts(session, user.id)
    matching = await _matching(session, user.id, query, counts)
    pages = max(1, -(-matching // PAGE_SIZE))
    if query.page > pages:
        query = ListQuery(query.status, query.search, pages)
    page_ids = await _page_ids(session, user.id, query)
    found = await _figures(session, page_ids) if page_ids else []
    return {
        "monitors": _rows(page_ids, found),
        "counts": counts,
        "total": sum(counts.values()),
        "matching": matching,
        "pages": pages,
        "query": query,
        "first_shown": (query.page - 1) * PAGE_SIZE + 1,
        "now": datetime.now(UTC),
    }


def _list_query(status: str | None, q: str | None, page: int | None) -> ListQuery:
    """The list's query parameters, read leniently: an unknown status shows all, a page
    that is not a positive number the first (a bookmark never turns into an error)."""
    shown: StatusFilter = "all"
    for known in STATUSES:
        if status == known:
            shown = known
    return ListQuery(shown, (q or "").strip()[:MAX_SEARCH_LENGTH], max(1, page or 1))


StatusParam = Annotated[str | None, Query(max_length=16)]
SearchParam = Annotated[str | None, Query(max_length=1000)]
PageParam = Annotated[int | None, Query(ge=1, le=1_000_000)]


@router.get("/")
async def dashboard(
    request: Request,
    session: SessionDep,
    web: OptionalSession,
    status: StatusParam = None,
    q: SearchParam = None,
    page_number: Annotated[int | None, Query(alias="page", ge=1, le=1_000_000)] = None,
) -> Response:
    if web is None:
        return redirect(request, "/login")
    context = await _list_context(session, web.user, _list_query(status, q, page_number))
    return page(request, "dashboard/index.html", **context)


@router.get("/fragments/monitors")
async def monitor_rows(
    request: Request,
    session: SessionDep,
    user: SignedInUser,
    status: StatusParam = None,
    q: SearchParam = None,
    page_number: Annotated[int | None, Query(alias="page", ge=1, le=1_000_000)] = None,
) -> Response:
    """The rows of the list, its summary, pager and the tab's title: what the live refresh
    swaps in."""
    context = await _list_context(session, user, _list_query(status, q, page_number))
    return fragment(request, "dashboard/rows.html", **context)
