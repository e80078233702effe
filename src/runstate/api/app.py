"""The FastAPI application: `create_app(settings)` builds it; its lifespan opens and closes
the database engine, Redis and the rate limiter."""

from __future__ import annotations

import asyncio
import gc
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress

from fastapi import FastAPI
from prometheus_client import CollectorRegistry
from redis.asyncio import Redis

from runstate import __version__, web
from runstate.api.body_limit import BodyLimitMiddleware
from runstate.api.envelope import install_error_handlers
from runstate.api.metrics import HttpMetrics, MetricsMiddleware
from runstate.api.routes import admin, auth, channels, health, history, status_pages, websites
from runstate.api.state import ApiState
from runstate.auth.tokens import AccessTokenIssuer
from runstate.ratelimit import InProcessRateLimiter, RateLimiter, RedisRateLimiter
from runstate.settings import Settings
from runstate.storage.db import create_engine, session_factory

log = logging.getLogger(__name__)


async def _heartbeat(interval: float) -> None:
    while True:
        await asyncio.sleep(interval)
        log.info("heartbeat", extra={"component": "api"})


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    settings: Settings = app.state.settings
    engine = create_engine(settings.database_url)
    redis = (
        Redis.from_url(settings.redis_url, socket_connect_timeout=2, socket_timeout=2)
        if settings.redis_url
        else None
    )
    limiter: RateLimiter = RedisRateLimiter(redis) if redis else InProcessRateLimiter()
    app.state.runstate = ApiState(
        settings=settings,
        engine=engine,
        sessions=session_factory(engine),
        tokens=AccessTokenIssuer(settings.jwt_secret(), settings.ACCESS_TOKEN_TTL_SECONDS),
        limiter=limiter,
        redis=redis,
    )
    heartbeat = asyncio.create_task(_heartbeat(settings.HEARTBEAT_INTERVAL_SECONDS))
    # Everything made so far (modules, the application, its routes) lives as long as the
    # process: kept out of the collector's full passes, which otherwise walk it all and
    # stall a request by tens of milliseconds now and then.
    gc.collect()
    gc.freeze()
    try:
        yield
    finally:
        heartbeat.cancel()
        with suppress(asyncio.CancelledError):
            await heartbeat
        await limiter.aclose()
        if redis is not None:
            await redis.aclose()
        await engine.dispose()


def create_app(settings: Settings, registry: CollectorRegistry | None = None) -> FastAPI:
    """The API for ``settings``; its metrics go to ``registry`` (a new one by default), which
    `/metrics` exposes, so the pipeline's metrics can share it when run in one process."""
    app = FastAPI(
        title="runstate",
        version=__version__,
        summary="Uptime monitoring: monitors, checks, incidents and alerts.",
        lifespan=_lifespan,
    )
    app.state.settings = settings
    app.state.metrics_registry = registry or CollectorRegistry()
    install_error_handlers(app)
    # Added first, so it runs inside the metrics middleware: refusals are counted too.
    app.add_middleware(BodyLimitMiddleware, max_body_bytes=settings.MAX_REQUEST_BODY_BYTES)
    app.add_middleware(MetricsMiddleware, metrics=HttpMetrics(app.state.metrics_registry))

    # history before websites: its /websites/{id}/response-times (with resolutions) wins.
    for module in (auth, admin, history, websites, channels, status_pages, health):
        app.include_router(module.router)
    app.include_router(health.metrics_router)
    web.install(app)
    return app
