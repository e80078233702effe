"""MAX_REQUEST_BODY_BYTES: a request body larger than the limit is refused with 413 before
anything reads it whole, let alone parses it.

A pure ASGI middleware, so it sees the body as it arrives, in the server's chunks. A declared
`Content-Length` above the limit is refused at once, before a byte of the body is read (a
client that sent `Expect: 100-continue` is never told to send it). A body without one
(chunked), or longer than it claims, is counted as it streams in, and refused as soon as the
count passes the limit. The refusal closes the connection, so the server stops reading the
rest instead of draining it.
"""

from __future__ import annotations

from contextlib import suppress

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from runstate.api.envelope import error_response


class BodyTooLarge(Exception):
    """Raised to the application when the body it is reading passes the limit."""


class BodyLimitMiddleware:
    def __init__(self, app: ASGIApp, max_body_bytes: int) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await self._refuse(scope, receive, send)
            return
        request = _CountedRequest(self.max_body_bytes, receive, send)
        with suppress(BodyTooLarge):
            await self.app(scope, request.receive, request.send)
        if request.too_large and not request.response_started:
            await self._refuse(scope, receive, send)

    async def _refuse(self, scope: Scope, receive: Receive, send: Send) -> None:
        response = error_response(
            413,
            f"the request body is larger than {self.max_body_bytes} bytes (MAX_REQUEST_BODY_BYTES)",
            # The rest of the body is never read: the connection cannot serve another request.
            headers={"Connection": "close"},
        )
        await response(scope, receive, send)


class _CountedRequest:
    """One request's receive and send, counting the body's bytes as they arrive."""

    def __init__(self, max_body_bytes: int, receive: Receive, send: Send) -> None:
        self._max_body_bytes = max_body_bytes
        self._receive = receive
        self._send = send
        self.received = 0
        self.too_large = False
        self.response_started = False

    async def receive(self) -> Message:
        if self.too_large:
            raise BodyTooLarge
        message = await self._receive()
        if message["type"] == "http.request":
            self.received += len(message.get("body", b""))
            if self.received > self._max_body_bytes:
                self.too_large = True
                raise BodyTooLarge
        return message

    async def send(self, message: Message) -> None:
        # Once the body is too large, whatever the application makes of the error it got
        # while reading it (FastAPI turns it into a 400) gives way to the 413.
        if self.too_large and not self.response_started:
            return
        if message["type"] == "http.response.start":
            self.response_started = True
        await self._send(message)


def _content_length(scope: Scope) -> int | None:
    """The declared body length; None when absent. A malformed value is the server's to
    refuse (uvicorn answers 400 before the application is called)."""
    for name, value in scope["headers"]:
        if name == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None
