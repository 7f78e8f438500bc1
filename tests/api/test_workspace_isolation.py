"""Workspace isolation, systematically: every query, mutation and subscription that takes an ID, found by walking
the schema's introspection, is called by workspace A's ADMIN key with workspace B's IDs, and must answer exactly
as it does for an ID that exists nowhere ("not found"), never with B's data, and change nothing in any workspace.
The REST routes (export, custom events, subscribe form, confirmation, tracking and unsubscribe links, provider
webhooks) and the calls that name a subscriber by address are held to the same rule.

Workspace B holds one of everything, made through the API with B's key, every name and address carrying MARKER;
A (the default workspace) holds its own objects for the IDs a call needs besides the one under test. Each case
makes two calls that differ only in the ID under test: the control names an ID of the same type that exists
nowhere, the other names B's object. Around each case every row of every table of every workspace is
snapshotted (inside all_workspaces()), and the two snapshots must be equal. Both backends run it: SQLite, and
PostgreSQL as emailkit_app under row-level security.

A field with an ID argument the tables below cannot place fails its case, asking for the tables to be extended:
a new field is covered the day it is added.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from emailkit import globalid
from emailkit.db.engine import Database
from emailkit.domain.content.tracked_urls import TrackingUrls
from emailkit.domain.tokens import TokenSigner
from emailkit.schema import build_schema
from tests.support.environment import TEST_SECRET
from tests.support.isolation import (
    CallBuilder,
    IdSlot,
    Own,
    Schema,
    Snapshot,
    UnplacedId,
    error_codes,
    findings,
    id_slots,
    is_empty,
    mentions_of,
    nested_id_arguments,
    normalised,
    operation,
    snapshot,
    subscribe,
)
from tests.support.isolation_world import A_MARKER, MARKER, PUBLIC_URL, World, running_world

# --- which object type each ID argument names --------------------------------------------------------------

NODE = "Node"  # node(id): every type implementing Node is tried
# By where the argument is declared: "<root type>.<field>.<argument>" or "<input type>.<field>".
ID_ARGUMENTS: dict[str, str] = {
    "Query.node.id": NODE,
    "Query.list.id": "MailingList",
    "Query.subscriber.id": "Subscriber",
    "Query.template.id": "Template",
    "Query.campaign.id": "Campaign",
    "Query.delivery.id": "Delivery",
    "Query.segment.id": "Segment",
    "Query.import.id": "Import",
    "Query.exportSubscriberData.id": "Subscriber",
    "Subscription.campaignProgress.id": "Campaign",
    "Subscription.campaignStats.id": "Campaign",
    "Subscription.importProgress.id": "Import",
    "UpdateListInput.id": "MailingList",
    "DeleteListInput.id": "MailingList",
    "RevokeApiKeyInput.id": "ApiKey",
    "UpdateSubscriberInput.id": "Subscriber",
    "DeleteSubscriberInput.id": "Subscriber",
    "EraseSubscriberInput.id": "Subscriber",
    "UpdateTemplateInput.id": "Template",
    "DeleteTemplateInput.id": "Template",
    "UpdateCampaignInput.id": "Campaign",
    "DeleteCampaignInput.id": "Campaign",
    "CampaignIdInput.id": "Campaign",
    "ScheduleCampaignInput.id": "Campaign",
    "UpdateSegmentInput.id": "Segment",
    "DeleteSegmentInput.id": "Segment",
    "RemoveSuppressionInput.id": "Suppression",
    "UpdateWorkspaceInput.id": "Workspace",
    "ArchiveWorkspaceInput.id": "Workspace",
    "Query.webhookEndpoint.id": "WebhookEndpoint",
    "UpdateWebhookEndpointInput.id": "WebhookEndpoint",
    "DeleteWebhookEndpointInput.id": "WebhookEndpoint",
    "RedeliverWebhookInput.deliveryId": "WebhookDelivery",
    "Query.flow.id": "Flow",
    "Subscription.flowStats.id": "Flow",
    "UpdateFlowInput.id": "Flow",
    "PublishFlowInput.id": "Flow",
    "FlowIdInput.id": "Flow",
    "FlowStepInput.addListIds": "MailingList",
    "FlowStepInput.removeListIds": "MailingList",
    "Query.sender.id": "Sender",
    "UpdateSenderInput.id": "Sender",
    "DeleteSenderInput.id": "Sender",
    "TestSenderInput.id": "Sender",
    "Query.sendingDomain.id": "SendingDomain",
    "SendingDomainIdInput.id": "SendingDomain",
}
# Wherever they are declared, arguments named after the type they name.
ID_NAMES: dict[str, str] = {
    "listId": "MailingList",
    "listIds": "MailingList",
    "subscriberId": "Subscriber",
    "subscriberIds": "Subscriber",
    "templateId": "Template",
    "optinTemplateId": "Template",
    "campaignId": "Campaign",
    "segmentId": "Segment",
    "segmentIds": "Segment",
    "variantId": "CampaignVariant",
    "senderId": "Sender",
}


def id_type(slot_key: str) -> str | None:
    return ID_ARGUMENTS.get(slot_key) or ID_NAMES.get(slot_key.rsplit(".", 1)[-1])


# B's objects of each type, as tests/support/isolation_world.py labels them: each one is tried where its type
# is named (both kinds of template, a draft and a sent campaign, a campaign's and a transactional delivery).
LABELS: dict[str, list[str]] = {
    "MailingList": ["list"],
    "Subscriber": ["subscriber"],
    "Template": ["campaign", "transactional"],
    "Campaign": ["draft", "sent"],
    "Segment": ["segment"],
    "Suppression": ["suppression"],
    "Import": ["import"],
    "ApiKey": ["key"],
    "Delivery": ["campaign", "transactional"],
    "Event": ["event", "custom"],
    "Workspace": ["workspace"],
    "CampaignVariant": ["variant"],
    "WebhookEndpoint": ["endpoint"],
    "WebhookDelivery": ["delivery"],
    "Flow": ["flow"],
    "FlowRun": ["run"],
    "Sender": ["sender"],
    "SendingDomain": ["domain"],
}
# The control's ID: a well-formed ID of the same type that names no row in any workspace.
MISSING_PK = 987_654_321

# --- values that make a call otherwise valid ---------------------------------------------------------------

# Non-ID arguments and input fields, by name, where "any string" would be refused before the ID is looked at.
BY_NAME: dict[str, Any] = {
    "email": "someone@example.org",
    "emails": ["someone@example.org"],
    "to": "someone@example.org",
    "fromEmail": "news@example.org",
    "name": "Isolation check",
    "subject": "Hello",
    "slug": "isolation-check",
    "sendAt": "2030-01-01T00:00:00Z",
}
BY_SCALAR: dict[str, Any] = {
    "String": "x",
    "Int": 1,
    "Float": 1.0,
    "Boolean": False,
    "DateTime": "2030-01-01T00:00:00Z",
    "JSON": {},
}
# Optional values some operations need to get as far as looking the ID up (path from the argument -> value;
# Own(type) is A's own object of that type). At the path under test, the ID tried replaces them.
EXTRAS: dict[str, dict[tuple[str, ...], Any]] = {
    # Content and an audience.
    "mutation:createCampaign": {
        ("input", "templateId"): Own("Template"),
        ("input", "listIds"): [Own("MailingList")],
    },
    "mutation:updateCampaign": {("input", "listIds"): [Own("MailingList")]},
    # An A/B test of two variants, for the variants' template ids (the one tried goes into the first).
    "mutation:createCampaign[variants]": {
        ("input", "variants"): [{"subject": "one"}, {"subject": "two"}],
        ("input", "abTest"): {"testShare": 0.5, "metric": "OPENS", "waitSeconds": 3600},
    },
    # A variant of another workspace, named with the caller's own A/B tested campaign.
    "mutation:pickWinner[variantId]": {("input", "campaignId"): Own("AbCampaign")},
    "mutation:updateCampaign[variants]": {
        ("input", "variants"): [{"subject": "one"}, {"subject": "two"}],
        ("input", "abTest"): {"testShare": 0.5, "metric": "OPENS", "waitSeconds": 3600},
    },
    # Something to render for the subscriber.
    "mutation:previewTemplate": {("input", "templateId"): Own("Template")},
    # Rows to import.
    "mutation:importSubscribers": {("input", "csv"): "email\nnew-reader@example.org\n"},
    # An event name as they are written (BY_NAME's has a space).
    "mutation:trackEvent": {("input", "name"): "isolation.check"},
    # A definition that is valid but for the ID tried (which goes into the trigger or the first step).
    "mutation:createFlow": {
        ("input", "trigger"): {"type": "SUBSCRIBED", "listId": Own("MailingList")},
        ("input", "steps"): [{"key": "only", "type": "EXIT"}],
    },
    "mutation:updateFlow": {
        ("input", "trigger"): {"type": "SUBSCRIBED", "listId": Own("MailingList")},
        ("input", "steps"): [{"key": "only", "type": "EXIT"}],
    },
}


def extras_for(operation: str, path: tuple[str, ...]) -> dict[tuple[str, ...], Any]:
    """The operation's extra values, and those of the input field the ID under test sits in
    ("mutation:createCampaign[variants]")."""
    extras = dict(EXTRAS.get(operation, {}))
    for part in path:
        extras.update(EXTRAS.get(f"{operation}[{part}]", {}))
    return extras


# --- what counts as "not found" ----------------------------------------------------------------------------


def not_found(code: str) -> bool:
    """NOT_FOUND and the typed LIST_NOT_FOUND, CAMPAIGN_NOT_FOUND, ...: the lookup found no such object. Nothing
    else is accepted: INVALID_ID is for malformed or wrongly typed IDs (B's are neither), FORBIDDEN or
    INVALID_STATE would tell the caller that the object exists."""
    return code == "NOT_FOUND" or code.endswith("_NOT_FOUND")


# Operations that refuse a workspace key whatever the ID: workspace management is for instance keys, so these
# answer FORBIDDEN before any lookup, for a missing ID exactly as for B's.
REFUSED_BEFORE_LOOKUP: dict[str, str] = {
    "mutation:updateWorkspace": "FORBIDDEN",
    "mutation:archiveWorkspace": "FORBIDDEN",
}
# Queries that show nothing of that object even to B's own key (a draft campaign has no events and engaged
# nobody): still tried, but they cannot prove that the probe would see B's data.
NOTHING_THERE: set[tuple[str, str]] = {
    ("query:subscribers", "draft"),
    ("query:segmentPreview", "draft"),
    ("query:events", "draft"),
}


def expect(case_id: str, problems: list[str]) -> None:
    """The case passes with no problem found; else it fails naming each one."""
    assert not problems, f"{case_id}: {len(problems)} problem(s)\n" + "\n".join(f"- {p}" for p in problems)


# --- the cases ---------------------------------------------------------------------------------------------

SCHEMA = Schema(build_schema().introspect())


@dataclass(frozen=True)
class Case:
    kind: str
    field: str
    slot: IdSlot
    target: str | None  # the object type tried (None: the tables cannot place the slot)
    label: str | None  # which of B's objects of that type (None: B has none)

    @property
    def operation(self) -> str:
        return f"{self.kind}:{self.field}"

    def __str__(self) -> str:
        tried = f"{self.target or 'UNMAPPED'}{':' + self.label if self.label else ''}"
        return f"{self.operation}[{'.'.join(self.slot.path)}={tried}]"


def cases() -> list[Case]:
    found = []
    for kind in ("query", "mutation", "subscription"):
        for root_field in SCHEMA.root_fields(kind):
            for slot in id_slots(SCHEMA, kind, root_field):
                target = id_type(slot.key)
                for t in SCHEMA.possible_types(NODE) if target == NODE else [target]:
                    labels: list[str | None] = list(LABELS.get(t, [None])) if t is not None else [None]
                    found += [Case(kind, root_field["name"], slot, t, label) for label in labels]
    return found


CASES = cases()


def unplaced(operation_name: str, where: str, slot_key: str) -> str:
    return (
        f"{operation_name} takes an ID at {where} ({slot_key}) that the isolation test cannot place: add it to "
        "ID_ARGUMENTS or ID_NAMES in tests/api/test_workspace_isolation.py"
    )


def tried_ids(case: Case, world: World) -> tuple[str, str]:
    """(B's ID, the control's missing ID) of a case, or the failure saying which table to extend."""
    if case.target is None:
        pytest.fail(unplaced(case.operation, ".".join(case.slot.path), case.slot.key))
    if case.label is None or case.label not in world.b.objects.get(case.target, {}):
        pytest.fail(
            f"workspace B has no {case.target}: make one in tests/support/isolation_world.py and LABELS"
        )
    return world.b.objects[case.target][case.label], globalid.encode(case.target, MISSING_PK)


def call_for(world: World, case: Case, tried: str) -> tuple[str, dict[str, Any]]:
    """The document and variables of a case, with `tried` at the case's slot (after A's own object of that
    type, where the slot takes a list: one foreign ID among valid ones must spoil the whole call)."""
    assert case.target is not None
    builder = CallBuilder(SCHEMA, id_type=id_type, own_id=world.a.one, by_name=BY_NAME, by_scalar=BY_SCALAR)
    root_field = next(f for f in SCHEMA.root_fields(case.kind) if f["name"] == case.field)
    owner = f"{SCHEMA.roots[case.kind]}.{case.field}"
    ids = [world.a.one(case.target), tried] if case.slot.many else [tried]
    try:
        variables = builder.arguments(
            root_field, owner, extras_for(case.operation, case.slot.path), case.slot, ids
        )
    except UnplacedId as exc:  # a required ID besides the one under test
        pytest.fail(unplaced(case.operation, "a required argument", str(exc)))
    return operation(SCHEMA, case.kind, root_field, variables, concrete=case.target), variables


# --- the world: built once per module and backend, again after a test changed it ---------------------------

# Columns that change by themselves while requests are served.
VOLATILE: dict[str, set[str]] = {"api_keys": {"last_used_at"}}


class Worlds:
    """The module's world, rebuilt after a test changed the database (so that a leaking mutation of one case
    can neither hide nor fake a leak of the next)."""

    def __init__(self, db: Database, data_dir: Path) -> None:
        self.db = db
        self.data_dir = data_dir
        self.world: World | None = None
        self.dirty = False
        self._exit: Any = None

    async def get(self) -> World:
        if self.world is not None and not self.dirty:
            return self.world
        await self.close()
        manager = running_world(self.db, self.data_dir)
        self.world = await manager.__aenter__()
        self._exit = manager.__aexit__
        self.dirty = False
        return self.world

    async def close(self) -> None:
        if self._exit is not None:
            exit_, self._exit, self.world = self._exit, None, None
            await exit_(None, None, None)

    async def snapshot(self) -> Snapshot:
        assert self.world is not None
        return await snapshot(self.db, VOLATILE)

    async def settled(self, before: Snapshot) -> Snapshot:
        """The database once the requests' background work is done; marks the world for a rebuild if it
        differs from `before`."""
        assert self.world is not None
        await self.world.settle()
        after = await self.snapshot()
        if before.changed(after):
            self.dirty = True
        return after


@pytest.fixture(scope="module")
async def worlds(database: Database, tmp_path_factory: pytest.TempPathFactory) -> AsyncIterator[Worlds]:
    holder = Worlds(database, tmp_path_factory.mktemp("isolation"))
    yield holder
    await holder.close()


@pytest.fixture
async def world(worlds: Worlds) -> World:
    return await worlds.get()


def b_ids_except(world: World, given: str) -> list[str]:
    return [i for objects in world.b.objects.values() for i in objects.values() if i != given]


def unlike(theirs: Any, control: Any, same: dict[str, str]) -> list[str]:
    if normalised(theirs, same) == normalised(control, same):
        return []
    return [
        f"answers unlike a missing ID:\n  B's:     {json.dumps(theirs)}\n  missing: {json.dumps(control)}"
    ]


def leaked(theirs: Any, world: World, same: dict[str, str], given: str) -> list[str]:
    """B's names, addresses or (other) IDs in an answer, once the value tried is taken out of it."""
    text = normalised(theirs, same)
    problems = []
    if found := findings(text, [MARKER]):
        problems.append(f"B's data in the answer ({found}): {text}")
    if named_ids := mentions_of(text, b_ids_except(world, given)):
        problems.append(f"IDs of B's objects in the answer: {named_ids}")
    return problems


