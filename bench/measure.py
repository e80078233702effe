"""What the harness measures and how: percentiles, the workers' Prometheus histograms, the
check grid (lateness and missed checks from the rows in `website_checks`), and the
incidents as the harness sees them open and close.
"""

from __future__ import annotations

import asyncio
import contextlib
import heapq
import math
import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import aiohttp
from prometheus_client.parser import text_string_to_metric_families

from bench.store import IncidentRow, Store, StoreUnavailable
from runstate.pipeline.schedule import phase_ms

# --- percentiles -----------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """The q-th percentile (0..100) with linear interpolation; None for no values."""
    if not values:
        return None
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low, high = math.floor(rank), math.ceil(rank)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


def nearest_rank(values: Sequence[float], fraction: float) -> float:
    """The value at ``fraction`` (0..1) of the ordered values, by nearest rank (a value that
    was measured, never one interpolated between two); NaN for no values."""
    if not values:
        return math.nan
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(fraction * len(ordered)) - 1))]


def distribution(values: Sequence[float]) -> dict[str, float | int | None]:
    return {
        "n": len(values),
        "p50": percentile(values, 50),
        "p99": percentile(values, 99),
        "max": max(values) if values else None,
    }


# --- Prometheus ------------------------------------------------------------------------

Scrape = dict[str, list[tuple[str, dict[str, str], float]]]


async def scrape(session: aiohttp.ClientSession, port: int) -> Scrape:
    """Every sample of a process's /metrics, by metric family name."""
    try:
        async with session.get(f"http://127.0.0.1:{port}/metrics") as answer:
            text = await answer.text()
    except aiohttp.ClientError:
        return {}
    families: Scrape = {}
    for family in text_string_to_metric_families(text):
        families[family.name] = [(s.name, s.labels, s.value) for s in family.samples]
    return families


def counter(scrapes: Iterable[Scrape], family: str) -> float:
    """A counter (or gauge) summed over its labels and over processes."""
    return sum(
        value
        for s in scrapes
        for name, _, value in s.get(family, [])
        if not name.endswith("_created")
    )


def buckets(scrapes: Iterable[Scrape], family: str) -> dict[float, float]:
    """A histogram's cumulative buckets (upper bound -> count), summed over processes."""
    merged: dict[float, float] = {}
    for s in scrapes:
        for name, labels, value in s.get(family, []):
            if name.endswith("_bucket"):
                bound = float(labels["le"])
                merged[bound] = merged.get(bound, 0.0) + value
    return merged


def bucket_delta(after: dict[float, float], before: dict[float, float]) -> dict[float, float]:
    return {bound: count - before.get(bound, 0.0) for bound, count in after.items()}


def bucket_quantile(cumulative: dict[float, float], q: float) -> float | None:
    """Prometheus' histogram_quantile: linear within the bucket that holds the rank."""
    bounds = sorted(cumulative)
    if not bounds or cumulative[bounds[-1]] <= 0:
        return None
    rank = q * cumulative[bounds[-1]]
    lower, below = 0.0, 0.0
    for bound in bounds:
        count = cumulative[bound]
        if count >= rank:
            if math.isinf(bound):
                return lower  # the highest finite bound, as Prometheus answers
            inside = count - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0.0)
        lower, below = bound, count
    return lower


# --- what the stores did -----------------------------------------------------------------


async def redis_calls(redis: Any) -> dict[str, int]:
    """Calls per command since Redis started (INFO commandstats; the whole server)."""
    stats = await redis.info("commandstats")
    return {
        name.removeprefix("cmdstat_"): int(value["calls"])
        for name, value in stats.items()
        if isinstance(value, dict) and "calls" in value
    }


def per_thousand(
    before: dict[str, int], after: dict[str, int], checks: int, top: int = 10
) -> dict[str, float]:
    """How many of each counter per 1,000 checks between two readings, largest first."""
    if not checks:
        return {}
    deltas = {k: after[k] - before.get(k, 0) for k in after}
    ranked = sorted(((v, k) for k, v in deltas.items() if v > 0), reverse=True)[:top]
    return {k: round(v * 1000 / checks, 1) for v, k in ranked}


# --- the check grid --------------------------------------------------------------------


