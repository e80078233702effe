"""Request and response bodies, named by role (`…Create`, `…Update`, `…Public`).

Request bodies are strict: a string where a number belongs, a number too large, a NUL byte
or an unknown method is a 422 naming the field.
"""

from __future__ import annotations

import re
import uuid
from datetime import datetime
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit, urlunsplit

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    EmailStr,
    Field,
    StringConstraints,
    computed_field,
    field_validator,
)

from runstate.api.cursors import microseconds
from runstate.auth.passwords import PASSWORD_MAX_LENGTH, password_policy_violation

HTTP_METHODS = ("GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS")
MAX_INTERVAL_SECONDS = 7 * 86_400
MAX_TIMEOUT_MS = 60_000
MAX_CONFIRMATIONS = 20
MAX_URL_LENGTH = 2048


def _no_nul(value: Any) -> Any:
    if isinstance(value, str) and "\x00" in value:
        raise ValueError("must not contain NUL bytes")
    return value


class RequestBody(BaseModel):
    model_config = ConfigDict(strict=True, extra="forbid", str_strip_whitespace=True)

    @field_validator("*", mode="before")
    @classmethod
    def _reject_nul_bytes(cls, value: Any) -> Any:
        return _no_nul(value)


def http_url(value: str) -> str:
    """An absolute http(s) URL with a host; scheme and host lower-cased so duplicates match."""
    try:
        parts = urlsplit(value)
        port = parts.port  # raises ValueError for a port that is not a number in range
    except ValueError as exc:
        raise ValueError(f"is not a valid URL ({exc})") from None
    if port == 0:
        raise ValueError("is not a valid URL (port must be 1-65535)")
    if parts.scheme.lower() not in ("http", "https"):
        raise ValueError("must be an http:// or https:// URL")
    if not parts.hostname:
        raise ValueError("must have a host")
    if parts.username is not None or parts.password is not None:
        raise ValueError("must not carry credentials (user:password@)")
    if any(c.isspace() for c in value):
        raise ValueError("must not contain whitespace")
    host = parts.hostname if ":" not in parts.hostname else f"[{parts.hostname}]"
    netloc = host if port is None else f"{host}:{port}"
    normalised = urlunsplit(
        (parts.scheme.lower(), netloc, parts.path or "/", parts.query, parts.fragment)
    )
    if len(normalised) > MAX_URL_LENGTH:
        raise ValueError(f"must be at most {MAX_URL_LENGTH} characters")
    return normalised


_STATUS_PART = re.compile(r"[1-5][0-9]{2}(-[1-5][0-9]{2})?", re.ASCII)


def expected_status_ranges(value: str) -> str:
    """`200-399`, `200`, or a comma-separated list of both: every code within 100-599."""
    value = value.replace(" ", "")
    for part in value.split(","):
        if not _STATUS_PART.fullmatch(part):
            raise ValueError("must be status codes or ranges within 100-599, e.g. 200-399,418")
        low, _, high = part.partition("-")
        if high and int(low) > int(high):
            raise ValueError(f"range {part} is reversed")
    return value


HttpUrl = Annotated[str, StringConstraints(max_length=MAX_URL_LENGTH), AfterValidator(http_url)]
Name = Annotated[str, StringConstraints(min_length=1, max_length=200)]
Keyword = Annotated[str, StringConstraints(min_length=1, max_length=200)]
ExpectedStatus = Annotated[
    str, StringConstraints(min_length=3, max_length=64), AfterValidator(expected_status_ranges)
]
Method = Literal["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"]
Interval = Annotated[int, Field(ge=1, le=MAX_INTERVAL_SECONDS)]
TimeoutMs = Annotated[int, Field(ge=100, le=MAX_TIMEOUT_MS)]
Confirmations = Annotated[int, Field(ge=1, le=MAX_CONFIRMATIONS)]
Password = Annotated[str, StringConstraints(min_length=1, max_length=PASSWORD_MAX_LENGTH)]


# --- accounts -------------------------------------------------------------------------


def _strong_password(value: str) -> str:
    problem = password_policy_violation(value)
    if problem:
        raise ValueError(problem)
    return value


class SignupRequest(RequestBody):
    email: EmailStr = Field(max_length=320)
    password: Annotated[Password, AfterValidator(_strong_password)]


class SigninRequest(RequestBody):
    email: Annotated[str, StringConstraints(min_length=1, max_length=320)]
    password: Password


class RefreshRequest(RequestBody):
    refresh_token: Annotated[str, StringConstraints(min_length=1, max_length=256)]


class UserPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    email: str
    role: str
    created_at: datetime


