"""Settings: defaults, normalisation, one-line errors that never echo secrets, the embedded secret key."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from emailkit.settings import Settings, SettingsError, load_settings


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No EMAILKIT_* variable from the caller's shell leaks in; relative defaults resolve under tmp_path."""
    for name in list(os.environ):
        if name.startswith("EMAILKIT_"):
            monkeypatch.delenv(name)
    monkeypatch.chdir(tmp_path)


def test_defaults_are_the_embedded_mode() -> None:
    s = load_settings()
    assert s.database_url == "sqlite+aiosqlite:///.emailkit/emailkit.db"
    assert s.broker_url is None
    assert s.provider == "outbox"
    assert s.data_dir == Path(".emailkit")
    assert s.outbox_dir == Path(".emailkit/outbox")
    assert s.secret_key is None
    assert s.is_sqlite and s.is_embedded
    assert s.max_page_size == 250
    assert s.exact_count_limit == 10_000


def test_values_come_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILKIT_DATABASE_URL", "postgresql://u@db:5432/mail")
    monkeypatch.setenv("EMAILKIT_BROKER_URL", "redis://cache:6379/0")
    monkeypatch.setenv("EMAILKIT_SECRET_KEY", "s" * 32)
    monkeypatch.setenv("EMAILKIT_PROVIDER", "ses")
    monkeypatch.setenv("EMAILKIT_MAX_PAGE_SIZE", "100")
    monkeypatch.setenv("EMAILKIT_EXACT_COUNT_LIMIT", "500")
    monkeypatch.setenv("EMAILKIT_CORS_ORIGINS", "https://app.example.com/, https://admin.example.com")
    s = load_settings()
    assert s.database_url == "postgresql+asyncpg://u@db:5432/mail"
    assert s.broker_url == "redis://cache:6379/0"
    assert s.provider == "ses"
    assert s.max_page_size == 100
    assert s.exact_count_limit == 500
    assert s.cors_origins == ["https://app.example.com", "https://admin.example.com"]
    assert not s.is_sqlite and not s.is_embedded
    assert s.resolved_secret_key() == "s" * 32


