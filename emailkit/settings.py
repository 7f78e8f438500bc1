"""Typed settings, read from ``EMAILKIT_*`` environment variables.

Only composition roots (the CLI, ``create_app`` callers, tests) construct :class:`Settings`; everything
else receives the values it needs as arguments.
"""

from __future__ import annotations

import secrets
from pathlib import Path
from typing import Literal
from urllib.parse import urlsplit

from pydantic import Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

DEFAULT_DATA_DIR = Path(".emailkit")
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/emailkit.db"

ProviderName = Literal["outbox", "smtp", "ses", "sendgrid"]


class SettingsError(Exception):
    """A configuration value is unusable; ``str()`` is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="EMAILKIT_", extra="ignore", frozen=True)

    database_url: str = DEFAULT_DATABASE_URL
    broker_url: str | None = None
    secret_key: SecretStr | None = None
    public_url: str = "http://127.0.0.1:8000"
    provider: ProviderName = "outbox"
    outbox_dir: Path = DEFAULT_DATA_DIR / "outbox"
    data_dir: Path = DEFAULT_DATA_DIR
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"

    # GraphQL limits
    max_page_size: int = Field(default=250, ge=1, le=10_000)
    max_query_depth: int = Field(default=12, ge=2, le=100)
    max_aliases: int = Field(default=30, ge=1, le=1000)
    max_query_tokens: int = Field(default=3000, ge=50, le=100_000)
    cors_origins: list[str] = Field(default_factory=list)

    # Database pool (PostgreSQL)
    database_pool_size: int = Field(default=10, ge=1, le=500)

    # Worker
    worker_threads: int = Field(default=4, ge=1, le=256)

    @field_validator("database_url")
    @classmethod
    def _check_database_url(cls, value: str) -> str:
        scheme = urlsplit(value).scheme
        if scheme in ("postgres", "postgresql"):
            value = "postgresql+asyncpg" + value[len(scheme) :]
        elif scheme == "sqlite":
            value = "sqlite+aiosqlite" + value[len(scheme) :]
        elif scheme not in ("postgresql+asyncpg", "sqlite+aiosqlite"):
            raise ValueError("must be a postgresql:// or sqlite:// URL")
        return value

    @field_validator("broker_url")
    @classmethod
    def _check_broker_url(cls, value: str | None) -> str | None:
        if not value:
            return None
        scheme = urlsplit(value).scheme
        if scheme not in ("redis", "rediss", "amqp", "amqps"):
            raise ValueError(
                "must be a redis://, rediss:// or amqp:// URL (or unset for the in-process queue)"
            )
        return value

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://mail.example.com")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _check_secret(self) -> Settings:
        if self.secret_key is not None and len(self.secret_key.get_secret_value()) < 16:
            raise ValueError("EMAILKIT_SECRET_KEY must be at least 16 characters")
        return self

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        """No external services: SQLite and the in-process queue."""
        return self.is_sqlite and self.broker_url is None

    def resolved_secret_key(self) -> str:
        """The signing secret.

        In embedded mode a random key is generated once and kept in the data directory so tokens survive
        restarts; everywhere else a missing key is a configuration error rather than a silent default.
        """
        if self.secret_key is not None:
            return self.secret_key.get_secret_value()
        if not self.is_embedded:
            raise SettingsError(
                "EMAILKIT_SECRET_KEY: required when using PostgreSQL or an external broker "
                "(generate one with: python -c 'import secrets; print(secrets.token_urlsafe(48))')"
            )
        path = self.data_dir / "secret.key"
        if path.exists():
            return path.read_text().strip()
        path.parent.mkdir(parents=True, exist_ok=True)
        key = secrets.token_urlsafe(48)
        path.write_text(key)
        path.chmod(0o600)
        return key


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` with one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        name = f"EMAILKIT_{str(loc[0]).upper()}" if loc else "configuration"
        msg = err["msg"].removeprefix("Value error, ")
        if name in msg:
            raise SettingsError(msg) from None
        raise SettingsError(f"{name}: {msg} (got {err.get('input')!r})") from None
