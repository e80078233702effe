"""The dashboard's own pages: sign in, sign up, sign out, and the monitor list at `/`."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Form, Request, Response
from pydantic import ValidationError
from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from runstate.api.deps import SessionDep, StateDep, count_failed_signin, limit_by_ip
from runstate.api.envelope import ApiError
from runstate.api.schemas import SignupRequest
from runstate.auth.passwords import hash_password, verify_and_rehash
from runstate.storage.tables import User
from runstate.web.pages_common import PageRoute, page, redirect
from runstate.web.session import (
    CsrfChecked,
    OptionalSession,
    OptionalUser,
    SignedInSession,
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


@router.get("/")
async def dashboard(request: Request, web: OptionalSession) -> Response:
    if web is None:
        return redirect(request, "/login")
    return page(request, "dashboard/index.html", monitors=[])


__all__ = ["SignedInSession", "router"]
