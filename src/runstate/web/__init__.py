"""The server-rendered face of runstate: the operator dashboard, public status pages, badges
and feeds. Pages are Jinja2 templates rendered on the server; the dashboard adds a little htmx
for live fragments and uPlot for charts (vendored under static/vendor); the public status
page needs no JavaScript at all."""

from __future__ import annotations

from pathlib import Path

from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

STATIC_DIR = Path(__file__).parent / "static"
TEMPLATES_DIR = Path(__file__).parent / "templates"


def install(app: FastAPI) -> None:
    """Add the web routes and the static files to the API's application."""
    from runstate.web.routes import badges, monitor_pages, pages, status, status_admin

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")
    for module in (status, badges, pages, monitor_pages, status_admin):
        app.include_router(module.router)
