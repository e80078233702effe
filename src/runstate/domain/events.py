"""The entries that flow through the streams (contract §4), as typed objects.

Stream entries are flat maps of strings. Each type here converts to and from that form;
`from_fields` raises `MalformedEntry` for an entry that cannot be understood, which the
consumer sends to the dead-letter stream instead of retrying forever.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import asdict, dataclass, fields
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


def _convert(name: str, kind: Any, raw: str) -> Any:
    try:
        if kind in (int, "int"):
            return int(raw)
        if kind in (datetime, "datetime"):
            return parse_time(raw)
        if kind in (uuid.UUID, "uuid.UUID"):
            return uuid.UUID(raw)
        if kind in (Status, "Status"):
            return Status(raw)
        if kind in (AlertEvent, "AlertEvent"):
            return AlertEvent(raw)
        if kind in ("str | None",):
            return raw or None
        return raw
    except ValueError as exc:
        raise MalformedEntry(f"{name}: {exc}") from None


class StreamEntry:
    """Mixin: dataclass <-> flat string map."""

    def to_fields(self) -> dict[str, str]:
        out: dict[str, str] = {}
        for key, value in asdict(self).items():  # type: ignore[call-overload]
            if value is None:
                out[key] = ""
            elif isinstance(value, datetime):
                out[key] = format_time(value)
            else:
                out[key] = str(value)
        return out

    @classmethod
    def from_fields(cls, raw: Mapping[str, str]) -> Self:
        values: dict[str, Any] = {}
        for field in fields(cls):  # type: ignore[arg-type]
            if field.name not in raw:
                raise MalformedEntry(f"missing field {field.name}")
            values[field.name] = _convert(field.name, field.type, raw[field.name])
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

    @classmethod
    def for_change(cls, change: StatusChange, incident_id: uuid.UUID) -> Alert:
        return cls(
            event_id=change.event_id,
            website_id=change.website_id,
            region_id=change.region_id,
            prev_status=change.prev_status,
            current_status=change.current_status,
            occurred_at=change.occurred_at,
            incident_id=incident_id,
            event=change.alert_event,
        )
