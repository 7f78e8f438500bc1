"""The fields of the root Mutation type, one module per area, each with its inputs and payloads.

MUTATIONS is merged into one Mutation type in this order, which is the order the schema prints the fields in.
"""

from __future__ import annotations

from emailkit.schema.mutations import (
    apikeys,
    campaigns,
    events,
    flows,
    gdpr,
    imports,
    lists,
    segments,
    senders,
    sending,
    sending_domains,
    subscribers,
    suppressions,
    templates,
    webhooks,
    workspaces,
)

MUTATIONS = (
    lists.Mutation,
    apikeys.Mutation,
    subscribers.Mutation,
    events.Mutation,
    templates.Mutation,
    campaigns.Mutation,
    sending.Mutation,
    segments.Mutation,
    suppressions.Mutation,
    imports.Mutation,
    gdpr.Mutation,
    workspaces.Mutation,
    webhooks.Mutation,
    sending_domains.Mutation,
    flows.Mutation,
    senders.Mutation,
)
