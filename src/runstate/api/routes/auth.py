"""Accounts: signup, signin, refresh-token rotation, logout, and who am I."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from fastapi import APIRouter, Request
from sqlalchemy import select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.deps import (
    CurrentUser,
    SessionDep,
    StateDep,
    client_bucket,
    count_failed_signin,
    enforce_rate_limits,
    limit_by_ip,
)
from runstate.api.envelope import ApiError, Envelope, ok
from runstate.api.routes import API_PREFIX
from runstate.api.schemas import (
    RefreshRequest,
    SigninRequest,
    SignupRequest,
    TokenPair,
    UserPublic,
)
from runstate.api.state import ApiState
from runstate.auth.passwords import hash_password, verify_and_rehash
from runstate.auth.tokens import new_refresh_token, refresh_token_hash
from runstate.storage.tables import RefreshToken, User

router = APIRouter(prefix=API_PREFIX, tags=["auth"])

BAD_CREDENTIALS = "invalid email or password"
BAD_REFRESH_TOKEN = "invalid or expired refresh token"


@router.post("/signup", status_code=201, response_model=Envelope[UserPublic])
async def signup(
    body: SignupRequest, request: Request, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    email = body.email.lower()
    settings = state.settings
    await limit_by_ip(state, "signup", request)
    if not settings.SIGNUP_ENABLED:
        raise ApiError(403, "signup is disabled on this server (SIGNUP_ENABLED=false)")
    if await session.scalar(select(User.id).where(User.email == email)) is not None:
        raise ApiError(409, "an account with this email already exists")
    user = User(email=email, password_hash=await hash_password(body.password), role="USER")
    session.add(user)
    try:
        await session.commit()
    except IntegrityError:
        raise ApiError(409, "an account with this email already exists") from None
    return ok(UserPublic.model_validate(user))


async def _issue_pair(
    state: ApiState, session: AsyncSession, user_id: uuid.UUID, family_id: uuid.UUID
) -> TokenPair:
    """Add a refresh token of ``family_id`` to the session (the caller commits)."""
    refresh = new_refresh_token()
    now = datetime.now(UTC)
    session.add(
        RefreshToken(
            user_id=user_id,
            family_id=family_id,
            token_hash=refresh_token_hash(refresh),
            created_at=now,
            expires_at=now + timedelta(seconds=state.settings.REFRESH_TOKEN_TTL_SECONDS),
        )
    )
    return TokenPair(
        access_token=state.tokens.issue(user_id, now=now),
        refresh_token=refresh,
        expires_in=state.tokens.ttl_seconds,
    )


@router.post("/signin", response_model=Envelope[TokenPair])
async def signin(
    body: SigninRequest, request: Request, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    email = body.email.lower()
    await limit_by_ip(state, "signin", request)
    user = await session.scalar(select(User).where(User.email == email))
    # An unknown e-mail is verified against a dummy hash: same answer, same cost.
    matches, new_hash = await verify_and_rehash(user.password_hash if user else None, body.password)
    if user is None or not matches:
        await count_failed_signin(state, email)
        raise ApiError(401, BAD_CREDENTIALS)
    if new_hash is not None:
        user.password_hash = new_hash
    pair = await _issue_pair(state, session, user.id, family_id=uuid.uuid4())
    await session.commit()
    return ok(pair)


async def _revoke_family(session: AsyncSession, family_id: uuid.UUID) -> None:
    await session.execute(
        update(RefreshToken)
        .where(RefreshToken.family_id == family_id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
    )
    await session.commit()


async def _claim(session: AsyncSession, token: RefreshToken) -> bool:
    """Mark ``token`` used, once: False when another request already used or revoked it."""
    result = await session.execute(
        update(RefreshToken)
        .where(RefreshToken.id == token.id, RefreshToken.revoked_at.is_(None))
        .values(revoked_at=datetime.now(UTC))
        .execution_options(synchronize_session=False)
    )
    return getattr(result, "rowcount", 0) == 1


@router.post("/auth/refresh", response_model=Envelope[TokenPair])
async def refresh(
    body: RefreshRequest, request: Request, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    limit = state.settings.REFRESH_RATE_LIMIT
    await enforce_rate_limits(state, (f"refresh:ip:{client_bucket(request)}", limit))
    token = await session.scalar(
        select(RefreshToken).where(
            RefreshToken.token_hash == refresh_token_hash(body.refresh_token)
        )
    )
    if token is None or token.expires_at <= datetime.now(UTC):
        raise ApiError(401, BAD_REFRESH_TOKEN)
    # Counted before the token is used: a refused refresh leaves it valid for a later try.
    await enforce_rate_limits(state, (f"refresh:family:{token.family_id}", limit))
    if token.revoked_at is not None or not await _claim(session, token):
        # A rotated token came back: it was stolen, or the legitimate client lost a race
        # with a thief. Either way every token of this sign-in dies.
        await _revoke_family(session, token.family_id)
        raise ApiError(401, BAD_REFRESH_TOKEN)
    pair = await _issue_pair(state, session, token.user_id, token.family_id)
    await session.commit()
    return ok(pair)


@router.post("/auth/logout", response_model=Envelope[None])
async def logout(body: RefreshRequest, session: SessionDep) -> dict[str, Any]:
    token = await session.scalar(
        select(RefreshToken).where(
            RefreshToken.token_hash == refresh_token_hash(body.refresh_token)
        )
    )
    if token is None:
        raise ApiError(401, BAD_REFRESH_TOKEN)
    # Signing out ends the session: the token and every token rotated from it.
    await _revoke_family(session, token.family_id)
    return ok(None, "signed out")


@router.get("/me", response_model=Envelope[UserPublic])
async def me(user: CurrentUser) -> dict[str, Any]:
    return ok(UserPublic.model_validate(user))