@dataclass
class GridResult:
    rows_in_window: int
    lateness_ms: list[float]
    expected_slots: int
    covered_slots: int
    duplicate_rows: int
    latest: list[dict[str, Any]] = field(default_factory=list)  # the latest starts, for a look

    @property
    def missed(self) -> int:
        return self.expected_slots - self.covered_slots


def slot_range(phase: int, interval_ms: int, start_ms: float, end_ms: float) -> range:
    """The slots k whose due time `phase + k * interval` lies in [start_ms, end_ms)."""
    first = math.ceil((start_ms - phase) / interval_ms)
    last = math.ceil((end_ms - phase) / interval_ms) - 1
    return range(first, last + 1)


def grid_analysis(
    rows: Iterable[tuple[uuid.UUID, datetime, int | None]],
    monitors: Sequence[uuid.UUID],
    interval_seconds: int,
    window: tuple[float, float],
) -> GridResult:
    """Lateness and missed checks from the check rows, on the scheduler's own grid.

    A row's start is `created_at - response_time_ms` (created_at is when the check ended);
    its slot is the last grid point at or before that start, so its lateness is below one
    interval: a check later than that counts for a later slot, and its own slot is missed.
    Lateness covers the rows that started in the window; missed slots are those due in
    [window start, window end - interval) — every one had a whole interval to run — with
    no row.
    """
    interval_ms = interval_seconds * 1000
    w0_ms, w1_ms = window[0] * 1000, window[1] * 1000
    phases = {m: phase_ms(m, interval_ms) for m in monitors}
    expected = {
        m: slot_range(p, interval_ms, w0_ms, w1_ms - interval_ms) for m, p in phases.items()
    }
    lateness: list[float] = []
    worst: list[tuple[float, uuid.UUID, float]] = []
    covered: set[tuple[uuid.UUID, int]] = set()
    in_window = duplicates = 0
    for website_id, created_at, response_time_ms in rows:
        phase = phases.get(website_id)
        if phase is None:
            continue
        start = created_at.timestamp() * 1000 - (response_time_ms or 0)
        # +1 ms: response_time_ms is rounded, so the estimate may fall up to 0.5 ms before
        # the true start, which is never before its due time.
        slot = math.floor((start + 1 - phase) / interval_ms)
        if w0_ms <= start < w1_ms:
            in_window += 1
            late = max(start - (phase + slot * interval_ms), 0.0)
            lateness.append(late)
            if late > 1000:
                worst.append((late, website_id, start))
        if slot in expected[website_id]:
            key = (website_id, slot)
            duplicates += key in covered
            covered.add(key)
    return GridResult(
        rows_in_window=in_window,
        lateness_ms=lateness,
        expected_slots=sum(len(r) for r in expected.values()),
        covered_slots=len(covered),
        duplicate_rows=duplicates,
        latest=[
            {
                "website_id": str(website_id),
                "started": datetime.fromtimestamp(start / 1000, UTC).isoformat(),
                "lateness_ms": round(late, 1),
            }
            for late, website_id, start in heapq.nlargest(5, worst)
        ],
    )


# --- incidents as the harness sees them ------------------------------------------------


@dataclass
class SeenIncident:
    website_id: uuid.UUID
    started_at: float
    seen_open: float
    resolved_at: float | None = None
    seen_resolved: float | None = None


@dataclass
class IncidentWatcher:
    """Notes when each incident was first seen open and first seen resolved (the database
    keeps no creation time of its own): at once when the store notifies (PostgreSQL's
    trigger), and, as a safety net or on its own (SQLite), by polling `incidents` every
    `period` seconds."""

    store: Store
    since: datetime
    period: float = 0.1
    seen: dict[uuid.UUID, SeenIncident] = field(default_factory=dict)
    polls: int = 0
    errors: int = 0
    by_notify: int = 0
    by_poll: int = 0

    async def run(self, stop: asyncio.Event) -> None:
        async with self.store.incidents(self._notified) as reader:
            while True:
                stopping = stop.is_set()
                try:
                    rows = await reader.incidents_since(self.since)
                except StoreUnavailable:
                    self.errors += 1  # the server restarted under us: the next poll reconnects
                else:
                    self._polled(rows)
                if stopping:
                    break
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), self.period)

    def _notified(self, row: IncidentRow) -> None:
        self._saw(row, time.time())
        self.by_notify += 1

    def _polled(self, rows: list[IncidentRow]) -> None:
        now = time.time()
        self.polls += 1
        for row in rows:
            self.by_poll += self._saw(row, now)

    def _saw(self, row: IncidentRow, now: float) -> bool:
        incident_id, website_id, started_at, resolved_at = row
        seen = self.seen.get(incident_id)
        new = False
        if seen is None:
            self.seen[incident_id] = seen = SeenIncident(website_id, started_at, now)
            new = True
        if resolved_at is not None and seen.seen_resolved is None:
            seen.resolved_at, seen.seen_resolved = resolved_at, now
            new = True
        return new


