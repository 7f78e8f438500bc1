"""Typed settings, read from ``EMAILKIT_*`` environment variables.

Only composition roots (the CLI, ``create_app`` callers, tests) construct :class:`Settings`; everything
else receives the values it needs as arguments.
"""

from __future__ import annotations

import ipaddress
import json
import os
import re
import secrets
from pathlib import Path
from typing import Annotated, Any, Literal, get_args
from urllib.parse import urlsplit

from limits import parse_many
from pydantic import Field, SecretStr, ValidationError, ValidationInfo, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from pydantic_settings import SettingsError as SourceError

from emailkit.domain.audience import timezones
from emailkit.domain.automation.config import FlowConfig
from emailkit.domain.sending.config import SendingConfig
from emailkit.domain.sending.frequency_cap import FrequencyCap, cap_check
from emailkit.domain.sending_domains.config import DomainConfig
from emailkit.logconfig import LogFormat

DEFAULT_DATA_DIR = Path(".emailkit")
DEFAULT_DATABASE_URL = f"sqlite+aiosqlite:///{DEFAULT_DATA_DIR}/emailkit.db"

# A host name of at least two labels: letters, digits and hyphens (an IDN in its xn-- form).
_DOMAIN = re.compile(r"(?=.{1,253}$)(?:[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9-]{2,63}")

