"""User administration (ADMIN only)."""

from __future__ import annotations

import uuid
from typing import Any

from fastapi import APIRouter
from sqlalchemy import select

from runstate.api.deps import AdminUser, SessionDep, StateDep
from runstate.api.envelope import ApiError, Envelope, ok
from runstate.api.routes import API_PREFIX
from runstate.api.schemas import Deleted, UserPublic
from runstate.storage import deletion
from runstate.storage.tables import User

router = APIRouter(prefix=f"{API_PREFIX}/admin", tags=["admin"])


@router.get("/users", response_model=Envelope[list[UserPublic]])
async def list_users(_: AdminUser, session: SessionDep) -> dict[str, Any]:
    users = await session.scalars(select(User).order_by(User.created_at, User.id))
    return ok([UserPublic.model_validate(user) for user in users])


@router.delete("/users/{user_id}", response_model=Envelope[Deleted])
async def delete_user(
    user_id: uuid.UUID, admin: AdminUser, state: StateDep, session: SessionDep
) -> dict[str, Any]:
    """Delete the account with its tokens, monitors, their history, and channels, in
    batches of DELETE_BATCH_ROWS rows (see storage/deletion.py)."""
    if user_id == admin.id:
        raise ApiError(409, "an admin cannot delete their own account")
    if await session.get(User, user_id) is None:
        raise ApiError(404, "no such user")
    await session.close()  # the deletion commits batch by batch on connections of its own
    await deletion.delete_user(state.engine, user_id, state.settings.DELETE_BATCH_ROWS)
    return ok(Deleted(id=user_id), "user deleted with their monitors, channels and tokens")