# --- GraphQL queries and mutations -------------------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.kind != "subscription"], ids=str)
async def test_another_workspaces_id_is_not_found(case: Case, worlds: Worlds, world: World) -> None:
    b_id, missing = tried_ids(case, world)
    before = await worlds.snapshot()
    control = await world.gql(world.a.key, *call_for(world, case, missing))
    query, variables = call_for(world, case, b_id)
    theirs = await world.gql(world.a.key, query, variables)
    same = {b_id: "<ID>", missing: "<ID>"}
    problems = leaked(theirs, world, same, b_id) + unlike(theirs, control, same)
    codes = error_codes(theirs, case.field)
    if case.kind == "mutation":
        if not any(not_found(c) or c == REFUSED_BEFORE_LOOKUP.get(case.operation) for c in codes):
            problems.append(f"no not-found error (codes {codes}): {json.dumps(theirs)}")
    else:
        if not (any(not_found(c) for c in codes) or is_empty((theirs.get("data") or {}).get(case.field))):
            problems.append(f"neither empty nor not found (codes {codes}): {json.dumps(theirs)}")
        problems += await probe_sees_b(case, world, query, variables)
    if diff := before.differences(await worlds.settled(before)):
        problems.append("the database changed:\n  " + "\n  ".join(diff))
    expect(str(case), problems)


