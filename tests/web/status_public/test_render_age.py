"""A page whose version does not move is still rendered again once its renderings are
STATUS_PAGE_MAX_RENDER_AGE_SECONDS old: its uptime and today's bar change with every check
(a long outage moves no version), and a reader must not be told 304 for stale figures."""

from __future__ import annotations

import time
from collections.abc import Iterator

import httpx
import pytest

from tests.api.conftest import serve_on
from tests.api.server import ApiServer
from tests.web.status_public.conftest import Owner

MAX_AGE = 2.0
REVALIDATE = 0.5


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def aging_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(
        request,
        tmp_path_factory,
        request.param,
        STATUS_PAGE_REVALIDATE_SECONDS=REVALIDATE,
        STATUS_PAGE_MAX_RENDER_AGE_SECONDS=MAX_AGE,
    ) as server:
        yield server


def test_a_page_is_rendered_again_when_its_figures_are_too_old_though_its_version_stays(
    aging_api: ApiServer,
) -> None:
    _, token, _ = aging_api.new_user()
    owner = Owner(aging_api, token)
    page = owner.page([("", [owner.monitor("API")])])
    url = f"/status/{page['slug']}"
    with httpx.Client(base_url=aging_api.base_url, timeout=30) as public:
        first = public.get(url)
        assert first.status_code == 200
        etag = first.headers["etag"]
        # Young enough: the same rendering, so the reader's copy is still good.
        assert public.get(url, headers={"if-none-match": etag}).status_code == 304

        time.sleep(MAX_AGE + REVALIDATE + 0.3)
        later = public.get(url, headers={"if-none-match": etag})

    assert later.status_code == 200
    assert later.headers["etag"] != etag
    version = f"-{page['version']}-"
    assert version in etag
    assert version in later.headers["etag"]  # nothing moved the version
    owner.client.close()
