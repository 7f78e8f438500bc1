"""Build the configured :class:`EmailProvider`; composition roots call :func:`build_provider` once.

Provider modules are imported only when chosen, so e.g. botocore is loaded only by processes that use SES.
"""

from __future__ import annotations

import importlib
import ssl
from collections.abc import Callable, Mapping
from typing import Any

from pydantic import SecretStr

from emailkit.domain.ports.dkim import DkimKeyring
from emailkit.domain.ports.provider import EmailProvider, SenderConfigError
from emailkit.providers.dkim import DkimKeyError, DkimSigner
from emailkit.settings import Settings, SettingsError


def dkim_signer(settings: Settings) -> DkimSigner | None:
    """The DKIM signer when EMAILKIT_DKIM_* is configured; a half-configured one is an error."""
    key = settings.dkim_private_key.get_secret_value().encode() if settings.dkim_private_key else None
    if key is not None and b"\n" not in key:
        # A PEM squeezed into one environment line usually carries its line breaks as literal "\n".
        key = key.replace(b"\\n", b"\n")
    configured = {
        "EMAILKIT_DKIM_DOMAIN": settings.dkim_domain,
        "EMAILKIT_DKIM_SELECTOR": settings.dkim_selector,
        "EMAILKIT_DKIM_PRIVATE_KEY": key or settings.dkim_private_key_file,
    }
    if not any(configured.values()):
        return None
    missing = [name for name, value in configured.items() if not value]
    if missing:
        raise SettingsError(f"{missing[0]}: required when DKIM signing is configured")
    if key is None:
        assert settings.dkim_private_key_file is not None
        try:
            key = settings.dkim_private_key_file.read_bytes()
        except OSError as exc:
            raise SettingsError(f"EMAILKIT_DKIM_PRIVATE_KEY_FILE: cannot read it: {exc.strerror}") from None
    assert settings.dkim_domain is not None and settings.dkim_selector is not None
    try:
        return DkimSigner(settings.dkim_domain, settings.dkim_selector, key)
    except DkimKeyError as exc:
        raise SettingsError(f"EMAILKIT_DKIM_PRIVATE_KEY: {exc}") from None


def _outbox(settings: Settings, keyring: DkimKeyring | None) -> EmailProvider:
    from emailkit.providers.outbox import OutboxProvider

    return OutboxProvider(settings.outbox_dir, signer=dkim_signer(settings), keyring=keyring)


def _smtp(settings: Settings, keyring: DkimKeyring | None) -> EmailProvider:
    from emailkit.providers.smtp import SmtpProvider, parse_smtp_url

    if settings.smtp_url is None:
        raise SettingsError(
            "EMAILKIT_SMTP_URL: required with EMAILKIT_PROVIDER=smtp "
            "(e.g. smtp://user:password@mail.example.com:587?tls=starttls)"
        )
    try:
        config = parse_smtp_url(settings.smtp_url.get_secret_value())
    except ValueError as exc:
        raise SettingsError(f"EMAILKIT_SMTP_URL: {exc}") from None
    signer = dkim_signer(settings)
    try:
        return SmtpProvider(config, pool_size=settings.smtp_pool_size, signer=signer, keyring=keyring)
    except (OSError, ssl.SSLError) as exc:
        raise SettingsError(f"EMAILKIT_SMTP_URL: cannot load the cafile: {exc}") from None


def _ses(settings: Settings, keyring: DkimKeyring | None) -> EmailProvider:
    # SES signs with the domain identities verified in SES itself (Easy DKIM), not with our keys.
    from botocore.credentials import Credentials

    from emailkit.providers.ses import SesProvider

    key_id, secret = settings.ses_access_key_id, settings.ses_secret_access_key
    if bool(key_id) != bool(secret):
        name = "EMAILKIT_SES_SECRET_ACCESS_KEY" if key_id else "EMAILKIT_SES_ACCESS_KEY_ID"
        raise SettingsError(f"{name}: required together with the other half of the SES key pair")
    credentials = Credentials(key_id, secret.get_secret_value()) if key_id and secret else None
    return SesProvider(
        region=settings.ses_region,
        credentials=credentials,
        endpoint_url=settings.ses_endpoint_url,
        configuration_set=settings.ses_configuration_set,
        concurrency=settings.provider_concurrency,
    )


