"""The tables, one module per area, on one metadata (``base.Base.metadata``) that Alembic autogenerates against.

Every area module is imported here so that the metadata is whole, and relationships resolve, whichever table a
caller imports first.
"""

from emailkit.db.tables import (  # noqa: F401
    access,
    audience,
    automation,
    content,
    feedback,
    senders,
    sending,
    sending_domains,
    tenancy,
    webhooks_out,
)
