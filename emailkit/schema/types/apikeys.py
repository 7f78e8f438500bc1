"""The ApiKey type."""

from __future__ import annotations

from datetime import datetime

import strawberry

from emailkit.db.tables.access import ApiKey as ApiKeyRow
from emailkit.schema.enums import Role
from emailkit.schema.relay import to_global_id


@strawberry.type(
    name="ApiKey",
    description="A credential for this API. Only a hash of the key is stored; `prefix` tells keys apart.",
)
class ApiKeyType:
    # Deliberately not a Node: `node(id)` is open to every role and must not disclose keys.
    id: strawberry.ID
    name: str
    role: Role
    prefix: str = strawberry.field(description="The first characters of the key.")
    created_at: datetime
    last_used_at: datetime | None = strawberry.field(
        description="Approximate: updated at most every few minutes."
    )
    revoked_at: datetime | None

    @classmethod
    def from_model(cls, row: ApiKeyRow) -> ApiKeyType:
        return cls(
            id=to_global_id("ApiKey", row.id),
            name=row.name,
            role=row.role,
            prefix=row.prefix,
            created_at=row.created_at,
            last_used_at=row.last_used_at,
            revoked_at=row.revoked_at,
        )
