"""User administration (contract §3): only an ADMIN lists and deletes users; a deletion takes
the user's tokens and monitors with it. Runs on SQLite and on PostgreSQL."""

from __future__ import annotations

import uuid
from typing import Any

from tests.api.server import ADMIN_EMAIL, PASSWORD, ApiServer

PUBLIC_URL = "http://93.184.215.14/"


def _users(api: ApiServer) -> list[dict[str, Any]]:
    with api.client(api.admin_token()) as admin:
        answer = admin.get("/admin/users")
    assert answer.status_code == 200, answer.text
    users: list[dict[str, Any]] = answer.json()["data"]
    return users


def _admin_id(api: ApiServer) -> str:
    with api.client(api.admin_token()) as admin:
        me = admin.get("/me")
    assert me.status_code == 200, me.text
    assert me.json()["data"]["role"] == "ADMIN"
    admin_id: str = me.json()["data"]["id"]
    return admin_id


def test_a_user_cannot_list_users(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    with api.client(token) as client:
        answer = client.get("/admin/users")
    assert answer.status_code == 403
    assert answer.json()["success"] is False
    assert answer.json()["data"] is None


def test_an_admin_lists_users_with_public_fields_only(api: ApiServer) -> None:
    user, _, _ = api.new_user()
    with api.client(api.admin_token()) as admin:
        answer = admin.get("/admin/users")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert body["success"] is True
    users = body["data"]
    assert isinstance(users, list)
    assert all(set(entry) == {"id", "email", "role", "created_at"} for entry in users)
    assert user in users  # exactly what signup returned
    (admin,) = [u for u in users if u["email"] == ADMIN_EMAIL]
    assert admin["role"] == "ADMIN"
    assert len({u["id"] for u in users}) == len(users)
    text = answer.text.lower()
    assert "password" not in text
    assert "$argon2" not in text
    assert PASSWORD.lower() not in text


def test_a_user_cannot_delete_another_user(api: ApiServer) -> None:
    _, attacker, _ = api.new_user()
    victim, victim_token, _ = api.new_user()
    with api.client(attacker) as client:
        answer = client.delete(f"/admin/users/{victim['id']}")
    assert answer.status_code == 403
    assert answer.json()["success"] is False
    assert victim in _users(api)
    with api.client(victim_token) as client:
        assert client.get("/me").status_code == 200


def test_a_user_cannot_delete_the_admin(api: ApiServer) -> None:
    _, token, _ = api.new_user()
    admin_id = _admin_id(api)
    with api.client(token) as client:
        assert client.delete(f"/admin/users/{admin_id}").status_code == 403
    assert admin_id in {u["id"] for u in _users(api)}


def test_an_admin_deletes_a_user_with_their_tokens_and_monitors(api: ApiServer) -> None:
    user, access, refresh = api.new_user()
    with api.client(access) as client:
        monitor = client.post("/websites", json={"url": f"{PUBLIC_URL}{uuid.uuid4().hex}"})
        assert monitor.status_code == 201, monitor.text
        channel = client.post("/channels", json={"type": "email", "target": user["email"]})
        assert channel.status_code == 201, channel.text
    monitor_id = monitor.json()["data"]["id"]

    with api.client(api.admin_token()) as admin:
        answer = admin.delete(f"/admin/users/{user['id']}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["success"] is True
        assert answer.json()["data"]["id"] == user["id"]
        # ADMIN sees every monitor: the user's one is gone with them.
        assert admin.get(f"/websites/{monitor_id}").status_code == 404
        listed = admin.get("/websites").json()["data"]["websites"]
        assert monitor_id not in {w["id"] for w in listed}

    assert user["id"] not in {u["id"] for u in _users(api)}
    with api.client(access) as client:
        assert client.get("/me").status_code == 401
        assert client.get("/websites").status_code == 401
        assert client.post("/auth/refresh", json={"refresh_token": refresh}).status_code == 401
        # The e-mail is free again.
        again = client.post("/signup", json={"email": user["email"], "password": PASSWORD})
        assert again.status_code == 201, again.text


def test_deleting_an_unknown_user_is_404(api: ApiServer) -> None:
    before = len(_users(api))
    with api.client(api.admin_token()) as admin:
        answer = admin.delete(f"/admin/users/{uuid.uuid4()}")
    assert answer.status_code == 404
    assert answer.json()["success"] is False
    assert len(_users(api)) == before


def test_a_malformed_user_id_is_422_not_500(api: ApiServer) -> None:
    with api.client(api.admin_token()) as admin:
        answer = admin.delete("/admin/users/not-a-uuid")
    assert answer.status_code == 422
    assert answer.json()["success"] is False


def test_the_admin_cannot_delete_themselves(api: ApiServer) -> None:
    admin_id = _admin_id(api)
    with api.client(api.admin_token()) as admin:
        answer = admin.delete(f"/admin/users/{admin_id}")
        assert answer.status_code == 409
        assert answer.json()["success"] is False
        assert admin.get("/me").status_code == 200
    assert admin_id in {u["id"] for u in _users(api)}


def test_admin_endpoints_need_a_token(api: ApiServer) -> None:
    user, _, _ = api.new_user()
    with api.client() as client:
        listing = client.get("/admin/users")
        deletion = client.delete(f"/admin/users/{user['id']}")
    assert listing.status_code == deletion.status_code == 401
    assert listing.json()["success"] is False
    assert user in _users(api)