async def probe_sees_b(case: Case, world: World, query: str, variables: dict[str, Any]) -> list[str]:
    """The same query with B's own key shows B's object: the probe would see a leak were there one."""
    own = await world.gql(world.b.key, query, variables)
    if findings(json.dumps(own), [MARKER]) or (case.operation, case.label) in NOTHING_THERE:
        return []
    return [f"the query shows B nothing of its own object, so it cannot show a leak: {json.dumps(own)}"]


# --- subscriptions over graphql-transport-ws ----------------------------------------------------------------


@pytest.mark.parametrize("case", [c for c in CASES if c.kind == "subscription"], ids=str)
async def test_another_workspaces_subscription_is_not_found(case: Case, world: World) -> None:
    b_id, missing = tried_ids(case, world)
    url = f"ws://{world.address}/graphql"
    control = await subscribe(url, world.a.key, *call_for(world, case, missing))
    query, variables = call_for(world, case, b_id)
    theirs = await subscribe(url, world.a.key, query, variables)
    same = {b_id: "<ID>", missing: "<ID>"}
    problems = leaked(theirs, world, same, b_id) + unlike(theirs, control, same)
    codes = [str((e.get("extensions") or {}).get("code")) for e in theirs["errors"]]
    if not any(not_found(c) for c in codes) or any(theirs["data"]):
        problems.append(f"the subscription did not end not found: {json.dumps(theirs)}")
    own = await subscribe(url, world.b.key, query, variables)
    if not any(own["data"]):
        problems.append(f"B's own key gets nothing from it, so it cannot show a leak: {json.dumps(own)}")
    expect(str(case), problems)


