"""`runstate migrate`: bring the schema to the newest revision and seed what must exist."""

from __future__ import annotations

import logging
from pathlib import Path

from alembic import command
from alembic.config import Config
from sqlalchemy import select, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncEngine

from runstate.auth.passwords import hash_password
from runstate.storage.db import session_factory
from runstate.storage.tables import Region, User

log = logging.getLogger(__name__)

MIGRATIONS_DIR = Path(__file__).parent / "migrations"
# Any constant works; it only has to be the same in every process that migrates.
MIGRATION_LOCK_ID = 0x72756E7374617465


def _alembic_config(connection: Connection) -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    config.attributes["connection"] = connection
    return config


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        # Two processes migrating at once (two replicas starting) would race to create the
        # same tables; the lock makes the second wait and then find nothing to do.
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": MIGRATION_LOCK_ID})
    command.upgrade(_alembic_config(connection), "head")


async def upgrade_schema(engine: AsyncEngine) -> None:
    """Apply every pending migration; a schema already at the newest revision is left alone."""
    async with engine.begin() as connection:
        await connection.run_sync(_upgrade)


async def ensure_admin(engine: AsyncEngine, email: str, password: str) -> bool:
    """Create the ADMIN `email` unless a user with that e-mail exists; True when created.

    The seed is the operator's choice, so the signup password policy does not apply.
    """
    email = email.strip().lower()
    sessions = session_factory(engine)
    async with sessions() as session:
        if await session.scalar(select(User.id).where(User.email == email)) is not None:
            return False
        session.add(User(email=email, password_hash=await hash_password(password), role="ADMIN"))
        try:
            await session.commit()
        except IntegrityError:  # another process seeded it first
            return False
    log.info("admin user created", extra={"email": email})
    return True


async def ensure_region(engine: AsyncEngine, name: str) -> int:
    """The id of region `name`, created when missing."""
    sessions = session_factory(engine)
    async with sessions() as session:
        region_id = await session.scalar(select(Region.id).where(Region.name == name))
        if region_id is not None:
            return region_id
        region = Region(name=name)
        session.add(region)
        try:
            await session.commit()
            return region.id
        except IntegrityError:
            await session.rollback()
            return int(await session.scalar(select(Region.id).where(Region.name == name)) or 0)


def _head_revision() -> str | None:
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS_DIR))
    return ScriptDirectory.from_config(config).get_current_head()


async def schema_is_current(engine: AsyncEngine) -> bool:
    """Whether the database has been migrated to this release's newest revision.

    Raises the driver's error when the database cannot be reached.
    """
    async with engine.connect() as connection:
        try:
            revision = await connection.scalar(text("SELECT version_num FROM alembic_version"))
        except Exception:  # no alembic_version table: never migrated
            return False
    return bool(revision == _head_revision())
