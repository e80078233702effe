"""Liveness, readiness and the Prometheus exposition."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import Any

from fastapi import APIRouter, Request, Response
from fastapi.responses import JSONResponse
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest
from sqlalchemy import text

from runstate.api.deps import StateDep
from runstate.api.routes import API_PREFIX

router = APIRouter(prefix=API_PREFIX, tags=["operations"])
metrics_router = APIRouter(tags=["operations"])

READINESS_TIMEOUT_SECONDS = 2.0


@router.get("/health")
async def health() -> dict[str, Any]:
    """200 while the process lives. `status` is also at the top level for load balancers."""
    return {"success": True, "data": {"status": "ok"}, "status": "ok"}


async def _database_answers(state: StateDep) -> None:
    async with state.engine.connect() as connection:
        await connection.execute(text("SELECT 1"))


@router.get("/health/ready", responses={503: {"description": "a dependency does not answer"}})
async def ready(state: StateDep) -> JSONResponse:
    probes: dict[str, Awaitable[Any]] = {"database": _database_answers(state)}
    if state.redis is not None:
        probes["redis"] = state.redis.ping()
    checks: dict[str, str] = {}
    for name, probe in probes.items():
        try:
            await asyncio.wait_for(probe, READINESS_TIMEOUT_SECONDS)
            checks[name] = "ok"
        except Exception as exc:  # any failure means "not ready", whatever its kind
            checks[name] = f"unavailable: {type(exc).__name__}"
    is_ready = all(result == "ok" for result in checks.values())
    body = {
        "success": is_ready,
        "data": {"status": "ready" if is_ready else "not ready", "checks": checks},
        "status": "ready" if is_ready else "not ready",
    }
    if not is_ready:
        body["error"] = "not ready: " + ", ".join(k for k, v in checks.items() if v != "ok")
    return JSONResponse(body, status_code=200 if is_ready else 503)


@metrics_router.get("/metrics", include_in_schema=False)
async def metrics(request: Request) -> Response:
    registry: CollectorRegistry = request.app.state.metrics_registry
    return Response(generate_latest(registry), media_type=CONTENT_TYPE_LATEST)
