"""Where one status change of a monitor belongs among its incidents, whatever the order in
which its changes arrive.

An incident is one DOWN -> UP interval: opened by a DOWN change, resolved by the first UP
change after it. Every change is recorded on an incident, a DOWN as its opener and an UP as
its resolver, so the incidents hold all that is known of a monitor's history, and a change
arriving late finds its neighbours there. Two kinds of incident are not yet complete:

- *a recovery awaiting its outage*: an UP that arrived before the DOWN it ends. It is kept
  with no opener, starting and ending at the UP's time; the DOWN completes it.
- *an outage cut short*: a DOWN followed by a later DOWN before its own UP arrived. It ends,
  for now, where the next one starts, with no resolver; its UP resolves it.

So incidents never overlap, only the newest can be active, and each change, wherever it
lands, touches only its two neighbours: the incident starting before it and the one
starting after it. A later DOWN is never merged into an earlier incident: a DOWN inside an
incident means an UP between them has not arrived yet, so the incident is cut at the DOWN,
and the UP that ended it goes to the new one.

`alerts_of` says which alerts a change makes true once recorded: an alert goes out when
both its incident and its change are known, so a DOWN that completes a recovery sends both.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

from runstate.domain.events import Alert, StatusChange
from runstate.domain.status import Status


@dataclass(frozen=True, slots=True)
class Recorded:
    """A change known by its event id and the time of the check that confirmed it."""

    event_id: str
    at: datetime


@dataclass(frozen=True, slots=True)
class Span:
    """An incident as these rules see it."""

    id: uuid.UUID
    started_at: datetime
    opened_by: str | None  # None: a recovery awaiting its outage
    ends_at: datetime | None  # None: active
    resolver: Recorded | None  # None with an end: an outage cut short

    def encloses(self, at: datetime) -> bool:
        """Whether a change at ``at``, after this incident's start, falls within its outage
        (before its end, or it has none yet)."""
        return self.opened_by is not None and (self.ends_at is None or at < self.ends_at)


@dataclass(frozen=True, slots=True)
class Shown:
    """The newest change the monitor shows (`websites.current_status`, `status_changed_at`),
    with its event id. It may be one that no incident records: changes handled before this
    rule existed were recorded only when they opened or resolved an incident."""

    status: Status
    change: Recorded


@dataclass(frozen=True, slots=True)
class DownPlacement:
    """What a DOWN does: ``cut`` ends the incident before it at the DOWN (it no longer has
    a resolver); then either ``complete`` is the recovery awaiting this outage, or a new
    incident opens, resolved by ``resolved_by``, ending at ``ends_at`` (the next DOWN's
    time when there is no resolver), or active when ``ends_at`` is None."""

    cut: uuid.UUID | None = None
    complete: uuid.UUID | None = None
    resolved_by: Recorded | None = None
    ends_at: datetime | None = None


@dataclass(frozen=True, slots=True)
class UpPlacement:
    """What an UP does: it resolves ``resolve`` — whose former resolver, ``displaced``, then
    awaits an outage of its own — or, when ``resolve`` is None, it awaits its outage."""

    resolve: uuid.UUID | None = None
    displaced: Recorded | None = None


def place_down(
    at: datetime, before: Span | None, after: Span | None, shown: Shown | None
) -> DownPlacement:
    """Where a DOWN at ``at`` goes, given the incidents starting just before and just after
    it and the newest change the monitor shows."""
    enclosing = before if before is not None and before.encloses(at) else None
    cut = enclosing.id if enclosing is not None else None
    if enclosing is not None and enclosing.resolver is not None:
        # Its UP came after this DOWN: that UP ends this outage, and the earlier one's UP
        # has not arrived yet.
        up = enclosing.resolver
        return DownPlacement(cut=cut, resolved_by=up, ends_at=up.at)
    if after is not None:
        if after.opened_by is None:
            return DownPlacement(cut=cut, complete=after.id)
        return DownPlacement(cut=cut, ends_at=after.started_at)
    if shown is not None and shown.change.at > at:  # a newer change no incident records
        if shown.status is Status.UP:
            return DownPlacement(cut=cut, resolved_by=shown.change, ends_at=shown.change.at)
        return DownPlacement(cut=cut, ends_at=shown.change.at)
    return DownPlacement(cut=cut)


def place_up(at: datetime, before: Span | None) -> UpPlacement:
    """Where an UP at ``at`` goes, given the incident starting just before it."""
    if before is None or not before.encloses(at):
        return UpPlacement()
    return UpPlacement(resolve=before.id, displaced=before.resolver)


def alerts_of(change: StatusChange, incident: Span, *, late: bool) -> list[Alert]:
    """The alerts ``change``, recorded on ``incident``, makes true, in the order they
    happened: an UP's RECOVERY once its incident has its DOWN; a DOWN's alert, then the
    RECOVERY of its incident when that incident's UP was recorded first (``late``: it was
    not sent then). ``late`` marks the alert of ``change`` itself."""
    if change.current_status is Status.UP:
        if incident.opened_by is None:
            return []  # a recovery awaiting its outage: nobody was told of one yet
        return [Alert.for_change(change, incident.id, late=late)]
    alerts = [Alert.for_change(change, incident.id, late=late)]
    if incident.resolver is not None:
        recovery = StatusChange(
            event_id=incident.resolver.event_id,
            website_id=change.website_id,
            region_id=change.region_id,
            prev_status=Status.DOWN,
            current_status=Status.UP,
            occurred_at=incident.resolver.at,
        )
        alerts.append(Alert.for_change(recovery, incident.id, late=True))
    return alerts
