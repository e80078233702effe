"""A public status page's representations, rendered from its data: the HTML page, the Atom
and RSS feeds and summary.json (shaped like Atlassian Statuspage's).

Feeds and summary.json need absolute links, but the address the page is reached at is the
request's, and the rendering is shared by every request: they are rendered with ORIGIN in
place of the scheme and host, which each response replaces with its own (see
status_cache)."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import dataclass
from datetime import datetime
from email.utils import format_datetime
from typing import Any

from markupsafe import Markup, escape

from runstate.web.status_data import (
    BAR_DAYS,
    Group,
    MonitorView,
    Outage,
    PageData,
    PostedIncident,
    worst_status,
)
from runstate.web.status_view import (
    COMPONENT_STATUS,
    INDICATOR_WORDS,
    STATUS_WORDS,
    UPDATE_WORDS,
    Segment,
    bar_segments,
    bar_summary,
    duration_text,
    hhmm,
    indicator,
    iso,
    newest_first,
    percent_text,
    utc,
    when_text,
)
from runstate.web.templating import environment

# Stands for the request's scheme and host in feeds and summary.json (a private-use
# character: only a page's owner could write one, and would only get the reader's origin).
ORIGIN = "\ue000origin\ue000"
FEED_ENTRIES = 100
IMPACT_WORDS = {
    "none": "No impact",
    "minor": "Minor impact",
    "major": "Major impact",
    "critical": "Critical impact",
}
UPTIME_LABELS = {"24h": "24 h", "30d": "30 d", "90d": "90 d"}

_HELPERS: dict[str, Any] = {
    "iso": iso,
    "hhmm": hhmm,
    "utc": utc,
    "when_text": when_text,
    "duration_text": duration_text,
    "status_words": STATUS_WORDS,
    "update_words": UPDATE_WORDS,
    "impact_words": IMPACT_WORDS,
}


# --- the page ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class _GroupBlock:
    name: str
    status: str
    rows: list[Markup]  # each monitor's <li>


def bar_html(segments: list[Segment]) -> str:
    """The bar's segments as markup. Unquoted attributes, for their bytes: every value is
    a class name or a number."""
    out = []
    for s in segments:
        style = f" style=--n:{s.length}" if s.length > 1 else ""
        if s.label is None:
            out.append(f"<i class={s.css}{style}></i>")
        else:
            label = escape(s.label)
            out.append(f"<span class={s.css}{style} tabindex=0><span class=t>{label}</span></span>")
    return "".join(out)


class Rows:
    """Each monitor's row of the page as markup, written here rather than by the template
    (thousands of bar segments cost several times as much in a Jinja loop), and kept by
    what it shows: a new version of a page changes few of its monitors, and the others'
    rows are not written again."""

    MAX = 100_000

    def __init__(self) -> None:
        self._kept: dict[tuple[Any, ...], Markup] = {}

    def row(self, monitor: MonitorView, heading: str) -> Markup:
        bar = monitor.bar
        shown = (
            heading,
            monitor.name,
            monitor.status,
            tuple(bar.kinds) if bar else (),
            tuple(sorted(bar.details.items())) if bar else (),
            bar.dates[0] if bar else None,
            tuple((u.window, percent_text(u.uptime_percent)) for u in monitor.uptime),
        )
        found = self._kept.get(shown)
        if found is None:
            if len(self._kept) >= self.MAX:
                self._kept.clear()
            found = self._kept[shown] = _row_html(monitor, heading)
        return found


def _row_html(monitor: MonitorView, heading: str) -> Markup:
    name, status = escape(monitor.name), monitor.status
    uptime = " · ".join(
        f"{UPTIME_LABELS[u.window]} <b>{percent_text(u.uptime_percent)}</b>" for u in monitor.uptime
    )
    return Markup(  # noqa: S704 - the name and labels escaped; the rest our own words
        f'<li class="m"><div class="mh"><{heading}>{name}</{heading}>'
        f'<span class="s s-{status}">{STATUS_WORDS[status]}</span></div>\n'
        f'<div class="bar" role="group" aria-label="{escape(bar_summary(monitor))}">'
        f"{bar_html(bar_segments(monitor.bar))}</div>\n"
        f'<p class="up">{uptime}</p></li>\n'
    )


def _block(group: Group, rows: Rows) -> _GroupBlock:
    heading = "h4" if group.name else "h3"
    return _GroupBlock(group.name, group.status, [rows.row(m, heading) for m in group.monitors])


def render_html(page: PageData, newest_check: datetime | None, rows: Rows) -> str:
    """The page; ``newest_check`` (the newest check of its monitors) for the stale notice;
    ``rows`` the monitors' rows written before."""
    shown = indicator(page)
    return environment.get_template("status/page.html").render(
        page=page,
        indicator=shown,
        indicator_words=INDICATOR_WORDS[shown],
        groups=[_block(g, rows) for g in page.groups],
        active=newest_first(page.active_incidents),
        past=newest_first(page.past_incidents),
        newest_check=newest_check or page.now,
        bar_days=BAR_DAYS,
        **_HELPERS,
    )


