"""The check family: what every check kind returns, the interface it implements, and the
registry of kinds.

A check kind is a class built once per worker process (it may hold a connection pool) whose
``run`` turns one :class:`~runstate.domain.events.CheckJob` into a :class:`CheckResult`.
Adding a kind touches its module, one line in :data:`CHECKS`, its test and its doc page.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from enum import StrEnum
from typing import NamedTuple, Protocol

from runstate.domain.events import CheckJob
from runstate.domain.status import Status


class ErrorKind(StrEnum):
    """Why a check came out down."""

    TIMEOUT = "timeout"  # no complete answer within the job's timeout_ms
    DNS = "dns"  # the name does not resolve
    REFUSED = "refused"  # nothing listens on the port
    TLS = "tls"  # handshake failed or the certificate is not trusted
    STATUS = "status"  # a response whose status code is not expected
    KEYWORD = "keyword"  # the expected keyword is not in the body
    BLOCKED = "blocked"  # the SSRF guard refused the address (runstate.netguard)
    REDIRECTS = "redirects"  # too many redirects, or a Location that may not be followed
    CONNECTION = "connection"  # reset, closed early, garbled response, other network errors


class Phases(NamedTuple):
    """How long each phase of a check's request took, in whole milliseconds, and when the
    server's certificate expires (UTC). None where the phase was not reached or does not
    apply; each kind documents which request it describes and what it records."""

    dns_ms: int | None = None  # resolving the name
    connect_ms: int | None = None  # the TCP connect
    tls_ms: int | None = None  # the TLS handshake, certificate verified
    ttfb_ms: int | None = None  # request sent on the ready connection -> response headers
    cert_expires_at: datetime | None = None  # the leaf certificate's notAfter


NO_PHASES = Phases()


@dataclass(frozen=True, slots=True)
class CheckResult:
    """The outcome of one check.

    ``error`` is one human-readable line for the user (never secrets such as the URL's query):
    "timeout after 10000 ms", "status 503 not in 200-399", "keyword 'ok' not found".
    It and ``error_kind`` are None exactly when ``status`` is UP. The last five fields are
    the :class:`Phases`, recorded on DOWN results too as far as the check got.
    """

    status: Status
    response_time_ms: int | None
    status_code: int | None
    error_kind: ErrorKind | None = None
    error: str | None = None
    dns_ms: int | None = None
    connect_ms: int | None = None
    tls_ms: int | None = None
    ttfb_ms: int | None = None
    cert_expires_at: datetime | None = None

    @classmethod
    def up(
        cls, *, response_time_ms: int, status_code: int | None, phases: Phases = NO_PHASES
    ) -> CheckResult:
        return cls(Status.UP, response_time_ms, status_code, None, None, *phases)

    @classmethod
    def down(
        cls,
        kind: ErrorKind,
        error: str,
        *,
        response_time_ms: int | None = None,
        status_code: int | None = None,
        phases: Phases = NO_PHASES,
    ) -> CheckResult:
        return cls(Status.DOWN, response_time_ms, status_code, kind, error, *phases)

    @property
    def phases(self) -> Phases:
        return Phases(self.dns_ms, self.connect_ms, self.tls_ms, self.ttfb_ms, self.cert_expires_at)


class Check(Protocol):
    async def run(self, job: CheckJob) -> CheckResult:
        """Check the job's target once. A failure of the target is a DOWN result, never an
        exception; only cancellation and bugs propagate."""

    async def aclose(self) -> None:
        """Release what the check holds (connection pools); called once at shutdown."""


# kind -> "module.Class", imported on first use so that a worker loads only what it runs.
CHECKS: dict[str, str] = {
    "http": "runstate.checks.http.HttpCheck",
}


def check_class(kind: str) -> Callable[..., Check]:
    """The class registered for ``kind``, imported now; KeyError for an unknown kind."""
    module_name, _, name = CHECKS[kind].rpartition(".")
    factory: Callable[..., Check] = getattr(importlib.import_module(module_name), name)
    return factory
