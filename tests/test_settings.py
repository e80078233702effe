"""The settings read from the environment (contract §2): defaults, `<NAME>_FILE` secrets,
one-line errors naming the setting, and the JWT secret that dev generates and keeps."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest

from runstate.settings import SECRET_SETTINGS, Settings, SettingsError, load_settings

LONG_SECRET = "a-jwt-secret-that-is-long-enough-0123456789"

# Every setting the process reads (a superset of contract §2) and the `_FILE` variants.
SETTING_NAMES = sorted(set(Settings.model_fields) | {f"{name}_FILE" for name in SECRET_SETTINGS})


@pytest.fixture(autouse=True)
def clean_environment(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No setting of the machine running the tests leaks into them."""
    for name in SETTING_NAMES:
        monkeypatch.delenv(name, raising=False)
    monkeypatch.chdir(tmp_path)


def test_defaults_follow_the_contract() -> None:
    settings = load_settings()
    assert settings.PORT == 3001
    assert settings.HOST == "127.0.0.1"
    assert settings.APP_ENV == "dev"
    assert settings.MIN_CHECK_INTERVAL_SECONDS == 30
    assert settings.SIGNUP_ENABLED is True
    assert settings.ALLOW_PRIVATE_TARGETS is False
    assert str(settings.RUNSTATE_DATA_DIR) == ".runstate"
    assert settings.MONITORING_STREAM == "runstate:monitoring"
    assert settings.STATUS_CHANGE_STREAM == "runstate:status-change"
    assert settings.NOTIFICATION_STREAM == "runstate:notification"
    assert settings.MONITORING_GROUP == "monitoring-group"
    assert settings.STATUS_CHANGE_GROUP == "status-change-group"
    assert settings.NOTIFICATION_GROUP == "notification-group"
    assert settings.MONITORING_REGION_NAME == "local"
    assert settings.dead_letter_stream == "runstate:notification:dlq"
    assert settings.DATABASE_URL is None
    assert settings.redis_url is None
    assert settings.JWT_SECRET is None


def test_without_database_url_the_sqlite_file_lives_in_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNSTATE_DATA_DIR", str(tmp_path / "data"))
    settings = load_settings()
    assert settings.sqlite_path == tmp_path / "data" / "runstate.db"
    assert settings.database_url == f"sqlite:///{tmp_path / 'data' / 'runstate.db'}"


def test_settings_are_read_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PORT", "8080")
    monkeypatch.setenv("HOST", "192.0.2.10")
    monkeypatch.setenv("SIGNUP_ENABLED", "false")
    monkeypatch.setenv("ALLOW_PRIVATE_TARGETS", "true")
    monkeypatch.setenv("MIN_CHECK_INTERVAL_SECONDS", "5")
    monkeypatch.setenv("NOTIFICATION_STREAM", "acme:alerts")
    settings = load_settings()
    assert settings.PORT == 8080
    assert settings.HOST == "192.0.2.10"
    assert settings.SIGNUP_ENABLED is False
    assert settings.ALLOW_PRIVATE_TARGETS is True
    assert settings.MIN_CHECK_INTERVAL_SECONDS == 5
    assert settings.dead_letter_stream == "acme:alerts:dlq"


def test_redis_url_wins_over_redis_addr(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REDIS_URL", "rediss://cache.example.com:6380/2")
    monkeypatch.setenv("REDIS_ADDR", "redis:6379")
    assert load_settings().redis_url == "rediss://cache.example.com:6380/2"


def test_redis_addr_alone_becomes_a_redis_url_on_database_zero(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("REDIS_ADDR", "redis:6379")
    assert load_settings().redis_url == "redis://redis:6379/0"


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("JWT_SECRET", LONG_SECRET),
        ("DATABASE_URL", "postgresql://runstate:s3cret@db.example.com:5432/runstate"),
        ("REDIS_URL", "rediss://:s3cret@cache.example.com:6380/0"),
        ("ADMIN_PASSWORD", "Admin pass with spaces"),
        ("SMTP_PASSWORD", "smtp-s3cret"),
    ],
)
def test_a_secret_can_be_read_from_the_file_named_by_name_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, name: str, value: str
) -> None:
    secret_file = tmp_path / f"{name.lower()}.txt"
    secret_file.write_text(value + "\n", encoding="utf-8")
    monkeypatch.setenv(f"{name}_FILE", str(secret_file))
    assert getattr(load_settings(), name) == value


