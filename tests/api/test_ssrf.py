"""The SSRF guard at creation time (contract §2 ALLOW_PRIVATE_TARGETS): monitor URLs and webhook
targets that reach loopback, private, link-local or other non-global addresses are refused
with a 422 naming the field and the setting, in every spelling; ALLOW_PRIVATE_TARGETS=true
lets them through."""

from __future__ import annotations

import ipaddress
import socket
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from tests.api.conftest import api_settings
from tests.api.server import ApiServer, serve

PRIVATE_URLS = [
    "http://127.0.0.1/",
    "http://localhost/",
    "http://foo.localhost/",
    "http://[::1]/",
    "http://10.0.0.1/",
    "http://172.16.0.1/",
    "http://192.168.1.1/",
    "http://169.254.169.254/latest/meta-data/",
    "http://100.64.0.1/",
    "http://[fc00::1]/",
    "http://[fe80::1]/",
    "http://[::ffff:127.0.0.1]/",
    "http://[64:ff9b::7f00:1]/",
    "http://0.0.0.0/",
    "http://2130706433/",
    "http://0177.0.0.1/",
    "http://0x7f.0.0.1/",
    "http://127.1/",
]
PUBLIC_LITERAL = "http://93.184.215.14/"
UNRESOLVABLE = "http://monitor.invalid/"
FIELDS = ["POST /websites url", "PATCH /websites/{id} url", "POST /channels target"]


def _loopback_hostname() -> str:
    """This machine's own name when it resolves to a loopback address; skip otherwise."""
    name = socket.gethostname()
    try:
        infos = socket.getaddrinfo(name, None, type=socket.SOCK_STREAM)
    except OSError:
        pytest.skip(f"the host name {name!r} does not resolve here")
    if not any(ipaddress.ip_address(str(info[4][0])).is_loopback for info in infos):
        pytest.skip(f"the host name {name!r} does not resolve to a loopback address here")
    return name


def _submit(api: ApiServer, client: httpx.Client, field: str, url: str) -> httpx.Response:
    """Offer ``url`` through ``field``; a PATCH goes to a fresh monitor with a public URL."""
    if field == "POST /websites url":
        return client.post("/websites", json={"url": url})
    if field == "POST /channels target":
        return client.post("/channels", json={"type": "webhook", "target": url})
    created = client.post("/websites", json={"url": f"{PUBLIC_LITERAL}{uuid.uuid4().hex}"})
    assert created.status_code == 201, created.text
    return client.patch(f"/websites/{created.json()['data']['id']}", json={"url": url})


def _stored_urls(client: httpx.Client) -> set[str]:
    websites = client.get("/websites").json()["data"]["websites"]
    channels = client.get("/channels").json()["data"]["channels"]
    return {w["url"] for w in websites} | {c["target"] for c in channels}


def _assert_refused(answer: httpx.Response, field: str, url: str) -> None:
    assert answer.status_code == 422, f"{url}: {answer.status_code} {answer.text}"
    body: dict[str, Any] = answer.json()
    assert body["success"] is False
    name = field.rsplit(" ", 1)[1]
    assert body["error"].startswith(f"{name}:"), body["error"]
    assert "ALLOW_PRIVATE_TARGETS" in body["error"], body["error"]


@pytest.mark.parametrize("field", FIELDS)
def test_private_and_loopback_targets_are_refused_in_every_spelling(
    api: ApiServer, field: str
) -> None:
    _, token, _ = api.new_user()
    with api.client(token) as client:
        for url in PRIVATE_URLS:
            _assert_refused(_submit(api, client, field, url), field, url)
        stored = _stored_urls(client)
    # Nothing was stored or changed: only the public monitors the PATCH case set up remain.
    assert all(url.startswith(PUBLIC_LITERAL) for url in stored)


@pytest.mark.parametrize("field", FIELDS)
def test_a_name_that_resolves_to_loopback_is_refused(api: ApiServer, field: str) -> None:
    name = _loopback_hostname()
    _, token, _ = api.new_user()
    with api.client(token) as client:
        url = f"http://{name}:8080/health"
        _assert_refused(_submit(api, client, field, url), field, url)


@pytest.mark.parametrize("field", FIELDS)
@pytest.mark.parametrize("url", [PUBLIC_LITERAL, UNRESOLVABLE])
def test_a_public_address_or_a_name_that_does_not_resolve_yet_is_accepted(
    api: ApiServer, field: str, url: str
) -> None:
    _, token, _ = api.new_user()
    with api.client(token) as client:
        answer = _submit(api, client, field, url)
        assert answer.status_code in (200, 201), answer.text
        if field.startswith("POST"):
            assert answer.status_code == 201
        assert url in _stored_urls(client)


@pytest.fixture(scope="module")
def permissive_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    """A server with ALLOW_PRIVATE_TARGETS=true on its own SQLite file."""
    data_dir = tmp_path_factory.mktemp("api-allow-private")
    settings = api_settings(
        f"sqlite:///{data_dir / 'runstate.db'}", data_dir, ALLOW_PRIVATE_TARGETS=True
    )
    with serve(settings, "sqlite") as server:
        yield server


@pytest.mark.parametrize(
    "url", ["http://127.0.0.1:8080/", "http://localhost:8080/", "http://[::1]:8080/"]
)
def test_allow_private_targets_accepts_a_loopback_monitor(
    permissive_api: ApiServer, url: str
) -> None:
    _, token, _ = permissive_api.new_user()
    with permissive_api.client(token) as client:
        answer = client.post("/websites", json={"url": url})
        assert answer.status_code == 201, answer.text
        assert answer.json()["data"]["url"] == url
        other = client.post("/websites", json={"url": PUBLIC_LITERAL})
        assert other.status_code == 201
        patched = client.patch(f"/websites/{other.json()['data']['id']}", json={"url": url + "x"})
        assert patched.status_code == 200, patched.text


def test_allow_private_targets_accepts_a_private_webhook(permissive_api: ApiServer) -> None:
    _, token, _ = permissive_api.new_user()
    with permissive_api.client(token) as client:
        answer = client.post("/channels", json={"type": "webhook", "target": "http://10.1.2.3/"})
        assert answer.status_code == 201, answer.text
        assert answer.json()["data"]["secret"].startswith("whsec_")
        assert "http://10.1.2.3/" in _stored_urls(client)
