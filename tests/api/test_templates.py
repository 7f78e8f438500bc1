from __future__ import annotations

from typing import Any

import httpx

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.audience import Subscriber
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.schema.relay import parse_global_id, to_global_id
from tests.support.factories import make_key
from tests.support.graphql import GQL, data

FIELDS = "id name kind format subject body createdAt updatedAt"
CREATE = f"""
mutation($i: CreateTemplateInput!) {{
  createTemplate(input: $i) {{ template {{ {FIELDS} }} userErrors {{ field message code }} }}
}}
"""
UPDATE = f"""
mutation($i: UpdateTemplateInput!) {{
  updateTemplate(input: $i) {{ template {{ {FIELDS} }} userErrors {{ field message code }} }}
}}
"""
DELETE = """
mutation($i: DeleteTemplateInput!) { deleteTemplate(input: $i) { deletedId userErrors { field message code } } }
"""
PREVIEW = """
mutation($i: PreviewTemplateInput!) {
  previewTemplate(input: $i) { subject html text userErrors { field message code } }
}
"""

NEWSLETTER = """<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text><h1>Hello {{ subscriber.name }}</h1></mj-text>
        <mj-text>Your plan: {{ subscriber.attributes.plan | default('free') }}</mj-text>
        <mj-button href="{{ unsubscribe_url }}">Unsubscribe</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>"""


def template_input(**changes: Any) -> dict[str, Any]:
    return {
        "name": "Monthly",
        "kind": "CAMPAIGN",
        "format": "MJML",
        "subject": "News for {{ subscriber.name }}",
        "body": NEWSLETTER,
        **changes,
    }


async def create(gql: GQL, **changes: Any) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"i": template_input(**changes)}))["createTemplate"]
    return out


async def create_ok(gql: GQL, **changes: Any) -> dict[str, Any]:
    out = await create(gql, **changes)
    assert out["userErrors"] == [], out["userErrors"]
    template: dict[str, Any] = out["template"]
    return template


def pk(global_id: str) -> int:
    parsed = parse_global_id(global_id)
    assert parsed is not None
    return parsed[1]


async def add_campaign(db: Database, template_id: str, status: CampaignStatus = CampaignStatus.DRAFT) -> None:
    async with db.transaction() as session:
        session.add(
            Campaign(
                name="Uses it",
                subject="Hi",
                from_email="news@example.com",
                template_id=pk(template_id),
                status=status,
            )
        )


async def test_create_and_read_a_template(gql: GQL) -> None:
    created = await create_ok(gql)
    assert {k: created[k] for k in ("name", "kind", "format", "subject", "body")} == {
        "name": "Monthly",
        "kind": "CAMPAIGN",
        "format": "MJML",
        "subject": "News for {{ subscriber.name }}",
        "body": NEWSLETTER,
    }
    assert created["createdAt"] and created["updatedAt"]

    got = data(
        await gql(
            "query($id: ID!) { template(id: $id) { id name } node(id: $id) { id ... on Template { kind } } }",
            {"id": created["id"]},
        )
    )
    assert got == {
        "template": {"id": created["id"], "name": "Monthly"},
        "node": {"id": created["id"], "kind": "CAMPAIGN"},
    }
    missing = data(
        await gql("query($id: ID!) { template(id: $id) { id } }", {"id": to_global_id("Template", 999)})
    )
    assert missing == {"template": None}


async def test_templates_are_paged_and_filtered_by_kind(gql: GQL) -> None:
    for i in range(3):
        await create_ok(gql, name=f"campaign {i}")
    await create_ok(
        gql, name="receipt", kind="TRANSACTIONAL", format="HTML", body="<p>Thanks</p>", subject="Receipt"
    )
    q = """query($a: String, $k: TemplateKind) {
      templates(first: 2, after: $a, kind: $k) {
        totalCount edges { node { name kind } } pageInfo { hasNextPage endCursor }
      }
    }"""
    page1 = data(await gql(q))["templates"]
    assert page1["totalCount"] == 4
    assert [e["node"]["name"] for e in page1["edges"]] == ["campaign 0", "campaign 1"]
    page2 = data(await gql(q, {"a": page1["pageInfo"]["endCursor"]}))["templates"]
    assert [e["node"]["name"] for e in page2["edges"]] == ["campaign 2", "receipt"]
    assert page2["pageInfo"]["hasNextPage"] is False
    transactional = data(await gql(q, {"k": "TRANSACTIONAL"}))["templates"]
    assert transactional["totalCount"] == 1
    assert transactional["edges"] == [{"node": {"name": "receipt", "kind": "TRANSACTIONAL"}}]


