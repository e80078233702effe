"""URLs at the edges of what the parsers accept: never a 500, never a mangled URL."""

from __future__ import annotations

import pytest

from tests.api.server import ApiServer


@pytest.fixture(scope="module")
def token(api: ApiServer) -> str:
    _, access, _ = api.new_user()
    return access


@pytest.mark.parametrize(
    "url", ["http://ä..com/", "http://xn--ä.com/", "http://" + "é" * 64 + ".com/"]
)
def test_a_host_name_that_cannot_be_encoded_is_422_not_500(
    api: ApiServer, token: str, url: str
) -> None:
    with api.client(token) as client:
        monitor = client.post("/websites", json={"url": url})
        channel = client.post("/channels", json={"type": "webhook", "target": url})
    assert monitor.status_code == 422, monitor.text
    assert monitor.json()["error"].startswith("url:")
    assert channel.status_code == 422, channel.text
    assert channel.json()["error"].startswith("target:")


@pytest.mark.parametrize(
    ("given", "stored"),
    [
        ("http://ttp/", "http://ttp/"),
        ("HTTPS://S/x", "https://s/x"),
        ("http://p", "http://p/"),
        ("http://Example.COM:8080/a?b=1#c", "http://example.com:8080/a?b=1#c"),
    ],
)
def test_a_url_is_normalised_without_being_mangled(api: ApiServer, given: str, stored: str) -> None:
    _, access, _ = api.new_user()  # a user of its own: the same URL may be used by others
    with api.client(access) as client:
        answer = client.post("/websites", json={"url": given})
    assert answer.status_code == 201, answer.text
    assert answer.json()["data"]["url"] == stored


def test_a_url_that_grows_past_the_limit_when_normalised_is_422(api: ApiServer, token: str) -> None:
    url = "http://" + "a" * (2048 - len("http://"))  # 2048 characters; normalising adds "/"
    with api.client(token) as client:
        answer = client.post("/websites", json={"url": url})
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith("url:")
