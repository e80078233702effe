"""The entries that flow through the streams (contract §4), as typed objects.

Stream entries are flat maps of strings. Each type here converts to and from that form;
`from_fields` raises `MalformedEntry` for an entry that cannot be understood, which the
consumer sends to the dead-letter stream instead of retrying forever.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import MISSING, dataclass, fields
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any, Self

from runstate.domain.status import Status


class MalformedEntry(ValueError):
    """A stream entry that is missing a field or carries a value of the wrong form."""


class AlertEvent(StrEnum):
    DOWN = "DOWN"
    RECOVERY = "RECOVERY"


def format_time(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def time_from_ms(ms: int) -> datetime:
    return datetime.fromtimestamp(ms / 1000, UTC)


def format_ms(ms: int) -> str:
    return format_time(time_from_ms(ms))


def parse_time(text: str) -> datetime:
    moment = datetime.fromisoformat(text)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _optional_text(raw: str) -> str | None:
    return raw or None


def _flag(raw: str) -> bool:
    if raw not in ("true", "false"):
        raise ValueError(f"{raw!r} is neither true nor false")
    return raw == "true"


# How each field type is read back from its string form (annotations are strings here).
_READERS: dict[str, Callable[[str], Any]] = {
    "str": str,
    "str | None": _optional_text,
    "int": int,
    "datetime": parse_time,
    "uuid.UUID": uuid.UUID,
    "Status": Status,
    "AlertEvent": AlertEvent,
    "bool": _flag,
}


_NO_DEFAULT: Any = MISSING
# (field name, reader, default): a field with a default may be absent, as in an entry
# written before the field existed.
_Schema = tuple[tuple[str, Callable[[str], Any], Any], ...]
_SCHEMAS: dict[type, _Schema] = {}


def _schema(cls: type) -> _Schema:
    """(field name, reader, default) of a stream entry class, worked out once per class."""
    schema = _SCHEMAS.get(cls)
    if schema is None:
        schema = _SCHEMAS[cls] = tuple(
            (f.name, _READERS[str(f.type)], f.default) for f in fields(cls)
        )
    return schema


def _text(value: object) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, datetime):
        return format_time(value)
    return str(value)


class StreamEntry:
    """Mixin: dataclass <-> flat string map."""

    def to_fields(self) -> dict[str, str]:
        return {name: _text(getattr(self, name)) for name, _, _ in _schema(type(self))}

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Self:
        values: dict[str, Any] = {}
        for name, read, default in _schema(cls):
            if name not in raw:
                if default is _NO_DEFAULT:
                    raise MalformedEntry(f"missing field {name}")
                values[name] = default
                continue
            try:
                values[name] = read(raw[name])
            except ValueError as exc:
                raise MalformedEntry(f"{name}: {exc}") from None
        return cls(**values)


@dataclass(frozen=True, slots=True)
class CheckJob(StreamEntry):
    """One due check of one monitor (MONITORING_STREAM)."""

    website_id: uuid.UUID
    url: str
    method: str
    timeout_ms: int
    expected_status: str
    keyword: str | None
    confirmations: int
    recovery_confirmations: int
    interval_seconds: int
    scheduled_at: datetime


@dataclass(frozen=True, slots=True)
class StatusChange(StreamEntry):
    """A confirmed change of a monitor's status (STATUS_CHANGE_STREAM)."""

    event_id: str
    website_id: uuid.UUID
    region_id: int
    prev_status: Status
    current_status: Status
    occurred_at: datetime

    @property
    def alert_event(self) -> AlertEvent:
        return AlertEvent.DOWN if self.current_status is Status.DOWN else AlertEvent.RECOVERY


def status_change_event_id(website_id: uuid.UUID, at_ms: int) -> str:
    """Deterministic: the same confirming check always yields the same event id."""
    return f"{website_id.hex}-{at_ms}"


@dataclass(frozen=True, slots=True)
class Alert(StreamEntry):
    """A status change with its incident, to be delivered (NOTIFICATION_STREAM)."""

    event_id: str
    website_id: uuid.UUID
    region_id: int
    prev_status: Status
    current_status: Status
    occurred_at: datetime
    incident_id: uuid.UUID
    event: AlertEvent
    # Sent after the monitor had already moved on (a change handled out of order, or after
    # an outage): the alert is true of its time, not of now.
    late: bool = False

    @classmethod
    def for_change(
        cls, change: StatusChange, incident_id: uuid.UUID, *, late: bool = False
    ) -> Alert:
        return cls(
            event_id=change.event_id,
            website_id=change.website_id,
            region_id=change.region_id,
            prev_status=change.prev_status,
            current_status=change.current_status,
            occurred_at=change.occurred_at,
            incident_id=incident_id,
            event=change.alert_event,
            late=late,
        )