def test_a_directly_set_secret_wins_over_its_file(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    secret_file = tmp_path / "jwt.txt"
    secret_file.write_text("x" * 40 + "\n", encoding="utf-8")
    monkeypatch.setenv("JWT_SECRET_FILE", str(secret_file))
    monkeypatch.setenv("JWT_SECRET", LONG_SECRET)
    assert load_settings().JWT_SECRET == LONG_SECRET


def test_an_unreadable_secret_file_is_an_error_naming_the_file_setting(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("JWT_SECRET_FILE", str(tmp_path / "missing"))
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("JWT_SECRET_FILE")
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("PORT", "abc"),
        ("PORT", "70000"),
        ("PORT", "0"),
        ("SIGNUP_ENABLED", "maybe"),
        ("ALLOW_PRIVATE_TARGETS", "perhaps"),
        ("APP_ENV", "staging"),
        ("REDIS_ADDR", "nohost"),
        ("REDIS_ADDR", "redis:notaport"),
        ("REDIS_URL", "http://x"),
        ("DATABASE_URL", "mysql://x"),
        ("DATABASE_URL", "postgresql://u:p@db/x?sslmode=sometimes"),
        ("JWT_SECRET", "too-short"),
        ("LOG_LEVEL", "LOUD"),
        ("MIN_CHECK_INTERVAL_SECONDS", "soon"),
    ],
)
def test_a_wrong_value_is_a_one_line_error_starting_with_the_setting_name(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith(f"{name}:"), message
    assert "\n" not in message


def test_production_without_jwt_secret_is_refused_naming_jwt_secret(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("JWT_SECRET")
    assert "\n" not in message


def test_production_with_jwt_secret_starts_and_uses_it(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("APP_ENV", "production")
    monkeypatch.setenv("JWT_SECRET", LONG_SECRET)
    settings = load_settings()
    assert settings.APP_ENV == "production"
    assert settings.jwt_secret() == LONG_SECRET


def test_dev_without_jwt_secret_generates_one_and_keeps_it_private_in_the_data_directory(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    data_dir = tmp_path / "not-yet-created"
    monkeypatch.setenv("RUNSTATE_DATA_DIR", str(data_dir))
    settings = load_settings()

    secret = settings.jwt_secret()

    assert len(secret) >= 32
    secret_file = data_dir / "jwt-secret"
    assert secret_file.read_text(encoding="utf-8").strip() == secret
    assert stat.S_IMODE(secret_file.stat().st_mode) == 0o600
    assert settings.jwt_secret() == secret
    assert load_settings().jwt_secret() == secret  # a restarted process signs with the same key


def test_a_generated_jwt_secret_differs_between_data_directories(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("RUNSTATE_DATA_DIR", str(tmp_path / "one"))
    first = load_settings().jwt_secret()
    monkeypatch.setenv("RUNSTATE_DATA_DIR", str(tmp_path / "two"))
    assert load_settings().jwt_secret() != first


def test_a_damaged_generated_secret_is_refused_naming_the_data_directory(tmp_path: Path) -> None:
    (tmp_path / "jwt-secret").write_text("")
    settings = load_settings(RUNSTATE_DATA_DIR=tmp_path)
    with pytest.raises(SettingsError, match="RUNSTATE_DATA_DIR"):
        settings.jwt_secret()


def test_dns_defaults_are_the_system_resolvers_and_a_cache_for_every_monitored_host() -> None:
    settings = load_settings()
    assert settings.DNS_SERVERS is None
    assert settings.dns_servers is None
    assert settings.DNS_TIMEOUT_SECONDS == 5.0
    assert settings.DNS_CACHE_SIZE == 200_000
    assert settings.DNS_CACHE_MIN_TTL_SECONDS == 5.0
    assert settings.DNS_CACHE_MAX_TTL_SECONDS == 300.0
    assert settings.DNS_NEGATIVE_TTL_SECONDS == 5.0


@pytest.mark.parametrize(
    ("value", "servers"),
    [
        ("10.0.0.2", ("10.0.0.2:53",)),
        ("127.0.0.1:5353", ("127.0.0.1:5353",)),
        (" 10.0.0.2 , 10.0.0.3:53 ", ("10.0.0.2:53", "10.0.0.3:53")),
        ("[::1]:5353", ("[::1]:5353",)),
        ("[2001:DB8::53]", ("[2001:db8::53]:53",)),
        ("1.1.1.1,[2606:4700:4700::1111]:53", ("1.1.1.1:53", "[2606:4700:4700::1111]:53")),
    ],
)
def test_dns_servers_are_read_as_addresses_with_ports(
    monkeypatch: pytest.MonkeyPatch, value: str, servers: tuple[str, ...]
) -> None:
    monkeypatch.setenv("DNS_SERVERS", value)
    assert load_settings().dns_servers == servers


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("dns.example.com", "is not an IP address"),
        ("10.0.0.2:0", "the port must be within 1-65535"),
        ("10.0.0.2:65536", "the port must be within 1-65535"),
        ("10.0.0.2:dns", "the port must be within 1-65535"),
        ("10.0.0.2,,10.0.0.3", "'' is not an IP address"),
        ("::1", "write an IPv6 server in brackets, e.g. [::1]:53"),
        ("[::1", "is not [ipv6]:port"),
        ("[10.0.0.2]:53", "is not an IP address"),
    ],
)
def test_a_wrong_dns_server_is_a_one_line_error_naming_dns_servers(
    monkeypatch: pytest.MonkeyPatch, value: str, reason: str
) -> None:
    monkeypatch.setenv("DNS_SERVERS", value)
    with pytest.raises(SettingsError) as caught:
        load_settings()
    message = str(caught.value)
    assert message.startswith("DNS_SERVERS: ")
    assert reason in message
    assert "\n" not in message


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("DNS_TIMEOUT_SECONDS", "0"),
        ("DNS_CACHE_SIZE", "0"),
        ("DNS_CACHE_MAX_TTL_SECONDS", "-1"),
        ("DNS_NEGATIVE_TTL_SECONDS", "soon"),
    ],
)
def test_a_wrong_dns_number_is_an_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}: "):
        load_settings()