# --- the walk itself ----------------------------------------------------------------------------------------


def test_the_walk_finds_the_id_arguments() -> None:
    """A broken walk would make every case pass vacuously; and no ID argument may sit below the root fields,
    where the cases do not look."""
    assert len({c.operation for c in CASES}) >= 40
    assert {c.target for c in CASES} >= set(LABELS)
    assert nested_id_arguments(SCHEMA) == [], "ID arguments below the root fields: add cases for them"


async def test_the_served_schema_is_the_walked_one(world: World) -> None:
    """The cases come from the schema built in-process; the server must serve that same schema."""
    from graphql import get_introspection_query

    served = Schema(await world.run(world.a.key, get_introspection_query()))
    assert served.types.keys() == SCHEMA.types.keys()
    for kind in ("query", "mutation", "subscription"):
        assert served.root_fields(kind) == SCHEMA.root_fields(kind)


async def test_workspace_b_is_made_through_the_api(world: World) -> None:
    """Every object of B came through B's key (a step that could not is recorded by the builder)."""
    assert world.gaps == []


# --- queries without an ID ---------------------------------------------------------------------------------

# Those whose answer names nothing of B even to B's own key: `viewer` describes the key (named by the test
# factory), `workspaces` is for instance keys only (FORBIDDEN to both workspaces' keys), `defaultSender` is the
# instance's (the same for every workspace).
SHOWS_NO_NAMES = {"viewer", "workspaces", "webhookEventTypes", "defaultSender"}


