"""API-key authentication of an HTTP request, shared by ``/graphql`` and the REST API (``POST /api/events``):
the bearer key, the cache of keys that authenticated recently (EMAILKIT_API_KEY_CACHE_SECONDS), the per-key
rate limit (EMAILKIT_API_RATE_LIMIT) and the workspace the request acts in (X-Emailkit-Workspace)."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from emailkit.domain.apikeys import Principal
from emailkit.domain.runtime import Runtime
from emailkit.web.ratelimit import ApiRateLimiter
from emailkit.web.workspace import HEADER, WrongWorkspace, acting_workspace


class Forbidden(Exception):
    """An authenticated key asked for what it may never have (another workspace)."""


class Unauthenticated(Exception):
    pass


def bearer_token(value: str | None) -> str | None:
    if not value:
        return None
    scheme, _, token = value.strip().partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


@dataclass(frozen=True)
class Caller:
    principal: Principal
    # None: an instance key that named no workspace (it may manage workspaces, nothing else).
    workspace_id: int | None


class ApiKeyAuth:
    def __init__(
        self, runtime: Runtime, *, key_cache_seconds: float = 0.0, api_limiter: ApiRateLimiter | None = None
    ) -> None:
        self.runtime = runtime
        self.key_cache_seconds = key_cache_seconds
        self.api_limiter = api_limiter

    async def principal(self, raw_key: str | None) -> Principal | None:
        """The key's principal, or None for a missing, unknown or revoked key."""
        if not raw_key:
            return None
        return await self.runtime.principals.authenticate(
            self.runtime.db, raw_key, max_age=self.key_cache_seconds
        )

    async def caller(self, headers: Mapping[str, str]) -> Caller:
        """Who sent the request and where it acts. Raises Unauthenticated (no usable key), RateLimited (one
        request too many for this key) or Forbidden (a workspace the key may not act in), in that order."""
        token = bearer_token(headers.get("authorization"))
        if token is None:
            raise Unauthenticated("Missing API key: send 'Authorization: Bearer <key>'")
        principal = await self.principal(token)
        if principal is None:
            raise Unauthenticated("Unknown or revoked API key")
        if self.api_limiter is not None:
            await self.api_limiter.check(principal.key_id)
        try:
            workspace_id = await acting_workspace(self.runtime.db, principal, headers.get(HEADER))
        except WrongWorkspace as exc:
            raise Forbidden(str(exc)) from exc
        return Caller(principal, workspace_id)
