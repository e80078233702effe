"""The `backend` fixture: the same queue contract tests run in process and on a real Redis."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator, Sequence

import pytest
from redis import Redis as SyncRedis

from runstate.queue.backend import QueueBackend, open_backend
from runstate.queue.in_process import InProcessBroker


@pytest.fixture(scope="session")
def clean_redis_db(redis_url: str) -> str:
    """The test Redis database (15), emptied once before the first test that uses it. Every
    test names its own streams, monitors and leases, so tests never see each other's data."""
    client = SyncRedis.from_url(redis_url)
    client.flushdb()
    client.close()
    return redis_url


@pytest.fixture(params=["in_process", "redis"])
async def backend(request: pytest.FixtureRequest) -> AsyncIterator[QueueBackend]:
    if request.param == "in_process":
        opened = open_backend(None)
    else:
        # Asked for only here, so that the in-process half runs where there is no Redis.
        opened = open_backend(request.getfixturevalue("clean_redis_db"))
    yield opened
    await opened.aclose()


@pytest.fixture
async def twin(
    backend: QueueBackend, request: pytest.FixtureRequest
) -> AsyncIterator[QueueBackend]:
    """Another process's view of the same back end: a second Redis client, or the same broker
    (an in-process broker is never shared between processes)."""
    if backend.redis is None:
        yield backend
        return
    other = open_backend(request.getfixturevalue("clean_redis_db"))
    yield other
    await other.aclose()


@pytest.fixture
def stream() -> str:
    return f"test:{uuid.uuid4().hex}:stream"


async def flush(backend: QueueBackend) -> None:
    """Lose every stream, group and state, as when Redis restarts without its data."""
    if backend.redis is not None:
        # FLUSHDB rather than FLUSHALL: the same for this client, and it spares the other
        # databases of a Redis that is shared with other work.
        await backend.redis.flushdb()
    else:
        assert isinstance(backend.queue, InProcessBroker)
        backend.queue.flush()


async def delete_entries(backend: QueueBackend, stream: str, ids: Sequence[str]) -> None:
    """XDEL, as MAXLEN trimming or an operator would."""
    if backend.redis is not None:
        await backend.redis.xdel(stream, *ids)
    else:
        assert isinstance(backend.queue, InProcessBroker)
        backend.queue.delete(stream, ids)
