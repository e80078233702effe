"""Deleting a monitor or an account removes its history in batches of at most
DELETE_BATCH_ROWS rows, each in a transaction of its own, and everything is gone when the
answer comes: its checks and their hourly and daily rollups too, which have no foreign key.
The statements are watched as the database receives them, on SQLite and on PostgreSQL."""

from __future__ import annotations

import re
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import pytest
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine

from runstate.storage.tables import (
    AlertChannel,
    DailyRollup,
    HourlyRollup,
    Incident,
    NotificationLog,
    RefreshToken,
    User,
    Website,
    WebsiteCheck,
)
from tests.api import rows
from tests.api.conftest import serve_on
from tests.api.server import ApiServer

BATCH = 100  # the least DELETE_BATCH_ROWS allows
_DELETE = re.compile(r"\s*DELETE\s+FROM\s+(\w+)", re.IGNORECASE)
_UPDATE = re.compile(r"\s*UPDATE\s+(\w+)", re.IGNORECASE)
_UNLINKED = ("website_checks", "check_rollups_hourly", "check_rollups_daily")
_HISTORY = ("notification_logs", "incidents", *_UNLINKED)


@pytest.fixture(scope="module", params=["sqlite", "postgres"])
def batch_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    with serve_on(request, tmp_path_factory, request.param, DELETE_BATCH_ROWS=BATCH) as server:
        yield server