def id_free_queries() -> list[str]:
    return [
        f["name"]
        for f in SCHEMA.root_fields("query")
        if not id_slots(SCHEMA, "query", f)
        and not any(a["type"]["kind"] == "NON_NULL" and a.get("defaultValue") is None for a in f["args"])
    ]


@pytest.mark.parametrize("field_name", id_free_queries())
async def test_queries_without_an_id_show_nothing_of_b(field_name: str, world: World) -> None:
    """Listings (lists, campaigns, events, apiKeys, ...) show A's objects and none of B's, while B's own key
    sees B's through the same query."""
    root_field = next(f for f in SCHEMA.root_fields("query") if f["name"] == field_name)
    query = operation(SCHEMA, "query", root_field, {})
    assert leaked(await world.gql(world.a.key, query), world, {}, "") == []
    own = json.dumps(await world.gql(world.b.key, query))
    seen = findings(own, [MARKER]) or mentions_of(own, b_ids_except(world, ""))
    assert seen or field_name in SHOWS_NO_NAMES, f"B's own key sees nothing of B: {own}"


# --- addresses: B's subscribers and suppressions are unknown in A ------------------------------------------

ADDRESS_CALLS: dict[str, tuple[str, str, dict[str, Any]]] = {
    # name: (document, B's address it is tried with, variables with "<address>" where the address goes)
    "subscriber": (
        "query($e: String) { subscriber(email: $e) { email name } }",
        "reader",
        {"e": "<address>"},
    ),
    "subscribers": (
        "query($s: String) { subscribers(search: $s) { totalCount edges { node { email name } } } }",
        "reader",
        {"s": "<address>"},
    ),
    "suppressions": (
        "query($s: String) { suppressions(search: $s) { totalCount edges { node { email reason } } } }",
        "blocked",
        {"s": "<address>"},
    ),
    "events": (
        "query($f: EventFilter) { events(filter: $f) { totalCount edges { node { email type } } } }",
        "reader",
        {"f": {"email": "<address>"}},
    ),
    "removeSuppression": (
        "mutation($i: RemoveSuppressionInput!) { removeSuppression(input: $i) { suppression { email } userErrors { code } } }",
        "blocked",
        {"i": {"email": "<address>"}},
    ),
    "trackEvent": (
        "mutation($i: TrackEventInput!) { trackEvent(input: $i) { event { id name } duplicate userErrors { code } } }",
        "reader",
        {"i": {"email": "<address>", "name": "isolation.check", "idempotencyKey": "isolation"}},
    ),
    # These succeed, for A: B's address is a new one there (not DUPLICATE_EMAIL, ALREADY_SUPPRESSED, SUPPRESSED).
    "createSubscriber": (
        "mutation($i: CreateSubscriberInput!) { createSubscriber(input: $i) { subscriber { email name status } userErrors { code } } }",
        "reader",
        {"i": {"email": "<address>", "listIds": ["<own list>"]}},
    ),
    "addSuppression": (
        "mutation($i: AddSuppressionInput!) { addSuppression(input: $i) { suppression { email reason } userErrors { code } } }",
        "blocked",
        {"i": {"email": "<address>"}},
    ),
    "sendTransactional": (
        "mutation($i: SendTransactionalInput!) { sendTransactional(input: $i) { delivery { email status } userErrors { code } } }",
        "blocked",
        {"i": {"templateId": "<own transactional>", "to": "<address>", "fromEmail": "shop@example.org"}},
    ),
    # A test mail to B's reader's address is personalised with A's data (a sample), not B's subscriber's.
    "sendTestEmail": (
        "mutation($i: SendTestEmailInput!) { sendTestEmail(input: $i) { sent userErrors { code } } }",
        "reader",
        {"i": {"campaignId": "<own campaign>", "emails": ["<address>"]}},
    ),
    # Rows naming B's reader are imported into A as a new subscriber, B's stays as it is.
    "importSubscribers": (
        "mutation($i: ImportSubscribersInput!) { importSubscribers(input: $i) { userErrors { code } } }",
        "reader",
        {"i": {"csv": "email,name\n<address>,Imported by A\n", "listIds": ["<own list>"]}},
    ),
}


