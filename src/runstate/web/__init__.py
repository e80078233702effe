"""The server-rendered face of runstate: the operator dashboard, public status pages, badges
and feeds. Pages are Jinja2 templates rendered on the server; the dashboard adds a little htmx
for live fragments and uPlot for charts (vendored under static/vendor); the public status
page needs no JavaScript at all."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI, Response
from fastapi.staticfiles import StaticFiles
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"


def install(app: FastAPI) -> None:
    """Add the web routes and the static files to the API's application, and the status
    pages' cache with its fast path, outermost (call it after the API's own middlewares)."""
    from runstate.web.routes import badges, monitor_pages, pages, status, status_admin

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    app.add_api_route("/favicon.ico", _favicon, include_in_schema=False)
    for module in (status, badges, pages, monitor_pages, status_admin):
        app.include_router(module.router)
    _install_status_cache(app)


_FAVICON = (STATIC_DIR / "favicon.svg").read_bytes()


async def _favicon() -> Response:
    # Browsers ask for /favicon.ico whatever a page says (a feed or a badge opened alone).
    return Response(
        _FAVICON, media_type="image/svg+xml", headers={"Cache-Control": "public, max-age=86400"}
    )


def _install_status_cache(app: FastAPI) -> None:
    from runstate.api.metrics import HttpMetrics, MetricsMiddleware
    from runstate.web.status_cache import StatusPages
    from runstate.web.status_fast_path import StatusFastPath

    def sessions() -> async_sessionmaker[AsyncSession]:
        # Made by the application's lifespan, after this runs.
        made: async_sessionmaker[AsyncSession] = app.state.runstate.sessions
        return made

    settings = app.state.settings
    pages = StatusPages(
        sessions,
        revalidate_seconds=settings.STATUS_PAGE_REVALIDATE_SECONDS,
        stale_intervals=settings.STATUS_PAGE_STALE_INTERVALS,
        max_render_age_seconds=settings.STATUS_PAGE_MAX_RENDER_AGE_SECONDS,
    )
    app.state.status_pages = pages
    # The API's metrics, so that answers from the cache are counted with the others.
    found = [
        m.kwargs.get("metrics")
        for m in app.user_middleware
        if getattr(m, "cls", None) is MetricsMiddleware
    ]
    metrics = next((m for m in found if isinstance(m, HttpMetrics)), None)
    # Added last, so outermost: a cached answer skips every other middleware and the router.
    app.add_middleware(StatusFastPath, pages=pages, metrics=metrics)
