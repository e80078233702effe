"""Operations (contract §3): liveness, readiness, Prometheus metrics, OpenAPI and docs, and the
envelope on errors the router itself produces (404, 405)."""

from __future__ import annotations

import asyncio
import json
import re
import uuid
from collections.abc import Iterator

import asyncpg
import httpx
import pytest

from tests.api.conftest import api_settings
from tests.api.server import PASSWORD, ApiServer, postgres_database, serve

DEAD_REDIS_URL = "redis://127.0.0.1:1/0"
PUBLIC_URL = "http://93.184.215.14/"


def _root(server: ApiServer) -> httpx.Client:
    return httpx.Client(base_url=server.base_url, timeout=30)


def _metrics(server: ApiServer) -> str:
    with _root(server) as client:
        answer = client.get("/metrics")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/plain")
    return answer.text


def _sample(text: str, name: str, labels: dict[str, str]) -> float:
    """The value of the sample ``name{labels}`` in Prometheus text (0 when absent)."""
    for line in text.splitlines():
        match = re.fullmatch(r"(\w+)\{(.*)\} (\S+)", line)
        if match is None or match.group(1) != name:
            continue
        found = dict(re.findall(r'(\w+)="((?:[^"\\]|\\.)*)"', match.group(2)))
        if found == labels:
            return float(match.group(3))
    return 0.0


def test_health_is_ok(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.get("/health")
    assert answer.status_code == 200
    body = answer.json()
    assert body["success"] is True
    assert body["data"]["status"] == "ok"


def test_ready_is_200_when_the_database_answers(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.get("/health/ready")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    assert body["data"]["checks"]["database"] == "ok"
    assert "redis" not in body["data"]["checks"]  # not configured, so not checked


@pytest.fixture(scope="module")
def dead_redis_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    data_dir = tmp_path_factory.mktemp("api-ops-dead-redis")
    settings = api_settings(
        f"sqlite:///{data_dir / 'runstate.db'}", data_dir, REDIS_URL=DEAD_REDIS_URL
    )
    with serve(settings, "sqlite") as server:
        yield server


def test_ready_is_503_naming_redis_when_redis_does_not_answer(dead_redis_api: ApiServer) -> None:
    with dead_redis_api.client() as client:
        ready = client.get("/health/ready")
        health = client.get("/health")
    assert ready.status_code == 503, ready.text
    body = ready.json()
    assert body["success"] is False
    assert "redis" in body["error"]
    assert "database" not in body["error"]
    assert body["data"]["checks"]["database"] == "ok"
    assert body["data"]["checks"]["redis"] != "ok"
    assert health.status_code == 200
    assert health.json()["data"]["status"] == "ok"


def test_a_dropped_database_makes_ready_and_requests_503_not_500(
    postgres_admin_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("api-ops-dropped-db")
    with (
        postgres_database(postgres_admin_url) as url,
        serve(api_settings(url, data_dir), "postgres") as server,
    ):
        _, token, _ = server.new_user()
        with server.client(token) as client:
            assert client.get("/health/ready").status_code == 200
            assert client.get("/me").status_code == 200

        asyncio.run(_drop_database(postgres_admin_url, url.rsplit("/", 1)[1]))

        with server.client(token) as client:
            ready = client.get("/health/ready")
            me = client.get("/me")
            websites = client.post("/websites", json={"url": PUBLIC_URL})
            signin = client.post(
                "/signin",
                json={"email": f"{uuid.uuid4().hex}@example.com", "password": PASSWORD},
            )
            health = client.get("/health")
    assert ready.status_code == 503, ready.text
    assert ready.json()["success"] is False
    assert "database" in ready.json()["error"]
    assert ready.json()["data"]["checks"]["database"] != "ok"
    for answer in (me, websites, signin):
        assert answer.status_code == 503, f"{answer.request.url}: {answer.text}"
        assert answer.json()["success"] is False
        assert answer.json()["error"]
    assert health.status_code == 200


async def _drop_database(admin_url: str, name: str) -> None:
    connection = await asyncpg.connect(admin_url)
    try:
        await connection.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
    finally:
        await connection.close()


def test_metrics_label_requests_by_route_template_not_by_id(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    with api.client(token) as client:
        created = client.post("/websites", json={"url": f"{PUBLIC_URL}{uuid.uuid4().hex}"})
        assert created.status_code == 201, created.text
        website_id = created.json()["data"]["id"]
        labels = {"method": "GET", "route": "/api/v1/websites/{website_id}", "status": "200"}
        before = _sample(_metrics(api), "http_requests_total", labels)
        assert client.get(f"/websites/{website_id}").status_code == 200
    text = _metrics(api)
    assert _sample(text, "http_requests_total", labels) == before + 1
    assert website_id not in text
    assert "# TYPE http_requests_total counter" in text
    assert "# TYPE http_request_duration_seconds histogram" in text
    duration = {"method": "GET", "route": "/api/v1/websites/{website_id}", "le": "+Inf"}
    assert _sample(text, "http_request_duration_seconds_bucket", duration) >= 1
    assert "# TYPE http_requests_in_flight gauge" in text
    # The scrape itself is the one request in flight while the text is produced.
    assert re.search(r"^http_requests_in_flight \d", text, re.MULTILINE)


def test_an_unknown_path_is_404_in_the_envelope_and_labelled_unmatched(api: ApiServer) -> None:
    path = f"/api/v1/no-such-thing-{uuid.uuid4().hex}"
    labels = {"method": "GET", "route": "<unmatched>", "status": "404"}
    before = _sample(_metrics(api), "http_requests_total", labels)
    with _root(api) as client:
        answer = client.get(path)
    assert answer.status_code == 404
    body = answer.json()
    assert body["success"] is False
    assert body["data"] is None
    assert isinstance(body["error"], str)
    assert body["error"]
    text = _metrics(api)
    assert _sample(text, "http_requests_total", labels) == before + 1
    assert path not in text


def test_a_wrong_method_is_405_in_the_envelope(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.delete("/signin")
    assert answer.status_code == 405
    body = answer.json()
    assert body["success"] is False
    assert body["data"] is None
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "POST" in answer.headers["allow"]


def test_openapi_lists_the_api(api: ApiServer) -> None:
    with _root(api) as client:
        answer = client.get("/openapi.json")
    assert answer.status_code == 200
    document = json.loads(answer.text)
    assert document["openapi"].startswith("3.")
    for path in ("/api/v1/websites", "/api/v1/signin", "/api/v1/channels", "/api/v1/health"):
        assert path in document["paths"], path
    assert "post" in document["paths"]["/api/v1/signin"]


def test_docs_are_served_as_html(api: ApiServer) -> None:
    with _root(api) as client:
        answer = client.get("/docs")
    assert answer.status_code == 200
    assert answer.headers["content-type"].startswith("text/html")
    assert "/openapi.json" in answer.text
