"""Senders of the workspace in scope: create, change, delete (refused while in use), list, probe.

Every function runs in the caller's transaction and workspace scope, so another workspace's sender is "not
found", like a missing id. Settings and credentials are checked on every write by building the provider from
them (nothing connects); credentials are sealed at rest and never leave this module in clear except to build
a provider. What the API may show of them is ``has_credentials`` and ``credentials_last4``.
"""

from __future__ import annotations

import ipaddress
import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import date
from typing import Any, Final
from urllib.parse import urlsplit

from sqlalchemy import func, select, update
from sqlalchemy.ext.asyncio import AsyncSession

from emailkit.db.engine import Database
from emailkit.db.tables.audience import MailingList
from emailkit.db.tables.automation import Flow, FlowStatus, FlowVersion
from emailkit.db.tables.senders import Sender, SenderType
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.db.types import utcnow
from emailkit.domain.errors import DomainError, ErrorCode, FieldError, NotFound
from emailkit.domain.pagination import Page, keyset_page
from emailkit.domain.ports.provider import ProbeResult, SenderConfigError
from emailkit.domain.ports.senders import (
    MAILBOX_CREDENTIAL,
    MAILBOX_SETTING,
    ProviderFactory,
    SenderMailboxCheck,
)
from emailkit.domain.sealing import SecretUnreadable, seal, unseal
from emailkit.domain.senders.warmup import WarmupPlan, check_plan, set_plan
from emailkit.domain.validation import check_length, raise_if, require
from emailkit.domain.webhooks_out import destinations

PURPOSE: Final = b"emailkit sender credentials"
#: The credential whose last 4 characters the API shows, in this order of preference.
SECRET_KEYS: Final = ("password", "apiKey", "serverToken", "secretAccessKey")
#: Keys that are credentials whatever the type: a SenderConfigError naming one is about `credentials`.
CREDENTIAL_KEYS: Final = frozenset(
    {"username", "password", "apiKey", "serverToken", "accessKeyId", "secretAccessKey", MAILBOX_CREDENTIAL}
)
MAX_NAME: Final = 255
DEFAULT_POOL_SIZE: Final = 5
MAX_POOL_SIZE: Final = 200
MAX_RATE: Final = 100_000.0
MAX_JSON_BYTES: Final = 16_384
# Campaigns in these statuses send nothing more unless an operator retries them: a sender they name may go.
_DONE = (CampaignStatus.FINISHED, CampaignStatus.CANCELLED)


@dataclass(frozen=True)
class SenderInput:
    """A sender as the API gives it; on update None leaves a field as it is (credentials included), and a
    rate of 0 removes the sender's own limit."""

    name: str | None = None
    type: SenderType | None = None
    settings: Any = None
    credentials: Any = None
    rate_per_second: float | None = None
    pool_size: int | None = None
    warmup: WarmupInput | None = None
    # On update: remove the warm-up plan (`warmup` is then ignored).
    clear_warmup: bool = False


@dataclass(frozen=True)
class WarmupInput:
    start_per_day: int
    growth_percent: float
    ceiling_per_day: int
    # None: the day it is set (UTC).
    starts_on: date | None = None

    def plan(self) -> WarmupPlan:
        return WarmupPlan(
            self.start_per_day,
            self.growth_percent,
            self.ceiling_per_day,
            self.starts_on or utcnow().date(),
        )


def _config_error(exc: SenderConfigError, credentials: Mapping[str, Any]) -> FieldError:
    if exc.field == "type":
        return FieldError("type", exc.message, ErrorCode.INVALID_SENDER_TYPE)
    if exc.field in credentials or exc.field in CREDENTIAL_KEYS:
        return FieldError(f"credentials.{exc.field}", exc.message, ErrorCode.INVALID_SENDER_CREDENTIALS)
    return FieldError(f"settings.{exc.field}", exc.message, ErrorCode.INVALID_SENDER_SETTINGS)


def _json_object(value: Any, field: str, code: ErrorCode) -> dict[str, Any]:
    if not isinstance(value, Mapping):
        raise DomainError.single(code, "Must be a JSON object", field)
    if len(json.dumps(value, default=str)) > MAX_JSON_BYTES:
        raise DomainError.single(ErrorCode.TOO_LONG, f"At most {MAX_JSON_BYTES} bytes of JSON", field)
    return dict(value)


def _credentials(value: Any) -> dict[str, str]:
    raw = _json_object(value, "credentials", ErrorCode.INVALID_SENDER_CREDENTIALS)
    for key, item in raw.items():
        if not isinstance(item, str):
            raise DomainError.single(
                ErrorCode.INVALID_SENDER_CREDENTIALS, "Must be a string", f"credentials.{key}"
            )
    return {k: v for k, v in raw.items() if v != ""}