def _sendgrid(settings: Settings, keyring: DkimKeyring | None) -> EmailProvider:
    # SendGrid signs with its own domain authentication, not with our keys.
    from emailkit.providers.sendgrid import SendGridProvider

    if settings.sendgrid_api_key is None:
        raise SettingsError("EMAILKIT_SENDGRID_API_KEY: required with EMAILKIT_PROVIDER=sendgrid")
    return SendGridProvider(
        api_key=settings.sendgrid_api_key.get_secret_value(),
        base_url=settings.sendgrid_base_url,
        concurrency=settings.provider_concurrency,
    )


def _like_a_sender(
    name: str, settings: Mapping[str, str], credentials: Mapping[str, str]
) -> Callable[[Settings, DkimKeyring | None], EmailProvider]:
    """A provider built the way a sender of that type is (its module's ``from_sender``), each settings and
    credentials key read from the Settings field named for it, so both ways share one set of checks and a
    bad value is reported by its variable's name. (These HTTP APIs sign with the provider's own domain set-up,
    not with our keys: the keyring is not theirs.)"""

    def variable(key: str) -> str:
        field = {**settings, **credentials}.get(key, "provider_concurrency")
        return f"EMAILKIT_{field.upper()}"

    def build(config: Settings, keyring: DkimKeyring | None) -> EmailProvider:
        given_settings: dict[str, Any] = {}
        for key, field in settings.items():
            value = getattr(config, field)
            if value is not None:
                given_settings[key] = value
        given_credentials: dict[str, str] = {}
        for key, field in credentials.items():
            secret: SecretStr | None = getattr(config, field)
            if secret is None:
                raise SettingsError(f"{variable(key)}: required with EMAILKIT_PROVIDER={name}")
            given_credentials[key] = secret.get_secret_value()
        module = importlib.import_module(f"emailkit.providers.{name}")
        try:
            provider: EmailProvider = module.from_sender(
                given_settings, given_credentials, pool_size=config.provider_concurrency
            )
        except SenderConfigError as exc:
            if exc.message == "required":
                raise SettingsError(
                    f"{variable(exc.field)}: required with EMAILKIT_PROVIDER={name}"
                ) from None
            raise SettingsError(f"{variable(exc.field)}: {exc.message}") from None
        return provider

    return build


PROVIDERS: dict[str, Callable[[Settings, DkimKeyring | None], EmailProvider]] = {
    "outbox": _outbox,
    "smtp": _smtp,
    "ses": _ses,
    "sendgrid": _sendgrid,
    "mailgun": _like_a_sender(
        "mailgun",
        {"domain": "mailgun_domain", "baseUrl": "mailgun_base_url"},
        {"apiKey": "mailgun_api_key"},
    ),
    "postmark": _like_a_sender(
        "postmark",
        {"messageStream": "postmark_message_stream", "baseUrl": "postmark_base_url"},
        {"serverToken": "postmark_server_token"},
    ),
    "resend": _like_a_sender("resend", {"baseUrl": "resend_base_url"}, {"apiKey": "resend_api_key"}),
    "brevo": _like_a_sender("brevo", {"baseUrl": "brevo_base_url"}, {"apiKey": "brevo_api_key"}),
}


def build_provider(settings: Settings, *, keyring: DkimKeyring | None = None) -> EmailProvider:
    """The provider named by EMAILKIT_PROVIDER; raises SettingsError naming a missing or bad variable.

    ``keyring``: the workspaces' sending domains, whose keys sign mail From them (smtp and outbox)."""
    return PROVIDERS[settings.provider](settings, keyring)