@dataclass
class Statements:
    """What every engine of this process sent: ("DELETE", table, rows), ("UPDATE", table,
    rows) and ("COMMIT",)."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def deletes(self, table: str) -> list[int]:
        """The row counts of the DELETE statements on ``table``, in order."""
        return [e[2] for e in self.events if e[0] == "DELETE" and e[1] == table]

    def updates(self, table: str) -> list[int]:
        """The row counts of the UPDATE statements on ``table``, in order."""
        return [e[2] for e in self.events if e[0] == "UPDATE" and e[1] == table]

    def transactions(self) -> list[list[tuple[Any, ...]]]:
        """The statements, split at each COMMIT (the last group, if not committed, too)."""
        groups: list[list[tuple[Any, ...]]] = [[]]
        for entry in self.events:
            if entry == ("COMMIT",):
                groups.append([])
            else:
                groups[-1].append(entry)
        return [g for g in groups if g]

    def assert_each_monitor_paused_on_its_own_before_its_history_goes(self) -> None:
        """Each UPDATE of websites (the pause) is committed on its own, and no monitor's
        history is deleted before a pause that its own DELETE has not yet followed (the
        DELETE of the monitor takes what was written meanwhile in its transaction, and the
        account's, what monitors added meanwhile wrote)."""
        paused = False
        for statements in self.transactions():
            if ("UPDATE", "websites") in (s[:2] for s in statements):
                assert len(statements) == 1, self.events
                paused = True
                continue
            if ("DELETE", "users") in (s[:2] for s in statements):
                continue
            for kind, table, _rows in statements:
                if kind == "DELETE" and table in _HISTORY:
                    assert paused, f"history deleted before the monitor was paused: {self.events}"
            if ("DELETE", "websites") in (s[:2] for s in statements):
                paused = False

    def assert_each_delete_committed_on_its_own(self) -> None:
        """Every DELETE is committed on its own, but for the last step of a monitor's (or an
        account's) deletion: its row, with the checks and rollups written meanwhile."""
        assert self.events[-1] == ("COMMIT",), self.events
        for statements in self.transactions():
            tables = [s[1] for s in statements if s[0] == "DELETE"]
            if len(tables) > 1:
                owners = [t for t in tables if t not in _UNLINKED]
                assert owners in (["websites"], ["users"]), self.events

    def position(self, table: str) -> int:
        """The index of the first DELETE on ``table``."""
        for index, entry in enumerate(self.events):
            if entry[0] == "DELETE" and entry[1] == table:
                return index
        raise AssertionError(f"no DELETE on {table}: {self.events}")


@contextmanager
def watching() -> Iterator[Statements]:
    """Record the statements of every engine while the block runs (the API serves from a
    thread of this process; the test sends nothing meanwhile)."""
    seen = Statements()

    def after_execute(_conn: Connection, cursor: Any, statement: str, *_: Any, **__: Any) -> None:
        if match := _DELETE.match(statement):
            seen.events.append(("DELETE", match.group(1), cursor.rowcount))
        elif match := _UPDATE.match(statement):
            seen.events.append(("UPDATE", match.group(1), cursor.rowcount))

    def on_commit(_conn: Connection) -> None:
        seen.events.append(("COMMIT",))

    event.listen(Engine, "after_cursor_execute", after_execute)
    event.listen(Engine, "commit", on_commit)
    try:
        yield seen
    finally:
        event.remove(Engine, "after_cursor_execute", after_execute)
        event.remove(Engine, "commit", on_commit)


def _monitor_with_history(api: ApiServer, token: str, checks: int, notifications: int) -> str:
    with api.client(token) as client:
        answer = client.post("/websites", json={"url": f"http://93.184.215.14/{uuid.uuid4()}"})
    assert answer.status_code == 201, answer.text
    website_id: str = answer.json()["data"]["id"]
    region = rows.local_region_id(api)
    # One clock reading for every row: ``seconds_ago`` reads the clock afresh, and a second
    # turning over mid-loop would give two checks the same moment (one key).
    now = rows.seconds_ago(0)
    resolved = rows.incident(
        website_id,
        rows.seconds_ago(7200),
        is_active=False,
        resolved_at=rows.seconds_ago(3600),
    )
    active = rows.incident(website_id, rows.seconds_ago(60))
    rows.insert(
        api,
        resolved,
        active,
        *(
            rows.notification(website_id, resolved.id, now - timedelta(seconds=n))
            for n in range(notifications)
        ),
    )
    rows.insert_checks(
        api, *(rows.check(website_id, region, now - timedelta(seconds=n)) for n in range(checks))
    )
    return website_id


def _history(api: ApiServer, website_id: str) -> dict[str, int]:
    key = uuid.UUID(website_id)
    return {
        "checks": rows.count_where(api, WebsiteCheck, website_id=key),
        "hourly": rows.count_where(api, HourlyRollup, website_id=key),
        "daily": rows.count_where(api, DailyRollup, website_id=key),
        "incidents": rows.count_where(api, Incident, website_id=key),
        "notifications": rows.count_where(api, NotificationLog, website_id=key),
        "monitor": rows.count_where(api, Website, id=key),
    }


def test_deleting_a_monitor_removes_its_history_in_batches_each_committed_alone(
    batch_api: ApiServer,
) -> None:
    _, token, _ = batch_api.new_user()
    website_id = _monitor_with_history(batch_api, token, checks=2 * BATCH + 50, notifications=130)
    kept = _monitor_with_history(batch_api, token, checks=10, notifications=1)
    before = _history(batch_api, website_id)
    hourly, daily = before.pop("hourly"), before.pop("daily")
    assert before == {"checks": 250, "incidents": 2, "notifications": 130, "monitor": 1}
    assert hourly in (1, 2)  # 250 seconds of checks: one hour, or two
    assert daily in (1, 2)

    with watching() as statements, batch_api.client(token) as client:
        answer = client.delete(f"/websites/{website_id}")
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"] == {"id": website_id}

    # Gone at once: from the API and from the database.
    with batch_api.client(token) as client:
        assert client.get(f"/websites/{website_id}").status_code == 404
        listed = [w["id"] for w in client.get("/websites").json()["data"]["websites"]]
    assert listed == [kept]
    assert set(_history(batch_api, website_id).values()) == {0}
    assert _history(batch_api, kept)["checks"] == 10
    assert _history(batch_api, kept)["hourly"] >= 1

    # Several statements, none over the batch, each in its own transaction, history first;
    # the last one with the monitor's row finds nothing written meanwhile.
    assert statements.deletes("website_checks") == [BATCH, BATCH, 50, 0]
    assert statements.deletes("check_rollups_hourly") == [hourly, 0]
    assert statements.deletes("check_rollups_daily") == [daily, 0]
    assert statements.deletes("notification_logs") == [BATCH, 30]
    assert statements.deletes("incidents") == [2]
    assert statements.deletes("websites") == [1]
    assert statements.updates("websites") == [1]
    statements.assert_each_delete_committed_on_its_own()
    statements.assert_each_monitor_paused_on_its_own_before_its_history_goes()
    assert statements.position("websites") > statements.position("website_checks")


def test_deleting_an_account_removes_everything_it_owns_in_batches(batch_api: ApiServer) -> None:
    user, token, refresh_token = batch_api.new_user()
    user_id = uuid.UUID(user["id"])
    monitors = [
        _monitor_with_history(batch_api, token, checks=BATCH + 20, notifications=5)
        for _ in range(2)
    ]
    with batch_api.client(token) as client:
        channel = client.post("/channels", json={"type": "email", "target": "me@example.com"})
        assert channel.status_code == 201, channel.text
    _, other_token, _ = batch_api.new_user()
    someone_elses = _monitor_with_history(batch_api, other_token, checks=3, notifications=1)

    with watching() as statements, batch_api.client(batch_api.admin_token()) as admin:
        answer = admin.delete(f"/admin/users/{user_id}")
    assert answer.status_code == 200, answer.text

    for website_id in monitors:
        assert set(_history(batch_api, website_id).values()) == {0}
    assert rows.count_where(batch_api, Website, user_id=user_id) == 0
    assert rows.count_where(batch_api, AlertChannel, user_id=user_id) == 0
    assert rows.count_where(batch_api, RefreshToken, user_id=user_id) == 0
    assert rows.count_where(batch_api, User, id=user_id) == 0
    assert _history(batch_api, someone_elses)["checks"] == 3
    with batch_api.client() as client:
        refused = client.post("/auth/refresh", json={"refresh_token": refresh_token})
        assert refused.status_code == 401
    with batch_api.client(token) as client:
        assert client.get("/me").status_code == 401

    # Each monitor's checks, what it wrote meanwhile, and what the account's monitors added
    # meanwhile wrote.
    assert statements.deletes("website_checks") == [BATCH, 20, 0] * 2 + [0]
    assert statements.deletes("websites") == [1, 1]
    assert statements.updates("websites") == [1, 1]
    statements.assert_each_monitor_paused_on_its_own_before_its_history_goes()
    assert statements.deletes("refresh_tokens") == [1]
    assert statements.deletes("alert_channels") == [1]
    assert statements.deletes("users") == [1]
    statements.assert_each_delete_committed_on_its_own()
    assert statements.position("refresh_tokens") < statements.position("website_checks")
    assert statements.position("users") == max(
        i for i, e in enumerate(statements.events) if e[0] == "DELETE"
    )


def test_deleting_an_unknown_account_is_404_and_deletes_nothing(batch_api: ApiServer) -> None:
    with watching() as statements, batch_api.client(batch_api.admin_token()) as admin:
        answer = admin.delete(f"/admin/users/{uuid.uuid4()}")
    assert answer.status_code == 404, answer.text
    assert statements.events == []


def test_a_monitor_whose_deletion_was_cut_short_is_left_paused_not_live(
    batch_api: ApiServer,
) -> None:
    """Its open incident may be gone: checked on, its next UP would resolve nothing."""
    _, token, _ = batch_api.new_user()
    website_id = _monitor_with_history(batch_api, token, checks=10, notifications=1)

    def database_gone(_conn: Connection, _cursor: Any, statement: str, *_: Any) -> None:
        if (match := _DELETE.match(statement)) and match.group(1) == "website_checks":
            raise ConnectionResetError("the database went away")

    event.listen(Engine, "before_cursor_execute", database_gone)
    try:
        with batch_api.client(token) as client:
            cut_short = client.delete(f"/websites/{website_id}")
    finally:
        event.remove(Engine, "before_cursor_execute", database_gone)
    assert cut_short.status_code >= 500, cut_short.text
    assert _history(batch_api, website_id)["incidents"] == 0
    with batch_api.client(token) as client:
        left = client.get(f"/websites/{website_id}")
        assert left.status_code == 200, left.text
        assert left.json()["data"]["paused"] is True
        # Deleting it again finishes the job.
        assert client.delete(f"/websites/{website_id}").status_code == 200
    assert set(_history(batch_api, website_id).values()) == {0}