def _check_numbers(errors: list[FieldError], data: SenderInput) -> None:
    rate = data.rate_per_second
    if rate is not None and (not math.isfinite(rate) or rate < 0 or rate > MAX_RATE):
        errors.append(
            FieldError("ratePerSecond", f"Between 0 (no limit) and {MAX_RATE:g}", ErrorCode.OUT_OF_RANGE)
        )
    if data.pool_size is not None and not 1 <= data.pool_size <= MAX_POOL_SIZE:
        errors.append(FieldError("poolSize", f"Between 1 and {MAX_POOL_SIZE}", ErrorCode.OUT_OF_RANGE))
    if data.warmup is not None and not data.clear_warmup:
        w = data.warmup
        check_plan(errors, w.start_per_day, w.growth_percent, w.ceiling_per_day)


def last4(credentials: Mapping[str, str]) -> str | None:
    for key in SECRET_KEYS:
        if credentials.get(key):
            return credentials[key][-4:]
    return None


def credentials_of(row: Sender, instance_secret: str) -> dict[str, str]:
    """The sender's credentials in clear; raises SecretUnreadable when EMAILKIT_SECRET_KEY changed."""
    if row.credentials_sealed is None:
        return {}
    opened = json.loads(unseal(row.credentials_sealed, instance_secret, purpose=PURPOSE))
    return {str(k): str(v) for k, v in opened.items()}


def _seal(credentials: Mapping[str, str], instance_secret: str) -> str | None:
    return seal(json.dumps(dict(credentials)), instance_secret, purpose=PURPOSE) if credentials else None


async def _check_config(
    build: ProviderFactory,
    type: SenderType,
    settings: dict[str, Any],
    credentials: dict[str, str],
    pool_size: int,
    mailboxes: SenderMailboxCheck | None,
) -> None:
    """Build the provider as a send would (nothing connects), and release it, and read the bounce mailbox's
    settings; a complaint of either as a userError."""
    try:
        provider = build(type.value, settings, credentials, pool_size=pool_size)
    except SenderConfigError as exc:
        raise DomainError(_config_error(exc, credentials)) from None
    await provider.close()
    if MAILBOX_SETTING not in settings and MAILBOX_CREDENTIAL not in credentials:
        return
    if mailboxes is None:
        raise DomainError.single(
            ErrorCode.INVALID_SENDER_SETTINGS,
            "This server cannot read bounce mailboxes",
            f"settings.{MAILBOX_SETTING}",
        )
    if MAILBOX_SETTING not in settings:
        raise DomainError.single(
            ErrorCode.INVALID_SENDER_CREDENTIALS,
            f"A mailbox password without settings.{MAILBOX_SETTING}",
            f"credentials.{MAILBOX_CREDENTIAL}",
        )
    try:
        mailboxes.check(settings, credentials)
    except SenderConfigError as exc:
        raise DomainError(_config_error(exc, credentials)) from None


# Settings naming where a provider connects: checked against the SSRF rule of outgoing webhooks.
_DESTINATION_KEYS: Final = ("url", "baseUrl", "endpointUrl")


async def _check_destinations(settings: Mapping[str, Any], *, allow_private: bool) -> None:
    """Refuse hosts that are, or resolve to, loopback, private or metadata addresses (unless allowed): an API key
    must not make the server's workers, or testSender's answer, reach into the server's own network. A name
    that does not resolve now is accepted; sending through it fails, saying why, until it does."""
    places = [(key, settings.get(key)) for key in _DESTINATION_KEYS]
    mailbox = settings.get(MAILBOX_SETTING)
    if isinstance(mailbox, Mapping):
        places.append((f"{MAILBOX_SETTING}.url", mailbox.get("url")))
    for key, value in places:
        if not isinstance(value, str):
            continue
        parts = urlsplit(value)
        try:
            host, port = parts.hostname, parts.port
        except ValueError:
            continue
        if not host:
            continue
        literal = destinations.ip_literal(host)
        try:
            found = [literal] if literal is not None else await destinations.resolve(host, port or 0)
        except OSError:
            continue
        for address in found:
            why = destinations.refusal(ipaddress.ip_address(address), allow_private=allow_private)
            if why is not None:
                hint = "" if allow_private else " (EMAILKIT_SENDER_ALLOW_PRIVATE=true allows private ones)"
                raise DomainError.single(
                    ErrorCode.DESTINATION_REFUSED,
                    f"{host} is {why}: senders may not connect there{hint}",
                    f"settings.{key}",
                )


