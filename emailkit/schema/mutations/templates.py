"""Mutations: createTemplate, updateTemplate, deleteTemplate and previewTemplate."""

from __future__ import annotations

import strawberry

from emailkit.db.tables.content import Template as TemplateRow
from emailkit.domain.content import templates
from emailkit.schema.context import Info
from emailkit.schema.enums import ContentFormat, TemplateKind
from emailkit.schema.errors import DeletePayload, UserError, mutate
from emailkit.schema.permissions import write_mutation
from emailkit.schema.relay import decode_id
from emailkit.schema.types.templates import TemplateType


@strawberry.input
class CreateTemplateInput:
    name: str
    kind: TemplateKind
    format: ContentFormat
    body: str
    subject: str | None = strawberry.field(
        default=None, description="Required for TRANSACTIONAL templates; campaigns bring their own."
    )


@strawberry.input
class UpdateTemplateInput:
    id: strawberry.ID
    name: str | None = None
    kind: TemplateKind | None = None
    format: ContentFormat | None = None
    subject: str | None = None
    body: str | None = None


@strawberry.input
class DeleteTemplateInput:
    id: strawberry.ID


@strawberry.input(
    description="A saved template (fields given here override it, unsaved) or a body with its format."
)
class PreviewTemplateInput:
    template_id: strawberry.ID | None = None
    body: str | None = None
    format: ContentFormat | None = None
    subject: str | None = None
    subscriber_id: strawberry.ID | None = strawberry.field(
        default=None, description="Render with this subscriber's data instead of a sample subscriber."
    )


@strawberry.type
class TemplatePayload:
    template: TemplateType | None
    user_errors: list[UserError]


@strawberry.type
class PreviewTemplatePayload:
    subject: str | None
    html: str | None
    text: str | None = strawberry.field(description="The plain-text alternative derived from the HTML.")
    user_errors: list[UserError]


def _payload(row: TemplateRow | None, errors: list[UserError]) -> TemplatePayload:
    return TemplatePayload(
        template=TemplateType.from_model(row) if row is not None else None, user_errors=errors
    )


def _input(
    name: str | None,
    kind: TemplateKind | None,
    fmt: ContentFormat | None,
    subject: str | None,
    body: str | None,
) -> templates.TemplateInput:
    return templates.TemplateInput(name=name, kind=kind, format=fmt, subject=subject, body=body)


@strawberry.type
class Mutation:
    @write_mutation
    async def create_template(self, info: Info, input: CreateTemplateInput) -> TemplatePayload:
        data = _input(input.name, input.kind, input.format, input.subject, input.body)
        out = await mutate(info, lambda s: templates.create_template(s, data))
        return _payload(out.value, out.errors)

    @write_mutation
    async def update_template(self, info: Info, input: UpdateTemplateInput) -> TemplatePayload:
        data = _input(input.name, input.kind, input.format, input.subject, input.body)
        out = await mutate(
            info, lambda s: templates.update_template(s, decode_id(input.id, "Template"), data)
        )
        return _payload(out.value, out.errors)

    @write_mutation
    async def delete_template(self, info: Info, input: DeleteTemplateInput) -> DeletePayload:
        out = await mutate(info, lambda s: templates.delete_template(s, decode_id(input.id, "Template")))
        return DeletePayload(deleted_id=input.id if out.value is not None else None, user_errors=out.errors)

    # Rendering runs code the caller wrote: only the roles that may write templates may preview them, so a
    # read-only key cannot spend the server's CPU on arbitrary templates (renders are bounded anyway).
    @write_mutation(
        description="Render a template or a body for a subscriber (or a sample one): subject, HTML and text, "
        "or userErrors that point at the MJML/Jinja problem and its line (TEMPLATE_LIMIT when the render goes "
        "over a resource bound). Needs an ADMIN or EDITOR key."
    )
    async def preview_template(self, info: Info, input: PreviewTemplateInput) -> PreviewTemplatePayload:
        out = await mutate(
            info,
            lambda s: templates.preview_template(
                s,
                templates.PreviewInput(
                    template_id=decode_id(input.template_id, "Template", "templateId")
                    if input.template_id is not None
                    else None,
                    body=input.body,
                    format=input.format,
                    subject=input.subject,
                    subscriber_id=decode_id(input.subscriber_id, "Subscriber", "subscriberId")
                    if input.subscriber_id is not None
                    else None,
                ),
            ),
        )
        rendered = out.value
        return PreviewTemplatePayload(
            subject=rendered.subject if rendered else None,
            html=rendered.html if rendered else None,
            text=rendered.text if rendered else None,
            user_errors=out.errors,
        )
