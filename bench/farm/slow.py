"""The farm's slow and silent targets, in one process of their own
(`python -m bench.farm.slow --chain C --key K --slow-port P --silent-port Q`):

- on the slow port, https: after the TLS handshake and the request, target ``i`` (from the
  path `/t/<i>`) waits :func:`bench.farm.mix.slow_delay` seconds, then answers 200 and
  closes, as a struggling site would;
- on the silent port: every connection is accepted and never answered, not even with a
  TLS handshake (a black hole: the client waits for its timeout).
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import ssl

from bench.farm.mix import slow_delay

_OK = b"HTTP/1.1 200 OK\r\nContent-Length: 3\r\nConnection: close\r\n\r\nok\n"
_NOT_FOUND = b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n"


async def _slow(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
    try:
        head = await reader.readuntil(b"\r\n\r\n")
        path = head.split(b" ", 2)[1].decode()
        i = int(path.removeprefix("/t/")) if path.startswith("/t/") else None
        if i is None:
            writer.write(_NOT_FOUND)
        else:
            await asyncio.sleep(slow_delay(i))
            writer.write(_OK)
        await writer.drain()
    except (OSError, ValueError, IndexError, asyncio.IncompleteReadError, ssl.SSLError):
        pass  # the client gave up first (its timeout), or sent nonsense
    finally:
        writer.close()
        with contextlib.suppress(OSError, ssl.SSLError):
            await writer.wait_closed()


class _Silent(asyncio.Protocol):
    """Accepts, reads nothing, answers nothing; closes when the client does."""


async def serve(chain: str, key: str, slow_port: int, silent_port: int) -> None:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.load_cert_chain(chain, key)
    loop = asyncio.get_running_loop()
    slow = await asyncio.start_server(
        _slow, "127.0.0.1", slow_port, ssl=context, backlog=4096, ssl_handshake_timeout=30
    )
    silent = await loop.create_server(_Silent, "127.0.0.1", silent_port, backlog=4096)
    async with slow, silent:
        await asyncio.Event().wait()


def main() -> None:
    parser = argparse.ArgumentParser(description="the farm's slow and silent targets")
    parser.add_argument("--chain", required=True)
    parser.add_argument("--key", required=True)
    parser.add_argument("--slow-port", type=int, required=True)
    parser.add_argument("--silent-port", type=int, required=True)
    args = parser.parse_args()
    import uvloop

    uvloop.run(serve(args.chain, args.key, args.slow_port, args.silent_port))


if __name__ == "__main__":
    main()
