"""Public status pages rendered once per change, not once per request.

Each slug has one entry in this process: the page's state (version, and whether its data is
stale), and the representations rendered for that state (HTML, its gzip, the feeds,
summary.json), each with a strong ETag made of the page's id, version and stale flag.

- A request within REVALIDATE seconds of the entry's last check is answered from it without
  touching the database (and without awaiting anything: `hit` is plain code, which is what
  lets the fast path in runstate.web answer it before the application is even called).
- After that, one cheap query (the version, and when the data goes stale) decides: the same
  state keeps the rendered bytes; a new one renders again, once, under the slug's lock.
  Meanwhile other requests get the previous entry, or wait for the first rendering.
- If the database fails, the previous entry is served (stale-if-error, on the server side
  too) and asked again only after another REVALIDATE seconds.
- An unknown or private slug is a 404 page, remembered for REVALIDATE seconds as well.
"""

from __future__ import annotations

import asyncio
import gzip
import logging
import math
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime

from sqlalchemy.exc import SQLAlchemyError
from sqlalchemy.ext.asyncio import AsyncSession, async_sessionmaker
from starlette.types import Scope, Send

from runstate.storage.status_pages import SLUG_MAX, SLUG_MIN, SLUG_PATTERN
from runstate.web.status_data import PageData, PageState, PastBars, load_page, page_state
from runstate.web.status_render import (
    ORIGIN,
    Rows,
    render_feed,
    render_html,
    render_not_found,
    render_summary,
)

log = logging.getLogger(__name__)

KINDS = ("html", "atom", "rss", "json")
CONTENT_TYPES = {
    "html": b"text/html; charset=utf-8",
    "atom": b"application/atom+xml; charset=utf-8",
    "rss": b"application/rss+xml; charset=utf-8",
    "json": b"application/json",
}
CACHE_CONTROL = b"public, max-age=30, stale-while-revalidate=60, stale-if-error=86400"
NOT_FOUND_CACHE_CONTROL = b"public, max-age=10"
MAX_ENTRIES = 10_000  # slugs remembered, found or not; unknown ones go first
GZIP_LEVEL = 6
_ORIGIN = ORIGIN.encode()
_HOST = re.compile(
    rb"(?:[A-Za-z0-9-]{1,63}\.)*[A-Za-z0-9-]{1,63}(?::\d{1,5})?|\[[0-9A-Fa-f:.]+\](?::\d{1,5})?"
)


class StatusPageUnavailable(Exception):
    """The page could not be read and no earlier rendering of it is at hand."""


@dataclass(frozen=True)
class Rendered:
    """One representation, ready to send. ``parts`` is the body split where the request's
    origin goes (one part when it has none); ``gzipped`` the body compressed, kept for the
    HTML, which browsers ask compressed."""

    status: int
    content_type: bytes
    parts: tuple[bytes, ...]
    cache_control: bytes
    etag: bytes | None = None  # quoted; None for the 404
    gzipped: bytes | None = None

    @property
    def etag_gzip(self) -> bytes | None:
        return None if self.etag is None else self.etag[:-1] + b'-gzip"'


def valid_slug(slug: str) -> bool:
    return SLUG_MIN <= len(slug) <= SLUG_MAX and SLUG_PATTERN.fullmatch(slug) is not None


def _not_found() -> dict[str, Rendered]:
    body = render_not_found().encode()
    page = Rendered(404, CONTENT_TYPES["html"], (body,), NOT_FOUND_CACHE_CONTROL)
    return dict.fromkeys(KINDS, page)


NOT_FOUND = _not_found()


def _etag(state: PageState, stale: bool, rendered_at: float) -> bytes:
    # The render's second too: a page rendered again for its figures' age (same version)
    # says new figures, and must not be answered 304 to a reader holding the old ones.
    flag = "s" if stale else "f"
    return f'"{state.page_id.hex}-{state.version}-{flag}-{int(rendered_at)}"'.encode()


def render(
    kind: str, data: PageData, state: PageState, stale: bool, rendered_at: float, rows: Rows
) -> Rendered:
    """The representation ``kind`` of ``data`` (CPU only: run it off the event loop)."""
    if kind == "html":
        body = render_html(data, state.newest_check, rows).encode()
    elif kind == "json":
        body = render_summary(data).encode()
    else:
        body = render_feed(data, kind).encode()
    parts = tuple(body.split(_ORIGIN))
    gzipped = gzip.compress(body, GZIP_LEVEL, mtime=0) if len(parts) == 1 else None
    etag = _etag(state, stale, rendered_at)
    return Rendered(200, CONTENT_TYPES[kind], parts, CACHE_CONTROL, etag, gzipped)


