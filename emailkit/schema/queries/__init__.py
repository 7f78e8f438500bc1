"""The fields of the root Query type, one module per area.

QUERIES is merged into one Query type in this order, which is the order the schema prints the fields in.
"""

from __future__ import annotations

from emailkit.schema.queries import (
    apikeys,
    campaigns,
    deliveries,
    events,
    flows,
    gdpr,
    imports,
    lists,
    node,
    segments,
    senders,
    sending_domains,
    subscribers,
    suppressions,
    templates,
    viewer,
    webhooks,
    workspaces,
)

QUERIES = (
    node.Query,
    viewer.Query,
    lists.Query,
    apikeys.Query,
    subscribers.Query,
    templates.Query,
    campaigns.Query,
    deliveries.Query,
    segments.Query,
    events.Query,
    suppressions.Query,
    imports.Query,
    gdpr.Query,
    workspaces.Query,
    webhooks.Query,
    sending_domains.Query,
    flows.Query,
    senders.Query,
)