def with_address(world: World, variables: Any, address: str) -> Any:
    if isinstance(variables, dict):
        return {k: with_address(world, v, address) for k, v in variables.items()}
    if isinstance(variables, list):
        return [with_address(world, v, address) for v in variables]
    if isinstance(variables, str):
        return (
            variables.replace("<address>", address)
            .replace("<own list>", world.a.one("MailingList"))
            .replace("<own transactional>", world.a.objects["Template"]["transactional"])
            .replace("<own campaign>", world.a.objects["Campaign"]["draft"])
        )
    return variables


@pytest.mark.parametrize("name", ADDRESS_CALLS)
async def test_bs_addresses_are_unknown_in_a(name: str, worlds: Worlds, world: World) -> None:
    """Called by A with the address of B's subscriber (or of B's suppression), an operation answers as for an
    address that exists nowhere, shows nothing of B, and changes nothing of B's (A may gain its own rows)."""
    document, local, variables = ADDRESS_CALLS[name]
    address, control_address = f"{local}@{MARKER}.example", f"nobody@{MARKER}.example"
    before = await worlds.snapshot()
    mails_before = set(world.outbox.glob("*.eml"))
    control = await world.gql(world.a.key, document, with_address(world, variables, control_address))
    theirs = await world.gql(world.a.key, document, with_address(world, variables, address))
    same = {address: "<address>", control_address: "<address>"}
    problems = leaked(theirs, world, same, "") + unlike(theirs, control, same)
    after = await worlds.settled(before)
    if changed := before.workspaces_changed(after) - {world.a.id, "-"}:
        problems.append(f"rows of workspaces {changed} changed: {before.differences(after)}")
    if name == "importSubscribers":
        problems += imported_as_new(after, world)
    if document.startswith("query"):
        own = await world.gql(world.b.key, document, with_address(world, variables, address))
        if is_empty(own.get("data")):
            problems.append(f"B's own key finds nothing by this address, so it cannot show a leak: {own}")
    for mail in set(world.outbox.glob("*.eml")) - mails_before:
        if findings(mail.read_text(errors="replace"), [f"{MARKER} reader"]):
            problems.append(f"a mail of A's carries B's subscriber's data: {mail.name}")
    expect(f"address:{name}", problems)


def imported_as_new(after: Snapshot, world: World) -> list[str]:
    """Both imports (the control's and B's address) FINISHED, each adding a subscriber to A."""
    statuses = [
        row
        for row in after.rows["imports"]
        if row[after.columns["imports"].index("workspace_id")] == world.a.id
    ]
    status = after.columns["imports"].index("status")
    finished = [row[status] for row in statuses]
    return [] if finished.count("FINISHED") == len(finished) else [f"A's imports ended {finished}"]


# --- REST routes --------------------------------------------------------------------------------------------

SIGNER = TokenSigner(TEST_SECRET)
LINKS = TrackingUrls(PUBLIC_URL, SIGNER)


def pk(global_id: str) -> int:
    parsed = globalid.parse(global_id)
    assert parsed is not None
    return parsed[1]


def path_of(url: str) -> str:
    assert url.startswith(PUBLIC_URL)
    return url[len(PUBLIC_URL) :]


def response_problems(
    name: str,
    theirs: httpx.Response,
    control: httpx.Response,
    same: dict[str, str],
    *,
    page_of_b: bool = False,
) -> list[str]:
    """B's answer must be the missing ID's (same status, same body once the IDs are aligned), without B's data
    (unless it is a page of B's own, such as its reader's preference centre, in B's branding)."""
    problems = []
    ours, control_text = theirs.text, control.text
    for old, new in same.items():
        ours, control_text = ours.replace(old, new), control_text.replace(old, new)
    if not page_of_b and findings(ours, [MARKER]):
        problems.append(f"{name}: B's data in the answer: {theirs.text[:500]}")
    if (theirs.status_code, ours) != (control.status_code, control_text):
        problems.append(
            f"{name}: answers unlike a missing ID: {theirs.status_code} {theirs.text[:300]!r} "
            f"vs {control.status_code} {control.text[:300]!r}"
        )
    return problems


def only_b_changed(name: str, changed: set[Any], world: World) -> list[str]:
    if changed - {world.b.id, "-"} or world.b.id not in changed:
        return [f"{name}: rows changed in workspaces {changed}, expected {world.b.id} alone"]
    return []


