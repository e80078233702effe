"""Per-account quotas: MAX_MONITORS_PER_USER and MAX_CHANNELS_PER_USER.

The quota is checked by counting the account's rows in the transaction that inserts the new
one, while that transaction holds the account's row: two requests of one account racing for
its last free place run one after the other, and the second is refused. ADMIN accounts are
exempt.
"""

from __future__ import annotations

import uuid

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from runstate.api.envelope import ApiError
from runstate.storage.tables import AlertChannel, User, Website


async def hold_account(session: AsyncSession, user_id: uuid.UUID) -> None:
    """Lock the account's row until the session's transaction ends."""
    if session.get_bind().dialect.name == "postgresql":
        await session.execute(select(User.id).where(User.id == user_id).with_for_update())
        return
    # SQLite has no row locks, and its driver begins a transaction only at the first write:
    # writing now takes the database's write lock, which other writers wait for.
    await session.execute(
        update(User)
        .where(User.id == user_id)
        .values(role=User.role)
        .execution_options(synchronize_session=False)
    )


async def _ensure_room(
    session: AsyncSession,
    user: User,
    owned_rows: type[Website] | type[AlertChannel],
    noun: str,
    setting: str,
    limit: int,
) -> None:
    if user.role == "ADMIN":
        return
    await hold_account(session, user.id)
    owned = await session.scalar(
        select(func.count()).select_from(owned_rows).where(owned_rows.user_id == user.id)
    )
    if (owned or 0) >= limit:
        raise ApiError(
            403, f"quota reached: this account has {owned} {noun}, and {setting} allows {limit}"
        )


async def ensure_monitor_room(session: AsyncSession, user: User, limit: int) -> None:
    """403 naming MAX_MONITORS_PER_USER when ``user`` (not an ADMIN) already has ``limit``
    monitors; otherwise the account stays held until the caller commits its new monitor."""
    await _ensure_room(session, user, Website, "monitors", "MAX_MONITORS_PER_USER", limit)


async def ensure_channel_room(session: AsyncSession, user: User, limit: int) -> None:
    """403 naming MAX_CHANNELS_PER_USER, as :func:`ensure_monitor_room` does for monitors."""
    await _ensure_room(session, user, AlertChannel, "channels", "MAX_CHANNELS_PER_USER", limit)
