"""The status page API on a real server, on SQLite and on PostgreSQL: pages with their
monitors in groups, incidents with a timeline, bad input named by field (never a 500),
other accounts' pages invisible, and the version moving with every change a page shows."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from runstate.storage.tables import (
    StatusPage,
    StatusPageIncident,
    StatusPageIncidentUpdate,
    StatusPageMonitor,
)
from tests.api import rows
from tests.api.conftest import serve_on
from tests.api.server import ApiServer


class Account:
    def __init__(self, api: ApiServer, token: str) -> None:
        self.client = api.client(token)

    def monitor(self, name: str = "site") -> str:
        url = f"https://{uuid.uuid4().hex[:10]}.example.com/"
        answer = self.client.post("/websites", json={"url": url, "name": name})
        assert answer.status_code == 201, answer.text
        return str(answer.json()["data"]["id"])

    def page(self, **body: Any) -> dict[str, Any]:
        body.setdefault("slug", f"page-{uuid.uuid4().hex[:10]}")
        body.setdefault("title", "Acme status")
        answer = self.client.post("/status-pages", json=body)
        assert answer.status_code == 201, answer.text
        return dict(answer.json()["data"])

    def version(self, page_id: str) -> int:
        answer = self.client.get(f"/status-pages/{page_id}")
        assert answer.status_code == 200, answer.text
        return int(answer.json()["data"]["version"])


@pytest.fixture
def account(api: ApiServer) -> Iterator[Account]:
    _, token, _ = api.new_user()
    owner = Account(api, token)
    yield owner
    owner.client.close()


@pytest.fixture
def other(api: ApiServer) -> Iterator[Account]:
    _, token, _ = api.new_user()
    someone = Account(api, token)
    yield someone
    someone.client.close()


def assert_refused(answer: httpx.Response, status: int, field: str) -> None:
    assert answer.status_code == status, answer.text
    body = answer.json()
    assert body["success"] is False
    assert body["error"].startswith(f"{field}: "), body["error"]


def test_a_page_is_created_read_listed_changed_and_deleted(account: Account) -> None:
    first, second = account.monitor("api"), account.monitor("web")
    page = account.page(slug="Acme-Cloud", title=" Acme ", website_ids=[second, first])

    assert page["slug"] == "acme-cloud"  # trimmed and lowercased
    assert page["title"] == "Acme"
    assert page["public"] is True
    assert page["description"] is None
    assert page["groups"] == [{"name": "", "website_ids": [second, first]}]
    assert page["version"] == 1
    assert account.client.get(f"/status-pages/{page['id']}").json()["data"] == page
    listed = account.client.get("/status-pages").json()["data"]
    assert [p["id"] for p in listed["status_pages"]] == [page["id"]]
    assert listed["next_cursor"] is None

    changed = account.client.patch(
        f"/status-pages/{page['id']}",
        json={"title": "Acme Cloud", "public": False, "description": "All our services"},
    )
    assert changed.status_code == 200, changed.text
    data = changed.json()["data"]
    assert (data["title"], data["public"], data["description"]) == (
        "Acme Cloud",
        False,
        "All our services",
    )
    assert data["groups"] == page["groups"]  # monitors not given: kept
    assert data["version"] == 2
    assert data["version_changed_at"] > page["version_changed_at"]

    gone = account.client.delete(f"/status-pages/{page['id']}")
    assert gone.status_code == 200, gone.text
    assert account.client.get(f"/status-pages/{page['id']}").status_code == 404
    assert account.client.get("/status-pages").json()["data"]["status_pages"] == []


def test_groups_keep_their_names_and_order_and_replace_every_monitor(
    api: ApiServer, account: Account
) -> None:
    a, b, c = account.monitor("a"), account.monitor("b"), account.monitor("c")
    page = account.page(
        groups=[{"name": "Core", "website_ids": [b, a]}, {"name": "Edge", "website_ids": [c]}]
    )
    assert page["groups"] == [
        {"name": "Core", "website_ids": [b, a]},
        {"name": "Edge", "website_ids": [c]},
    ]

    moved = account.client.patch(f"/status-pages/{page['id']}", json={"website_ids": [c]})
    assert moved.status_code == 200, moved.text
    assert moved.json()["data"]["groups"] == [{"name": "", "website_ids": [c]}]
    assert rows.count_where(api, StatusPageMonitor, status_page_id=uuid.UUID(page["id"])) == 1


def test_pages_are_listed_a_page_at_a_time_with_an_opaque_cursor(account: Account) -> None:
    made = [account.page()["id"] for _ in range(3)]
    seen: list[str] = []
    cursor = None
    while True:
        params: dict[str, Any] = {"limit": 2} | ({"cursor": cursor} if cursor else {})
        answer = account.client.get("/status-pages", params=params).json()["data"]
        seen += [p["id"] for p in answer["status_pages"]]
        cursor = answer["next_cursor"]
        if cursor is None:
            break
    assert seen == made
    assert_refused(
        account.client.get("/status-pages", params={"cursor": "nonsense"}), 422, "cursor"
    )


@pytest.mark.parametrize(
    ("slug", "problem"),
    [
        ("ab", "3 to 64"),
        ("a" * 65, "64"),
        ("acme_cloud", "lowercase letters"),
        ("acme--cloud", "single hyphens"),
        ("-acme", "single hyphens"),
        ("api", "reserved"),
        ("static", "reserved"),
    ],
)
def test_a_bad_slug_is_a_422_naming_the_slug(account: Account, slug: str, problem: str) -> None:
    answer = account.client.post("/status-pages", json={"slug": slug, "title": "x"})
    assert_refused(answer, 422, "slug")
    assert problem in answer.json()["error"]


def test_a_slug_taken_by_any_account_is_a_409_naming_the_slug(
    account: Account, other: Account
) -> None:
    page = account.page()
    taken = other.client.post("/status-pages", json={"slug": page["slug"], "title": "mine"})
    assert_refused(taken, 409, "slug")
    mine = other.page()
    renamed = other.client.patch(f"/status-pages/{mine['id']}", json={"slug": page["slug"]})
    assert_refused(renamed, 409, "slug")
    same = other.client.patch(f"/status-pages/{mine['id']}", json={"slug": mine["slug"]})
    assert same.status_code == 200, same.text  # its own slug is no clash


def test_another_accounts_monitor_or_an_unknown_one_is_a_422_naming_website_ids(
    account: Account, other: Account
) -> None:
    theirs = other.monitor()
    for website_ids in ([theirs], [str(uuid.uuid4())]):
        answer = account.client.post(
            "/status-pages", json={"slug": "some-page", "title": "x", "website_ids": website_ids}
        )
        assert_refused(answer, 422, "website_ids")
        assert website_ids[0] in answer.json()["error"]
    page = account.page()
    grouped = account.client.patch(
        f"/status-pages/{page['id']}", json={"groups": [{"name": "G", "website_ids": [theirs]}]}
    )
    assert_refused(grouped, 422, "website_ids")


def test_an_admins_page_may_show_any_accounts_monitor(api: ApiServer, other: Account) -> None:
    admin = Account(api, api.admin_token())
    page = admin.page(website_ids=[other.monitor()])
    assert len(page["groups"][0]["website_ids"]) == 1
    admin.client.delete(f"/status-pages/{page['id']}")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"slug": "fine-slug"}, "title"),
        ({"slug": "fine-slug", "title": "   "}, "title"),
        ({"slug": "fine-slug", "title": "x" * 201}, "title"),
        ({"slug": "fine-slug", "title": "x", "website_ids": ["not-an-id"]}, "website_ids.0"),
        ({"slug": "fine-slug", "title": "x", "website_ids": [], "groups": []}, "body"),
        ({"slug": "fine-slug", "title": "x", "public": "yes"}, "public"),
        ({"slug": "fine-slug", "title": "x", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_page_body_is_a_422_naming_the_field(
    account: Account, body: dict[str, Any], field: str
) -> None:
    assert_refused(account.client.post("/status-pages", json=body), 422, field)


def test_the_same_monitor_twice_or_a_group_twice_is_a_422(account: Account) -> None:
    a = account.monitor()
    twice = account.client.post(
        "/status-pages", json={"slug": "twice-page", "title": "x", "website_ids": [a, a]}
    )
    assert_refused(twice, 422, "website_ids")
    groups = [{"name": "G", "website_ids": []}, {"name": " G ", "website_ids": [a]}]
    named_twice = account.client.post(
        "/status-pages", json={"slug": "twice-page", "title": "x", "groups": groups}
    )
    assert_refused(named_twice, 422, "groups")


def test_another_accounts_page_is_a_404_whatever_is_asked(
    api: ApiServer, account: Account, other: Account
) -> None:
    page = account.page()
    incident = account.client.post(
        f"/status-pages/{page['id']}/incidents", json={"title": "Slow", "body": "Looking"}
    ).json()["data"]
    base = f"/status-pages/{page['id']}"
    for answer in (
        other.client.get(base),
        other.client.patch(base, json={"title": "mine now"}),
        other.client.delete(base),
        other.client.get(f"{base}/incidents"),
        other.client.post(f"{base}/incidents", json={"title": "x", "body": "y"}),
        other.client.post(
            f"{base}/incidents/{incident['id']}/updates", json={"status": "resolved", "body": "x"}
        ),
        other.client.delete(f"{base}/incidents/{incident['id']}"),
    ):
        assert answer.status_code == 404, answer.text
        assert answer.json()["error"] == "no such status page"
    assert other.client.get("/status-pages").json()["data"]["status_pages"] == []
    assert account.version(page["id"]) == 2  # the incident's bump only: nothing changed
    admin = api.client(api.admin_token())
    assert admin.get(base).status_code == 200
    listed = admin.get("/status-pages", params={"limit": 500}).json()["data"]["status_pages"]
    assert page["id"] in [p["id"] for p in listed]


def test_an_incident_keeps_a_timeline_resolves_and_reopens(account: Account) -> None:
    page = account.page()
    base = f"/status-pages/{page['id']}/incidents"
    opened = account.client.post(
        base,
        json={"title": "API errors", "impact": "major", "status": "investigating", "body": "On it"},
    )
    assert opened.status_code == 201, opened.text
    incident = opened.json()["data"]
    assert (incident["impact"], incident["status"], incident["resolved_at"]) == (
        "major",
        "investigating",
        None,
    )
    assert [(u["status"], u["body"]) for u in incident["updates"]] == [("investigating", "On it")]
    assert account.version(page["id"]) == 2

    updates = f"{base}/{incident['id']}/updates"
    resolved = account.client.post(updates, json={"status": "resolved", "body": "Fixed"})
    assert resolved.status_code == 201, resolved.text
    assert resolved.json()["data"]["status"] == "resolved"
    assert resolved.json()["data"]["resolved_at"] is not None
    assert account.version(page["id"]) == 3

    reopened = account.client.post(updates, json={"status": "monitoring", "body": "Again"})
    data = reopened.json()["data"]
    assert (data["status"], data["resolved_at"]) == ("monitoring", None)
    assert [u["status"] for u in data["updates"]] == ["investigating", "resolved", "monitoring"]
    assert account.version(page["id"]) == 4
    assert account.client.get(f"{base}/{incident['id']}").json()["data"] == data

    assert account.client.delete(f"{base}/{incident['id']}").status_code == 200
    assert account.client.get(f"{base}/{incident['id']}").status_code == 404
    assert account.version(page["id"]) == 5


def test_incidents_are_listed_newest_first_a_page_at_a_time(account: Account) -> None:
    page = account.page()
    base = f"/status-pages/{page['id']}/incidents"
    made = [
        account.client.post(base, json={"title": f"#{n}", "body": "x"}).json()["data"]["id"]
        for n in range(3)
    ]
    first = account.client.get(base, params={"limit": 2}).json()["data"]
    rest = account.client.get(base, params={"limit": 2, "cursor": first["next_cursor"]}).json()
    listed = [i["id"] for i in first["incidents"]] + [i["id"] for i in rest["data"]["incidents"]]
    assert listed == made[::-1]
    assert rest["data"]["next_cursor"] is None
    assert len(first["incidents"][0]["updates"]) == 1


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"title": "x", "body": "y", "impact": "huge"}, "impact"),
        ({"title": "x", "body": "y", "status": "fixed"}, "status"),
        ({"title": "x", "body": " "}, "body"),
        ({"title": "", "body": "y"}, "title"),
    ],
)
def test_a_bad_incident_is_a_422_naming_the_field(
    account: Account, body: dict[str, Any], field: str
) -> None:
    page = account.page()
    answer = account.client.post(f"/status-pages/{page['id']}/incidents", json=body)
    assert_refused(answer, 422, field)
    assert account.version(page["id"]) == 1


def test_a_bad_update_is_a_422_and_an_unknown_incident_a_404(account: Account) -> None:
    page = account.page()
    base = f"/status-pages/{page['id']}/incidents"
    incident = account.client.post(base, json={"title": "x", "body": "y"}).json()["data"]
    bad = account.client.post(
        f"{base}/{incident['id']}/updates", json={"status": "done", "body": "x"}
    )
    assert_refused(bad, 422, "status")
    unknown = account.client.post(
        f"{base}/{uuid.uuid4()}/updates", json={"status": "resolved", "body": "x"}
    )
    assert unknown.status_code == 404, unknown.text
    elsewhere = account.page()
    moved = account.client.get(f"/status-pages/{elsewhere['id']}/incidents/{incident['id']}")
    assert moved.status_code == 404  # an incident is reached through its own page only


def test_renaming_or_pausing_a_monitor_bumps_only_the_pages_showing_it(account: Account) -> None:
    shown, hidden = account.monitor("shown"), account.monitor("hidden")
    page = account.page(website_ids=[shown])

    assert account.client.patch(f"/websites/{hidden}", json={"name": "other"}).status_code == 200
    assert account.version(page["id"]) == 1
    assert account.client.patch(f"/websites/{shown}", json={"name": "API"}).status_code == 200
    assert account.version(page["id"]) == 2
    assert account.client.patch(f"/websites/{shown}", json={"paused": True}).status_code == 200
    assert account.version(page["id"]) == 3
    assert account.client.patch(f"/websites/{shown}", json={"timeout_ms": 5000}).status_code == 200
    assert account.version(page["id"]) == 3  # not something the page shows


def test_deleting_a_monitor_takes_it_off_its_pages_and_bumps_them(
    api: ApiServer, account: Account
) -> None:
    kept, deleted = account.monitor("kept"), account.monitor("deleted")
    page = account.page(website_ids=[kept, deleted])
    assert account.client.delete(f"/websites/{deleted}").status_code == 200
    data = account.client.get(f"/status-pages/{page['id']}").json()["data"]
    assert data["groups"] == [{"name": "", "website_ids": [kept]}]
    assert data["version"] == 2
    assert rows.count_where(api, StatusPageMonitor, website_id=uuid.UUID(deleted)) == 0


def test_deleting_an_account_leaves_no_status_page_rows(api: ApiServer) -> None:
    user, token, _ = api.new_user()
    owner = Account(api, token)
    page = owner.page(website_ids=[owner.monitor()])
    body = f"update {uuid.uuid4()}"
    owner.client.post(
        f"/status-pages/{page['id']}/incidents", json={"title": "x", "body": body}
    ).raise_for_status()
    page_id = uuid.UUID(page["id"])

    with api.client(api.admin_token()) as admin:
        assert admin.delete(f"/admin/users/{user['id']}").status_code == 200

    assert rows.count_where(api, StatusPage, id=page_id) == 0
    assert rows.count_where(api, StatusPageMonitor, status_page_id=page_id) == 0
    assert rows.count_where(api, StatusPageIncident, status_page_id=page_id) == 0
    assert rows.count_where(api, StatusPageIncidentUpdate, body=body) == 0


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_max_status_pages_per_user_is_a_403_naming_it_and_admins_are_exempt(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory, backend: str
) -> None:
    with serve_on(request, tmp_path_factory, backend, MAX_STATUS_PAGES_PER_USER=1) as server:
        _, token, _ = server.new_user()
        owner = Account(server, token)
        owner.page()
        refused = owner.client.post("/status-pages", json={"slug": "second", "title": "x"})
        assert refused.status_code == 403, refused.text
        assert "MAX_STATUS_PAGES_PER_USER" in refused.json()["error"]
        admin = Account(server, server.admin_token())
        admin.page()
        admin.page()


def test_a_null_where_a_value_is_needed_is_a_422_and_changes_nothing(account: Account) -> None:
    page = account.page()
    for field in ("slug", "title", "public"):
        answer = account.client.patch(f"/status-pages/{page['id']}", json={field: None})
        assert_refused(answer, 422, field)
    both = account.client.patch(
        f"/status-pages/{page['id']}", json={"website_ids": [], "groups": []}
    )
    assert_refused(both, 422, "body")
    assert account.version(page["id"]) == 1


def test_the_openapi_document_lists_the_status_page_routes(api: ApiServer) -> None:
    document = httpx.get(f"{api.base_url}/openapi.json", timeout=30).json()
    for path in (
        "/api/v1/status-pages",
        "/api/v1/status-pages/{page_id}",
        "/api/v1/status-pages/{page_id}/incidents",
        "/api/v1/status-pages/{page_id}/incidents/{incident_id}/updates",
    ):
        assert path in document["paths"], path
