"""Request dependencies, as `Annotated` aliases (`SessionDep`, `CurrentUser`, `AdminUser`),
and the rate limits the routes apply (429 with `Retry-After`)."""

from __future__ import annotations

import hashlib
from collections.abc import AsyncIterator
from typing import Annotated

from fastapi import Depends, Request
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.envelope import ApiError
from runstate.api.state import ApiState
from runstate.auth.tokens import InvalidToken
from runstate.ratelimit import address_bucket
from runstate.storage.tables import User

RATE_LIMIT_WINDOW_SECONDS = 60
UNAUTHENTICATED = {"WWW-Authenticate": "Bearer"}


def get_state(request: Request) -> ApiState:
    state: ApiState = request.app.state.runstate
    return state


StateDep = Annotated[ApiState, Depends(get_state)]


async def get_session(state: StateDep) -> AsyncIterator[AsyncSession]:
    async with state.sessions() as session:
        yield session


SessionDep = Annotated[AsyncSession, Depends(get_session)]

_bearer = HTTPBearer(auto_error=False)


async def get_current_user(
    state: StateDep,
    session: SessionDep,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
) -> User:
    if credentials is None or credentials.scheme.lower() != "bearer":
        raise ApiError(401, "missing bearer token", UNAUTHENTICATED)
    try:
        user_id = state.tokens.user_id(credentials.credentials)
    except InvalidToken:
        raise ApiError(401, "invalid or expired token", UNAUTHENTICATED) from None
    # The role is read from the database, not the token: a demotion or a deletion takes
    # effect at once rather than when the token expires.
    user = await session.get(User, user_id)
    if user is None:
        raise ApiError(401, "invalid or expired token", UNAUTHENTICATED)
    return user


CurrentUser = Annotated[User, Depends(get_current_user)]


async def get_admin(user: CurrentUser) -> User:
    if user.role != "ADMIN":
        raise ApiError(403, "this needs the ADMIN role")
    return user


AdminUser = Annotated[User, Depends(get_admin)]


def client_ip(request: Request) -> str:
    # uvicorn has already replaced this with X-Forwarded-For when the peer is a trusted
    # proxy (FORWARDED_ALLOW_IPS), so a client cannot pick its own bucket.
    return request.client.host if request.client else "unknown"


def client_bucket(request: Request) -> str:
    """The client as per-IP limits count it: an IPv4 address, or an IPv6 address's /64."""
    return address_bucket(client_ip(request))


def account_key(email: str) -> str:
    """A rate-limit key for an account that keeps the e-mail itself out of Redis."""
    return hashlib.sha256(email.encode()).hexdigest()[:32]


TOO_MANY_ATTEMPTS = "too many attempts; try again later"


async def enforce_rate_limits(
    state: ApiState, *buckets: tuple[str, int], refusal: str = TOO_MANY_ATTEMPTS
) -> None:
    """Count one attempt in every (key, limit-per-minute) bucket; 429 with ``refusal`` and
    `Retry-After` when any is full."""
    retry_after = 0
    for key, limit in buckets:
        decision = await state.limiter.hit(
            key, limit=limit, window_seconds=RATE_LIMIT_WINDOW_SECONDS
        )
        if not decision.allowed:
            retry_after = max(retry_after, decision.retry_after)
    if retry_after:
        raise ApiError(429, refusal, {"Retry-After": str(retry_after)})


async def limit_by_ip(state: ApiState, action: str, request: Request) -> None:
    """Count one ``action`` (signin, signup) for the client's address (AUTH_RATE_LIMIT_PER_IP)."""
    bucket = f"{action}:ip:{client_bucket(request)}"
    await enforce_rate_limits(state, (bucket, state.settings.AUTH_RATE_LIMIT_PER_IP))


async def count_failed_signin(state: ApiState, email: str) -> None:
    """Count a failed sign-in against the account; 429 once it has had
    AUTH_RATE_LIMIT_PER_ACCOUNT of them this minute. Only failures are counted, and only
    after the password was checked, so a correct password is never refused by this limit
    and nobody can lock another person out."""
    await enforce_rate_limits(
        state,
        (f"signin-failed:account:{account_key(email)}", state.settings.AUTH_RATE_LIMIT_PER_ACCOUNT),
        refusal="too many failed sign-ins for this account; try again later",
    )


async def limit_monitor_creation(state: ApiState, user: User) -> None:
    """Count one attempt to create a monitor for ``user`` (MONITOR_CREATE_RATE_LIMIT)."""
    limit = state.settings.MONITOR_CREATE_RATE_LIMIT
    await enforce_rate_limits(
        state,
        (f"monitor-create:user:{user.id}", limit),
        refusal=f"too many monitors created; at most {limit} a minute (MONITOR_CREATE_RATE_LIMIT)",
    )