def test_cors_origins_accepts_a_json_list(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILKIT_CORS_ORIGINS", '["https://a.example"]')
    assert load_settings().cors_origins == ["https://a.example"]


@pytest.mark.parametrize(
    ("given", "expected"),
    [
        ("postgresql://u:p@h:5432/d", "postgresql+asyncpg://u:p@h:5432/d"),
        ("postgres://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("postgresql+asyncpg://u@h/d", "postgresql+asyncpg://u@h/d"),
        ("sqlite:///data/x.db", "sqlite+aiosqlite:///data/x.db"),
        ("sqlite+aiosqlite:////abs/x.db", "sqlite+aiosqlite:////abs/x.db"),
    ],
)
def test_database_url_is_normalised(given: str, expected: str) -> None:
    assert load_settings(database_url=given).database_url == expected


def test_public_url_loses_its_trailing_slash() -> None:
    assert load_settings(public_url="https://mail.example.com/").public_url == "https://mail.example.com"


def test_an_empty_broker_url_means_the_in_process_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILKIT_BROKER_URL", "")
    assert load_settings().broker_url is None


@pytest.mark.parametrize(
    ("variable", "value"),
    [
        ("EMAILKIT_DATABASE_URL", "mysql://x"),
        ("EMAILKIT_BROKER_URL", "http://queue"),
        ("EMAILKIT_PUBLIC_URL", "foo"),
        ("EMAILKIT_PROVIDER", "pigeon"),
        ("EMAILKIT_MAX_PAGE_SIZE", "lots"),
        ("EMAILKIT_MAX_PAGE_SIZE", "0"),
        ("EMAILKIT_EXACT_COUNT_LIMIT", "0"),
        ("EMAILKIT_DEBUG", "maybe"),
        ("EMAILKIT_CORS_ORIGINS", "[not json"),
        ("EMAILKIT_DEFAULT_TIMEZONE", "localtime"),
        ("EMAILKIT_DEFAULT_TIMEZONE", "Europe/Atlantis"),
        ("EMAILKIT_DEFAULT_TIMEZONE", "/etc/localtime"),
        ("EMAILKIT_MARKETING_CAP", "3/month"),
        ("EMAILKIT_MARKETING_CAP", "0/day"),
    ],
)
def test_a_bad_value_is_one_line_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(SettingsError) as err:
        load_settings()
    message = str(err.value)
    assert message.startswith(f"{variable}: ")
    assert "\n" not in message


def test_the_timezone_and_the_marketing_cap_reach_the_send_settings(monkeypatch: pytest.MonkeyPatch) -> None:
    defaults = load_settings().sending_config()
    assert (defaults.default_timezone, defaults.marketing_cap) == ("UTC", None)
    monkeypatch.setenv("EMAILKIT_DEFAULT_TIMEZONE", "Europe/Paris")
    monkeypatch.setenv("EMAILKIT_MARKETING_CAP", "3/day")
    config = load_settings().sending_config()
    assert config.default_timezone == "Europe/Paris"
    assert config.marketing_cap is not None and str(config.marketing_cap) == "3/day"
    monkeypatch.setenv("EMAILKIT_MARKETING_CAP", "")
    assert load_settings().sending_config().marketing_cap is None


def test_error_messages_never_echo_secrets(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("EMAILKIT_DATABASE_URL", "postgresql://u@h/d")
    monkeypatch.setenv("EMAILKIT_SECRET_KEY", "hunter2-short")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert str(err.value) == "EMAILKIT_SECRET_KEY: must be at least 16 characters"

    monkeypatch.delenv("EMAILKIT_SECRET_KEY")
    monkeypatch.setenv("EMAILKIT_DATABASE_URL", "mysql://mailer:hunter2@db/mail")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert "hunter2" not in str(err.value)
    assert "mysql://mailer:***@db/mail" in str(err.value)

    monkeypatch.delenv("EMAILKIT_DATABASE_URL")
    monkeypatch.setenv("EMAILKIT_BROKER_URL", "http://:hunter2@queue")
    with pytest.raises(SettingsError) as err:
        load_settings()
    assert err.value.args[0].startswith("EMAILKIT_BROKER_URL: ")
    assert "hunter2" not in str(err.value)


def test_secret_key_is_not_in_the_repr() -> None:
    s = load_settings(secret_key="a-very-secret-value-123")
    assert "a-very-secret-value-123" not in repr(s)
    assert "a-very-secret-value-123" not in str(s.model_dump())


@pytest.mark.parametrize(
    "overrides",
    [
        {"database_url": "postgresql://u@h/d"},
        {"broker_url": "redis://localhost:6379/0"},
    ],
)
def test_secret_key_is_required_outside_embedded_mode(overrides: dict[str, str], tmp_path: Path) -> None:
    s = load_settings(data_dir=str(tmp_path / "data"), **overrides)
    with pytest.raises(SettingsError) as err:
        s.resolved_secret_key()
    assert str(err.value).startswith("EMAILKIT_SECRET_KEY: ")
    # No key was silently generated.
    assert not (tmp_path / "data").exists()


def test_embedded_secret_is_generated_once_and_private(tmp_path: Path) -> None:
    data_dir = tmp_path / "data"
    first = Settings(data_dir=data_dir).resolved_secret_key()
    path = data_dir / "secret.key"
    assert path.read_text() == first
    assert len(first) >= 32
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    # Stable across calls and across processes (a new Settings reads the same file).
    assert Settings(data_dir=data_dir).resolved_secret_key() == first
    assert Settings(data_dir=data_dir).resolved_secret_key() == first


def test_embedded_secret_is_per_data_dir(tmp_path: Path) -> None:
    one = Settings(data_dir=tmp_path / "a").resolved_secret_key()
    two = Settings(data_dir=tmp_path / "b").resolved_secret_key()
    assert one != two


def test_explicit_secret_wins_in_embedded_mode(tmp_path: Path) -> None:
    s = load_settings(secret_key="x" * 20, data_dir=str(tmp_path))
    assert s.resolved_secret_key() == "x" * 20
    assert not (tmp_path / "secret.key").exists()


def test_unwritable_data_dir_is_a_settings_error(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(SettingsError) as err:
        Settings(data_dir=blocker / "data").resolved_secret_key()
    assert str(err.value).startswith("EMAILKIT_DATA_DIR: ")


def test_bounce_domain_is_normalised_and_checked() -> None:
    settings = load_settings(bounce_domain=" Bounces.Example.COM. ")
    assert settings.bounce_domain == "bounces.example.com"
    assert settings.sending_config().bounce_domain == "bounces.example.com"
    assert load_settings(bounce_domain="").bounce_domain is None
    for bad in ("bounces", "user@example.com", "bad domain.com", "-x.example.com"):
        with pytest.raises(SettingsError, match="EMAILKIT_BOUNCE_DOMAIN: must be a domain name"):
            load_settings(bounce_domain=bad)
