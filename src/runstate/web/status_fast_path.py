"""The fast path of public status pages: a pure ASGI middleware, outermost, that answers
`GET`/`HEAD` of `/status/{slug}` (and its feeds and summary.json) straight from the cache
when StatusPages.hit has the answer (a 200 or a 304), without routing, dependencies or the
other middlewares. Everything else, cache misses included, goes on to the application.

Its answers are counted in the HTTP metrics like any other (route label the route's
template), with the counters' labelled children bound once, so that counting costs a few
microseconds; they are not in `http_requests_in_flight`, being answered at once."""

from __future__ import annotations

import time
from typing import Any

from starlette.types import ASGIApp, Receive, Scope, Send

from runstate.api.metrics import HttpMetrics
from runstate.web.status_cache import StatusPages, send_rendered

PREFIX = "/status/"
TAILS = {"feed.atom": "atom", "feed.rss": "rss", "summary.json": "json"}
ROUTES = {
    "html": "/status/{slug}",
    "atom": "/status/{slug}/feed.atom",
    "rss": "/status/{slug}/feed.rss",
    "json": "/status/{slug}/summary.json",
}


def status_route(path: str) -> tuple[str, str] | None:
    """(slug, kind) of a status page path, or None when it is not one."""
    if not path.startswith(PREFIX):
        return None
    slug, slash, tail = path[len(PREFIX) :].partition("/")
    if not slug:
        return None
    if not slash:
        return slug, "html"
    kind = TAILS.get(tail)
    return None if kind is None else (slug, kind)


class StatusFastPath:
    def __init__(self, app: ASGIApp, pages: StatusPages, metrics: HttpMetrics | None) -> None:
        self.app = app
        self.pages = pages
        self.metrics = metrics
        self._children: dict[tuple[str, str, int], tuple[Any, Any]] = {}

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http" and scope["method"] in ("GET", "HEAD"):
            route = status_route(scope["path"])
            if route is not None:
                started = time.perf_counter()
                rendered = self.pages.hit(*route)
                if rendered is not None:
                    status = await send_rendered(rendered, scope, send)
                    self._count(scope["method"], route[1], status, started)
                    return
        await self.app(scope, receive, send)

    def _count(self, method: str, kind: str, status: int, started: float) -> None:
        if self.metrics is None:
            return
        key = (method, kind, status)
        children = self._children.get(key)
        if children is None:
            route = ROUTES[kind]
            children = self._children[key] = (
                self.metrics.requests.labels(method, route, str(status)),
                self.metrics.duration.labels(method, route),
            )
        children[0].inc()
        children[1].observe(time.perf_counter() - started)
