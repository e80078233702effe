"""Uptime, daily history, downsampled response times and the uptime list over real HTTP, on
SQLite and PostgreSQL. Rollups, incidents and pauses are written straight into the database,
as the pipeline and the API would have written them."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from runstate.api.history_schemas import MonitorUptime, UptimeListPublic
from runstate.history.latency import LATENCY_COLUMNS, bucket_index
from runstate.storage.tables import DailyRollup, HourlyRollup, WebsitePause
from tests.api import rows
from tests.api.server import ApiServer

HOUR = timedelta(hours=1)
DAY = timedelta(days=1)
WINDOWS = ["24h", "7d", "30d", "90d", "365d"]
POINT_FIELDS = {"timestamp", "response_time_ms", "status", "region_id"}
ROLLUP_POINT_FIELDS = {
    "timestamp",
    "response_time_ms",
    "min_response_time_ms",
    "max_response_time_ms",
    "p95_response_time_ms",
    "checks",
    "up_checks",
}


def _now() -> datetime:
    return datetime.now(UTC)


def _today() -> datetime:
    return _now().replace(hour=0, minute=0, second=0, microsecond=0)


def _this_hour() -> datetime:
    return _now().replace(minute=0, second=0, microsecond=0)


def _get(api: ApiServer, token: str, path: str, **params: Any) -> httpx.Response:
    with api.client(token) as client:
        return client.get(path, params=params)


def _data(answer: httpx.Response) -> Any:
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _invalid(answer: httpx.Response, field: str) -> None:
    assert answer.status_code == 422, answer.text
    assert answer.json()["error"].startswith(f"{field}:"), answer.text


def _monitor(api: ApiServer, token: str, added: datetime) -> str:
    with api.client(token) as client:
        answer = client.post("/websites", json={"url": f"https://{uuid.uuid4().hex}.example/"})
    assert answer.status_code == 201, answer.text
    website_id: str = answer.json()["data"]["id"]
    rows.set_website_state(api, website_id, time_added=added)
    return website_id


def _rollup(
    table: type[HourlyRollup] | type[DailyRollup],
    website_id: str,
    start: datetime,
    up: int,
    down: int = 0,
    times: tuple[int, ...] = (100,),
) -> Any:
    counts = dict.fromkeys(LATENCY_COLUMNS, 0)
    for ms in times:
        counts[LATENCY_COLUMNS[bucket_index(ms)]] += 1
    return table(
        website_id=uuid.UUID(website_id),
        bucket_start=start,
        region_id=1,
        checks=len(times),
        up_checks=len(times),
        up_seconds=up,
        down_seconds=down,
        timed_checks=len(times),
        response_time_sum_ms=sum(times),
        response_time_min_ms=min(times),
        response_time_max_ms=max(times),
        **counts,
    )


def _so_far(start: datetime, length: timedelta) -> int:
    """The seconds the checks of a bucket stand for: up to now, plus one interval ahead (the
    last check stands for the minute after it)."""
    return int(min(length, _now() - start + timedelta(seconds=60)).total_seconds())


def _up_days(website_id: str, days: int) -> list[Any]:
    """Daily rollups, all UP, for the last ``days`` days (today so far included)."""
    starts = [_today() - n * DAY for n in range(days)]
    return [_rollup(DailyRollup, website_id, s, _so_far(s, DAY)) for s in starts]


def _up_hours(website_id: str, hours: int) -> list[Any]:
    starts = [_this_hour() - n * HOUR for n in range(hours)]
    return [_rollup(HourlyRollup, website_id, s, _so_far(s, HOUR)) for s in starts]


def _windows(api: ApiServer, token: str, website_id: str) -> dict[str, dict[str, Any]]:
    data = _data(_get(api, token, f"/websites/{website_id}/uptime"))
    assert [w["window"] for w in data["windows"]] == WINDOWS
    return {w["window"]: w for w in data["windows"]}


@pytest.fixture(scope="module")
def alice(api: ApiServer) -> str:
    return api.new_user()[1]


@pytest.fixture(scope="module")
def bob(api: ApiServer) -> str:
    return api.new_user()[1]


def test_uptime_counts_an_incident_in_each_window_it_overlaps(api: ApiServer, alice: str) -> None:
    website_id = _monitor(api, alice, _today() - 40 * DAY)
    three_days_ago = _today() - 3 * DAY
    days = _up_days(website_id, 41)
    days[3].up_seconds, days[3].down_seconds = 86400 - 3600, 3600
    rows.insert(
        api,
        *days,
        *_up_hours(website_id, 24),
        rows.incident(
            website_id,
            three_days_ago + HOUR,
            resolved_at=three_days_ago + 2 * HOUR,
            is_active=False,
        ),
    )

    windows = _windows(api, alice, website_id)

    assert windows["24h"]["downtime_seconds"] == 0
    assert windows["24h"]["uptime_percent"] == 100.0
    for name in ("7d", "30d", "90d", "365d"):
        assert windows[name]["downtime_seconds"] == 3600
        assert windows[name]["incidents"] == 1
        assert windows[name]["no_data_seconds"] == 0
        assert 99 < windows[name]["uptime_percent"] < 100
    assert windows["7d"]["checks"] == 7
    assert datetime.fromisoformat(windows["7d"]["since"]) == _today() - 6 * DAY
    assert datetime.fromisoformat(windows["24h"]["since"]) == _this_hour() - 23 * HOUR
    # A monitor added 40 days ago: the longer windows count from then.
    assert windows["90d"]["eligible_seconds"] == windows["365d"]["eligible_seconds"]


def test_paused_time_is_reported_apart_and_not_counted(api: ApiServer, alice: str) -> None:
    website_id = _monitor(api, alice, _today() - 10 * DAY)
    paused = _today() - 3 * DAY
    days = [d for d in _up_days(website_id, 10) if d.bucket_start != paused]
    pause = WebsitePause(
        website_id=uuid.UUID(website_id), paused_at=paused, resumed_at=paused + DAY
    )
    rows.insert(api, *days, pause)

    week = _windows(api, alice, website_id)["7d"]

    assert week["paused_seconds"] == 86400
    assert week["no_data_seconds"] == 0
    assert week["uptime_percent"] == 100.0


def test_a_monitor_without_data_has_no_uptime_and_a_gap_is_never_up(
    api: ApiServer, alice: str
) -> None:
    empty = _monitor(api, alice, _today() - 10 * DAY)
    gappy = _monitor(api, alice, _today() - 10 * DAY)
    days = [d for d in _up_days(gappy, 10) if d.bucket_start != _today() - 2 * DAY]
    rows.insert(api, *days)

    nothing = _windows(api, alice, empty)
    gap = _windows(api, alice, gappy)["7d"]

    assert all(w["uptime_percent"] is None for w in nothing.values())
    assert nothing["7d"]["no_data_seconds"] == nothing["7d"]["eligible_seconds"] > 0
    # Less the minute today's last check stands for beyond now (see _so_far).
    assert 86400 - 60 <= gap["no_data_seconds"] <= 86400
    assert gap["uptime_percent"] == 100.0  # of the time with data; the gap is not in it


def test_an_active_incident_is_downtime_up_to_now(api: ApiServer, alice: str) -> None:
    website_id = _monitor(api, alice, _today() - 3 * DAY)
    started = rows.seconds_ago(1800)
    rows.insert(api, *_up_days(website_id, 3), *_up_hours(website_id, 24))
    rows.insert(api, rows.incident(website_id, started))

    day = _windows(api, alice, website_id)["24h"]

    assert 1800 <= day["downtime_seconds"] <= 1800 + 30
    assert day["incidents"] == 1
    assert day["uptime_percent"] < 100


def test_daily_lists_every_day_oldest_first_with_grey_days_null(api: ApiServer, alice: str) -> None:
    website_id = _monitor(api, alice, _today() - 2 * DAY)
    times = (20, 40, 60, 80, 120, 180, 250, 400, 900, 3000)
    first = _today() - 2 * DAY
    rows.insert(
        api,
        _rollup(DailyRollup, website_id, first, 86400 - 3600, 3600, times),
        _rollup(DailyRollup, website_id, _today(), 86400),
        rows.incident(website_id, first + HOUR, resolved_at=first + 2 * HOUR, is_active=False),
    )

    days = _data(_get(api, alice, f"/websites/{website_id}/daily", days=4))["days"]

    assert [d["date"] for d in days] == [
        (_today() - n * DAY).date().isoformat() for n in (3, 2, 1, 0)
    ]
    before, busy, grey, today = days
    assert before["uptime_percent"] is None
    assert before["no_data_seconds"] == 0  # the monitor did not exist yet
    assert busy["downtime_seconds"] == 3600
    assert busy["uptime_percent"] == round(100 * (1 - 3600 / 86400), 4)
    assert busy["checks"] == 10
    assert busy["avg_response_time_ms"] == sum(times) / 10
    assert 900 < busy["p95_response_time_ms"] <= 3000
    assert grey["uptime_percent"] is None
    assert grey["no_data_seconds"] == 86400
    assert grey["avg_response_time_ms"] is None
    assert today["uptime_percent"] == 100.0
    default = _data(_get(api, alice, f"/websites/{website_id}/daily"))["days"]
    assert len(default) == 90


def test_hourly_response_times_are_downsampled_to_at_most_limit_points(
    api: ApiServer, alice: str
) -> None:
    website_id = _monitor(api, alice, _today() - 5 * DAY)
    start = _this_hour() - 47 * HOUR
    rows.insert(
        api,
        *[
            _rollup(HourlyRollup, website_id, start + n * HOUR, 3600, times=(100 + n, 200 + n))
            for n in range(48)
        ],
    )
    path = f"/websites/{website_id}/response-times"

    data = _data(_get(api, alice, path, resolution="hour", since=start.isoformat(), limit=10))

    assert data["resolution"] == "hour"
    assert data["bucket_seconds"] == 5 * 3600
    points = data["points"]
    assert len(points) == 10
    assert set(points[0]) == ROLLUP_POINT_FIELDS
    assert sum(p["checks"] for p in points) == 96
    assert datetime.fromisoformat(points[0]["timestamp"]) == start
    assert points[0]["response_time_ms"] == (sum(range(100, 105)) + sum(range(200, 205))) / 10
    assert points[0]["min_response_time_ms"] == 100
    assert points[-1]["max_response_time_ms"] == 247
    stamps = [p["timestamp"] for p in points]
    assert stamps == sorted(stamps)


def test_daily_response_times_and_auto_picks_by_range(api: ApiServer, alice: str) -> None:
    website_id = _monitor(api, alice, _today() - 200 * DAY)
    rows.insert(
        api,
        *[_rollup(DailyRollup, website_id, _today() - n * DAY, 86400) for n in range(200)],
        *_up_hours(website_id, 24),
        rows.check(website_id, rows.local_region_id(api), rows.seconds_ago(60)),
    )
    path = f"/websites/{website_id}/response-times"

    def resolution(**params: Any) -> str:
        answer: str = _data(_get(api, alice, path, **params))["resolution"]
        return answer

    days = _data(_get(api, alice, path, resolution="day", limit=500))
    assert len(days["points"]) == 90  # the default range of day: 90 days back from now
    assert days["bucket_seconds"] == 86400
    year = _data(_get(api, alice, path, resolution="day", since=(_now() - 365 * DAY).isoformat()))
    assert len(year["points"]) <= 50
    assert sum(p["checks"] for p in year["points"]) == 200
    # Raw only when the range holds no more than `limit` checks (at 60 s: 360 in 6 hours).
    assert resolution(resolution="auto") == "hour"  # 24 h, 1,440 checks, limit 50
    assert resolution(resolution="auto", since=(_now() - 6 * HOUR).isoformat(), limit=400) == "raw"
    assert resolution(resolution="auto", since=(_now() - 10 * DAY).isoformat()) == "hour"
    assert resolution(resolution="auto", since=(_now() - 200 * DAY).isoformat()) == "day"


def test_raw_response_times_stay_as_they_were(api: ApiServer, alice: str) -> None:
    website_id = _monitor(api, alice, _today() - DAY)
    region = rows.local_region_id(api)
    base = rows.seconds_ago(3600)
    rows.insert(
        api,
        *[
            rows.check(website_id, region, base + timedelta(minutes=i), response_time_ms=1000 + i)
            for i in range(60)
        ],
    )
    path = f"/websites/{website_id}/response-times"

    default = _data(_get(api, alice, path))
    raw = _data(_get(api, alice, path, resolution="raw", limit=3))

    assert set(default) == {"points"}
    assert raw["resolution"] == "raw"
    assert len(default["points"]) == 50
    assert all(set(p) >= POINT_FIELDS for p in default["points"])
    assert [p["response_time_ms"] for p in raw["points"]] == [1057, 1058, 1059]


def test_the_uptime_list_shows_the_callers_monitors_page_by_page(api: ApiServer, bob: str) -> None:
    mine = [_monitor(api, bob, _today() - (20 - n) * DAY) for n in range(5)]
    for website_id in mine:
        rows.insert(api, *_up_days(website_id, 10))
    other = _monitor(api, api.new_user()[1], _today() - DAY)

    everything = _data(_get(api, bob, "/uptime", window="7d"))
    seen: list[str] = []
    cursor = None
    while True:
        params = {"window": "7d", "limit": 2, **({"cursor": cursor} if cursor else {})}
        page = _data(_get(api, bob, "/uptime", **params))
        seen += [w["website_id"] for w in page["websites"]]
        cursor = page["next_cursor"]
        if cursor is None:
            break
    admin = _data(_get(api, api.admin_token(), "/uptime"))

    assert [w["website_id"] for w in everything["websites"]] == mine
    assert everything["next_cursor"] is None
    assert everything["window"] == "7d"
    assert seen == mine
    first = everything["websites"][0]
    assert first["uptime_percent"] == 100.0
    assert first["checks"] == 7
    assert set(first) == set(MonitorUptime.model_fields)  # written as JSON by hand
    assert UptimeListPublic.model_validate(everything).websites[0].website_id == uuid.UUID(mine[0])
    assert everything["since"].endswith("Z"), "times as every other answer writes them"
    assert {w["website_id"] for w in admin["websites"]} >= {*mine, other}
    assert admin["window"] == "30d"


@pytest.mark.parametrize("suffix", ["/uptime", "/daily", "/response-times"])
def test_someone_elses_monitor_is_403_and_an_unknown_one_404(
    api: ApiServer, alice: str, bob: str, suffix: str
) -> None:
    alices = _monitor(api, alice, _today())

    assert _get(api, bob, f"/websites/{alices}{suffix}").status_code == 403
    assert _get(api, bob, f"/websites/{uuid.uuid4()}{suffix}").status_code == 404
    assert _get(api, api.admin_token(), f"/websites/{alices}{suffix}").status_code == 200


@pytest.mark.parametrize(
    ("path", "params", "field"),
    [
        ("/uptime", {"window": "1y"}, "window"),
        ("/uptime", {"limit": "0"}, "limit"),
        ("/uptime", {"cursor": "not-a-cursor"}, "cursor"),
        ("{id}/daily", {"days": "0"}, "days"),
        ("{id}/daily", {"days": "366"}, "days"),
        ("{id}/response-times", {"resolution": "minute"}, "resolution"),
        (
            "{id}/response-times",
            {"resolution": "raw", "since": "2026-02-02T00:00:00Z", "until": "2026-02-01"},
            "since",
        ),
        ("{id}/response-times", {"resolution": "hour", "since": "2999-01-01T00:00:00Z"}, "since"),
        ("{id}/response-times", {"resolution": "day", "until": "0001-01-01T00:00:00Z"}, "until"),
        ("{id}/response-times", {"resolution": "day", "limit": "501"}, "limit"),
    ],
)
def test_bad_input_is_422_naming_the_field(
    api: ApiServer, alice: str, path: str, params: dict[str, str], field: str
) -> None:
    website_id = _monitor(api, alice, _today())
    url = path.replace("{id}", f"/websites/{website_id}")
    _invalid(_get(api, alice, url, **params), field)


@pytest.mark.parametrize("resolution", ["auto", "hour", "day"])
@pytest.mark.parametrize(
    ("since", "until"),
    [("0001-01-01T00:00:00Z", None), (None, "9999-12-31T23:59:59Z"), (None, "0001-01-02")],
    ids=["since_year_1", "until_year_9999", "until_year_1"],
)
def test_an_extreme_rollup_range_is_never_a_500(
    api: ApiServer, alice: str, resolution: str, since: str | None, until: str | None
) -> None:
    website_id = _monitor(api, alice, _today() - DAY)
    rows.insert(api, *_up_days(website_id, 2), *_up_hours(website_id, 3))
    params = {"resolution": resolution, "since": since, "until": until}

    answer = _get(
        api,
        alice,
        f"/websites/{website_id}/response-times",
        **{k: v for k, v in params.items() if v is not None},
    )

    assert answer.status_code in (200, 422), answer.text
    if answer.status_code == 200:
        assert len(answer.json()["data"]["points"]) <= 50
