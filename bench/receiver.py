"""The webhook receiver of a run (`python -m bench.receiver --port P --secret S`).

It answers every alert with 204 at once and remembers when each arrived (wall clock, as
the harness measures), with its event, incident and `webhook-id`, and whether its Standard
Webhooks signature held (when the `standardwebhooks` library is installed).
`GET /_log` returns what it saw.
"""

from __future__ import annotations

import argparse
import json
import time
from typing import Any

from aiohttp import web


def _verifier(secret: str) -> Any:
    try:
        from standardwebhooks.webhooks import Webhook
    except ImportError:  # a dev dependency; the receiver works without it
        return None
    return Webhook(secret)


def _app(secret: str) -> web.Application:
    arrivals: list[dict[str, Any]] = []
    verifier = _verifier(secret)

    async def alert(request: web.Request) -> web.Response:
        at = time.time()
        body = await request.read()
        verified = None
        if verifier is not None:
            headers = {key.lower(): value for key, value in request.headers.items()}
            try:
                verifier.verify(body, headers)
                verified = True
            except Exception:
                verified = False
        payload = json.loads(body)
        arrivals.append(
            {
                "at": at,
                "event": payload.get("event"),
                "incident_id": payload.get("incident_id"),
                "website_id": (payload.get("website") or {}).get("id"),
                "webhook_id": request.headers.get("webhook-id"),
                "verified": verified,
            }
        )
        return web.Response(status=204)

    async def log(_request: web.Request) -> web.Response:
        return web.json_response(arrivals)

    app = web.Application()
    app.router.add_post("/hook", alert)
    app.router.add_get("/_log", log)
    return app


def main() -> None:
    parser = argparse.ArgumentParser(description="the benchmark's webhook receiver")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--secret", required=True)
    args = parser.parse_args()
    import uvloop

    web.run_app(
        _app(args.secret),
        host="127.0.0.1",
        port=args.port,
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
