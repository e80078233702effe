"""Managing status pages through the forms, on SQLite and PostgreSQL: create a page with its
monitors in groups, edit it, post an incident and its updates, delete it; the storage rules'
messages next to their field; another account's page is a 404."""

from __future__ import annotations

from typing import Any

from tests.api.server import ApiServer
from tests.web.pages.web import Browser, field_error, field_value, new_browser, random_host


def _monitor(api: ApiServer, token: str, name: str) -> str:
    with api.client(token) as client:
        answer = client.post("/websites", json={"url": random_host(), "name": name})
    assert answer.status_code == 201, answer.text
    website_id: str = answer.json()["data"]["id"]
    return website_id


def _api_get(api: ApiServer, token: str, path: str) -> Any:
    with api.client(token) as client:
        answer = client.get(path)
    assert answer.status_code == 200, answer.text
    return answer.json()["data"]


def _page_form(
    slug: str,
    title: str,
    picks: dict[str, tuple[str, int]],
    public: bool = True,
    **extra: str,
) -> dict[str, Any]:
    """The page form's fields: ``picks`` maps a monitor's id to its (group, position)."""
    data: dict[str, Any] = {"slug": slug, "title": title, "monitor": list(picks), **extra}
    if public:
        data["public"] = "on"
    for website_id, (group, position) in picks.items():
        data[f"group-{website_id}"] = group
        data[f"position-{website_id}"] = str(position)
    return data


def _create(browser: Browser, form: dict[str, Any]) -> str:
    answer = browser.post("/status-pages/new", form)
    assert answer.status_code == 303, answer.text
    return answer.headers["location"].rsplit("/", 1)[1]