def render_not_found() -> str:
    return environment.get_template("status/not_found.html").render()


# --- feeds -------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Entry:
    id: uuid.UUID
    title: str
    published: datetime
    updated: datetime
    anchor: str
    incident: PostedIncident | None = None
    summary: str = ""


def _posted_entry(incident: PostedIncident) -> _Entry:
    return _Entry(
        incident.id,
        incident.title,
        utc(incident.created_at),
        utc(incident.updated_at),
        f"#incident-{incident.id}",
        incident=incident,
    )


def _outage_entry(outage: Outage) -> _Entry:
    started = utc(outage.started_at)
    if outage.resolved_at is None:
        return _Entry(
            outage.id,
            f"{outage.monitor} is down",
            started,
            started,
            "",
            summary=f"{outage.monitor} has been down since {when_text(started)}.",
        )
    resolved = utc(outage.resolved_at)
    lasted = duration_text((resolved - started).total_seconds())
    return _Entry(
        outage.id,
        f"{outage.monitor} was down for {lasted}",
        started,
        resolved,
        "",
        summary=(
            f"{outage.monitor} was down from {when_text(started)} to {when_text(resolved)}"
            f" ({lasted})."
        ),
    )


def _entries(page: PageData) -> list[_Entry]:
    entries = [_posted_entry(i) for i in page.incidents] + [_outage_entry(o) for o in page.outages]
    entries.sort(key=lambda e: (e.updated, str(e.id)), reverse=True)
    return entries[:FEED_ENTRIES]


def render_feed(page: PageData, kind: str) -> str:
    """The Atom (``kind`` "atom") or RSS 2.0 ("rss") feed: posted incidents with their
    updates, and the monitors' outages, newest first."""
    entries = _entries(page)
    updated = max([utc(page.version_changed_at), *(e.updated for e in entries)])
    feed = environment.get_template(f"feeds/feed.{kind}").render(
        page=page,
        entries=entries,
        updated=updated,
        base=ORIGIN,
        rfc3339=lambda m: utc(m).isoformat(timespec="seconds").replace("+00:00", "Z"),
        rfc822=lambda m: format_datetime(utc(m), usegmt=True),
        **_HELPERS,
    )
    # A control character in a title or an update (names and texts refuse only NUL) is not
    # allowed in XML 1.0 even escaped: one would make the feed unreadable to every reader.
    return _NOT_XML.sub("", feed)


# What XML 1.0 forbids: C0 controls other than tab, newline and return; U+FFFE, U+FFFF.
_NOT_XML = re.compile("[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")


# --- summary.json ------------------------------------------------------------------------------


def _group_id(page: PageData, group: Group) -> str:
    return str(uuid.uuid5(page.id, f"group:{group.name}"))


