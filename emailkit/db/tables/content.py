"""Tables of content: templates."""

from __future__ import annotations

import enum

from sqlalchemy import (
    String,
    Text,
)
from sqlalchemy.orm import Mapped, mapped_column

from emailkit.db.tables.base import AUTOINCREMENT, Base, TimestampMixin, _enum
from emailkit.db.tables.tenancy import InWorkspace, listing_index
from emailkit.db.types import BigIntPK


class TemplateKind(enum.StrEnum):
    CAMPAIGN = "CAMPAIGN"
    TRANSACTIONAL = "TRANSACTIONAL"


class ContentFormat(enum.StrEnum):
    MJML = "MJML"
    HTML = "HTML"


class Template(InWorkspace, TimestampMixin, Base):
    __tablename__ = "templates"
    ROOT = True

    __table_args__ = (listing_index("templates"), AUTOINCREMENT)

    id: Mapped[int] = mapped_column(BigIntPK, primary_key=True)
    name: Mapped[str] = mapped_column(String(255), nullable=False)
    kind: Mapped[TemplateKind] = mapped_column(_enum(TemplateKind), nullable=False)
    format: Mapped[ContentFormat] = mapped_column(_enum(ContentFormat), nullable=False)
    subject: Mapped[str] = mapped_column(String(998), nullable=False, default="")
    body: Mapped[str] = mapped_column(Text, nullable=False)