@pytest.mark.parametrize(
    ("param", "type_name"), [("listId", "MailingList"), ("segmentId", "Segment")], ids=["listId", "segmentId"]
)
async def test_export_of_another_workspaces_list_or_segment_is_not_found(
    param: str, type_name: str, world: World
) -> None:
    b_id, missing = world.b.one(type_name), globalid.encode(type_name, MISSING_PK)

    async def export(key: str, global_id: str) -> httpx.Response:
        return await world.http.get(
            "/export/subscribers.csv", params={param: global_id}, headers={"Authorization": f"Bearer {key}"}
        )

    theirs = await export(world.a.key, b_id)
    problems = response_problems(
        f"export {param}", theirs, await export(world.a.key, missing), {b_id: "<ID>", missing: "<ID>"}
    )
    if theirs.status_code != 404:
        problems.append(f"export {param}: HTTP {theirs.status_code}, not 404")
    own = await export(world.b.key, b_id)
    if own.status_code != 200 or not findings(own.text, [MARKER]):
        problems.append(
            f"export {param}: B's own export shows nothing of B: {own.status_code} {own.text[:200]}"
        )
    expect(f"rest:export[{param}]", problems)


async def test_custom_events_naming_bs_subscriber_are_refused_like_a_missing_one(
    worlds: Worlds, world: World
) -> None:
    """POST /api/events by A naming B's subscriber (by ID, and by address) answers as for nobody and stores
    nothing; B's own key records the same event in B alone (so the route does reach B's subscriber)."""
    b_id, missing = world.b.one("Subscriber"), globalid.encode("Subscriber", MISSING_PK)
    address, control_address = f"reader@{MARKER}.example", f"nobody@{MARKER}.example"

    async def send(key: str, subscriber: str, email: str) -> httpx.Response:
        events = [
            {"subscriberId": subscriber, "name": "isolation.check", "idempotencyKey": "isolation-id"},
            {"email": email, "name": "isolation.check", "idempotencyKey": "isolation-email"},
        ]
        return await world.http.post(
            "/api/events", json={"events": events}, headers={"Authorization": f"Bearer {key}"}
        )

    before = await worlds.snapshot()
    control = await send(world.a.key, missing, control_address)
    theirs = await send(world.a.key, b_id, address)
    after = await worlds.settled(before)
    same = {b_id: "<ID>", missing: "<ID>", address: "<address>", control_address: "<address>"}
    problems = response_problems("events", theirs, control, same)
    codes = [r.get("code") for r in theirs.json().get("results", [])] if theirs.status_code == 200 else []
    if codes != ["SUBSCRIBER_NOT_FOUND"] * 2:
        problems.append(f"events: HTTP {theirs.status_code} {theirs.text[:300]}, not SUBSCRIBER_NOT_FOUND")
    if diff := before.differences(after):
        problems.append("events: the database changed:\n  " + "\n  ".join(diff))
    own = await send(world.b.key, b_id, address)
    if own.status_code != 200 or own.json()["accepted"] != 2:
        problems.append(f"events by B's own key: HTTP {own.status_code} {own.text[:300]}")
    problems += only_b_changed(
        "events by B's own key", after.workspaces_changed(await worlds.settled(after)), world
    )
    expect("rest:events", problems)


async def test_subscribe_form_naming_lists_of_two_workspaces_is_refused(worlds: Worlds, world: World) -> None:
    """A signup naming A's list and B's (both public) is refused like one naming A's list and a missing one, and
    stores nothing; B's list alone signs up into B only (so the form does reach B's list)."""
    a_list, b_list = world.a.one("MailingList"), world.b.one("MailingList")
    missing = globalid.encode("MailingList", MISSING_PK)

    async def signup(*lists: str) -> httpx.Response:
        return await world.http.post(
            "/subscribe", json={"email": "newcomer@example.org", "lists": list(lists)}
        )

    before = await worlds.snapshot()
    control = await signup(a_list, missing)
    theirs = await signup(a_list, b_list)
    after = await worlds.settled(before)
    problems = response_problems("subscribe", theirs, control, {b_list: "<ID>", missing: "<ID>"})
    if theirs.status_code != 400:
        problems.append(f"subscribe: HTTP {theirs.status_code}, not 400")
    if diff := before.differences(after):
        problems.append("subscribe: the database changed:\n  " + "\n  ".join(diff))
    alone = await signup(b_list)
    if alone.status_code != 200:
        problems.append(f"subscribe to B's list alone: HTTP {alone.status_code} {alone.text[:200]}")
    problems += only_b_changed(
        "subscribe to B's list alone", after.workspaces_changed(await worlds.settled(after)), world
    )
    expect("rest:subscribe", problems)


async def test_confirmation_link_naming_another_workspaces_list_shows_and_confirms_nothing(
    worlds: Worlds, world: World
) -> None:
    """A confirmation token (signed, as only the server can) naming B's subscriber and A's list is as invalid as
    one naming a missing list: the subscriber's workspace has no such list."""
    subscriber = pk(world.b.one("Subscriber"))
    token = SIGNER.sign("confirm", subscriber, str(pk(world.a.one("MailingList"))))
    missing = SIGNER.sign("confirm", subscriber, str(MISSING_PK))
    before = await worlds.snapshot()
    problems = []
    for method in ("GET", "POST"):
        theirs = await world.http.request(method, f"/confirm/{token}")
        control = await world.http.request(method, f"/confirm/{missing}")
        if findings(theirs.text, [A_MARKER]) or (theirs.status_code, theirs.text) != (
            control.status_code,
            control.text,
        ):
            problems.append(
                f"confirm {method}: {theirs.status_code} {theirs.text[:300]!r} vs {control.status_code}"
            )
    if diff := before.differences(await worlds.settled(before)):
        problems.append("confirm: the database changed:\n  " + "\n  ".join(diff))
    own = SIGNER.sign("confirm", subscriber, str(pk(world.b.one("MailingList"))))
    page = await world.http.get(f"/confirm/{own}")
    if page.status_code != 200 or not findings(page.text, [MARKER]):
        problems.append(
            f"confirm: B's own link does not show B's list: HTTP {page.status_code} {page.text[:200]}"
        )
    expect("rest:confirm", problems)


