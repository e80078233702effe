"""Rate limits on signin, signup, refresh and monitor creation (contract §3: 429 with
`Retry-After`), over HTTP, with the in-process limiter and with the Redis one, which API
servers share.

All requests come from 127.0.0.1, which uvicorn trusts as a proxy (FORWARDED_ALLOW_IPS), so
each test names its client addresses in `X-Forwarded-For`: the per-IP buckets of one test are
its own, and the servers can stay up for the whole module.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from runstate.queue.keys import RATE_LIMIT_PREFIX
from runstate.settings import Settings
from tests.api.conftest import api_settings
from tests.api.server import PASSWORD, ApiServer, serve

PER_IP = 5
PER_ACCOUNT = 3
PER_FAMILY_AND_IP = 4  # REFRESH_RATE_LIMIT, unlike the others so a test tells them apart
MONITOR_CREATES = 3
WRONG = "Wrong-passw0rd!"
WINDOW_SECONDS = 60
DEAD_REDIS_URL = "redis://127.0.0.1:1/0"


def _fresh_ip() -> str:
    """A client address no other test (nor a concurrent run on the same Redis) uses."""
    n = secrets.randbits(24)
    return f"10.{n >> 16}.{(n >> 8) & 255}.{n & 255}"


def _fresh_ipv6_64() -> str:
    """The first four groups of an IPv6 /64 no other test uses, e.g. ``2001:db8:1a2b:3c4d``."""
    return f"2001:db8:{secrets.randbits(16):x}:{secrets.randbits(16):x}"


def _email() -> str:
    return f"rl-{uuid.uuid4().hex[:12]}@example.com"


def _post(server: ApiServer, path: str, body: dict[str, str], ip: str) -> httpx.Response:
    headers = {"x-forwarded-for": ip}
    with httpx.Client(base_url=f"{server.base_url}/api/v1", headers=headers, timeout=30) as c:
        return c.post(path, json=body)


def _signin(server: ApiServer, email: str, ip: str, password: str = PASSWORD) -> httpx.Response:
    return _post(server, "/signin", {"email": email, "password": password}, ip)


def _signup(server: ApiServer, email: str, ip: str) -> httpx.Response:
    return _post(server, "/signup", {"email": email, "password": PASSWORD}, ip)


def _account(server: ApiServer) -> str:
    """A new account, created from an address of its own (no test's buckets are touched)."""
    email = _email()
    answer = _signup(server, email, _fresh_ip())
    assert answer.status_code == 201, answer.text
    return email


def _assert_limited(answer: httpx.Response) -> None:
    assert answer.status_code == 429, answer.text
    retry_after = answer.headers["retry-after"]
    assert retry_after.isdigit(), retry_after
    assert 1 <= int(retry_after) <= WINDOW_SECONDS
    body = answer.json()
    assert body["success"] is False
    assert body["data"] is None
    assert isinstance(body["error"], str)
    assert body["error"]
    assert "access_token" not in answer.text


def _limited_settings(data_dir: Path, **overrides: object) -> Settings:
    return api_settings(
        f"sqlite:///{data_dir / 'runstate.db'}",
        data_dir,
        AUTH_RATE_LIMIT_PER_IP=PER_IP,
        AUTH_RATE_LIMIT_PER_ACCOUNT=PER_ACCOUNT,
        REFRESH_RATE_LIMIT=PER_FAMILY_AND_IP,
        MONITOR_CREATE_RATE_LIMIT=MONITOR_CREATES,
        **overrides,
    )


def _flush_rate_limits(redis_url: str) -> None:
    client = redis.Redis.from_url(redis_url)
    try:
        keys = list(client.scan_iter(match=f"{RATE_LIMIT_PREFIX}*"))
        if keys:
            client.delete(*keys)
    finally:
        client.close()


@pytest.fixture(scope="module", params=["in-process", "redis"])
def limited_api(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[ApiServer]:
    """A server with low limits, counting in process or in the real Redis."""
    data_dir = tmp_path_factory.mktemp(f"api-ratelimit-{request.param}")
    overrides: dict[str, object] = {}
    if request.param == "redis":
        redis_url = request.getfixturevalue("redis_url")
        _flush_rate_limits(redis_url)
        overrides["REDIS_URL"] = redis_url
    with serve(_limited_settings(data_dir, **overrides), "sqlite") as server:
        yield server


def test_failed_signins_are_limited_per_account_yet_the_right_password_still_signs_in(
    limited_api: ApiServer,
) -> None:
    email = _account(limited_api)
    # Every attempt from another address, so only the account's bucket can fill up.
    for _ in range(PER_ACCOUNT):
        assert _signin(limited_api, email, _fresh_ip(), WRONG).status_code == 401
    _assert_limited(_signin(limited_api, email, _fresh_ip(), WRONG))
    _assert_limited(_signin(limited_api, email.upper(), _fresh_ip(), WRONG))
    # Whoever failed for this account, its owner is not locked out.
    for _ in range(2):
        answer = _signin(limited_api, email, _fresh_ip())
        assert answer.status_code == 200, answer.text
        assert answer.json()["data"]["access_token"]


def test_successful_signins_do_not_count_toward_the_account_limit(limited_api: ApiServer) -> None:
    email = _account(limited_api)
    for _ in range(PER_ACCOUNT + 2):
        assert _signin(limited_api, email, _fresh_ip()).status_code == 200
    assert _signin(limited_api, email, _fresh_ip(), WRONG).status_code == 401


def test_failed_signins_for_an_unknown_email_are_limited_the_same_way(
    limited_api: ApiServer,
) -> None:
    email = _email()
    for _ in range(PER_ACCOUNT):
        assert _signin(limited_api, email, _fresh_ip(), WRONG).status_code == 401
    _assert_limited(_signin(limited_api, email, _fresh_ip(), WRONG))


def test_signin_is_limited_per_ip_across_accounts(limited_api: ApiServer) -> None:
    ip = _fresh_ip()
    for _ in range(PER_IP):
        assert _signin(limited_api, _email(), ip, WRONG).status_code == 401
    _assert_limited(_signin(limited_api, _email(), ip, WRONG))
    # Even a real account with its right password, from that address.
    _assert_limited(_signin(limited_api, _account(limited_api), ip))
    # Another address is not affected.
    assert _signin(limited_api, _email(), _fresh_ip(), WRONG).status_code == 401


def test_signup_is_limited_per_ip(limited_api: ApiServer) -> None:
    ip = _fresh_ip()
    for _ in range(PER_IP):
        assert _signup(limited_api, _email(), ip).status_code == 201
    refused = _email()
    _assert_limited(_signup(limited_api, refused, ip))
    # The refused signup created nothing: the address is still free elsewhere.
    assert _signup(limited_api, refused, _fresh_ip()).status_code == 201


def test_signup_is_limited_per_ip_only_not_per_email(limited_api: ApiServer) -> None:
    # AUTH_RATE_LIMIT_PER_ACCOUNT counts failed sign-ins, nothing else: repeated signups of
    # one e-mail from many addresses each get their answer.
    email = _email()
    assert _signup(limited_api, email, _fresh_ip()).status_code == 201
    for _ in range(PER_ACCOUNT + 1):
        assert _signup(limited_api, email, _fresh_ip()).status_code == 409


def test_signin_counts_an_ipv6_64_as_one_client(limited_api: ApiServer) -> None:
    network = _fresh_ipv6_64()
    for host in range(1, PER_IP + 1):
        answer = _signin(limited_api, _email(), f"{network}::{host:x}", WRONG)
        assert answer.status_code == 401, answer.text
    _assert_limited(_signin(limited_api, _email(), f"{network}:ffff:ffff:ffff:ffff", WRONG))
    # The next /64 is another client.
    neighbour = f"{_fresh_ipv6_64()}::1"
    assert _signin(limited_api, _email(), neighbour, WRONG).status_code == 401


def _refresh(server: ApiServer, token: str, ip: str) -> httpx.Response:
    return _post(server, "/auth/refresh", {"refresh_token": token}, ip)


def _refresh_token(server: ApiServer) -> str:
    """The refresh token of a new sign-in (a new family) of a new account."""
    signin = _signin(server, _account(server), _fresh_ip())
    assert signin.status_code == 200, signin.text
    token: str = signin.json()["data"]["refresh_token"]
    return token


@pytest.mark.parametrize("addresses", ["ipv4", "ipv6_64"])
def test_refresh_is_limited_per_ip_by_its_own_setting(
    limited_api: ApiServer, addresses: str
) -> None:
    refresh_token = _refresh_token(limited_api)
    network = _fresh_ipv6_64()
    ips = (
        [_fresh_ip()] * (PER_FAMILY_AND_IP + 1)
        if addresses == "ipv4"
        else [f"{network}::{n + 1:x}" for n in range(PER_FAMILY_AND_IP + 1)]
    )
    for ip in ips[:-1]:
        assert _refresh(limited_api, secrets.token_urlsafe(32), ip).status_code == 401
    _assert_limited(_refresh(limited_api, refresh_token, ips[-1]))
    # The refused request did not use the token up.
    rotated = _refresh(limited_api, refresh_token, _fresh_ip())
    assert rotated.status_code == 200, rotated.text


def test_refresh_is_limited_per_token_family(limited_api: ApiServer) -> None:
    token = _refresh_token(limited_api)
    # Each refresh from another address, so only the family's bucket can fill up.
    for _ in range(PER_FAMILY_AND_IP):
        answer = _refresh(limited_api, token, _fresh_ip())
        assert answer.status_code == 200, answer.text
        token = answer.json()["data"]["refresh_token"]
    _assert_limited(_refresh(limited_api, token, _fresh_ip()))
    # Another sign-in is another family, with a bucket of its own.
    other = _refresh(limited_api, _refresh_token(limited_api), _fresh_ip())
    assert other.status_code == 200, other.text


def test_signin_and_signup_limits_do_not_apply_to_refresh(limited_api: ApiServer) -> None:
    ip = _fresh_ip()
    for _ in range(PER_IP):
        assert _signin(limited_api, _email(), ip, WRONG).status_code == 401
    _assert_limited(_signin(limited_api, _email(), ip, WRONG))
    answer = _refresh(limited_api, _refresh_token(limited_api), ip)
    assert answer.status_code == 200, answer.text


def test_one_accounts_limit_does_not_lock_out_another_account(limited_api: ApiServer) -> None:
    locked, other = _account(limited_api), _account(limited_api)
    ip = _fresh_ip()
    for _ in range(PER_ACCOUNT):
        assert _signin(limited_api, locked, ip, WRONG).status_code == 401
    _assert_limited(_signin(limited_api, locked, ip, WRONG))
    # PER_ACCOUNT + 1 attempts so far from this address: still under its limit.
    assert PER_ACCOUNT + 2 <= PER_IP
    assert _signin(limited_api, other, ip).status_code == 200


def _monitor_creator(server: ApiServer) -> httpx.Client:
    signin = _signin(server, _account(server), _fresh_ip())
    assert signin.status_code == 200, signin.text
    token = signin.json()["data"]["access_token"]
    headers = {"authorization": f"Bearer {token}", "x-forwarded-for": _fresh_ip()}
    return httpx.Client(base_url=f"{server.base_url}/api/v1", headers=headers, timeout=30)


def _create_monitor(client: httpx.Client) -> httpx.Response:
    return client.post("/websites", json={"url": f"http://93.184.215.14/{uuid.uuid4().hex}"})


def test_creating_monitors_is_limited_per_account(limited_api: ApiServer) -> None:
    with _monitor_creator(limited_api) as first, _monitor_creator(limited_api) as second:
        for _ in range(MONITOR_CREATES):
            answer = _create_monitor(first)
            assert answer.status_code == 201, answer.text
        refused = _create_monitor(first)
        _assert_limited(refused)
        assert "MONITOR_CREATE_RATE_LIMIT" in refused.json()["error"]
        assert len(first.get("/websites").json()["data"]["websites"]) == MONITOR_CREATES
        # Another account creates its own.
        assert _create_monitor(second).status_code == 201


def test_api_servers_sharing_redis_share_the_limits(
    redis_url: str, tmp_path_factory: pytest.TempPathFactory
) -> None:
    data_dir = tmp_path_factory.mktemp("api-ratelimit-shared")
    settings = _limited_settings(data_dir, REDIS_URL=redis_url)
    _flush_rate_limits(redis_url)
    with (
        serve(settings, "sqlite") as first,
        serve(settings, "sqlite") as second,
    ):
        servers = [first, second]
        ip = _fresh_ip()
        for attempt in range(PER_IP):
            answer = _signin(servers[attempt % 2], _email(), ip, WRONG)
            assert answer.status_code == 401
        # Neither server alone has seen PER_IP attempts, yet both refuse the next one.
        _assert_limited(_signin(first, _email(), ip, WRONG))
        _assert_limited(_signin(second, _email(), ip, WRONG))

        email = _account(first)
        for attempt in range(PER_ACCOUNT):
            answer = _signin(servers[attempt % 2], email, _fresh_ip(), WRONG)
            assert answer.status_code == 401
        _assert_limited(_signin(second, email, _fresh_ip(), WRONG))
        _assert_limited(_signin(first, email, _fresh_ip(), WRONG))


@pytest.fixture(scope="module")
def dead_redis_api(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ApiServer]:
    data_dir = tmp_path_factory.mktemp("api-ratelimit-dead-redis")
    with serve(_limited_settings(data_dir, REDIS_URL=DEAD_REDIS_URL), "sqlite") as server:
        yield server


def test_signin_still_works_when_redis_is_down(dead_redis_api: ApiServer) -> None:
    email = _account(dead_redis_api)
    answer = _signin(dead_redis_api, email, _fresh_ip())
    assert answer.status_code == 200, answer.text
    assert answer.json()["data"]["access_token"]
    wrong = _signin(dead_redis_api, email, _fresh_ip(), WRONG)
    assert wrong.status_code == 401, wrong.text


def test_limits_are_still_enforced_in_process_when_redis_is_down(
    dead_redis_api: ApiServer,
) -> None:
    email = _account(dead_redis_api)
    for _ in range(PER_ACCOUNT):
        assert _signin(dead_redis_api, email, _fresh_ip(), WRONG).status_code == 401
    _assert_limited(_signin(dead_redis_api, email, _fresh_ip(), WRONG))

    ip = _fresh_ip()
    for _ in range(PER_IP):
        assert _signup(dead_redis_api, _email(), ip).status_code == 201
    _assert_limited(_signup(dead_redis_api, _email(), ip))
