"""Stream entries keep their meaning through their flat string form."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

import pytest

from runstate.domain.events import Alert, AlertEvent, MalformedEntry
from runstate.domain.status import Status


def an_alert(**changes: object) -> Alert:
    fields: dict[str, object] = {
        "event_id": "abc-1",
        "website_id": uuid.uuid4(),
        "region_id": 1,
        "prev_status": Status.UP,
        "current_status": Status.DOWN,
        "occurred_at": datetime(2026, 12, 1, 1, 2, 3, 456_000, tzinfo=UTC),
        "incident_id": uuid.uuid4(),
        "event": AlertEvent.DOWN,
    }
    return Alert(**{**fields, **changes})  # type: ignore[arg-type]


@pytest.mark.parametrize("late", [True, False])
def test_an_alert_survives_its_round_trip_through_the_stream(late: bool) -> None:
    alert = an_alert(late=late)
    assert alert.to_fields()["late"] == ("true" if late else "false")
    assert Alert.from_fields(alert.to_fields()) == alert


def test_an_alert_written_before_the_late_flag_existed_reads_as_not_late() -> None:
    written_earlier = an_alert().to_fields()
    del written_earlier["late"]
    assert Alert.from_fields(written_earlier).late is False


def test_a_late_flag_that_is_not_true_or_false_is_malformed() -> None:
    fields = an_alert().to_fields() | {"late": "yes"}
    with pytest.raises(MalformedEntry, match="late"):
        Alert.from_fields(fields)


def test_a_field_without_a_default_is_still_required() -> None:
    fields = an_alert().to_fields()
    del fields["incident_id"]
    with pytest.raises(MalformedEntry, match="missing field incident_id"):
        Alert.from_fields(fields)
