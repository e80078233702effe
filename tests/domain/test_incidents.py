"""Where a change lands among a monitor's incidents (domain.incidents), on plain values."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

from runstate.domain.incidents import (
    DownPlacement,
    Recorded,
    Shown,
    Span,
    UpPlacement,
    place_down,
    place_up,
)
from runstate.domain.status import Status

T0 = datetime(2026, 1, 1, tzinfo=UTC)


def at(minute: int) -> datetime:
    return T0 + timedelta(minutes=minute)


def mark(minute: int) -> Recorded:
    return Recorded(f"event-{minute}", at(minute))


def incident(start: int, end: int | None = None, *, up: bool = True, down: bool = True) -> Span:
    """An incident from ``start`` to ``end`` (None: active), opened by a DOWN unless
    ``down`` is false (a recovery awaiting its outage), resolved by an UP at ``end`` unless
    ``up`` is false (an outage cut short)."""
    return Span(
        id=uuid.uuid4(),
        started_at=at(start),
        opened_by=f"event-{start}" if down else None,
        ends_at=None if end is None else at(end),
        resolver=mark(end) if end is not None and up else None,
    )


def shown(status: Status, minute: int) -> Shown:
    return Shown(status, mark(minute))


def test_a_down_after_everything_opens_an_active_incident() -> None:
    before = incident(1, 2)
    assert place_down(at(3), before, None, shown(Status.DOWN, 3)) == DownPlacement()


def test_a_down_while_an_incident_is_open_cuts_it_and_opens_the_next() -> None:
    before = incident(1)
    assert place_down(at(3), before, None, shown(Status.DOWN, 3)) == DownPlacement(cut=before.id)


def test_a_down_inside_a_resolved_incident_takes_its_up() -> None:
    before = incident(1, 4)
    assert place_down(at(3), before, None, shown(Status.UP, 4)) == DownPlacement(
        cut=before.id, resolved_by=mark(4), ends_at=at(4)
    )


def test_a_down_before_a_recovery_awaiting_its_outage_completes_it() -> None:
    after = incident(4, 4, down=False)
    assert place_down(at(3), None, after, shown(Status.UP, 4)) == DownPlacement(complete=after.id)


def test_a_down_before_another_down_ends_there_for_now() -> None:
    after = incident(4)
    assert place_down(at(3), None, after, shown(Status.DOWN, 4)) == DownPlacement(ends_at=at(4))


def test_a_down_inside_an_outage_cut_short_cuts_it_again_and_ends_at_the_next_down() -> None:
    before, after = incident(1, 5, up=False), incident(5)
    assert place_down(at(3), before, after, shown(Status.DOWN, 5)) == DownPlacement(
        cut=before.id, ends_at=at(5)
    )


def test_a_down_older_than_an_up_only_the_monitor_shows_ends_at_that_up() -> None:
    assert place_down(at(3), None, None, shown(Status.UP, 5)) == DownPlacement(
        resolved_by=mark(5), ends_at=at(5)
    )


def test_an_up_after_an_open_incident_resolves_it() -> None:
    before = incident(1)
    assert place_up(at(2), before) == UpPlacement(resolve=before.id)


def test_an_up_inside_a_resolved_incident_resolves_it_and_displaces_its_later_up() -> None:
    before = incident(1, 4)
    assert place_up(at(2), before) == UpPlacement(resolve=before.id, displaced=mark(4))


def test_an_up_inside_an_outage_cut_short_resolves_it() -> None:
    before = incident(1, 3, up=False)
    assert place_up(at(2), before) == UpPlacement(resolve=before.id)


def test_an_up_with_no_outage_before_it_awaits_one() -> None:
    assert place_up(at(2), None) == UpPlacement()
    assert place_up(at(5), incident(1, 3)) == UpPlacement()
    assert place_up(at(5), incident(3, 3, down=False)) == UpPlacement()