class TokenPair(BaseModel):
    access_token: str
    refresh_token: str
    token_type: Literal["bearer"] = "bearer"
    expires_in: int


# --- monitors -------------------------------------------------------------------------


class WebsiteCreate(RequestBody):
    url: HttpUrl
    name: Name | None = None
    interval_seconds: Interval = 60
    timeout_ms: TimeoutMs = 10_000
    method: Method = "GET"
    expected_status: ExpectedStatus = "200-399"
    keyword: Keyword | None = None
    confirmations: Confirmations = 1
    recovery_confirmations: Confirmations = 1
    paused: bool = False


class WebsiteUpdate(RequestBody):
    """Only the fields present are changed; `name` and `keyword` may be set to null."""

    url: HttpUrl | None = None
    name: Name | None = None
    interval_seconds: Interval | None = None
    timeout_ms: TimeoutMs | None = None
    method: Method | None = None
    expected_status: ExpectedStatus | None = None
    keyword: Keyword | None = None
    confirmations: Confirmations | None = None
    recovery_confirmations: Confirmations | None = None
    paused: bool | None = None


NULLABLE_WEBSITE_FIELDS = {"name", "keyword"}


class IncidentPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    website_id: uuid.UUID
    started_at: datetime
    resolved_at: datetime | None
    is_active: bool
    cause: str | None


class WebsitePublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    user_id: uuid.UUID
    url: str
    name: str | None
    interval_seconds: int
    timeout_ms: int
    method: str
    expected_status: str
    keyword: str | None
    confirmations: int
    recovery_confirmations: int
    paused: bool
    current_status: str | None
    last_checked_at: datetime | None
    latest_response_time_ms: int | None
    time_added: datetime


class WebsiteDetail(WebsitePublic):
    active_incident: IncidentPublic | None = None


NEXT_CURSOR = Field(
    default=None,
    description="Pass as `cursor` (with the same filters) for the next page; null at the end.",
)


class WebsitesPublic(BaseModel):
    websites: list[WebsitePublic]
    next_cursor: str | None = NEXT_CURSOR


class CheckPhasesPublic(BaseModel):
    """How long each phase of a check's last request took (ms) and when the certificate
    expires; null where the check did not get that far, or for checks stored before."""

    dns_ms: int | None
    connect_ms: int | None
    tls_ms: int | None
    ttfb_ms: int | None
    cert_expires_at: datetime | None


class CheckPublic(CheckPhasesPublic):
    """One check result. Its `id` is derived, not stored: the check's `created_at` in integer
    microseconds since the Unix epoch, unique per monitor and region (two regions may check
    a monitor in the same microsecond, so `(id, region_id)` is what identifies a check)."""

    model_config = ConfigDict(from_attributes=True)

    website_id: uuid.UUID
    region_id: int
    status: str
    response_time_ms: int | None
    status_code: int | None
    error: str | None
    created_at: datetime

    @computed_field  # type: ignore[prop-decorator]
    @property
    def id(self) -> int:
        return microseconds(self.created_at)


class ChecksPublic(BaseModel):
    checks: list[CheckPublic]
    next_cursor: str | None = NEXT_CURSOR


class ResponseTimePoint(CheckPhasesPublic):
    timestamp: datetime
    response_time_ms: int | None
    status: str
    region_id: int


class ResponseTimesPublic(BaseModel):
    points: list[ResponseTimePoint]


class IncidentsPublic(BaseModel):
    incidents: list[IncidentPublic]
    next_cursor: str | None = NEXT_CURSOR


class NotificationPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    incident_id: uuid.UUID
    channel: str
    recipient: str
    event: str
    delivery_status: str
    attempts: int
    error: str | None
    sent_at: datetime | None


class NotificationsPublic(BaseModel):
    notifications: list[NotificationPublic]
    next_cursor: str | None = NEXT_CURSOR


# --- alert channels -------------------------------------------------------------------


class ChannelCreate(RequestBody):
    type: Literal["webhook", "email"]
    target: Annotated[str, StringConstraints(min_length=1, max_length=2048)]
    notify_on: Literal["DOWN", "RECOVERY", "BOTH"] = "BOTH"
    enabled: bool = True


class ChannelPublic(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: uuid.UUID
    type: str
    target: str
    notify_on: str
    enabled: bool
    disabled_reason: str | None
    created_at: datetime


class ChannelCreated(ChannelPublic):
    """Returned once, at creation: the only time a webhook's signing secret is shown."""

    secret: str | None


class ChannelsPublic(BaseModel):
    channels: list[ChannelPublic]


class Deleted(BaseModel):
    id: uuid.UUID


class Health(BaseModel):
    status: str
    checks: dict[str, str] = Field(default_factory=dict)