@dataclass
class Flip:
    website_id: uuid.UUID
    down_at: float
    up_at: float | None = None


def _first_arrivals(arrivals: list[dict[str, Any]]) -> dict[tuple[str, str], float]:
    first: dict[tuple[str, str], float] = {}
    for a in arrivals:
        key = (str(a["incident_id"]), str(a["event"]))
        first[key] = min(first.get(key, a["at"]), a["at"])
    return first


def latencies(
    flips: list[Flip],
    watcher: IncidentWatcher,
    arrivals: list[dict[str, Any]],
    healthy: set[uuid.UUID] | None = None,
) -> dict[str, Any]:
    """Detection (flip down -> incident seen open), the confirming check (flip down ->
    `started_at`), recovery (flip up -> seen resolved), alert latency (seen open or resolved
    -> webhook received) and end to end (flip -> webhook), in milliseconds. Incidents on
    ``healthy`` monitors (by default: every monitor never flipped) are spurious; those on
    the others, neither flipped nor healthy (the failure mix), are counted apart."""
    by_site: dict[uuid.UUID, list[tuple[uuid.UUID, SeenIncident]]] = {}
    for incident_id, seen in watcher.seen.items():
        by_site.setdefault(seen.website_id, []).append((incident_id, seen))
    first = _first_arrivals(arrivals)
    out: dict[str, list[float]] = {
        k: [] for k in ("detection", "confirming_check", "recovery", "alert_down")
    }
    out.update(alert_recovery=[], end_to_end=[])
    undetected: list[str] = []
    unrecovered = 0
    flipped = {f.website_id for f in flips}
    for flip in flips:
        candidates = [
            (i, s) for i, s in by_site.get(flip.website_id, []) if s.started_at >= flip.down_at
        ]
        if not candidates:
            undetected.append(str(flip.website_id))
            continue
        incident_id, seen = min(candidates, key=lambda pair: pair[1].started_at)
        out["detection"].append((seen.seen_open - flip.down_at) * 1000)
        out["confirming_check"].append((seen.started_at - flip.down_at) * 1000)
        down_alert = first.get((str(incident_id), "DOWN"))
        if down_alert is not None:
            out["alert_down"].append((down_alert - seen.seen_open) * 1000)
            out["end_to_end"].append((down_alert - flip.down_at) * 1000)
        if flip.up_at is None:
            continue
        if seen.seen_resolved is None:
            unrecovered += 1
            continue
        out["recovery"].append((seen.seen_resolved - flip.up_at) * 1000)
        up_alert = first.get((str(incident_id), "RECOVERY"))
        if up_alert is not None:
            out["alert_recovery"].append((up_alert - seen.seen_resolved) * 1000)
    result: dict[str, Any] = {name: distribution(values) for name, values in out.items()}
    result["flips"] = len(flips)
    result["undetected"] = len(undetected)
    result["undetected_examples"] = undetected[:10]
    result["unrecovered"] = unrecovered

    def spurious(website_id: uuid.UUID) -> bool:
        return website_id in healthy if healthy is not None else website_id not in flipped

    seen_on = [s.website_id for s in watcher.seen.values()]
    result["spurious_incidents"] = sum(1 for m in seen_on if spurious(m))
    result["incidents_on_failing_targets"] = sum(
        1 for m in seen_on if m not in flipped and not spurious(m)
    )
    result["webhooks_received"] = len(arrivals)
    result["webhooks_verified"] = sum(1 for a in arrivals if a.get("verified"))
    result["incident_polls"] = watcher.polls
    result["incident_notifications"] = watcher.store.notifies  # or the poll alone
    result["incident_events_seen_by_notify"] = watcher.by_notify
    result["incident_events_seen_by_poll_only"] = watcher.by_poll
    return result
