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


class CanWrite(_RoleCheck):
    message = "This API key's role may not change data (VIEWER keys are read-only)"
    roles = frozenset({Role.ADMIN, Role.EDITOR})


class IsAdmin(_RoleCheck):
    message = "Only ADMIN keys may do this"
    roles = frozenset({Role.ADMIN})


write_mutation = functools.partial(strawberry.mutation, permission_classes=[CanWrite])
admin_mutation = functools.partial(strawberry.mutation, permission_classes=[IsAdmin])
admin_field = functools.partial(strawberry.field, permission_classes=[IsAdmin])