def _component(
    page: PageData, monitor: MonitorView, position: int, group_id: str | None
) -> dict[str, Any]:
    return {
        "id": str(monitor.id),
        "name": monitor.name,
        "status": COMPONENT_STATUS[monitor.status],
        "created_at": iso(monitor.created_at),
        "updated_at": iso(monitor.status_changed_at or monitor.created_at),
        "position": position,
        "description": None,
        "showcase": True,
        "start_date": utc(monitor.created_at).date().isoformat(),
        "group_id": group_id,
        "page_id": str(page.id),
        "group": False,
        "only_show_if_degraded": False,
    }


def _group_status(statuses: list[str]) -> str:
    """A group's status from its members': all down is a major outage, some a partial one."""
    if statuses and all(s == "major_outage" for s in statuses):
        return "major_outage"
    if "major_outage" in statuses:
        return "partial_outage"
    worst = worst_status(s for s, c in COMPONENT_STATUS.items() if c in statuses and s != "up")
    return COMPONENT_STATUS[worst] if statuses and worst != "up" else "operational"


def _components(page: PageData) -> list[dict[str, Any]]:
    components: list[dict[str, Any]] = []
    position = 0
    for group in page.groups:
        group_id = _group_id(page, group) if group.name else None
        members = []
        for monitor in group.monitors:
            position += 1
            members.append(_component(page, monitor, position, group_id))
        if group_id is not None:
            position += 1
            components.append(
                {
                    "id": group_id,
                    "name": group.name,
                    "status": _group_status([m["status"] for m in members]),
                    "created_at": iso(min(utc(m.created_at) for m in group.monitors)),
                    "updated_at": iso(page.version_changed_at),
                    "position": position,
                    "description": None,
                    "showcase": False,
                    "start_date": None,
                    "group_id": None,
                    "page_id": str(page.id),
                    "group": True,
                    "only_show_if_degraded": False,
                    "components": [m["id"] for m in members],
                }
            )
        components.extend(members)
    return components


def _incident(page: PageData, incident: PostedIncident) -> dict[str, Any]:
    monitoring = [u.created_at for u in incident.updates if u.status == "monitoring"]
    return {
        "id": str(incident.id),
        "name": incident.title,
        "status": incident.status,
        "created_at": iso(incident.created_at),
        "updated_at": iso(incident.updated_at),
        "monitoring_at": iso(max(monitoring, key=utc)) if monitoring else None,
        "resolved_at": iso(incident.resolved_at),
        "impact": incident.impact,
        "shortlink": f"{ORIGIN}/status/{page.slug}#incident-{incident.id}",
        "started_at": iso(incident.created_at),
        "page_id": str(page.id),
        "incident_updates": [
            {
                "id": str(u.id),
                "status": u.status,
                "body": u.body,
                "incident_id": str(incident.id),
                "created_at": iso(u.created_at),
                "updated_at": iso(u.created_at),
                "display_at": iso(u.created_at),
                "affected_components": None,
            }
            for u in incident.updates
        ],
        "components": [],
    }


def summary(page: PageData) -> dict[str, Any]:
    """summary.json as Statuspage shapes it: the page, its components (groups as group
    components listing their members), unresolved incidents and the overall status."""
    shown = indicator(page)
    return {
        "page": {
            "id": str(page.id),
            "name": page.title,
            "url": f"{ORIGIN}/status/{page.slug}",
            "time_zone": "Etc/UTC",
            "updated_at": iso(page.version_changed_at),
        },
        "components": _components(page),
        "incidents": [_incident(page, i) for i in newest_first(page.active_incidents)],
        "scheduled_maintenances": [],
        "status": {"indicator": shown, "description": INDICATOR_WORDS[shown]},
    }


def render_summary(page: PageData) -> str:
    # Not ASCII-escaped: ORIGIN must reach the response as is, to be replaced there.
    return json.dumps(summary(page), separators=(",", ":"), ensure_ascii=False)
