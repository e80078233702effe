"""The feeds (Atom 1.0 and RSS 2.0, parsed as XML) hold the page's posted incidents with
their updates and its monitors' outages; summary.json has Atlassian Statuspage's shape."""

from __future__ import annotations

import json
import xml.etree.ElementTree as ET
from datetime import UTC, datetime, timedelta

import httpx
import pytest

from tests.api import rows
from tests.api.server import ApiServer
from tests.web.status_public.conftest import Owner

ATOM = "{http://www.w3.org/2005/Atom}"


def seeded_page(status_api: ApiServer, owner: Owner) -> tuple[dict[str, object], list[str]]:
    """A page with two monitors in a group (one down, with an open outage; one up after a
    resolved one), one outside any group, an open incident with two updates and a resolved
    one."""
    down, up, alone = owner.monitor("Checkout"), owner.monitor("Search"), owner.monitor("Blog")
    now = datetime.now(UTC)
    rows.set_website_state(status_api, down, current_status="down", status_changed_at=now)
    rows.set_website_state(status_api, up, current_status="up")
    rows.set_website_state(status_api, alone, current_status="up")
    rows.insert(
        status_api,
        rows.incident(down, now - timedelta(minutes=20)),
        rows.incident(
            up,
            now - timedelta(days=3),
            resolved_at=now - timedelta(days=3, minutes=-42),
            is_active=False,
        ),
    )  # fmt: skip
    page = owner.page([("Shop", [down, up]), ("", [alone])], title="Acme")
    incident = owner.incident(
        page["id"], title="Checkout failing", impact="critical", status="investigating",
        body="Payments time out.",
    )  # fmt: skip
    owner.update(page["id"], incident["id"], "monitoring", "A fix is out.")
    resolved = owner.incident(page["id"], title="Search slow", impact="minor", body="Slow.")
    owner.update(page["id"], resolved["id"], "resolved", "Fast again.")
    return page, [down, up, alone]


def test_the_atom_feed_has_incidents_and_outages(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page, _ = seeded_page(status_api, owner)

    answer = public.get(f"/status/{page['slug']}/feed.atom")

    assert answer.headers["content-type"] == "application/atom+xml; charset=utf-8"
    assert answer.headers["vary"] == "Host"  # its links are made of the request's Host
    feed = ET.fromstring(answer.content)  # noqa: S314
    assert feed.tag == f"{ATOM}feed"
    assert feed.findtext(f"{ATOM}title") == "Acme status"
    assert feed.findtext(f"{ATOM}id") == f"urn:uuid:{page['id']}"
    self_link = feed.find(f"{ATOM}link[@rel='self']")
    assert self_link is not None
    assert self_link.get("href") == f"{status_api.base_url}/status/{page['slug']}/feed.atom"
    entries = {e.findtext(f"{ATOM}title"): e for e in feed.findall(f"{ATOM}entry")}
    assert set(entries) == {
        "Checkout failing",
        "Search slow",
        "Checkout is down",
        "Search was down for 42 min",
    }
    content = entries["Checkout failing"].findtext(f"{ATOM}content") or ""
    assert "A fix is out." in content
    assert "Payments time out." in content
    for entry in entries.values():
        assert (entry.findtext(f"{ATOM}id") or "").startswith("urn:uuid:")
        assert entry.findtext(f"{ATOM}updated")


def test_the_rss_feed_has_the_same_items(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page, _ = seeded_page(status_api, owner)

    answer = public.get(f"/status/{page['slug']}/feed.rss")

    assert answer.headers["content-type"] == "application/rss+xml; charset=utf-8"
    rss = ET.fromstring(answer.content)  # noqa: S314
    assert rss.tag == "rss"
    assert rss.get("version") == "2.0"
    channel = rss.find("channel")
    assert channel is not None
    assert channel.findtext("link") == f"{status_api.base_url}/status/{page['slug']}"
    items = channel.findall("item")
    titles = {item.findtext("title") for item in items}
    assert titles == {
        "Checkout failing",
        "Search slow",
        "Checkout is down",
        "Search was down for 42 min",
    }
    for item in items:
        assert (item.findtext("pubDate") or "").endswith("GMT")
        assert (item.findtext("link") or "").startswith(f"{status_api.base_url}/status/")


def test_summary_json_is_shaped_like_statuspages(
    status_api: ApiServer, owner: Owner, public: httpx.Client
) -> None:
    page, (down, up, _alone) = seeded_page(status_api, owner)

    answer = public.get(f"/status/{page['slug']}/summary.json")

    assert answer.headers["content-type"] == "application/json"
    summary = json.loads(answer.content)
    assert set(summary) == {"page", "components", "incidents", "scheduled_maintenances", "status"}
    assert set(summary["page"]) == {"id", "name", "url", "time_zone", "updated_at"}
    assert summary["page"]["url"] == f"{status_api.base_url}/status/{page['slug']}"
    assert summary["page"]["name"] == "Acme"
    components = {c["name"]: c for c in summary["components"]}
    fields = {
        "id", "name", "status", "created_at", "updated_at", "position", "description",
        "showcase", "start_date", "group_id", "page_id", "group", "only_show_if_degraded",
    }  # fmt: skip
    assert set(components["Checkout"]) == fields
    assert components["Checkout"]["status"] == "major_outage"
    assert components["Search"]["status"] == "operational"
    shop = components["Shop"]
    assert shop["group"] is True
    assert shop["components"] == [down, up]
    assert shop["status"] == "partial_outage"
    assert components["Checkout"]["group_id"] == shop["id"]
    assert components["Blog"]["group_id"] is None
    positions = [c["position"] for c in summary["components"]]
    assert sorted(positions) == list(range(1, len(positions) + 1))
    # Only unresolved incidents, with their updates, newest first.
    assert [i["name"] for i in summary["incidents"]] == ["Checkout failing"]
    incident = summary["incidents"][0]
    assert incident["impact"] == "critical"
    assert incident["status"] == "monitoring"
    assert [u["body"] for u in incident["incident_updates"]] == [
        "A fix is out.",
        "Payments time out.",
    ]
    assert incident["monitoring_at"] is not None
    assert incident["resolved_at"] is None
    assert summary["scheduled_maintenances"] == []
    assert summary["status"] == {"indicator": "critical", "description": "Major System Outage"}


@pytest.mark.parametrize("kind", ["atom", "rss"])
def test_a_control_character_in_an_update_leaves_the_feed_readable(
    owner: Owner, public: httpx.Client, kind: str
) -> None:
    page = owner.page([("", [owner.monitor("API")])], title="Acme")
    owner.incident(page["id"], title="Bell\x07 rings", body="Escape\x1b[31m red\x0b here")

    answer = public.get(f"/status/{page['slug']}/feed.{kind}")

    assert answer.status_code == 200
    ET.fromstring(answer.content)  # noqa: S314  (raises on a character XML forbids)
    assert "Bell rings" in answer.text
    assert "Escape[31m red here" in answer.text
