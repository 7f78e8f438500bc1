"""Sending domains in tests: the GraphQL documents, a domain made through the API, and the DNS zone that publishes
what the API asked for (whole, or with chosen records left out or changed)."""

from __future__ import annotations

from typing import Any

from emailkit.db.engine import Database
from emailkit.db.scope import all_workspaces
from emailkit.db.tables.sending_domains import SendingDomain
from tests.support.dns_server import Zone
from tests.support.graphql import GQL, data

RECORD_FIELDS = "kind type name value required status seen detail checkedAt"
DOMAIN_FIELDS = (
    "id domain selector ed25519Selector verified verifiedAt lastCheckedAt createdAt dnsRecords { "
    + RECORD_FIELDS
    + " }"
)
CREATE = (
    "mutation($i: CreateSendingDomainInput!) { createSendingDomain(input: $i) { sendingDomain { "
    + DOMAIN_FIELDS
    + " } userErrors { field code message } } }"
)
VERIFY = (
    "mutation($i: SendingDomainIdInput!) { verifySendingDomain(input: $i) { sendingDomain { "
    + DOMAIN_FIELDS
    + " } userErrors { field code message } } }"
)
DELETE = (
    "mutation($i: SendingDomainIdInput!) { deleteSendingDomain(input: $i) { deletedId "
    "userErrors { field code } } }"
)
ONE = "query($id: ID!) { sendingDomain(id: $id) { " + DOMAIN_FIELDS + " } }"
LIST = "query($after: String) { sendingDomains(first: 2, after: $after) { totalCount pageInfo { hasNextPage endCursor } edges { node { id domain } } } }"


async def create_domain(gql: GQL, domain: str, *, key: str | None = None, **extra: Any) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"i": {"domain": domain, **extra}}, key=key))[
        "createSendingDomain"
    ]
    return out


async def verify_domain(gql: GQL, domain_id: str, *, key: str | None = None) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(VERIFY, {"i": {"id": domain_id}}, key=key))["verifySendingDomain"]
    return out


def records(domain: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The domain's dnsRecords by kind."""
    return {r["kind"]: r for r in domain["dnsRecords"]}


def zone_for(
    domains: list[dict[str, Any]],
    *,
    skip: frozenset[str] = frozenset(),
    replace: dict[str, str] | None = None,
    extra_txt: list[tuple[str, str]] | None = None,
) -> Zone:
    """A zone publishing each domain's records as asked (kinds in `skip` left out, values in `replace` used
    instead), under zones of their own so that anything else there is NXDOMAIN."""
    replace = replace or {}
    zone = Zone(local=[d["domain"] for d in domains], txt=list(extra_txt or []))
    for domain in domains:
        for kind, record in records(domain).items():
            if kind in skip:
                continue
            value = replace.get(kind, record["value"])
            if record["type"] == "TXT":
                zone.txt.append((record["name"], value))
            else:
                zone.cname[record["name"]] = value
                zone.hosts[value] = "127.0.0.1"
    return zone


async def mark_verified(db: Database, domain_id: int) -> None:
    """Verified without DNS, for tests about what a verified domain does (signing, the From rule)."""
    with all_workspaces():
        async with db.transaction() as session:
            row = await session.get(SendingDomain, domain_id)
            assert row is not None
            row.verified = True
