from __future__ import annotations

import time
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest

from runstate.auth.tokens import AUDIENCE, ISSUER
from tests.api.conftest import TEST_JWT_SECRET
from tests.api.server import PASSWORD, ApiServer


def _email() -> str:
    return f"u-{uuid.uuid4().hex[:12]}@example.com"


def test_signup_returns_the_new_user_without_secrets(api: ApiServer) -> None:
    email = _email()
    with api.client() as client:
        answer = client.post("/signup", json={"email": email.upper(), "password": PASSWORD})
    assert answer.status_code == 201
    body = answer.json()
    assert body["success"] is True
    assert body["data"]["email"] == email
    assert body["data"]["role"] == "USER"
    assert set(body["data"]) == {"id", "email", "role", "created_at"}


def test_duplicate_email_is_409(api: ApiServer) -> None:
    email = _email()
    with api.client() as client:
        assert (
            client.post("/signup", json={"email": email, "password": PASSWORD}).status_code == 201
        )
        again = client.post("/signup", json={"email": email, "password": PASSWORD})
    assert again.status_code == 409
    assert again.json()["success"] is False


@pytest.mark.parametrize(
    ("password", "missing"),
    [
        ("Sh0rt!", "at least 8"),
        ("alllower1!", "upper-case"),
        ("ALLUPPER1!", "lower-case"),
        ("NoDigits!!", "digit"),
        ("NoSymbol123", "symbol"),
    ],
)
def test_weak_passwords_are_422_naming_the_rule(
    api: ApiServer, password: str, missing: str
) -> None:
    with api.client() as client:
        answer = client.post("/signup", json={"email": _email(), "password": password})
    assert answer.status_code == 422
    assert answer.json()["error"].startswith("password:")
    assert missing in answer.json()["error"]
    assert password not in answer.text  # never echo a password back


def test_unknown_email_and_wrong_password_are_indistinguishable(api: ApiServer) -> None:
    user, _, _ = api.new_user()
    with api.client() as client:
        wrong = client.post("/signin", json={"email": user["email"], "password": "Wrong-pass1"})
        unknown = client.post("/signin", json={"email": _email(), "password": "Wrong-pass1"})
    assert wrong.status_code == unknown.status_code == 401
    assert wrong.json() == unknown.json()


def test_unknown_email_costs_a_password_hash_too(api: ApiServer) -> None:
    user, _, _ = api.new_user()

    def median_time(email: str) -> float:
        times = []
        with api.client() as client:
            for _ in range(7):
                started = time.perf_counter()
                client.post("/signin", json={"email": email, "password": "Wrong-pass1"})
                times.append(time.perf_counter() - started)
        return sorted(times)[3]

    known, unknown = median_time(user["email"]), median_time(_email())
    # A dummy-hash verification makes both cost one argon2 run; without it the unknown
    # e-mail would answer in a small fraction of the time.
    assert unknown > known * 0.5


def test_signin_pair_gives_access_to_me(api: ApiServer) -> None:
    user, access, refresh = api.new_user()
    with api.client(access) as client:
        me = client.get("/me")
    assert me.status_code == 200
    assert me.json()["data"]["id"] == user["id"]
    assert refresh
    assert refresh != access


def _forge(
    claims_overrides: dict[str, object], key: str = TEST_JWT_SECRET, alg: str = "HS256"
) -> str:
    now = datetime.now(UTC)
    claims: dict[str, object] = {
        "sub": str(uuid.uuid4()),
        "iat": now,
        "exp": now + timedelta(minutes=5),
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": "access",
    }
    claims.update(claims_overrides)
    claims = {k: v for k, v in claims.items() if v is not None}
    return jwt.encode(claims, key, algorithm=alg)


def _unsigned(sub: str) -> str:
    import base64
    import json

    def part(data: dict[str, object]) -> str:
        return base64.urlsafe_b64encode(json.dumps(data).encode()).rstrip(b"=").decode()

    now = int(time.time())
    payload = {
        "sub": sub,
        "iat": now,
        "exp": now + 300,
        "iss": ISSUER,
        "aud": AUDIENCE,
        "typ": "access",
    }
    return f"{part({'alg': 'none', 'typ': 'JWT'})}.{part(payload)}."


