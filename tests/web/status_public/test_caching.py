"""Status pages are rendered once per change: a strong ETag from the page's id, version
and stale flag, 304 on If-None-Match, the Cache-Control the issue sets, no database
touched by a cached answer, one cheap query after the revalidation interval, and a new
rendering when the version moves."""

from __future__ import annotations

import asyncio
import gzip
from collections.abc import Iterator
from contextlib import contextmanager

import asyncpg
import httpx
import pytest

from tests.api.server import ApiServer
from tests.web.status_public.conftest import Owner, StatementCounter, wait_for_revalidation

CACHE_CONTROL = "public, max-age=30, stale-while-revalidate=60, stale-if-error=86400"
PATHS = ("", "/feed.atom", "/feed.rss", "/summary.json")


def test_every_representation_has_a_strong_etag_and_the_cache_control(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page = owner.page([("", [owner.monitor("API")])])
    for tail in PATHS:
        answer = public.get(
            f"/status/{page['slug']}{tail}", headers={"accept-encoding": "identity"}
        )
        assert answer.status_code == 200, tail
        assert answer.headers["cache-control"] == CACHE_CONTROL
        etag = answer.headers["etag"]
        assert etag.startswith(f'"{page["id"].replace("-", "")}-{page["version"]}-')
        assert not etag.startswith("W/")

        again = public.get(
            f"/status/{page['slug']}{tail}",
            headers={"if-none-match": etag, "accept-encoding": "identity"},
        )
        assert again.status_code == 304, tail
        assert again.content == b""
        assert again.headers["etag"] == etag
        assert again.headers["cache-control"] == CACHE_CONTROL


def test_html_is_sent_gzipped_to_who_asks_with_its_own_etag(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page = owner.page([("", [owner.monitor("API")])])
    url = f"/status/{page['slug']}"
    plain = public.get(url, headers={"accept-encoding": "identity"})
    with httpx.stream(
        "GET", status_api.base_url + url, headers={"accept-encoding": "gzip"}
    ) as zipped:
        raw = b"".join(zipped.iter_raw())
        headers = zipped.headers

    assert headers["content-encoding"] == "gzip"
    assert headers["vary"] == "Accept-Encoding"
    assert gzip.decompress(raw) == plain.content
    assert headers["etag"] == plain.headers["etag"][:-1] + '-gzip"'
    # Either tag names the same version: a 304 for both.
    for etag in (plain.headers["etag"], headers["etag"], f"W/{plain.headers['etag']}", "*"):
        assert public.get(url, headers={"if-none-match": etag}).status_code == 304


def test_head_answers_the_headers_without_a_body(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page = owner.page([("", [owner.monitor("API")])])
    got = public.get(f"/status/{page['slug']}", headers={"accept-encoding": "identity"})
    head = public.head(f"/status/{page['slug']}", headers={"accept-encoding": "identity"})

    assert head.status_code == 200
    assert head.content == b""
    assert head.headers["etag"] == got.headers["etag"]
    assert head.headers["content-length"] == str(len(got.content))


def test_a_cached_answer_touches_no_database_and_a_revalidation_runs_one_query(
    status_api: ApiServer, owner: Owner, public: httpx.Client, statements: StatementCounter
) -> None:
    page = owner.page([("", [owner.monitor("API")])])
    url = f"/status/{page['slug']}"
    first = public.get(url)
    assert first.status_code == 200
    assert "server-timing" in first.headers  # rendered by this request

    statements.count = 0
    for _ in range(20):
        assert public.get(url).content == first.content
    assert statements.count == 0

    wait_for_revalidation()
    statements.count = 0
    again = public.get(url)
    assert again.content == first.content
    assert "server-timing" not in again.headers
    assert statements.count == 1  # the version and staleness, nothing more


def test_a_new_version_is_rendered_again_once_the_interval_has_passed(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page = owner.page([("", [owner.monitor("API")])], title="Before")
    url = f"/status/{page['slug']}"
    before = public.get(url)
    assert "<h1>Before</h1>" in before.text

    owner.edit(page["id"], title="After")
    wait_for_revalidation()
    after = public.get(url, headers={"if-none-match": before.headers["etag"]})

    assert after.status_code == 200
    assert "<h1>After</h1>" in after.text
    assert after.headers["etag"] != before.headers["etag"]
    assert f"-{page['version'] + 1}-" in after.headers["etag"]


def test_a_page_made_private_disappears(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page = owner.page([("", [owner.monitor("API")])])
    assert public.get(f"/status/{page['slug']}").status_code == 200

    owner.edit(page["id"], public=False)
    wait_for_revalidation()

    assert public.get(f"/status/{page['slug']}").status_code == 404
    assert public.get(f"/status/{page['slug']}/summary.json").status_code == 404


def test_cached_answers_are_counted_in_the_http_metrics(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page = owner.page([("", [owner.monitor("API")])])
    for _ in range(3):
        public.get(f"/status/{page['slug']}/summary.json")

    metrics = public.get("/metrics").text

    line = next(
        line
        for line in metrics.splitlines()
        if line.startswith("http_requests_total{")
        and 'route="/status/{slug}/summary.json"' in line
        and 'status="200"' in line
    )
    assert float(line.rsplit(" ", 1)[1]) >= 3


def test_a_rendered_page_is_served_while_the_database_is_unreachable(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    if status_api.backend != "postgres":
        pytest.skip("only PostgreSQL can refuse connections while the server keeps its file")
    page = owner.page([("", [owner.monitor("API")])])
    url = f"/status/{page['slug']}"
    before = public.get(url)
    never_rendered = owner.page([("", [owner.monitor("Other")])])
    name = status_api.settings.database_url.rsplit("/", 1)[1]
    admin = status_api.settings.database_url.rsplit("/", 1)[0] + "/postgres"

    with refused_connections(admin, name):
        wait_for_revalidation()
        during = public.get(url)
        unavailable = public.get(f"/status/{never_rendered['slug']}")

    assert during.status_code == 200
    assert during.content == before.content
    assert unavailable.status_code == 503
    assert unavailable.headers["retry-after"] == "5"


# The open connections to a database, dropped (the name is the test's own database's).
_TERMINATE = (
    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity"
    " WHERE datname = '{database}' AND pid <> pg_backend_pid()"
)


@contextmanager
def refused_connections(admin_url: str, database: str) -> Iterator[None]:
    """The database refuses new connections and drops the open ones, until exit."""

    async def run(*statements: str) -> None:
        connection = await asyncpg.connect(admin_url.replace("postgresql+asyncpg", "postgresql"))
        try:
            for statement in statements:
                await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(
        run(
            f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS false',
            _TERMINATE.format(database=database),
        )
    )
    try:
        yield
    finally:
        asyncio.run(run(f'ALTER DATABASE "{database}" WITH ALLOW_CONNECTIONS true'))
