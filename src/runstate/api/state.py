"""What the API's request handlers share: built once per process at start-up."""

from __future__ import annotations

from dataclasses import dataclass

from redis.asyncio import Redis
from sqlalchemy.ext.asyncio import AsyncEngine, AsyncSession, async_sessionmaker

from runstate.auth.tokens import AccessTokenIssuer
from runstate.ratelimit import RateLimiter
from runstate.settings import Settings


@dataclass
class ApiState:
    settings: Settings
    engine: AsyncEngine
    sessions: async_sessionmaker[AsyncSession]
    tokens: AccessTokenIssuer
    limiter: RateLimiter
    redis: Redis | None