ProviderName = Literal["outbox", "smtp", "ses", "sendgrid", "mailgun", "postmark", "resend", "brevo"]


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
    # Sending providers: switching is EMAILKIT_PROVIDER plus that provider's credential (see
    # emailkit/providers/registry.py, which reports a missing one by its variable name).
    # smtp://user:password@host:587?tls=starttls (options: tls, verify, cafile, timeout, helo, pipelining)
    smtp_url: SecretStr | None = None
    # Sessions per worker process. 40 keeps a worker busy into a local relay (5 left it waiting: 31% of the
    # benchmark's speed instead of 47%); a remote provider may allow fewer connections per account.
    smtp_pool_size: int = Field(default=40, ge=1, le=200)
    # Optional DKIM signing of smtp/outbox messages: domain + selector + key (PEM, inline or as a file).
    dkim_domain: str | None = None
    dkim_selector: str | None = None
    dkim_private_key: SecretStr | None = None
    dkim_private_key_file: Path | None = None
    # Sending domains (createSendingDomain). Campaigns, transactional mail and flows may send only From a
    # verified sending domain of their workspace (or EMAILKIT_DKIM_DOMAIN). Unset: on in production mode, off in
    # embedded mode (the banner says so).
    require_verified_domains: bool | None = None
    # New sending domains get an Ed25519 key too: a second DKIM signature (RFC 8463) beside the RSA one.
    dkim_ed25519: bool = False
    # DNS servers that verifySendingDomain asks, comma-separated host[:port] (e.g. 127.0.0.1:5353);
    # empty: the system's resolver.
    dns_nameservers: Annotated[list[tuple[str, int]], NoDecode] = Field(default_factory=list)
    # Seconds one record's lookup may take before it is reported TIMEOUT.
    dns_timeout: float = Field(default=5.0, gt=0, le=60)
    # The include: the SPF record of a sending domain must have; unset: the provider's (amazonses.com for
    # ses, sendgrid.net for sendgrid), none for smtp and outbox (any SPF record then passes).
    spf_include: str | None = None
    # Where the suggested DMARC record sends aggregate reports; unset: dmarc-reports@<the domain>.
    dmarc_rua: str | None = None
    # Without the key pair, botocore's default chain (AWS_* variables, profile, instance role) applies.
    ses_region: str = "us-east-1"
    ses_access_key_id: str | None = None
    ses_secret_access_key: SecretStr | None = None
    ses_endpoint_url: str | None = None
    ses_configuration_set: str | None = None
    sendgrid_api_key: SecretStr | None = None
    sendgrid_base_url: str = "https://api.sendgrid.com"
    # Mailgun's EU region is https://api.eu.mailgun.net.
    mailgun_api_key: SecretStr | None = None
    mailgun_domain: str | None = None
    mailgun_base_url: str = "https://api.mailgun.net"
    postmark_server_token: SecretStr | None = None
    # "outbound" is Postmark's default transactional stream; campaigns belong in a broadcast stream.
    postmark_message_stream: str = "outbound"
    postmark_base_url: str = "https://api.postmarkapp.com"
    resend_api_key: SecretStr | None = None
    resend_base_url: str = "https://api.resend.com"
    brevo_api_key: SecretStr | None = None
    brevo_base_url: str = "https://api.brevo.com"
    # Concurrent HTTP requests per process for the HTTP API providers (ses, sendgrid, mailgun, postmark,
    # resend, brevo).
    provider_concurrency: int = Field(default=10, ge=1, le=500)

    # Sending pipeline. Rate limits are shared by every worker (through Redis when one is configured). The
    # defaults are SendingConfig's: these fields name and bound them; sending_config() hands them over.
    send_rate_per_second: float | None = Field(default=None, gt=0)
    send_rate_per_hour: int | None = Field(default=None, gt=0)
    # Recipients per batch: the unit of work one worker claims.
    batch_size: int = Field(default=SendingConfig.batch_size, ge=10, le=100_000)
    # A worker that has not touched its batch for this long is presumed dead and the batch is taken over.
    batch_lease_seconds: float = Field(default=SendingConfig.lease_seconds, ge=5, le=86_400)
    # Batches nobody has picked up (or whose lease expired) this long after they were last enqueued are
    # enqueued again: queue messages lost with a broker restart are found within about this long.
    requeue_after_seconds: float = Field(default=SendingConfig.requeue_after_seconds, ge=1, le=86_400)
    # Attempts per recipient for transient errors (4xx SMTP, 429/5xx HTTP, timeouts) before FAILED.
    send_max_attempts: int = Field(default=SendingConfig.max_attempts, ge=1, le=50)
    # Pause a campaign when more than this share of attempted recipients failed (after the minimum sample).
    error_budget: float = Field(default=SendingConfig.error_budget_ratio, gt=0, le=1)
    error_budget_min_sample: int = Field(default=SendingConfig.error_budget_min_sample, ge=1)
    # Adds a mailto: to List-Unsubscribe (e.g. unsubscribe@mail.example.com).
    unsubscribe_mailto: str | None = SendingConfig.unsubscribe_mailto
    # The domain whose MX points at `emailkit bounce-server` (e.g. bounces.example.com). Set, every message's
    # envelope sender is bounce+<signed delivery token>@<domain> (VERP) and List-Unsubscribe carries
    # mailto:unsubscribe+<token>@<domain> (instead of EMAILKIT_UNSUBSCRIBE_MAILTO).
    bounce_domain: str | None = SendingConfig.bounce_domain
    # Largest message the bounce server takes (DATA); a DSN quoting a whole newsletter is some 100 KB.
    bounce_max_message_bytes: int = Field(default=10 * 1024 * 1024, ge=64 * 1024, le=1 << 30)
    # The IMAP mailbox `emailkit bounce-mailbox` reads bounces and complaint reports from, for set-ups whose
    # bounce mail cannot reach `emailkit bounce-server`: imaps://user:password@host:993/INBOX?processed=Processed
    # (see emailkit/inbound/mailbox_config.py for imap:// with STARTTLS and the other options).
    bounce_mailbox_url: SecretStr | None = None
    # Seconds between two looks at the mailbox without IDLE; with IDLE, the longest wait before looking anyway.
    bounce_mailbox_poll_seconds: float = Field(default=60.0, ge=1, le=3600)
    # The timezone (IANA name) of people without a valid `timezone` attribute whose list names none.
    default_timezone: str = SendingConfig.default_timezone
    # At most N marketing messages per person per hour, day or week ("3/day"), across campaigns and flows;
    # unset (or empty) is off. Transactional and double opt-in mail never count and are never held back.
    marketing_cap: str | None = None
    # Sender of transactional messages (double opt-in confirmations, sendTransactional without fromEmail).
    from_email: str | None = None
    from_name: str = ""
    # Public POST /subscribe: requests per client IP (a `limits` expression such as "5/minute;50/day").
    subscribe_rate_limit: str = "5/minute;50/day"
    data_dir: Path = DEFAULT_DATA_DIR
    debug: bool = False
    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR"] = "INFO"
    # json (one object a line) or console; unset: console on a terminal, json otherwise.
    log_format: LogFormat | None = None
    # Email addresses in full in log lines (masked as j…e@example.com by default).
    log_pii: bool = False

    # GraphQL limits
    max_page_size: int = Field(default=250, ge=1, le=10_000)
    # totalCount is exact up to this many matches; beyond it an estimate (PostgreSQL) or "at least" this many.
    exact_count_limit: int = Field(default=10_000, ge=1, le=1_000_000_000)
    max_query_depth: int = Field(default=12, ge=2, le=100)
    max_aliases: int = Field(default=30, ge=1, le=1000)
    max_query_tokens: int = Field(default=3000, ge=50, le=100_000)
    # Budget of an operation's estimated cost (about one point per row or field it can return), see README.
    query_cost_limit: int = Field(default=20_000, ge=10)
    # Comma-separated in the environment (a JSON list works too).
    cors_origins: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # Largest multipart (file upload) request, e.g. a CSV import; bigger ones are refused with 413.
    max_upload_bytes: int = Field(default=512 * 1024 * 1024, ge=1024 * 1024)
    # Largest JSON body of POST /graphql (uploads have max_upload_bytes). The biggest real ones are templates
    # and campaign bodies of up to 1 MB of text, which JSON escaping can nearly double.
    max_request_bytes: int = Field(default=4 * 1024 * 1024, ge=64 * 1024, le=1 << 30)
    # Requests per API key (a `limits` expression, shared through Redis when configured); empty turns it off.
    # 10 a second on average is far beyond a person in GraphiQL or a dashboard (a few queries per view) and
    # lets one leaked or runaway key use only a small share of what the database answers.
    api_rate_limit: str = "600/minute"
    # Reverse proxies (comma-separated CIDRs) whose X-Forwarded-For / X-Forwarded-Proto / Forwarded headers
    # are believed. Empty trusts nobody, loopback included: a same-host TCP forwarder (SSH tunnel, stunnel,
    # port-forward) passes a client's own headers through, so trusting by default would let clients choose
    # their address.
    trusted_proxies: Annotated[list[ipaddress.IPv4Network | ipaddress.IPv6Network], NoDecode] = Field(
        default_factory=list
    )
    # The bearer token GET /metrics wants (API and `emailkit worker --metrics-port`); unset, the route answers
    # loopback clients only (emailkit/web/metrics.py).
    metrics_token: SecretStr | None = None
    # Open GraphQL WebSocket connections re-check their API key this often; a revoked key's are closed (4403).
    ws_key_recheck_seconds: float = Field(default=30.0, gt=0, le=3600)
    # An API key, once verified, is trusted this long without a database read (HTTP requests, new WebSocket
    # connections; 0: read every time). A key revoked through another process is refused here within this
    # time; through this process, at once.
    api_key_cache_seconds: float = Field(default=5.0, ge=0, le=300)

    # Database pool (PostgreSQL). An API process also executes at most this many GraphQL requests at once
    # (emailkit/web/admission.py); the overflow (as many again) serves wide requests, webhooks and public routes.
    database_pool_size: int = Field(default=10, ge=1, le=500)
    # Seconds a request waits for a database connection before it is answered 503 with Retry-After.
    database_pool_timeout: float = Field(default=5, gt=0, le=300)
    # PostgreSQL: `serve` and `worker` refuse a database role that is a superuser or has BYPASSRLS, since such
    # a role is not held to the workspace policies (README, "Workspaces"). True starts anyway, with a warning.
    database_allow_rls_bypass: bool = False
    # PostgreSQL statement_timeout in seconds (0: none): API requests, then worker jobs (imports and campaign
    # snapshots run statements far longer than any request should, so they get their own ceiling).
    statement_timeout: float = Field(default=30, ge=0)
    worker_statement_timeout: float = Field(default=600, ge=0)
    # Seconds a GraphQL request over HTTP may be expected to take (waiting for its turn, then executing), and
    # may wait for its turn; beyond that it is answered 503 with Retry-After. See emailkit/web/admission.py.
    api_queue_timeout: float = Field(default=1.5, gt=0, le=60)

    # Worker: `emailkit worker` runs this many processes (default: one per CPU, at most 8) of this many threads.
    worker_processes: int | None = Field(default=None, ge=1, le=256)
    worker_threads: int = Field(default=4, ge=1, le=256)
    # A Redis-broker worker silent this long counts as dead and its unacknowledged jobs are redelivered:
    # crash recovery takes about this long (a worker frozen for longer sees its jobs run again elsewhere).
    # Idle workers poll every second, so a few seconds is the floor.
    worker_heartbeat_seconds: float = Field(default=30, ge=5, le=3600)
    # Redis for live updates (pub/sub) and shared rate limits; defaults to a redis:// EMAILKIT_BROKER_URL.
    # Required with an amqp:// broker; unset with the in-process queue means in-process pub/sub.
    redis_url: str | None = Field(default=None, validate_default=True)

    # Provider webhooks. Verification is on for a provider whenever its key is configured;
    # webhook_verify=false turns every check off (local testing only).
    webhook_verify: bool = True
    # Age limit of signed webhook timestamps in seconds; 0 turns the age check off.
    webhook_tolerance_seconds: int = Field(default=300, ge=0, le=86_400)
    # Public, so not a secret: the base64 DER key SendGrid shows, or PEM.
    sendgrid_webhook_public_key: str | None = None
    mailgun_webhook_signing_key: SecretStr | None = None
    resend_webhook_secret: SecretStr | None = None
    postmark_webhook_username: str | None = None
    postmark_webhook_password: SecretStr | None = None
    brevo_webhook_username: str | None = None
    brevo_webhook_password: SecretStr | None = None
    # Comma-separated; empty accepts any topic.
    sns_topic_arns: Annotated[list[str], NoDecode] = Field(default_factory=list)
    # PEM files named like the last path segment of SigningCertURL, consulted before any download.
    sns_cert_dir: Path | None = None
    # Outgoing webhooks may be sent to loopback and private addresses (a receiver on this machine or network:
    # development and tests). Off, such destinations are refused when saved and at every connection (SSRF).
    webhook_allow_private: bool = False
    # Senders (the API's) may name hosts at loopback and private addresses (a relay on this machine or network).
    # Off, a sender whose url/baseUrl/endpointUrl is, or resolves to, one is refused when saved (SSRF through
    # testSender); cloud metadata addresses are refused always.
    sender_allow_private: bool = False
    # Feedback policy: this many soft bounces of one address within the window suppress it.
    soft_bounce_limit: int = Field(default=3, ge=1, le=1000)
    soft_bounce_window_days: int = Field(default=7, ge=1, le=365)
    # A RUNNING campaign pauses itself once complaints / delivered (or sent, when the provider reports
    # no deliveries) exceeds this rate, counted once that base reaches the minimum sample.
    complaint_pause_rate: float = Field(default=0.003, ge=0, le=1)
    complaint_min_sample: int = Field(default=1000, ge=1)
    # Record opens and clicks without tying them to a subscriber (no subscriber, address, ip, user agent).
    tracking_anonymous: bool = False
    # Opens and clicks wait in memory for their batched write; beyond this many (a long database outage)
    # new ones are dropped and the count is logged.
    tracking_buffer_limit: int = Field(default=100_000, ge=1000, le=10_000_000)
    # Buffered hits are written at least this often (and at once when 1,000 are waiting).
    tracking_flush_seconds: float = Field(default=0.1, gt=0, le=60)

    @model_validator(mode="before")
    @classmethod
    def _defaults_under_data_dir(cls, data: Any) -> Any:
        # The embedded database and outbox follow EMAILKIT_DATA_DIR unless set explicitly.
        if isinstance(data, dict):
            base = Path(data.get("data_dir") or DEFAULT_DATA_DIR)
            if not data.get("database_url"):
                data = {**data, "database_url": f"sqlite+aiosqlite:///{base}/emailkit.db"}
            if not data.get("outbox_dir"):
                data = {**data, "outbox_dir": base / "outbox"}
        return data

    @field_validator("sns_topic_arns", mode="before")
    @classmethod
    def _split_topic_arns(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("trusted_proxies", mode="before")
    @classmethod
    def _split_proxies(cls, value: object) -> object:
        if isinstance(value, str):
            networks = []
            for part in (p.strip() for p in value.split(",")):
                if part:
                    try:
                        networks.append(ipaddress.ip_network(part, strict=False))
                    except ValueError:
                        raise ValueError(f"not an IP address or CIDR: {part!r}") from None
            return networks
        return value

    @field_validator("dns_nameservers", mode="before")
    @classmethod
    def _split_nameservers(cls, value: object) -> object:
        if isinstance(value, str):
            value = value.split(",")
        if isinstance(value, list):
            kept = [p for p in value if not isinstance(p, str) or p.strip()]
            return [_nameserver(p.strip()) if isinstance(p, str) else p for p in kept]
        return value

    @field_validator("api_rate_limit")
    @classmethod
    def _check_rate_limit(cls, value: str) -> str:
        if value.strip():
            try:
                parse_many(value)
            except ValueError:
                raise ValueError(
                    "must be a rate such as 600/minute (or several: 20/second;600/minute)"
                ) from None
        return value

    @field_validator("bounce_domain")
    @classmethod
    def _check_bounce_domain(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        domain = value.strip().rstrip(".").lower()
        if not _DOMAIN.fullmatch(domain):
            raise ValueError("must be a domain name such as bounces.example.com")
        return domain

    @field_validator("default_timezone")
    @classmethod
    def _check_default_timezone(cls, value: str) -> str:
        if not timezones.is_valid(value):
            raise ValueError("must be an IANA timezone name such as UTC, Europe/Paris or America/New_York")
        return value

    @field_validator("marketing_cap")
    @classmethod
    def _check_marketing_cap(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        FrequencyCap.parse(value)
        return value

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

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: str | None, info: ValidationInfo) -> str | None:
        if value:
            if urlsplit(value).scheme not in ("redis", "rediss", "unix"):
                raise ValueError("must be a redis://, rediss:// or unix:// URL")
            return value
        broker = info.data.get("broker_url")
        if broker and urlsplit(broker).scheme in ("amqp", "amqps"):
            raise ValueError(
                "required with an amqp:// EMAILKIT_BROKER_URL (workers publish live progress through Redis)"
            )
        return None

    @field_validator("public_url")
    @classmethod
    def _check_public_url(cls, value: str) -> str:
        parts = urlsplit(value)
        if parts.scheme not in ("http", "https") or not parts.netloc:
            raise ValueError("must be an absolute http(s) URL such as https://mail.example.com")
        return value.rstrip("/")

    @field_validator("cors_origins", mode="before")
    @classmethod
    def _split_origins(cls, value: object) -> object:
        if isinstance(value, str):
            text = value.strip()
            if text.startswith("["):
                try:
                    return json.loads(text)
                except json.JSONDecodeError:
                    raise ValueError("must be comma-separated origins or a JSON list") from None
            return [part.strip().rstrip("/") for part in text.split(",") if part.strip()]
        return value

    @field_validator("secret_key", "metrics_token")
    @classmethod
    def _check_secret(cls, value: SecretStr | None) -> SecretStr | None:
        if value is not None and len(value.get_secret_value()) < 16:
            raise ValueError("must be at least 16 characters")
        return value

    @property
    def resolved_redis_url(self) -> str | None:
        """Redis for pub/sub and shared state: EMAILKIT_REDIS_URL, else a redis:// broker, else None."""
        if self.redis_url:
            return self.redis_url
        if self.broker_url and urlsplit(self.broker_url).scheme in ("redis", "rediss"):
            return self.broker_url
        return None

    @property
    def is_sqlite(self) -> bool:
        return self.database_url.startswith("sqlite")

    @property
    def is_embedded(self) -> bool:
        """No external services: SQLite and the in-process queue."""
        return self.is_sqlite and self.broker_url is None

    def sending_config(self) -> SendingConfig:
        return SendingConfig(
            batch_size=self.batch_size,
            lease_seconds=self.batch_lease_seconds,
            max_attempts=self.send_max_attempts,
            error_budget_ratio=self.error_budget,
            error_budget_min_sample=self.error_budget_min_sample,
            unsubscribe_mailto=self.unsubscribe_mailto,
            bounce_domain=self.bounce_domain,
            requeue_after_seconds=self.requeue_after_seconds,
            default_timezone=self.default_timezone,
            marketing_cap=FrequencyCap.parse(self.marketing_cap) if self.marketing_cap else None,
        )

    @property
    def requires_verified_domains(self) -> bool:
        if self.require_verified_domains is not None:
            return self.require_verified_domains
        return not self.is_embedded

    def domain_config(self) -> DomainConfig:
        include = self.spf_include or {"ses": "amazonses.com", "sendgrid": "sendgrid.net"}.get(self.provider)
        return DomainConfig(
            nameservers=tuple(self.dns_nameservers),
            dns_timeout=self.dns_timeout,
            spf_include=include,
            bounce_domain=self.bounce_domain or None,
            dmarc_rua=self.dmarc_rua or None,
            ed25519=self.dkim_ed25519,
            require_verified=self.requires_verified_domains,
            trusted_domains=frozenset({self.dkim_domain.lower()} if self.dkim_domain else ()),
        )

    def flow_config(self) -> FlowConfig:
        # A flow's runs are leased and held like a campaign's batches, by the same settings.
        cap = FrequencyCap.parse(self.marketing_cap) if self.marketing_cap else None
        return FlowConfig(
            lease_seconds=self.batch_lease_seconds,
            hold_seconds=self.requeue_after_seconds,
            default_timezone=self.default_timezone,
            cap=cap_check(cap) if cap is not None else None,
        )

    def secret_values(self) -> list[str]:
        """Every secret these settings hold, to keep out of logs: each secret field, the password of each URL,
        and the signing key (generated in embedded mode)."""
        values = [
            getattr(self, name).get_secret_value()
            for name in type(self).model_fields
            if _is_secret(name) and isinstance(getattr(self, name), SecretStr)
        ]
        for url in [self.database_url, self.broker_url, *values]:
            password = urlsplit(url).password if url and "://" in url else None
            if password:
                values.append(password)
        try:
            values.append(self.resolved_secret_key())
        except (SettingsError, OSError):
            pass
        return values

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
        try:
            return _read_or_create_secret(path)
        except OSError as exc:
            raise SettingsError(
                f"EMAILKIT_DATA_DIR: cannot keep the generated secret key in {path}: {exc.strerror}"
            ) from None


def _nameserver(text: str) -> tuple[str, int]:
    """``host``, ``host:port``, ``[v6]:port`` or a bare IPv6 address, as (address, port)."""
    host, port = text, 53
    if text.startswith("["):
        host, _, rest = text[1:].partition("]")
        if rest:
            port = _port(rest.removeprefix(":"), text)
    elif text.count(":") == 1:
        host, _, rest = text.partition(":")
        port = _port(rest, text)
    try:
        ipaddress.ip_address(host)
    except ValueError:
        raise ValueError(f"not an IP address (with an optional :port): {text!r}") from None
    return host, port


def _port(text: str, whole: str) -> int:
    if not text.isdigit() or not 0 < int(text) < 65536:
        raise ValueError(f"not a port number in {whole!r}")
    return int(text)


def _read_or_create_secret(path: Path) -> str:
    if path.exists():
        key = path.read_text().strip()
        if key:
            return key
        path.unlink()
    path.parent.mkdir(parents=True, exist_ok=True)
    key = secrets.token_urlsafe(48)
    # Created with mode 0600 in one step (never readable by others, not even briefly); O_EXCL makes a
    # concurrent first start keep whichever key was written first.
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text().strip()
    with os.fdopen(fd, "w") as out:
        out.write(key)
    return key


_URL_PASSWORD = re.compile(r"(?<=://)([^/@:]*):[^/@]*@")
_SECRET_WORDS = ("secret", "password", "token", "key")


def _is_secret(field: str) -> bool:
    info = Settings.model_fields.get(field)
    annotation = info.annotation if info is not None else None
    return (
        annotation is SecretStr
        or SecretStr in get_args(annotation)
        or any(word in field for word in _SECRET_WORDS)
    )


def _shown(field: str, value: object) -> str:
    """The rejected value as it may appear in an error message: secrets and URL passwords hidden."""
    if _is_secret(field) or not isinstance(value, str | int | float):
        return ""
    return " (got {!r})".format(_URL_PASSWORD.sub(r"\1:***@", str(value)))


def load_settings(**overrides: object) -> Settings:
    """Read settings from the environment; raise :class:`SettingsError` with one readable line."""
    try:
        return Settings(**overrides)  # type: ignore[arg-type]
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = err["loc"]
        field = str(loc[0]) if loc else ""
        name = f"EMAILKIT_{field.upper()}" if field else "configuration"
        msg = err["msg"].removeprefix("Value error, ")
        raise SettingsError(f"{name}: {msg}{_shown(field, err.get('input'))}") from None
    except SourceError as exc:
        # Raised before validation when a list/dict value is not valid JSON.
        found = re.search(r'field "(\w+)"', str(exc))
        name = f"EMAILKIT_{found.group(1).upper()}" if found else "configuration"
        raise SettingsError(f"{name}: cannot parse the value") from None


def configure_logging(settings: Settings) -> None:
    """Logging (and, when the OTEL_* variables ask for them, traces) of this process: the CLI and every API
    and worker process call this first."""
    from emailkit import logconfig, traces

    logconfig.configure(
        level=settings.log_level,
        log_format=settings.log_format,
        pii=settings.log_pii,
        secrets=settings.secret_values(),
    )
    traces.configure()