@dataclass
class _Entry:
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)
    state: PageState | None = None  # None: no public page by that slug
    stale: bool = False
    stale_after: float = math.inf  # Unix time at which the data goes stale
    checked_at: float = -math.inf  # monotonic time of the last look at the database
    rendered_at: float = 0.0  # Unix time at which the state's renderings were begun
    data: PageData | None = None  # the state's data, for the representations not yet made
    rendered: dict[str, Rendered] = field(default_factory=dict)


class StatusPages:
    """The rendered status pages of this process (see the module's docstring)."""

    def __init__(
        self,
        sessions: Callable[[], async_sessionmaker[AsyncSession]],
        revalidate_seconds: float,
        stale_intervals: float,
        max_render_age_seconds: float = math.inf,
    ) -> None:
        self._sessions = sessions
        self.max_render_age_seconds = max_render_age_seconds
        self.revalidate_seconds = revalidate_seconds
        self.stale_intervals = stale_intervals
        self._entries: dict[str, _Entry] = {}
        self._past_bars = PastBars()
        self.last_data_ms = 0.0  # the last rendering's time reading its data, for Server-Timing
        self._rows = Rows()

    def hit(self, slug: str, kind: str) -> Rendered | None:
        """The rendered ``kind`` of ``slug`` if it may be sent without asking the database:
        checked less than REVALIDATE seconds ago and its stale flag still right, or being
        checked again right now (the previous rendering meanwhile). Never awaits."""
        entry = self._entries.get(slug)
        if entry is None:
            return None
        rendered = entry.rendered.get(kind)
        if rendered is None or not (entry.lock.locked() or self._current(entry)):
            return None
        return rendered

    def _current(self, entry: _Entry) -> bool:
        """Whether the entry's state may be taken as the database's without asking."""
        if time.monotonic() - entry.checked_at >= self.revalidate_seconds:
            return False
        if self._too_old(entry):
            return False
        return (time.time() > entry.stale_after) == entry.stale

    async def get(self, slug: str, kind: str) -> tuple[Rendered, float | None]:
        """The representation to send, and the milliseconds spent reading and rendering it
        (None when it was already rendered). Raises StatusPageUnavailable when the database
        cannot be read and nothing was rendered before."""
        if not valid_slug(slug):
            return NOT_FOUND[kind], None
        found = self.hit(slug, kind)
        if found is not None:
            return found, None
        entry = self._entry(slug)
        if entry.lock.locked() and kind in entry.rendered:
            return entry.rendered[kind], None
        async with entry.lock:
            if kind in entry.rendered and self._current(entry):  # refreshed while we waited
                return entry.rendered[kind], None
            return await self._refresh(slug, entry, kind)

    async def _refresh(self, slug: str, entry: _Entry, kind: str) -> tuple[Rendered, float | None]:
        started = time.perf_counter()
        rendering = False
        try:
            async with self._sessions()() as session:
                state = await page_state(session, slug, self.stale_intervals)
            self._accept(entry, state)
            if kind not in entry.rendered and entry.state is not None:
                rendering = True
                await self._render(entry, kind)
        except (SQLAlchemyError, OSError) as exc:
            entry.checked_at = time.monotonic()  # ask again only after another interval
            if kind in entry.rendered:
                log.warning("status page served from cache: %s", type(exc).__name__)
                return entry.rendered[kind], None
            raise StatusPageUnavailable(slug) from exc
        if kind not in entry.rendered:  # the page went between the two reads
            entry.rendered = dict(NOT_FOUND)
        elapsed = (time.perf_counter() - started) * 1000
        return entry.rendered[kind], elapsed if rendering else None

    def _too_old(self, entry: _Entry) -> bool:
        """Whether the renderings are older than their figures may be: uptime and today's
        bar move with every check while the version stays (a long outage)."""
        return time.time() - entry.rendered_at >= self.max_render_age_seconds

    def _accept(self, entry: _Entry, state: PageState | None) -> None:
        """Take the state just read: the rendered bytes stay if it is the same and they are
        young enough."""
        now = datetime.now(UTC)
        stale = state is not None and state.is_stale(now)
        same = (
            not self._too_old(entry)
            and state is not None
            and entry.state is not None
            and (entry.state.page_id, entry.state.version) == (state.page_id, state.version)
            and entry.stale == stale
        )
        if state is None:
            entry.rendered = dict(NOT_FOUND)
        elif not same:
            entry.rendered, entry.data = {}, None
        if not same:
            entry.rendered_at = time.time()
        entry.state, entry.stale = state, stale
        after = None if state is None else state.stale_after
        entry.stale_after = math.inf if after is None else after.timestamp()
        entry.checked_at = time.monotonic()

    async def _render(self, entry: _Entry, kind: str) -> None:
        assert entry.state is not None
        if entry.data is None:
            started = time.perf_counter()
            data = await load_page(self._sessions(), entry.state, self._past_bars)
            self.last_data_ms = (time.perf_counter() - started) * 1000
            if data is None:
                entry.state, entry.rendered = None, dict(NOT_FOUND)
                return
            # A change committed since the state was read is in the data: tag it so.
            entry.state = replace(entry.state, version=data.version)
            entry.data = data
        state, data, stale = entry.state, entry.data, entry.stale
        entry.rendered[kind] = await asyncio.to_thread(
            render, kind, data, state, stale, entry.rendered_at, self._rows
        )

    def _entry(self, slug: str) -> _Entry:
        entry = self._entries.get(slug)
        if entry is None:
            if len(self._entries) >= MAX_ENTRIES:
                self._forget_some()
            entry = self._entries[slug] = _Entry()
        return entry

    def _forget_some(self) -> None:
        """Make room: unknown slugs first, then the oldest entries; never one in use."""
        idle = [s for s, e in self._entries.items() if not e.lock.locked()]
        unknown = [s for s in idle if self._entries[s].state is None]
        for slug in (unknown or idle)[: max(1, len(self._entries) // 10)]:
            del self._entries[slug]


# --- sending -------------------------------------------------------------------------------------


def _header_values(scope: Scope) -> tuple[bytes, bytes, bytes]:
    """If-None-Match, Accept-Encoding and Host of the request (empty when absent)."""
    inm = accept = host = b""
    for name, value in scope["headers"]:
        if name == b"if-none-match":
            inm = value
        elif name == b"accept-encoding":
            accept = value
        elif name == b"host":
            host = value
    return inm, accept, host


def etag_matches(if_none_match: bytes, *etags: bytes | None) -> bool:
    """Whether If-None-Match names one of ``etags`` (weak comparison, as RFC 9110 asks)."""
    if if_none_match.strip() == b"*":
        return any(etags)
    wanted = {t.strip().removeprefix(b"W/") for t in if_none_match.split(b",")}
    return any(tag in wanted for tag in etags if tag)


def accepts_gzip(accept_encoding: bytes) -> bool:
    for item in accept_encoding.lower().split(b","):
        coding, _, params = item.partition(b";")
        if coding.strip() in (b"gzip", b"*"):
            q = params.strip().removeprefix(b"q=")
            return not params.strip().startswith(b"q=") or _q(q) > 0
    return False


def _q(value: bytes) -> float:
    try:
        return float(value)
    except ValueError:
        return 0.0


def _origin(scope: Scope, host: bytes) -> bytes:
    """The scheme and host the request was made to (a malformed Host: the server's own)."""
    scheme = str(scope.get("scheme", "http")).encode()
    if not _HOST.fullmatch(host):
        server = scope.get("server") or ("localhost", None)
        host = str(server[0]).encode() + (f":{server[1]}".encode() if server[1] else b"")
    return scheme + b"://" + host


async def send_rendered(
    rendered: Rendered, scope: Scope, send: Send, extra: list[tuple[bytes, bytes]] | None = None
) -> int:
    """Answer the request with ``rendered`` (or 304 when If-None-Match has its ETag); the
    status sent."""
    inm, accept, host = _header_values(scope)
    gzipped = rendered.gzipped is not None and accepts_gzip(accept)
    etag = rendered.etag_gzip if gzipped else rendered.etag
    headers = [(b"cache-control", rendered.cache_control)]
    if rendered.gzipped is not None:
        headers.append((b"vary", b"Accept-Encoding"))
    if len(rendered.parts) > 1:  # links made of the request's Host: a shared cache keys on it
        headers.append((b"vary", b"Host"))
    if etag is not None:
        headers.append((b"etag", etag))
    headers.extend(extra or ())
    if inm and rendered.etag is not None and etag_matches(inm, rendered.etag, rendered.etag_gzip):
        await send({"type": "http.response.start", "status": 304, "headers": headers})
        await send({"type": "http.response.body", "body": b""})
        return 304
    if gzipped:
        assert rendered.gzipped is not None
        body = rendered.gzipped
        headers.append((b"content-encoding", b"gzip"))
    elif len(rendered.parts) == 1:
        body = rendered.parts[0]
    else:
        body = _origin(scope, host).join(rendered.parts)
    headers += [
        (b"content-type", rendered.content_type),
        (b"content-length", str(len(body)).encode()),
        (b"x-content-type-options", b"nosniff"),
    ]
    start = {"type": "http.response.start", "status": rendered.status, "headers": headers}
    await send(start)
    await send({"type": "http.response.body", "body": b"" if scope["method"] == "HEAD" else body})
    return rendered.status