async def _check_name(session: AsyncSession, name: str, *, other_than: int | None = None) -> None:
    stmt = select(Sender.id).where(func.lower(Sender.name) == name.lower())
    if other_than is not None:
        stmt = stmt.where(Sender.id != other_than)
    if (await session.execute(stmt.limit(1))).first() is not None:
        raise DomainError.single(ErrorCode.DUPLICATE_NAME, f"A sender named {name!r} exists already", "name")


async def create_sender(
    session: AsyncSession,
    data: SenderInput,
    *,
    instance_secret: str,
    build: ProviderFactory,
    allow_private: bool = False,
    mailboxes: SenderMailboxCheck | None = None,
) -> Sender:
    errors: list[FieldError] = []
    require(errors, "name", data.name, "Name")
    check_length(errors, "name", data.name, MAX_NAME)
    if data.type is None:
        errors.append(FieldError("type", "Type is required", ErrorCode.REQUIRED))
    _check_numbers(errors, data)
    raise_if(errors)
    assert data.name is not None and data.type is not None
    name = data.name.strip()
    settings = _json_object(
        data.settings if data.settings is not None else {}, "settings", ErrorCode.INVALID_SENDER_SETTINGS
    )
    credentials = _credentials(data.credentials if data.credentials is not None else {})
    pool_size = data.pool_size or DEFAULT_POOL_SIZE
    await _check_name(session, name)
    await _check_config(build, data.type, settings, credentials, pool_size, mailboxes)
    await _check_destinations(settings, allow_private=allow_private)
    row = Sender(
        name=name,
        type=data.type,
        settings=settings,
        credentials_sealed=_seal(credentials, instance_secret),
        credentials_last4=last4(credentials),
        rate_per_second=data.rate_per_second or None,
        pool_size=pool_size,
    )
    if data.warmup is not None:
        set_plan(row, data.warmup.plan())
    session.add(row)
    await session.flush()
    return row


async def find_sender(session: AsyncSession, sender_id: int) -> Sender | None:
    return await session.get(Sender, sender_id)


async def require_sender(session: AsyncSession, sender_id: int, field: str = "senderId") -> Sender:
    """The sender of this workspace with this id; NOT_FOUND on `field` (another workspace's is not found)."""
    row = await session.get(Sender, sender_id)
    if row is None:
        raise NotFound("Sender", field)
    return row


async def update_sender(
    session: AsyncSession,
    sender_id: int,
    data: SenderInput,
    *,
    instance_secret: str,
    build: ProviderFactory,
    allow_private: bool = False,
    mailboxes: SenderMailboxCheck | None = None,
) -> Sender:
    errors: list[FieldError] = []
    if data.name is not None:
        require(errors, "name", data.name, "Name")
        check_length(errors, "name", data.name, MAX_NAME)
    _check_numbers(errors, data)
    raise_if(errors)
    row = await require_sender(session, sender_id, "id")
    if data.name is not None and data.name.strip() != row.name:
        await _check_name(session, data.name.strip(), other_than=row.id)
        row.name = data.name.strip()
    provider_changed = any(
        v is not None for v in (data.type, data.settings, data.credentials, data.pool_size)
    )
    if provider_changed:
        type = data.type or row.type
        settings = (
            _json_object(data.settings, "settings", ErrorCode.INVALID_SENDER_SETTINGS)
            if data.settings is not None
            else dict(row.settings or {})
        )
        if data.credentials is not None:
            credentials = _credentials(data.credentials)
        else:
            try:
                credentials = credentials_of(row, instance_secret)
            except SecretUnreadable:
                raise DomainError.single(
                    ErrorCode.INVALID_SENDER_CREDENTIALS,
                    "The stored credentials cannot be read (EMAILKIT_SECRET_KEY changed): give them again",
                    "credentials",
                ) from None
        pool_size = data.pool_size or row.pool_size
        await _check_config(build, type, settings, credentials, pool_size, mailboxes)
        await _check_destinations(settings, allow_private=allow_private)
        row.type, row.settings, row.pool_size = type, settings, pool_size
        if data.credentials is not None:
            row.credentials_sealed = _seal(credentials, instance_secret)
            row.credentials_last4 = last4(credentials)
    if data.rate_per_second is not None:
        row.rate_per_second = data.rate_per_second or None
    if data.clear_warmup:
        set_plan(row, None)
    elif data.warmup is not None:
        set_plan(row, data.warmup.plan())
    # Always moved on, so every process rebuilds its provider for this sender on its next batch.
    row.updated_at = utcnow()
    await session.flush()
    return row


