"""Domain enums exposed to GraphQL. Registering keeps the domain classes as the one source of truth."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import OptIn, SubscriberStatus, SubscriptionStatus, Visibility
from emailkit.db.tables.content import ContentFormat, TemplateKind
from emailkit.db.tables.sending import CampaignStatus
from emailkit.domain.errors import ErrorCode

# strawberry.enum returns the class it is given, so resolvers annotate with the domain enums directly.
strawberry.enum(ErrorCode, name="UserErrorCode", description="Stable codes for userErrors.")
strawberry.enum(OptIn, name="OptIn")
strawberry.enum(Visibility, name="Visibility")
strawberry.enum(SubscriberStatus, name="SubscriberStatus")
strawberry.enum(SubscriptionStatus, name="SubscriptionStatus")
strawberry.enum(TemplateKind, name="TemplateKind")
strawberry.enum(ContentFormat, name="ContentFormat")
strawberry.enum(CampaignStatus, name="CampaignStatus")
strawberry.enum(Role, name="Role")

__all__ = [
    "CampaignStatus",
    "ContentFormat",
    "ErrorCode",
    "OptIn",
    "Role",
    "SubscriberStatus",
    "SubscriptionStatus",
    "TemplateKind",
    "Visibility",
]
