"""A real runstate API served by uvicorn on a loopback port, for tests that talk HTTP."""

from __future__ import annotations

import asyncio
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import asyncpg
import httpx
import uvicorn

from runstate.api.app import create_app
from runstate.settings import Settings
from runstate.storage.db import create_engine
from runstate.storage.migrate import ensure_admin, upgrade_schema

ADMIN_EMAIL = "admin@example.com"
ADMIN_PASSWORD = "Admin-Passw0rd!"
PASSWORD = "Corr3ct-Horse!"


@dataclass
class ApiServer:
    """A running API and what a test needs to talk to it."""

    base_url: str
    backend: str
    settings: Settings
    _tokens: dict[str, str] = field(default_factory=dict)

    def client(self, token: str | None = None) -> httpx.Client:
        headers = {"authorization": f"Bearer {token}"} if token else {}
        return httpx.Client(base_url=f"{self.base_url}/api/v1", headers=headers, timeout=30)

    def new_user(self, role_admin: bool = False) -> tuple[dict[str, Any], str, str]:
        """Sign up and sign in a fresh user: (user, access token, refresh token)."""
        email = f"user-{uuid.uuid4().hex[:12]}@example.com"
        with self.client() as client:
            user = client.post("/signup", json={"email": email, "password": PASSWORD})
            assert user.status_code == 201, user.text
            tokens = client.post("/signin", json={"email": email, "password": PASSWORD})
            assert tokens.status_code == 200, tokens.text
        data = tokens.json()["data"]
        return user.json()["data"], data["access_token"], data["refresh_token"]

    def admin_token(self) -> str:
        if "admin" not in self._tokens:
            with self.client() as client:
                answer = client.post(
                    "/signin", json={"email": ADMIN_EMAIL, "password": ADMIN_PASSWORD}
                )
                assert answer.status_code == 200, answer.text
            self._tokens["admin"] = answer.json()["data"]["access_token"]
        return self._tokens["admin"]


async def _prepare(settings: Settings) -> None:
    engine = create_engine(settings.database_url)
    try:
        await upgrade_schema(engine)
        await ensure_admin(engine, ADMIN_EMAIL, ADMIN_PASSWORD)
    finally:
        await engine.dispose()


@contextmanager
def serve(settings: Settings, backend: str) -> Iterator[ApiServer]:
    """Migrate the database of ``settings``, seed the admin and serve the API until exit."""
    asyncio.run(_prepare(settings))
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    config = uvicorn.Config(create_app(settings), log_config=None, access_log=False)
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the API did not start")
        time.sleep(0.02)
    try:
        yield ApiServer(f"http://127.0.0.1:{port}", backend, settings)
    finally:
        server.should_exit = True
        thread.join(30)
        sock.close()


@contextmanager
def postgres_database(admin_url: str) -> Iterator[str]:
    """A new, empty database on the real server, dropped afterwards; yields its URL."""
    name = f"runstate_test_{uuid.uuid4().hex[:10]}"

    async def run(statement: str) -> None:
        connection = await asyncpg.connect(admin_url)
        try:
            await connection.execute(statement)
        finally:
            await connection.close()

    asyncio.run(run(f'CREATE DATABASE "{name}"'))
    try:
        yield admin_url.rsplit("/", 1)[0] + f"/{name}"
    finally:
        asyncio.run(run(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