async def test_tracking_links_of_b_record_in_b_only(worlds: Worlds, world: World) -> None:
    """An open and a click of B's delivery are written to B, and nothing of A's changes."""
    delivery = pk(world.b.objects["Delivery"]["campaign"])
    before = await worlds.snapshot()
    opened = await world.http.get(path_of(LINKS.open_pixel(delivery)))
    clicked = await world.http.get(path_of(LINKS.click(delivery, f"https://{MARKER}.example/x")))
    problems = only_b_changed("tracking", before.workspaces_changed(await worlds.settled(before)), world)
    if opened.status_code != 200 or clicked.status_code != 302:
        problems.append(f"tracking: HTTP {opened.status_code} (open), {clicked.status_code} (click)")
    expect("rest:tracking", problems)


async def test_preference_centre_of_b_shows_and_changes_only_b(worlds: Worlds, world: World) -> None:
    """B's reader's preference centre offers B's public lists, not A's; joining or leaving A's list through it is
    refused like joining a list that does not exist, and changes nothing."""
    delivery = pk(world.b.objects["Delivery"]["campaign"])
    centre = path_of(LINKS.unsubscribe(delivery))
    nonce = SIGNER.sign("uf", delivery)  # the centre's form nonce (emailkit.web.preferences.PURPOSE_FORM)
    problems = []
    page = await world.http.get(centre)
    if page.status_code != 200 or not findings(page.text, [MARKER]):
        problems.append(
            f"centre: B's reader does not get B's page: HTTP {page.status_code} {page.text[:300]}"
        )
    if findings(page.text, [A_MARKER]):
        problems.append(f"centre: B's reader is shown A's lists: {page.text}")
    a_list = str(pk(world.a.one("MailingList")))
    for action in ("join", "leave"):
        before = await worlds.snapshot()
        control = await world.http.post(
            centre, data={"action": action, "list": str(MISSING_PK), "nonce": nonce}
        )
        theirs = await world.http.post(centre, data={"action": action, "list": a_list, "nonce": nonce})
        problems += response_problems(
            f"centre {action}", theirs, control, {a_list: "<ID>", str(MISSING_PK): "<ID>"}, page_of_b=True
        )
        if findings(theirs.text, [A_MARKER]):
            problems.append(f"centre {action}: A's list named to B's reader: {theirs.text[:300]}")
        if diff := before.differences(await worlds.settled(before)):
            problems.append(f"centre {action}: the database changed:\n  " + "\n  ".join(diff))
    expect("rest:preferences", problems)


async def test_one_click_unsubscribe_of_b_changes_only_b(worlds: Worlds, world: World) -> None:
    delivery = pk(world.b.objects["Delivery"]["campaign"])
    before = await worlds.snapshot()
    resp = await world.http.post(path_of(LINKS.unsubscribe(delivery)), data={"List-Unsubscribe": "One-Click"})
    problems = only_b_changed("unsubscribe", before.workspaces_changed(await worlds.settled(before)), world)
    if resp.status_code != 200:
        problems.append(f"unsubscribe: HTTP {resp.status_code}")
    expect("rest:unsubscribe", problems)


async def test_webhook_events_naming_bs_delivery_are_recorded_in_b_only(worlds: Worlds, world: World) -> None:
    """Hard bounces for B's delivery, one of them giving the address of A's subscriber, are B's: the events and
    suppressions are written to B, and A's subscriber is not blocklisted."""
    delivery = pk(world.b.objects["Delivery"]["campaign"])
    events = [
        {
            "email": email,
            "event": "bounce",
            "type": "bounce",
            "status": "5.1.1",
            "reason": "no such user",
            "timestamp": 1_700_000_100 + i,
            "sg_event_id": f"isolation-bounce-{i}",
            "emailkit_delivery": str(delivery),
        }
        for i, email in enumerate([f"reader@{MARKER}.example", f"reader@{A_MARKER}.example"])
    ]
    before = await worlds.snapshot()
    resp = await world.http.post("/webhooks/sendgrid", content=json.dumps(events).encode())
    problems = only_b_changed("webhook", before.workspaces_changed(await worlds.settled(before)), world)
    if resp.status_code != 200:
        problems.append(f"webhook: HTTP {resp.status_code} {resp.text[:200]}")
    expect("rest:webhook", problems)
