"""MAX_REQUEST_BODY_BYTES over real HTTP: a body over the limit is a 413 naming the setting,
refused on its declared length before it is sent, or counted as it streams in and refused
without being read whole; a body within the limit is read and parsed as ever."""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from urllib.parse import urlsplit

import httpx
import pytest

from runstate.settings import Settings
from tests.api.conftest import serve_on
from tests.api.server import ApiServer

LIMIT = Settings.model_fields["MAX_REQUEST_BODY_BYTES"].default  # the default: 64 KiB
SIGNIN = "/api/v1/signin"
HUGE = 64 * 1024 * 1024


@pytest.fixture(scope="module")
def body_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(request, tmp_path_factory, "sqlite") as server:
        assert server.settings.MAX_REQUEST_BODY_BYTES == LIMIT
        yield server


def _signin_body(size: int) -> bytes:
    """A sign-in body of exactly ``size`` bytes: valid JSON, padded with whitespace."""
    body = json.dumps({"email": "nobody@example.com", "password": "Wrong-passw0rd!"}).encode()
    assert len(body) <= size
    return body + b" " * (size - len(body))


def _chunks(body: bytes, size: int = 4096) -> Iterator[bytes]:
    for start in range(0, len(body), size):
        yield body[start : start + size]


def _assert_refused(answer: httpx.Response) -> None:
    assert answer.status_code == 413, answer.text
    body = answer.json()
    assert body["success"] is False
    assert body["data"] is None
    assert "MAX_REQUEST_BODY_BYTES" in body["error"]
    assert str(LIMIT) in body["error"]
    assert answer.headers["connection"] == "close"


def _raw_request(server: ApiServer, head: str) -> bytes:
    """Send only the request's head, no body, and read what the server answers until it
    closes the connection (a socket timeout fails the test: it was waiting for the body)."""
    address = urlsplit(server.base_url)
    with socket.create_connection((address.hostname, address.port), timeout=10) as connection:
        connection.sendall(head.encode())
        answer = b""
        while chunk := connection.recv(65536):
            answer += chunk
    return answer


@pytest.mark.parametrize("expect_continue", [False, True])
def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_sent(
    body_api: ApiServer, expect_continue: bool
) -> None:
    head = (
        f"POST {SIGNIN} HTTP/1.1\r\nHost: runstate\r\nContent-Type: application/json\r\n"
        f"Content-Length: {HUGE}\r\n"
        + ("Expect: 100-continue\r\n" if expect_continue else "")
        + "\r\n"
    )
    answer = _raw_request(body_api, head)
    status_line, _, rest = answer.partition(b"\r\n")
    # Straight to the refusal: never a "100 Continue" inviting the body.
    assert status_line == b"HTTP/1.1 413 Request Entity Too Large", answer[:200]
    headers, _, body = rest.partition(b"\r\n\r\n")
    assert b"connection: close" in headers.lower()
    assert "MAX_REQUEST_BODY_BYTES" in json.loads(body)["error"]


def test_a_streamed_body_over_the_limit_is_refused_without_being_read_whole(
    body_api: ApiServer,
) -> None:
    consumed = 0

    def upload() -> Iterator[bytes]:
        nonlocal consumed
        chunk = b" " * 65536
        while consumed < HUGE:
            consumed += len(chunk)
            yield chunk

    with httpx.Client(base_url=body_api.base_url, timeout=30) as client:
        answer = client.post(SIGNIN, content=upload(), headers={"content-type": "application/json"})
    _assert_refused(answer)
    # What the server did not read is what the client never got to send: only what fits in
    # the sockets' buffers on the way went out.
    assert consumed < HUGE // 4, f"{consumed} of {HUGE} bytes were taken from the upload"


@pytest.mark.parametrize("streamed", [False, True], ids=["content_length", "chunked"])
def test_a_body_at_the_limit_is_parsed_and_one_byte_more_is_refused(
    body_api: ApiServer, streamed: bool
) -> None:
    with httpx.Client(base_url=body_api.base_url, timeout=30) as client:
        headers = {"content-type": "application/json"}
        at_limit, over = _signin_body(LIMIT), _signin_body(LIMIT + 1)
        answer = client.post(
            SIGNIN, content=_chunks(at_limit) if streamed else at_limit, headers=headers
        )
        assert answer.status_code == 401, answer.text  # parsed: an unknown account
        refused = client.post(SIGNIN, content=_chunks(over) if streamed else over, headers=headers)
        _assert_refused(refused)
        # The server goes on answering ordinary requests.
        answer = client.post(
            SIGNIN, json={"email": "nobody@example.com", "password": "Wrong-passw0rd!"}
        )
        assert answer.status_code == 401, answer.text
