"""The start-up banner and the worker defaults (no I/O: settings in, text out)."""

from __future__ import annotations

from pathlib import Path

from emailkit.settings import Settings
from emailkit.startup import Workers, banner, cpu_count, default_worker_processes


def rows(text: str) -> dict[str, str]:
    out = {}
    for line in text.splitlines()[1:]:
        name, _, value = line.strip().partition("  ")
        out[name] = value.strip()
    return out


def test_production_banner_names_every_choice_and_no_password(tmp_path: Path) -> None:
    settings = Settings(
        database_url="postgresql://mailer:db-pass-1@db.internal:5432/mail",
        broker_url="redis://:redis-pass-2@cache.internal:6379/0",
        secret_key="0123456789abcdef0123",
        provider="smtp",
        smtp_url="smtp://relay:smtp-pass-3@relay.internal:587?tls=starttls",
        public_url="https://mail.example.com",
        data_dir=tmp_path,
        # Unset, as in production (the test suite turns the rule off through the environment).
        require_verified_domains=None,
    )
    text = banner(settings, command="worker", workers=Workers(2, 4, in_process=False))
    assert text.splitlines()[0].startswith("emailkit ") and text.splitlines()[0].endswith(" worker")
    assert rows(text) == {
        "mode": "production",
        "database": "postgresql+asyncpg://mailer:***@db.internal:5432/mail",
        "broker": "redis://:***@cache.internal:6379/0",
        "provider": "smtp via smtp://relay:***@relay.internal:587?tls=starttls, pool 40",
        "public URL": "https://mail.example.com",
        "workers": "2 worker processes x 4 threads",
        "From domains": "verified sending domains only",
    }
    for secret in ("db-pass-1", "redis-pass-2", "smtp-pass-3"):
        assert secret not in text


def test_embedded_banner(tmp_path: Path) -> None:
    settings = Settings(data_dir=tmp_path, require_verified_domains=None)
    text = banner(settings, command="serve", workers=Workers(1, 4, in_process=True), listening="http://x:1")
    assert rows(text) == {
        "mode": "embedded",
        "database": f"sqlite+aiosqlite:///{tmp_path}/emailkit.db",
        "broker": "in-process queue (no broker)",
        "provider": f"outbox, writing .eml files to {(tmp_path / 'outbox').resolve()}",
        "public URL": "http://127.0.0.1:8000",
        "workers": "4 in-process worker threads (jobs run in this process)",
        "listening": "http://x:1",
        "From domains": "WARNING: unverified From domains are allowed (EMAILKIT_REQUIRE_VERIFIED_DOMAINS=false)",
    }
    api_only = banner(settings, command="serve", workers=Workers(0, 4, in_process=True))
    assert rows(api_only)["workers"] == "none in this process (jobs run in `emailkit worker`)"


def test_worker_defaults_follow_the_cpus_unless_set(tmp_path: Path) -> None:
    assert default_worker_processes(Settings(data_dir=tmp_path)) == min(cpu_count(), 8)
    assert default_worker_processes(Settings(data_dir=tmp_path, worker_processes=3)) == 3
    defaults = Settings(data_dir=tmp_path)
    assert (defaults.smtp_pool_size, defaults.worker_threads, defaults.batch_size) == (40, 4, 1000)


def test_banner_names_the_bounce_domain_when_set(tmp_path: Path) -> None:
    plain = Settings(data_dir=tmp_path)
    assert "bounces" not in rows(banner(plain, command="serve", workers=Workers(1, 4, in_process=True)))
    verp = Settings(data_dir=tmp_path, bounce_domain="bounces.example.com")
    text = banner(verp, command="worker", workers=Workers(1, 4, in_process=False))
    assert rows(text)["bounces"] == "VERP senders at bounces.example.com (its MX: emailkit bounce-server)"