async def test_required_fields_and_header_safety(gql: GQL) -> None:
    out = await create(gql, name="  ", body="")
    assert out["template"] is None
    assert {(e["field"], e["code"]) for e in out["userErrors"]} == {
        ("name", "REQUIRED"),
        ("body", "REQUIRED"),
    }

    out = await create(gql, subject="Hello\r\nBcc: everyone@example.com")
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("subject", "INVALID_INPUT")]

    out = await create(gql, kind="TRANSACTIONAL", subject="")
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("subject", "REQUIRED")]


async def test_bad_content_is_a_user_error_pointing_at_the_line(gql: GQL) -> None:
    broken_mjml = NEWSLETTER.replace("<mj-text>Your plan", "<mj-text>Your plan <b>bold")
    out = await create(gql, body=broken_mjml)
    assert out["template"] is None
    [error] = out["userErrors"]
    assert (error["field"], error["code"]) == ("body", "MJML_INVALID")
    assert error["message"].startswith("Line 6: ")

    out = await create(gql, body=NEWSLETTER.replace("{{ subscriber.name }}</h1>", "{{ subscriber.name </h1>"))
    [error] = out["userErrors"]
    assert (error["field"], error["code"]) == ("body", "TEMPLATE_SYNTAX")
    assert error["message"].startswith("Line 5: ")

    out = await create(
        gql, format="HTML", body="<p>ok</p>\n<p>{{ ''.__class__.__mro__[1].__subclasses__() }}</p>"
    )
    assert {(e["field"], e["code"]) for e in out["userErrors"]} == {("body", "TEMPLATE_SECURITY")}
    assert all(e["message"].startswith("Line 2: ") for e in out["userErrors"])

    out = await create(gql, subject="Hi {% if %}")
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("subject", "TEMPLATE_SYNTAX")]

    out = await create(
        gql, body=NEWSLETTER.replace("<mj-text>Your plan", "<mj-text>{% if 1 < 2 %}x{% endif %}")
    )
    [error] = out["userErrors"]
    assert error["code"] == "MJML_INVALID" and error["message"].startswith("Line 6: '<' inside Jinja code")


async def test_update_template(gql: GQL) -> None:
    created = await create_ok(gql)
    out = data(
        await gql(
            UPDATE,
            {"i": {"id": created["id"], "name": "Renamed", "format": "HTML", "body": "<p>{{ x }}</p>"}},
        )
    )
    upd = out["updateTemplate"]
    assert upd["userErrors"] == []
    assert (upd["template"]["name"], upd["template"]["format"], upd["template"]["body"]) == (
        "Renamed",
        "HTML",
        "<p>{{ x }}</p>",
    )
    assert upd["template"]["subject"] == created["subject"]

    # Switching the format re-checks the stored body against the new one.
    bad = data(await gql(UPDATE, {"i": {"id": created["id"], "format": "MJML"}}))["updateTemplate"]
    assert bad["template"] is None
    assert [(e["field"], e["code"]) for e in bad["userErrors"]] == [("body", "MJML_INVALID")]
    again = data(await gql("query($id: ID!) { template(id: $id) { format } }", {"id": created["id"]}))
    assert again == {"template": {"format": "HTML"}}

    gone = data(await gql(UPDATE, {"i": {"id": to_global_id("Template", 999), "name": "x"}}))[
        "updateTemplate"
    ]
    assert [(e["field"], e["code"]) for e in gone["userErrors"]] == [("id", "TEMPLATE_NOT_FOUND")]
    bad_id = data(await gql(UPDATE, {"i": {"id": "nope", "name": "x"}}))["updateTemplate"]
    assert [(e["field"], e["code"]) for e in bad_id["userErrors"]] == [("id", "INVALID_ID")]