def test_a_page_is_created_with_its_monitors_in_groups_and_edited(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    api_id, web_id, db_id = (_monitor(api, token, n) for n in ("API", "Website", "Database"))
    slug = f"acme-{api_id[:8]}"

    page_id = _create(
        browser,
        _page_form(
            slug,
            "Acme status",
            {db_id: ("Back end", 3), api_id: ("Back end", 2), web_id: ("", 1)},
            description="Everything Acme runs",
        ),
    )

    stored = _api_get(api, token, f"/status-pages/{page_id}")
    assert (stored["slug"], stored["title"], stored["public"]) == (slug, "Acme status", True)
    assert stored["description"] == "Everything Acme runs"
    assert stored["groups"] == [
        {"name": "", "website_ids": [web_id]},
        {"name": "Back end", "website_ids": [api_id, db_id]},
    ]
    listed = browser.get("/status-pages").text
    assert "Acme status" in listed
    assert f'href="/status/{slug}"' in listed
    manage = browser.get(f"/status-pages/{page_id}").text
    assert field_value(manage, "page-slug") == slug

    saved = browser.post(
        f"/status-pages/{page_id}/edit",
        _page_form(slug, "Acme systems", {db_id: ("Data", 1)}, public=False),
    )
    assert saved.status_code == 303, saved.text
    stored = _api_get(api, token, f"/status-pages/{page_id}")
    assert (stored["title"], stored["public"], stored["description"]) == (
        "Acme systems",
        False,
        None,
    )
    assert stored["groups"] == [{"name": "Data", "website_ids": [db_id]}]
    assert stored["version"] > 1
    browser.close()


def test_bad_pages_are_refused_next_to_their_field_and_nothing_changes(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    website_id = _monitor(api, token, "API")
    taken = f"taken-{website_id[:8]}"
    _create(browser, _page_form(taken, "First", {website_id: ("", 1)}))
    cases = [
        ({"slug": "Not A Slug!"}, "page-slug", "lowercase letters, digits and single hyphens"),
        ({"slug": "static"}, "page-slug", "reserved"),
        ({"slug": taken}, "page-slug", "is taken by another page"),
        ({"title": "   "}, "page-title", "must not be empty"),
    ]
    for fields, field, message in cases:
        form = _page_form(f"fresh-{website_id[:8]}", "Second", {website_id: ("", 1)}) | fields
        answer = browser.post("/status-pages/new", form)
        assert answer.status_code == 422, fields
        assert message in (field_error(answer.text, field) or ""), (fields, answer.text)
        assert field_value(answer.text, "page-title") == form["title"].strip()

    # Only the account's monitors are in the picker: another account's id sent anyway is
    # not taken (the storage rules would refuse it too).
    stranger_monitor = _monitor(api, new_browser(api)[2], "Not mine")
    fresh = f"fresh-{website_id[:8]}"
    page_id = _create(browser, _page_form(fresh, "Second", {stranger_monitor: ("", 1)}))
    assert _api_get(api, token, f"/status-pages/{page_id}")["groups"] == []
    bad_position = _page_form(f"third-{website_id[:8]}", "Third", {website_id: ("", 1)})
    for position in ("first", "--3", "1" * 40):
        bad_position[f"position-{website_id}"] = position
        answer = browser.post("/status-pages/new", bad_position)
        assert "must be a whole number" in (field_error(answer.text, "page-monitors") or "")
    assert answer.status_code == 422
    listed = _api_get(api, token, "/status-pages")["status_pages"]
    assert [p["slug"] for p in listed] == [taken, fresh]
    browser.close()


def test_an_edit_refused_leaves_the_page_as_it_was(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    website_id = _monitor(api, token, "API")
    slug = f"steady-{website_id[:8]}"
    page_id = _create(browser, _page_form(slug, "Steady", {website_id: ("", 1)}))

    refused = browser.post(
        f"/status-pages/{page_id}/edit", _page_form("x", "Changed title", {website_id: ("", 1)})
    )

    assert refused.status_code == 422
    assert "3 to 64" in (field_error(refused.text, "page-slug") or "")
    assert field_value(refused.text, "page-title") == "Changed title"
    assert "<h1>Steady</h1>" in refused.text  # the stored page, not the refused change
    stored = _api_get(api, token, f"/status-pages/{page_id}")
    assert (stored["slug"], stored["title"], stored["version"]) == (slug, "Steady", 1)
    browser.close()


def test_incidents_and_their_updates_are_posted_and_listed(api: ApiServer) -> None:
    browser, _, token = new_browser(api)
    website_id = _monitor(api, token, "API")
    page_id = _create(
        browser, _page_form(f"inc-{website_id[:8]}", "Incidents", {website_id: ("", 1)})
    )

    refused = browser.post(
        f"/status-pages/{page_id}/incidents",
        {"title": "Slow API", "impact": "minor", "status": "investigating", "body": ""},
    )
    assert refused.status_code == 422
    assert field_error(refused.text, "incident-body") is not None
    assert field_value(refused.text, "incident-title") == "Slow API"

    posted = browser.post(
        f"/status-pages/{page_id}/incidents",
        {
            "title": "Slow API",
            "impact": "major",
            "status": "investigating",
            "body": "Looking into it",
        },
    )
    assert posted.status_code == 303, posted.text
    [incident] = _api_get(api, token, f"/status-pages/{page_id}/incidents")["incidents"]
    for status, body in (
        ("identified", "A full disk"),
        ("monitoring", "Space freed"),
        ("resolved", "All good"),
    ):
        answer = browser.post(
            f"/status-pages/{page_id}/incidents/{incident['id']}/updates",
            {"status": status, "body": body},
        )
        assert answer.status_code == 303, answer.text
    bad = browser.post(
        f"/status-pages/{page_id}/incidents/{incident['id']}/updates",
        {"status": "fixed", "body": "x"},
    )
    assert bad.status_code == 422
    assert field_error(bad.text, f"update-{incident['id']}-status") is not None

    [incident] = _api_get(api, token, f"/status-pages/{page_id}/incidents")["incidents"]
    assert (incident["title"], incident["impact"], incident["status"]) == (
        "Slow API",
        "major",
        "resolved",
    )
    assert incident["resolved_at"] is not None
    assert [u["status"] for u in incident["updates"]] == [
        "investigating",
        "identified",
        "monitoring",
        "resolved",
    ]
    manage = browser.get(f"/status-pages/{page_id}").text
    for body in ("Looking into it", "A full disk", "Space freed", "All good"):
        assert body in manage
    unknown = browser.post(
        f"/status-pages/{page_id}/incidents/00000000-0000-0000-0000-000000000000/updates",
        {"status": "resolved", "body": "x"},
    )
    assert unknown.status_code == 404
    browser.close()


def test_another_accounts_page_is_a_404_and_forms_need_their_token(api: ApiServer) -> None:
    owner, _, token = new_browser(api)
    website_id = _monitor(api, token, "API")
    page_id = _create(owner, _page_form(f"own-{website_id[:8]}", "Owned", {website_id: ("", 1)}))
    stranger, _, _ = new_browser(api)

    assert stranger.get(f"/status-pages/{page_id}").status_code == 404
    for action in ("edit", "delete", "incidents"):
        assert stranger.post(f"/status-pages/{page_id}/{action}", {"title": "x"}).status_code == 404
    assert owner.post(f"/status-pages/{page_id}/delete", csrf=False).status_code == 403
    assert "Owned" not in stranger.get("/status-pages").text

    deleted = owner.post(f"/status-pages/{page_id}/delete")
    assert deleted.status_code == 303
    with api.client(token) as client:
        assert client.get(f"/status-pages/{page_id}").status_code == 404
    owner.close()
    stranger.close()
