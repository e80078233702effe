"""The monitoring stage stores each check's phases and certificate expiry, on SQLite and
PostgreSQL (one row at a time, and as arrays): a real HTTPS target on loopback with a trustme
certificate, beside a target that refuses, in one batch."""

from __future__ import annotations

import socket
import ssl
from datetime import UTC, datetime, timedelta

import trustme
from aiohttp import web
from aiohttp.test_utils import TestServer
from sqlalchemy import select

from runstate.checks.http import HttpCheck
from runstate.queue.backend import QueueBackend
from runstate.storage.tables import WebsiteCheck
from tests.pipeline.conftest import MakeMonitoringStage, StageDb, job_for, publish_and_read


async def ok(request: web.Request) -> web.Response:
    return web.Response(text="ok")


async def test_the_phases_and_certificate_expiry_of_each_check_are_stored(
    stage_db: StageDb,
    stage_backend: QueueBackend,
    stage_prefix: str,
    make_monitoring_stage: MakeMonitoringStage,
) -> None:
    ca = trustme.CA()
    not_after = datetime.now(UTC).replace(microsecond=0) + timedelta(days=20)
    served = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("127.0.0.1", not_after=not_after).configure_cert(served)
    trusted = ssl.create_default_context()
    ca.configure_trust(trusted)
    app = web.Application()
    app.router.add_get("/", ok)
    server = TestServer(app, host="127.0.0.1", port=0)
    await server.start_server(ssl=served)
    with socket.socket() as closed:
        closed.bind(("127.0.0.1", 0))
        refusing_url = f"http://127.0.0.1:{closed.getsockname()[1]}/"
        check = HttpCheck(allow_private=True, ssl_context=trusted)
        stage = make_monitoring_stage(check)
        user = await stage_db.user()
        secure = await stage_db.website(user, f"https://127.0.0.1:{server.port}/")
        refusing = await stage_db.website(user, refusing_url)
        items = [job_for(secure).to_fields(), job_for(refusing).to_fields()]
        entries = await publish_and_read(stage_backend.queue, f"{stage_prefix}:m", items)
        try:
            async for _ in stage.handle_batch(entries):
                pass
        finally:
            await stage.aclose()
            await check.aclose()
            await server.close()

    secure_row, refused_row = [
        (await stage_db.all(select(WebsiteCheck).where(WebsiteCheck.website_id == w.id)))[0]
        for w in (secure, refusing)
    ]
    assert secure_row.status == "up"
    assert secure_row.dns_ms is None  # an IP literal
    assert None not in (secure_row.connect_ms, secure_row.tls_ms, secure_row.ttfb_ms)
    assert secure_row.cert_expires_at == not_after
    assert refused_row.status == "down"
    assert (refused_row.tls_ms, refused_row.ttfb_ms, refused_row.cert_expires_at) == (
        None,
        None,
        None,
    )