async def test_delete_template_and_refusal_while_in_use(gql: GQL, db: Database) -> None:
    free = await create_ok(gql, name="free")
    out = data(await gql(DELETE, {"i": {"id": free["id"]}}))["deleteTemplate"]
    assert out == {"deletedId": free["id"], "userErrors": []}
    out = data(await gql(DELETE, {"i": {"id": free["id"]}}))["deleteTemplate"]
    assert out["deletedId"] is None and out["userErrors"][0]["code"] == "TEMPLATE_NOT_FOUND"

    used = await create_ok(gql, name="used")
    await add_campaign(db, used["id"])
    await add_campaign(db, used["id"], CampaignStatus.FINISHED)
    out = data(await gql(DELETE, {"i": {"id": used["id"]}}))["deleteTemplate"]
    assert out["deletedId"] is None
    assert [(e["field"], e["code"], e["message"]) for e in out["userErrors"]] == [
        ("id", "IN_USE", "The template is used by 2 campaigns; change or delete them first")
    ]
    # Campaigns need a CAMPAIGN template, so the kind cannot change under them.
    kind = data(await gql(UPDATE, {"i": {"id": used["id"], "kind": "TRANSACTIONAL", "subject": "s"}}))[
        "updateTemplate"
    ]
    assert [(e["field"], e["code"]) for e in kind["userErrors"]] == [("kind", "IN_USE")]
    still = data(await gql("query($id: ID!) { template(id: $id) { name kind } }", {"id": used["id"]}))
    assert still == {"template": {"name": "used", "kind": "CAMPAIGN"}}


async def test_content_is_frozen_while_a_campaign_sends_it(gql: GQL, db: Database) -> None:
    tpl = await create_ok(gql)
    await add_campaign(db, tpl["id"], CampaignStatus.RUNNING)
    out = data(await gql(UPDATE, {"i": {"id": tpl["id"], "body": NEWSLETTER.replace("Hello", "Hi")}}))[
        "updateTemplate"
    ]
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("id", "IN_USE")]
    renamed = data(await gql(UPDATE, {"i": {"id": tpl["id"], "name": "Only the name"}}))["updateTemplate"]
    assert renamed["userErrors"] == [] and renamed["template"]["name"] == "Only the name"


async def test_preview_a_saved_template_with_the_sample_subscriber(gql: GQL) -> None:
    tpl = await create_ok(gql)
    out = data(await gql(PREVIEW, {"i": {"templateId": tpl["id"]}}))["previewTemplate"]
    assert out["userErrors"] == []
    assert out["subject"] == "News for Ada Lovelace"
    assert "Hello Ada Lovelace" in out["html"] and "<mjml>" not in out["html"]
    assert out["text"] == (
        "# Hello Ada Lovelace\n\nYour plan: pro\nUnsubscribe (https://example.com/unsubscribe/sample-token)"
    )


async def test_preview_with_a_real_subscriber_and_unsaved_edits(gql: GQL, db: Database) -> None:
    tpl = await create_ok(gql)
    async with db.transaction() as session:
        sub = Subscriber(email="grace@example.com", name="Grace <Hopper>", attributes={"plan": "team"})
        session.add(sub)
        await session.flush()
        sub_id = to_global_id("Subscriber", sub.id)
    out = data(await gql(PREVIEW, {"i": {"templateId": tpl["id"], "subscriberId": sub_id}}))[
        "previewTemplate"
    ]
    assert out["userErrors"] == []
    assert out["subject"] == "News for Grace <Hopper>"
    assert "Hello Grace &lt;Hopper&gt;" in out["html"]
    assert "Your plan: team" in out["text"]

    edited = data(
        await gql(
            PREVIEW,
            {
                "i": {
                    "templateId": tpl["id"],
                    "subscriberId": sub_id,
                    "subject": "Edited {{ subscriber.email }}",
                }
            },
        )
    )["previewTemplate"]
    assert edited["subject"] == "Edited grace@example.com"
    # Previewing changes nothing.
    stored = data(await gql("query($id: ID!) { template(id: $id) { subject } }", {"id": tpl["id"]}))
    assert stored == {"template": {"subject": tpl["subject"]}}