@pytest.mark.parametrize(
    "forgery",
    [
        "alg_none",
        "other_key",
        "expired",
        "wrong_audience",
        "wrong_issuer",
        "wrong_type",
        "missing_exp",
        "garbage",
        "refresh_token",
        "hs512",
    ],
)
def test_forged_or_misused_tokens_are_401(api: ApiServer, forgery: str) -> None:
    user, _, refresh = api.new_user()
    sub = user["id"]
    past = datetime.now(UTC) - timedelta(hours=1)
    token = {
        "alg_none": lambda: _unsigned(sub),
        "other_key": lambda: _forge({"sub": sub}, key="another-key-another-key-another-key-0"),
        "expired": lambda: _forge({"sub": sub, "iat": past, "exp": past + timedelta(minutes=1)}),
        "wrong_audience": lambda: _forge({"sub": sub, "aud": "someone-else"}),
        "wrong_issuer": lambda: _forge({"sub": sub, "iss": "evil"}),
        "wrong_type": lambda: _forge({"sub": sub, "typ": "refresh"}),
        "missing_exp": lambda: _forge({"sub": sub, "exp": None}),
        "garbage": lambda: "not-a-token",
        "refresh_token": lambda: refresh,
        "hs512": lambda: _forge({"sub": sub}, alg="HS512"),
    }[forgery]()
    with api.client(token) as client:
        answer = client.get("/me")
    assert answer.status_code == 401
    assert answer.json()["success"] is False


def test_a_valid_token_of_a_deleted_user_is_401(api: ApiServer) -> None:
    user, access, _ = api.new_user()
    with api.client(api.admin_token()) as admin:
        assert admin.delete(f"/admin/users/{user['id']}").status_code == 200
    with api.client(access) as client:
        assert client.get("/me").status_code == 401


def test_missing_token_is_401(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.get("/me")
    assert answer.status_code == 401
    assert answer.headers["www-authenticate"] == "Bearer"


def test_refresh_rotates_and_the_old_token_dies(api: ApiServer) -> None:
    _, _, refresh = api.new_user()
    with api.client() as client:
        rotated = client.post("/auth/refresh", json={"refresh_token": refresh})
        assert rotated.status_code == 200
        pair = rotated.json()["data"]
        assert pair["refresh_token"] != refresh
        assert pair["token_type"] == "bearer"
        assert client.post("/auth/refresh", json={"refresh_token": refresh}).status_code == 401
    with api.client(pair["access_token"]) as client:
        assert client.get("/me").status_code == 200


def test_reusing_a_rotated_token_revokes_the_whole_family(api: ApiServer) -> None:
    _, _, first = api.new_user()
    with api.client() as client:
        second = client.post("/auth/refresh", json={"refresh_token": first}).json()["data"]
        third = client.post("/auth/refresh", json={"refresh_token": second["refresh_token"]})
        third_token = third.json()["data"]["refresh_token"]
        # The thief replays the first token: the legitimate newest token must die too.
        assert client.post("/auth/refresh", json={"refresh_token": first}).status_code == 401
        assert client.post("/auth/refresh", json={"refresh_token": third_token}).status_code == 401


def test_reuse_does_not_touch_other_sign_ins(api: ApiServer) -> None:
    user, _, first = api.new_user()
    with api.client() as client:
        other = client.post("/signin", json={"email": user["email"], "password": PASSWORD})
        other_refresh = other.json()["data"]["refresh_token"]
        client.post("/auth/refresh", json={"refresh_token": first})
        client.post("/auth/refresh", json={"refresh_token": first})  # re-use
        assert (
            client.post("/auth/refresh", json={"refresh_token": other_refresh}).status_code == 200
        )


def test_logout_revokes_the_refresh_token(api: ApiServer) -> None:
    _, _, refresh = api.new_user()
    with api.client() as client:
        assert client.post("/auth/logout", json={"refresh_token": refresh}).status_code == 200
        assert client.post("/auth/refresh", json={"refresh_token": refresh}).status_code == 401
        assert client.post("/auth/logout", json={"refresh_token": "unknown"}).status_code == 401


def test_unknown_refresh_token_is_401(api: ApiServer) -> None:
    with api.client() as client:
        answer = client.post("/auth/refresh", json={"refresh_token": "x" * 43})
    assert answer.status_code == 401


def test_signin_rehashes_a_password_stored_with_weaker_parameters(api: ApiServer) -> None:
    from argon2 import PasswordHasher

    from runstate.auth.passwords import HASHER
    from tests.api import rows

    user, _, _ = api.new_user()
    weak = PasswordHasher(time_cost=1, memory_cost=8 * 1024, parallelism=1).hash(PASSWORD)
    rows.set_password_hash(api, user["email"], weak)
    with api.client() as client:
        answer = client.post("/signin", json={"email": user["email"], "password": PASSWORD})
    assert answer.status_code == 200
    stored = rows.password_hash(api, user["email"])
    assert stored != weak
    assert not HASHER.check_needs_rehash(stored)
    assert f"m={HASHER.memory_cost},t={HASHER.time_cost},p={HASHER.parallelism}" in stored


def test_a_stored_hash_is_argon2id_at_owasp_parameters_or_stronger(api: ApiServer) -> None:
    from tests.api import rows

    user, _, _ = api.new_user()
    stored = rows.password_hash(api, user["email"])
    assert stored.startswith("$argon2id$")
    params = dict(p.split("=") for p in stored.split("$")[3].split(","))
    assert int(params["m"]) >= 19 * 1024
    assert int(params["t"]) >= 2
    assert int(params["p"]) >= 1
