"""Mutations: createApiKey (the plaintext key is returned once) and revokeApiKey. ADMIN keys only."""

from __future__ import annotations

import strawberry

from emailkit.domain import apikeys
from emailkit.schema.context import Info
from emailkit.schema.enums import Role
from emailkit.schema.errors import UserError, mutate
from emailkit.schema.permissions import admin_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.apikeys import ApiKeyType


@strawberry.input
class CreateApiKeyInput:
    name: str
    role: Role


@strawberry.input
class RevokeApiKeyInput:
    id: strawberry.ID


@strawberry.type
class CreateApiKeyPayload:
    api_key: ApiKeyType | None
    key: str | None = strawberry.field(
        description="The key itself, for `Authorization: Bearer <key>`. Shown only in this response."
    )
    user_errors: list[UserError]


@strawberry.type
class RevokeApiKeyPayload:
    api_key: ApiKeyType | None
    user_errors: list[UserError]


@strawberry.type
class Mutation:
    @admin_mutation(description="Create a key. Store `key` from the payload: it cannot be retrieved later.")
    async def create_api_key(self, info: Info, input: CreateApiKeyInput) -> CreateApiKeyPayload:
        out = await mutate(info, lambda s: apikeys.create_api_key(s, input.name, input.role))
        if out.value is None:
            return CreateApiKeyPayload(api_key=None, key=None, user_errors=out.errors)
        row, raw = out.value
        return CreateApiKeyPayload(api_key=ApiKeyType.from_model(row), key=raw, user_errors=[])

    @admin_mutation(
        description=(
            "Revoke a key; requests made with it are refused from then on (by other API processes, within "
            "EMAILKIT_API_KEY_CACHE_SECONDS). Revoking the key making this request is allowed: this request "
            "completes and the next one gets HTTP 401. Revoking an already revoked key changes nothing."
        )
    )
    async def revoke_api_key(self, info: Info, input: RevokeApiKeyInput) -> RevokeApiKeyPayload:
        """Revoke a key, the caller's own included (locking yourself out is the caller's choice)."""
        out = await mutate(info, lambda s: apikeys.revoke_api_key(s, decode_id(input.id, "ApiKey")))
        if out.value is not None:
            # Committed: from the next request on, this process reads the key from the database again.
            info.context.runtime.principals.forget_all()
        return RevokeApiKeyPayload(
            api_key=ApiKeyType.from_model(out.value) if out.value is not None else None,
            user_errors=out.errors,
        )
