"""Deleting a monitor, or an account, with its history in bounded batches.

A monitor gathers a row per check (a year at 30 s is a million rows), its hourly and daily
rollups, its incidents and its alert deliveries. Deleting its `websites` row alone would let
ON DELETE CASCADE remove the incidents and deliveries in one statement and one transaction
(and leave the checks and rollups, which have no foreign key): on SQLite that holds the
database's only write lock, and so stalls every worker's writes, for as long as it takes; on
PostgreSQL it is one long transaction with all of its row locks and a burst of WAL.

So the monitor is paused first, in a short transaction of its own, as the API pauses it: the
scheduler stops checking it, so no new incident opens or resolves while its history goes.
The history goes next, at most ``batch_rows`` rows per statement, each statement in a
transaction of its own. The owning row goes last, in one transaction with the few rows the
pipeline wrote meanwhile (a check that was in flight): the cascade takes incidents and
deliveries, and the checks and rollups are deleted beside it. A group write of results holds
its monitors' rows (against deletion) until it commits, so what it wrote is there to delete
once the row is gone, and nothing of that monitor is written after. A deletion cut short (a
restart, a database outage) leaves the monitor listed, paused, with part of its history:
never a live monitor whose open incident is gone (its next UP would resolve nothing and send
no RECOVERY). Deleting it again finishes the job.

Only the functions here begin and commit transactions: they take the engine, not a session.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator

from sqlalchemy import ColumnElement, Select, Table, delete, select, tuple_, update
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from runstate.storage.status_pages import bump_pages
from runstate.storage.tables import (
    AlertChannel,
    Base,
    DailyRollup,
    HourlyRollup,
    Incident,
    NotificationLog,
    RefreshToken,
    StatusPage,
    StatusPageMonitor,
    User,
    Website,
    WebsiteCheck,
    utcnow,
)


def _table(model: type[Base]) -> Table:
    table = model.__table__
    assert isinstance(table, Table)
    return table


_websites = _table(Website)
_users = _table(User)
_refresh_tokens = _table(RefreshToken)
_alert_channels = _table(AlertChannel)
_status_pages = _table(StatusPage)
_status_page_monitors = _table(StatusPageMonitor)

# What the pipeline writes for a monitor without a foreign key to it (no cascade).
UNLINKED_HISTORY = (_table(WebsiteCheck), _table(HourlyRollup), _table(DailyRollup))
# A monitor's history, in the order it is deleted: deliveries before the incidents they
# belong to (which would otherwise cascade to them), then the checks and their rollups.
WEBSITE_HISTORY = (_table(NotificationLog), _table(Incident), *UNLINKED_HISTORY)


async def delete_in_batches(
    engine: AsyncEngine, table: Table, where: ColumnElement[bool], batch_rows: int
) -> int:
    """Delete the rows of ``table`` matching ``where``, at most ``batch_rows`` per statement,
    each statement committed on its own; returns how many were deleted.

    Ends at the first statement that deletes fewer than ``batch_rows`` rows: rows that match
    only after that (written meanwhile) stay.
    """
    columns = list(table.primary_key.columns)
    # A composite key is matched as a row value, which PostgreSQL (partitioned tables
    # included) and SQLite both plan as lookups on the primary key.
    key = columns[0] if len(columns) == 1 else tuple_(*columns)
    statement = delete(table).where(key.in_(select(*columns).where(where).limit(batch_rows)))
    total = 0
    while True:
        async with engine.begin() as connection:
            deleted = (await connection.execute(statement)).rowcount
        total += deleted
        if deleted < batch_rows:
            return total


async def delete_website(engine: AsyncEngine, website_id: uuid.UUID, batch_rows: int) -> bool:
    """Pause the monitor, delete its deliveries, incidents, checks and rollups in batches,
    then the monitor.

    Returns False when there was no such monitor (any more) at the first or the last step.
    """
    async with engine.begin() as connection:
        # `updated_at` is what the scheduler polls to see that the monitor is paused.
        paused = await connection.execute(
            update(_websites)
            .where(_websites.c.id == website_id)
            .values(paused=True, updated_at=utcnow())
        )
    if paused.rowcount == 0:
        return False
    for table in WEBSITE_HISTORY:
        await delete_in_batches(engine, table, table.c.website_id == website_id, batch_rows)
    async with engine.begin() as connection:
        places = _status_page_monitors.c
        shown_on = list(
            await connection.scalars(
                select(places.status_page_id).where(places.website_id == website_id)
            )
        )
        result = await connection.execute(delete(_websites).where(_websites.c.id == website_id))
        await _delete_written_meanwhile(connection, [website_id])
        # Its places on status pages went with it (the cascade); those pages move on. The
        # monitor's row was taken first, the pages' after it: the order every writer follows.
        await bump_pages(connection, shown_on)
    return result.rowcount == 1


async def _delete_written_meanwhile(
    connection: AsyncConnection, website_ids: list[uuid.UUID] | Select[tuple[uuid.UUID]]
) -> None:
    """Delete the checks and rollups of monitors whose rows this transaction deleted (or
    locked): only what the pipeline wrote since their history went, a few rows."""
    for table in UNLINKED_HISTORY:
        await connection.execute(delete(table).where(table.c.website_id.in_(website_ids)))


async def delete_user(engine: AsyncEngine, user_id: uuid.UUID, batch_rows: int) -> bool:
    """Delete the account with everything it owns, in batches: its refresh tokens first (no
    sign-in of it can be renewed from then on), its status pages (gone from the public at
    once), then each monitor as :func:`delete_website` does (paused first), its channels,
    and last the account, whose cascade takes what it made meanwhile.

    Returns False when there was no such account (any more) by the time of the last step.
    """
    await delete_in_batches(
        engine, _refresh_tokens, _refresh_tokens.c.user_id == user_id, batch_rows
    )
    # Its public pages go at once; the cascade takes their monitors' places and incidents.
    await delete_in_batches(engine, _status_pages, _status_pages.c.user_id == user_id, batch_rows)
    async for website_id in _website_ids(engine, user_id, batch_rows):
        await delete_website(engine, website_id, batch_rows)
    await delete_in_batches(
        engine, _alert_channels, _alert_channels.c.user_id == user_id, batch_rows
    )
    async with engine.begin() as connection:
        # Monitors added meanwhile go with the account's cascade, and their checks and
        # rollups (no foreign key) with them here, once their rows are locked against new
        # writes (SQLite's writers take turns: a first statement that writes is enough).
        added = select(_websites.c.id).where(_websites.c.user_id == user_id)
        if connection.dialect.name == "postgresql":
            await connection.execute(added.with_for_update())
        await _delete_written_meanwhile(connection, added)
        result = await connection.execute(delete(_users).where(_users.c.id == user_id))
    return result.rowcount == 1


async def _website_ids(
    engine: AsyncEngine, user_id: uuid.UUID, page_rows: int
) -> AsyncIterator[uuid.UUID]:
    """The ids of the account's monitors, read a page at a time in id order, so that the
    walk ends even while monitors are being added (those land in the final cascade)."""
    after: uuid.UUID | None = None
    while True:
        query = select(_websites.c.id).where(_websites.c.user_id == user_id)
        if after is not None:
            query = query.where(_websites.c.id > after)
        async with engine.connect() as connection:
            page = list(await connection.scalars(query.order_by(_websites.c.id).limit(page_rows)))
        for website_id in page:
            yield website_id
        if len(page) < page_rows:
            return
        after = page[-1]