async def test_preview_an_unsaved_body(gql: GQL) -> None:
    out = data(
        await gql(
            PREVIEW,
            {
                "i": {
                    "format": "HTML",
                    "body": "<p>Hi <a href='https://example.com/x'>{{ subscriber.email }}</a></p>",
                }
            },
        )
    )["previewTemplate"]
    assert out == {
        "subject": "",
        "html": "<p>Hi <a href='https://example.com/x'>ada.lovelace@example.com</a></p>",
        "text": "Hi ada.lovelace@example.com (https://example.com/x)",
        "userErrors": [],
    }


async def test_preview_reports_problems_as_user_errors(gql: GQL, db: Database) -> None:
    out = data(
        await gql(
            PREVIEW, {"i": {"format": "MJML", "body": "<mjml>\n<mj-body>\n<mj-section>\n</mj-body></mjml>"}}
        )
    )
    preview = out["previewTemplate"]
    assert preview["html"] is None
    [error] = preview["userErrors"]
    assert (error["field"], error["code"]) == ("body", "MJML_INVALID") and error["message"].startswith(
        "Line 3: "
    )

    out = data(await gql(PREVIEW, {"i": {"body": "<p>x</p>"}}))["previewTemplate"]
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("format", "REQUIRED")]
    out = data(await gql(PREVIEW, {"i": {}}))["previewTemplate"]
    assert {(e["field"], e["code"]) for e in out["userErrors"]} == {
        ("body", "REQUIRED"),
        ("format", "REQUIRED"),
    }
    out = data(await gql(PREVIEW, {"i": {"templateId": to_global_id("Template", 999)}}))["previewTemplate"]
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("templateId", "TEMPLATE_NOT_FOUND")]
    out = data(
        await gql(
            PREVIEW, {"i": {"format": "HTML", "body": "x", "subscriberId": to_global_id("Subscriber", 999)}}
        )
    )["previewTemplate"]
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("subscriberId", "SUBSCRIBER_NOT_FOUND")]

    # This subscriber lacks the attribute the template computes with: the render fails, at its line.
    async with db.transaction() as session:
        sub = Subscriber(email="new@example.com", name="New")
        session.add(sub)
        await session.flush()
        sub_id = to_global_id("Subscriber", sub.id)
    body = "<p>Hi</p>\n<p>{{ subscriber.attributes.points + 10 }} points</p>"
    sample = data(await gql(PREVIEW, {"i": {"format": "HTML", "body": body}}))["previewTemplate"]
    assert sample["userErrors"] == [] and sample["text"] == "Hi\n\n130 points"
    out = data(await gql(PREVIEW, {"i": {"format": "HTML", "body": body, "subscriberId": sub_id}}))[
        "previewTemplate"
    ]
    [error] = out["userErrors"]
    assert (error["field"], error["code"]) == ("body", "TEMPLATE_RENDER") and error["message"].startswith(
        "Line 2: "
    )


async def test_viewer_keys_may_neither_preview_nor_write(
    gql: GQL, db: Database, client: httpx.AsyncClient
) -> None:
    viewer = await make_key(db, Role.VIEWER, "viewer")
    body = await gql(CREATE, {"i": template_input()}, key=viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    # A preview runs code the caller wrote: it needs the role that may write templates.
    preview = await gql(
        PREVIEW, {"i": {"format": "HTML", "body": "<p>{{ subscriber.name }}</p>"}}, key=viewer
    )
    assert preview["errors"][0]["extensions"]["code"] == "FORBIDDEN"

    anonymous = await client.post(
        "/graphql", json={"query": PREVIEW, "variables": {"i": {"format": "HTML", "body": "x"}}}
    )
    assert anonymous.status_code == 401
