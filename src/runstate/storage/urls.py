"""Turn the database URL an operator has into what SQLAlchemy's async drivers take.

Managed Postgres providers hand out libpq URLs (``postgresql://u:p@host/db?sslmode=require
&channel_binding=require``). asyncpg does not read libpq's query parameters, so they are
translated here into its ``ssl`` argument; nothing about TLS is silently dropped.
"""

from __future__ import annotations

import ssl
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

POSTGRES_SCHEMES = {"postgres", "postgresql", "postgresql+asyncpg"}
SQLITE_SCHEMES = {"sqlite", "sqlite+aiosqlite"}
SSL_MODES = {"disable", "allow", "prefer", "require", "verify-ca", "verify-full"}
# libpq parameters that asyncpg cannot take as connection arguments. channel_binding is
# accepted for compatibility: asyncpg authenticates with SCRAM-SHA-256 over the TLS session
# but cannot bind the channel, so `require` cannot be enforced and is not claimed.
LIBPQ_ONLY = {"sslmode", "sslrootcert", "sslcert", "sslkey", "channel_binding", "options"}


@dataclass(frozen=True)
class DriverURL:
    """A SQLAlchemy URL for the async driver plus the connection arguments it needs."""

    url: str
    connect_args: dict[str, Any] = field(default_factory=dict)

    @property
    def is_sqlite(self) -> bool:
        return self.url.startswith("sqlite")


def _ssl_argument(params: dict[str, str]) -> str | ssl.SSLContext | None:
    mode = params.get("sslmode", "prefer")
    if mode not in SSL_MODES:
        raise ValueError(f"sslmode={mode} is not one of {', '.join(sorted(SSL_MODES))}")
    if mode not in {"verify-ca", "verify-full"}:
        return None if mode == "prefer" else mode
    try:
        context = ssl.create_default_context(cafile=params.get("sslrootcert"))
        if "sslcert" in params:
            context.load_cert_chain(params["sslcert"], params.get("sslkey"))
    except (OSError, ssl.SSLError) as exc:
        raise ValueError(f"sslrootcert/sslcert/sslkey: cannot be used ({exc})") from None
    context.check_hostname = mode == "verify-full"
    return context


def database_url_for_driver(raw: str) -> DriverURL:
    """Translate ``raw`` (Postgres or SQLite) for SQLAlchemy's asyncpg / aiosqlite drivers.

    Raises ValueError naming what is wrong when the URL cannot be used.
    """
    parts = urlsplit(raw)
    scheme = parts.scheme.lower()
    if scheme in SQLITE_SCHEMES:
        return DriverURL("sqlite+aiosqlite" + raw[len(parts.scheme) :])
    if scheme not in POSTGRES_SCHEMES:
        raise ValueError("must be a postgresql:// or sqlite:/// URL")
    if not parts.hostname and "host=" not in parts.query:
        raise ValueError("a postgresql:// URL needs a host")
    params = dict(parse_qsl(parts.query, keep_blank_values=True))
    connect_args: dict[str, Any] = {}
    ssl_argument = _ssl_argument(params)
    if ssl_argument is not None:
        connect_args["ssl"] = ssl_argument
    if "options" in params:
        # Sent as the startup parameter libpq would send (Neon routes on `endpoint=`).
        connect_args["server_settings"] = {"options": params["options"]}
    kept = urlencode({k: v for k, v in params.items() if k not in LIBPQ_ONLY})
    url = urlunsplit(("postgresql+asyncpg", parts.netloc, parts.path, kept, ""))
    return DriverURL(url, connect_args)


def redacted(raw: str) -> str:
    """The URL without its password, for log lines and error messages."""
    parts = urlsplit(raw)
    if parts.password is None:
        return raw
    netloc = parts.netloc.replace(f":{parts.password}@", ":***@", 1)
    return urlunsplit((parts.scheme, netloc, parts.path, parts.query, parts.fragment))