async def users_of(session: AsyncSession, sender_id: int) -> list[FieldError]:
    """What still sends through the sender: unfinished campaigns, lists (as their default), flows' SEND steps."""
    found: list[FieldError] = []
    campaigns = await session.execute(
        select(Campaign.name, Campaign.status)
        .where(Campaign.sender_id == sender_id, Campaign.status.not_in(_DONE))
        .limit(5)
    )
    for name, status in campaigns.all():
        found.append(
            FieldError("id", f"Campaign {name!r} ({status.value}) uses this sender", ErrorCode.IN_USE)
        )
    lists = await session.execute(select(MailingList.name).where(MailingList.sender_id == sender_id).limit(5))
    for (name,) in lists.all():
        found.append(
            FieldError("id", f"List {name!r} sends through this sender by default", ErrorCode.IN_USE)
        )
    for name in await _flows_naming(session, sender_id):
        found.append(FieldError("id", f"A SEND step of flow {name!r} uses this sender", ErrorCode.IN_USE))
    return found


def _names_sender(definition: Any, sender_id: int) -> bool:
    steps = definition.get("steps") if isinstance(definition, Mapping) else None
    return any(isinstance(s, Mapping) and s.get("senderId") == sender_id for s in steps or ())


async def _flows_naming(session: AsyncSession, sender_id: int) -> list[str]:
    """Flows whose draft or any published version (runs stay on the version they entered) has a SEND step
    naming the sender; archived flows run no more."""
    live = Flow.status != FlowStatus.ARCHIVED
    drafts = await session.execute(select(Flow.name, Flow.draft).where(live))
    versions = await session.execute(
        select(Flow.name, FlowVersion.definition)
        .join(FlowVersion, FlowVersion.flow_id == Flow.id)
        .where(live)
    )
    names = {name for name, d in [*drafts.all(), *versions.all()] if _names_sender(d, sender_id)}
    return sorted(names)[:5]


async def delete_sender(session: AsyncSession, sender_id: int) -> None:
    row = await require_sender(session, sender_id, "id")
    raise_if(await users_of(session, sender_id))
    # Finished campaigns keep their history (each delivery names the sender it went through); a retry of
    # their failures goes through their lists' sender or the default.
    await session.execute(
        update(Campaign)
        .where(Campaign.sender_id == sender_id)
        .values(sender_id=None)
        .execution_options(synchronize_session=False)
    )
    await session.delete(row)
    await session.flush()


async def find_senders(session: AsyncSession, *, first: int, after: int | None) -> Page[Sender]:
    return await keyset_page(session, select(Sender), Sender.id, first=first, after=after)


async def require_senders(session: AsyncSession, ids: Sequence[tuple[int, str]]) -> None:
    """Each (id, field) names a sender of this workspace; NOT_FOUND on its field otherwise."""
    wanted = {i for i, _ in ids}
    if not wanted:
        return
    found = set((await session.execute(select(Sender.id).where(Sender.id.in_(wanted)))).scalars())
    raise_if(
        [FieldError(field, "Sender not found", ErrorCode.NOT_FOUND) for i, field in ids if i not in found]
    )


async def probe_sender(
    db: Database,
    sender_id: int,
    *,
    instance_secret: str,
    build: ProviderFactory,
    mailboxes: SenderMailboxCheck | None = None,
) -> ProbeResult:
    """Connect and authenticate with the sender's provider, sending nothing, and log in to its bounce mailbox if
    it has one (outside any transaction: the servers may take their time to answer)."""
    async with db.session() as session:
        row = await require_sender(session, sender_id, "id")
        type, settings = row.type, dict(row.settings or {})
        try:
            credentials = credentials_of(row, instance_secret)
        except SecretUnreadable:
            return ProbeResult(False, "the stored credentials cannot be read (EMAILKIT_SECRET_KEY changed)")
    try:
        provider = build(type.value, settings, credentials, pool_size=1)
    except SenderConfigError as exc:
        return ProbeResult(False, f"the sender's configuration is not usable: {exc}")
    try:
        result = await provider.probe()
    finally:
        await provider.close()
    if mailboxes is None or MAILBOX_SETTING not in settings:
        return result
    # The bounce mailbox is tried too: a sender whose bounces cannot be read is not ready either.
    try:
        mailbox = await mailboxes.probe(settings, credentials)
    except SenderConfigError as exc:
        mailbox = ProbeResult(False, f"the bounce mailbox's configuration is not usable: {exc}")
    if mailbox is None:
        return result
    return ProbeResult(result.ok and mailbox.ok, f"{result.message}; bounce mailbox: {mailbox.message}")
