"""Public status pages: `/status/{slug}` (HTML), its Atom and RSS feeds and summary.json.

Only public pages are shown; any other slug is a 404 page. Each answer comes from the
process's StatusPages cache (runstate.web.status_cache); the requests these routes see are
the cache's misses and revalidations, since its hits are answered by the fast path in front
of the application (runstate.web.StatusFastPath) before routing."""

from __future__ import annotations

from fastapi import APIRouter, Request, Response
from fastapi.responses import HTMLResponse
from starlette.types import Receive, Scope, Send

from runstate.web.status_cache import (
    Rendered,
    StatusPages,
    StatusPageUnavailable,
    send_rendered,
)

router = APIRouter(include_in_schema=False)

UNAVAILABLE = (
    "<!doctype html><html lang=en><meta charset=utf-8><title>Status page unavailable</title>"
    "<main><h1>Status page unavailable</h1><p>The status page cannot be read right now."
    " Try again in a few seconds.</p></main></html>"
)


class _RenderedResponse(Response):
    """Sends a cached rendering as the fast path does (conditional request, compression)."""

    def __init__(self, rendered: Rendered, timing: bytes | None) -> None:
        super().__init__()
        self.rendered = rendered
        self.extra = [] if timing is None else [(b"server-timing", timing)]

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await send_rendered(self.rendered, scope, send, self.extra)


async def _answer(request: Request, slug: str, kind: str) -> Response:
    pages: StatusPages = request.app.state.status_pages
    try:
        rendered, render_ms = await pages.get(slug, kind)
    except StatusPageUnavailable:
        return HTMLResponse(UNAVAILABLE, status_code=503, headers={"Retry-After": "5"})
    # The whole miss (the cheap query, the data, the rendering), and the data's part of it.
    timing = None
    if render_ms is not None:
        timing = f"render;dur={render_ms:.1f}, data;dur={pages.last_data_ms:.1f}".encode()
    return _RenderedResponse(rendered, timing)


@router.api_route("/status/{slug}", methods=["GET", "HEAD"])
async def status_page(request: Request, slug: str) -> Response:
    return await _answer(request, slug, "html")


@router.api_route("/status/{slug}/feed.atom", methods=["GET", "HEAD"])
async def atom_feed(request: Request, slug: str) -> Response:
    return await _answer(request, slug, "atom")


@router.api_route("/status/{slug}/feed.rss", methods=["GET", "HEAD"])
async def rss_feed(request: Request, slug: str) -> Response:
    return await _answer(request, slug, "rss")


@router.api_route("/status/{slug}/summary.json", methods=["GET", "HEAD"])
async def summary_json(request: Request, slug: str) -> Response:
    return await _answer(request, slug, "json")
