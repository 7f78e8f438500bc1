"""The Sender type: a named provider configuration, and the instance's default sender shown the same way."""

from __future__ import annotations

from datetime import date, datetime

import strawberry
from strawberry.scalars import JSON

from emailkit.db.tables.senders import Sender as SenderRow
from emailkit.db.tables.senders import SenderType
from emailkit.db.types import utcnow
from emailkit.domain.runtime import Runtime
from emailkit.domain.senders import warmup
from emailkit.schema.relay import decode_id, to_global_id

strawberry.enum(
    SenderType,
    name="SenderType",
    description="The provider a sender goes through (each type's settings and credentials: see the README, "
    '"Senders and domains").',
)


@strawberry.type(
    name="SenderWarmup",
    description="A warm-up plan: at most min(ceilingPerDay, startPerDay * (1 + growthPercent/100)^days) campaign "
    "and flow messages per UTC day, days counted from startsOn.",
)
class WarmupView:
    start_per_day: int
    growth_percent: float
    ceiling_per_day: int
    starts_on: date


@strawberry.type(name="SenderWarmupToday", description="The sender's UTC day under its warm-up plan.")
class WarmupTodayView:
    allowance: int = strawberry.field(description="Messages the plan allows today.")
    sent: int = strawberry.field(description="Messages handed over today (by every worker).")
    remaining: int
    resets_at: datetime = strawberry.field(description="When the next day's allowance begins (00:00 UTC).")


#: The global ID that stands for the instance's default sender (EMAILKIT_PROVIDER); naming it as a
#: senderId means "no sender of its own".
DEFAULT_SENDER_PK = 0
DEFAULT_SENDER_NAME = "default"


@strawberry.type(
    name="Sender",
    description="A named provider configuration of this workspace (ADMIN keys). Credentials are never shown: "
    "only whether there are some and the last 4 characters of the secret one.",
)
class SenderView:
    # Not a Node: `node(id)` is open to every role, and senders are for ADMIN keys.
    pk: strawberry.Private[int]
    id: strawberry.ID
    name: str
    type: SenderType
    settings: JSON = strawberry.field(description="The non-secret settings, as given.")
    rate_per_second: float | None = strawberry.field(
        description="Messages per second over all workers; null: no limit of its own."
    )
    pool_size: int = strawberry.field(description="SMTP connections, or HTTP requests at once, per worker.")
    has_credentials: bool
    credentials_last4: str | None = strawberry.field(
        description="The last 4 characters of the password, apiKey, serverToken or secretAccessKey."
    )
    is_default: bool = strawberry.field(
        description="The instance's default sender (EMAILKIT_PROVIDER): used wherever no sender is named."
    )
    created_at: datetime | None
    updated_at: datetime | None
    warmup: WarmupView | None = strawberry.field(
        default=None, description="Its warm-up plan; null: no daily limit of its own."
    )
    warmup_today: WarmupTodayView | None = strawberry.field(
        default=None, description="Today's allowance and use under the plan; null without a plan."
    )

    @classmethod
    def from_model(cls, row: SenderRow) -> SenderView:
        plan = warmup.plan_of(row)
        today = warmup.today_of(row, plan, utcnow()) if plan is not None else None
        return cls(
            pk=row.id,
            id=to_global_id("Sender", row.id),
            name=row.name,
            type=row.type,
            settings=JSON(dict(row.settings or {})),
            rate_per_second=row.rate_per_second,
            pool_size=row.pool_size,
            has_credentials=row.credentials_sealed is not None,
            credentials_last4=row.credentials_last4,
            is_default=False,
            created_at=row.created_at,
            updated_at=row.updated_at,
            warmup=WarmupView(
                start_per_day=plan.start_per_day,
                growth_percent=plan.growth_percent,
                ceiling_per_day=plan.ceiling_per_day,
                starts_on=plan.starts_on,
            )
            if plan is not None
            else None,
            warmup_today=WarmupTodayView(
                allowance=today.allowance,
                sent=today.sent,
                remaining=today.remaining,
                resets_at=today.resets_at,
            )
            if today is not None
            else None,
        )

    @classmethod
    def default_of(cls, runtime: Runtime) -> SenderView | None:
        """The default sender as configured by EMAILKIT_* variables (none of which is shown)."""
        setup = runtime.sending
        if setup is None:
            return None
        return cls(
            pk=DEFAULT_SENDER_PK,
            id=to_global_id("Sender", DEFAULT_SENDER_PK),
            name=DEFAULT_SENDER_NAME,
            type=SenderType(setup.provider_name.upper()),
            settings=JSON({}),
            rate_per_second=setup.default_rate_per_second,
            pool_size=0,
            has_credentials=False,
            credentials_last4=None,
            is_default=True,
            created_at=None,
            updated_at=None,
        )


def sender_pk(value: str | None, field: str = "senderId") -> int | None:
    """A senderId input: None leaves it as it is; "" or defaultSender's id is 0, "no sender of its own" (the
    services' convention); a malformed id raises INVALID_ID (call it inside the service call's handling)."""
    if value is None:
        return None
    if value == "":
        return DEFAULT_SENDER_PK
    return decode_id(value, "Sender", field)
