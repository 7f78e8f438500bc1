"""Role checks. Authentication itself happens before execution (see emailkit.web.graphql)."""

from __future__ import annotations

import functools
from typing import Any, ClassVar

import strawberry
from strawberry.permission import BasePermission

from emailkit.db.tables.access import Role
from emailkit.schema.context import Info


class _RoleCheck(BasePermission):
    error_extensions = {"code": "FORBIDDEN"}
    roles: ClassVar[frozenset[Role]]

    def has_permission(self, source: Any, info: Info, **kwargs: Any) -> bool:
        principal = info.context.principal
        return principal is not None and principal.role in self.roles


# An instance (OWNER) key acting inside a workspace has an ADMIN's rights there.
class CanWrite(_RoleCheck):
    message = "This API key's role may not change data (VIEWER keys are read-only)"
    roles = frozenset({Role.OWNER, Role.ADMIN, Role.EDITOR})


class IsAdmin(_RoleCheck):
    message = "Only ADMIN keys may do this"
    roles = frozenset({Role.OWNER, Role.ADMIN})


class IsOwner(_RoleCheck):
    message = "Only instance (OWNER) keys manage workspaces (emailkit create-api-key --instance)"
    roles = frozenset({Role.OWNER})


write_mutation = functools.partial(strawberry.mutation, permission_classes=[CanWrite])
admin_mutation = functools.partial(strawberry.mutation, permission_classes=[IsAdmin])
admin_field = functools.partial(strawberry.field, permission_classes=[IsAdmin])
owner_mutation = functools.partial(strawberry.mutation, permission_classes=[IsOwner])
owner_field = functools.partial(strawberry.field, permission_classes=[IsOwner])