def test_a_dns_ttl_floor_above_the_ceiling_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("DNS_CACHE_MIN_TTL_SECONDS", "600")
    with pytest.raises(SettingsError, match=r"^DNS_CACHE_MIN_TTL_SECONDS: must not exceed"):
        load_settings()


def test_retention_keeps_a_week_of_checks_90_days_of_hourly_rollups_daily_ones_for_ever() -> None:
    settings = load_settings()
    assert settings.CHECK_RETENTION_DAYS == 7
    assert settings.HOURLY_ROLLUP_RETENTION_DAYS == 90
    assert settings.DAILY_ROLLUP_RETENTION_DAYS == 0


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CHECK_RETENTION_DAYS", "0"),
        ("CHECK_RETENTION_DAYS", "-1"),
        ("CHECK_RETENTION_DAYS", "a week"),
        ("CHECK_RETENTION_DAYS", "1.5"),
        ("HOURLY_ROLLUP_RETENTION_DAYS", "0"),
        ("HOURLY_ROLLUP_RETENTION_DAYS", "ninety"),
        ("DAILY_ROLLUP_RETENTION_DAYS", "-1"),
        ("DAILY_ROLLUP_RETENTION_DAYS", "forever"),
    ],
)
def test_a_wrong_retention_is_a_one_line_error_naming_it(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=f"^{name}: ") as caught:
        load_settings()
    assert "\n" not in str(caught.value)


def test_retention_of_daily_rollups_may_be_zero_for_ever_and_others_at_least_one_day(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("CHECK_RETENTION_DAYS", "1")
    monkeypatch.setenv("HOURLY_ROLLUP_RETENTION_DAYS", "1")
    monkeypatch.setenv("DAILY_ROLLUP_RETENTION_DAYS", "0")
    settings = load_settings()
    assert (settings.CHECK_RETENTION_DAYS, settings.HOURLY_ROLLUP_RETENTION_DAYS) == (1, 1)
    assert settings.DAILY_ROLLUP_RETENTION_DAYS == 0
