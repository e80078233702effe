"""Fixtures of the integration tests: the servers around runstate, a scratch database, a
Redis database of their own, and the system itself (embedded or distributed).

Every process a test starts is killed at teardown; when a test fails, the tail of every
process's log is attached to its report.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Iterator
from pathlib import Path
from urllib.parse import urlsplit, urlunsplit

import pytest
import redis

from tests.api.server import postgres_database
from tests.integration.harness import (
    Cluster,
    LoopThread,
    SmtpServer,
    System,
    Target,
    WebhookReceiver,
    start_distributed,
    start_embedded,
)

# The distributed tests share Redis keys that are global by design (the scheduler's lease,
# the pending-check marks, monitor states; see runstate.queue.keys), and one of them flushes
# its database: they get a database of their own, away from the other suites' db 15, and
# run one after the other.
INTEGRATION_REDIS_DB = int(os.environ.get("TEST_INTEGRATION_REDIS_DB", "14"))

CLUSTERS = pytest.StashKey[list[Cluster]]()


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Iterator[pytest.TestReport]:
    report: pytest.TestReport = yield
    if report.failed:
        for cluster in item.stash.get(CLUSTERS, []):
            report.sections.append((f"runstate processes ({cluster.label})", cluster.report()))
    return report


@pytest.fixture(scope="session")
def loop_thread() -> Iterator[LoopThread]:
    loop = LoopThread()
    yield loop
    loop.close()


@pytest.fixture
def target(loop_thread: LoopThread) -> Iterator[Target]:
    """A monitored site on 127.0.0.1, healthy until the test says otherwise."""
    site = Target(loop_thread)
    yield site
    site.stop_listening()


@pytest.fixture
def receiver(loop_thread: LoopThread) -> Iterator[WebhookReceiver]:
    hooks = WebhookReceiver(loop_thread)
    yield hooks
    hooks.stop_listening()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    server = SmtpServer()
    yield server
    server.stop()


@pytest.fixture
def cluster(request: pytest.FixtureRequest, tmp_path: Path, smtp: SmtpServer) -> Iterator[Cluster]:
    """The test's processes, with unique stream and group names; all killed at teardown."""
    created = Cluster.for_test(
        tmp_path,
        SMTP_HOST="127.0.0.1",
        SMTP_PORT=str(smtp.port),
        SMTP_FROM="runstate@example.com",
        SMTP_STARTTLS="false",
    )
    request.node.stash.setdefault(CLUSTERS, []).append(created)
    try:
        yield created
    finally:
        created.kill_all()


@pytest.fixture
def integration_redis_url(redis_url: str) -> str:
    """The integration tests' own Redis database, flushed: no lease, pending mark or monitor
    state of an earlier test is left."""
    parts = urlsplit(redis_url)
    url = urlunsplit(parts._replace(path=f"/{INTEGRATION_REDIS_DB}"))
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()
    return url


@pytest.fixture
def scratch_database(postgres_admin_url: str) -> Iterator[str]:
    with postgres_database(postgres_admin_url) as url:
        yield url


@pytest.fixture
def embedded(cluster: Cluster) -> Iterator[System]:
    system = start_embedded(cluster)
    yield system
    system.close()


StartDistributed = Callable[..., System]


@pytest.fixture
def start_system(
    scratch_database: str, integration_redis_url: str, cluster: Cluster
) -> Iterator[StartDistributed]:
    """Starts the distributed system, after setting the given settings:
    ``start_system(schedulers=2, SMTP_PORT="1")``."""
    systems: list[System] = []

    def start(*, schedulers: int = 1, **env: str) -> System:
        cluster.env.update(env)
        system = start_distributed(
            cluster, scratch_database, integration_redis_url, schedulers=schedulers
        )
        systems.append(system)
        return system

    yield start
    cluster.kill_all()  # before the database is dropped
    for system in systems:
        system.close()
        if system.redis is not None:
            system.redis.close()


@pytest.fixture
def distributed(start_system: StartDistributed) -> System:
    return start_system()
