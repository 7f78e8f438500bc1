from __future__ import annotations

from typing import Any

import pytest
from sqlalchemy import update

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.db.tables.content import ContentFormat, Template, TemplateKind
from emailkit.db.tables.sending import Campaign, CampaignStatus
from emailkit.schema.relay import parse_global_id, to_global_id
from tests.support.factories import make_key
from tests.support.graphql import GQL, data, make_list

FIELDS = """
  id name subject status statusReason fromEmail fromName replyTo body format plainText trackOpens trackClicks
  sendAt startedAt finishedAt createdAt updatedAt
  lists { id name }
  template { id name }
"""

CREATE = f"""
mutation($input: CreateCampaignInput!) {{
  createCampaign(input: $input) {{ campaign {{ {FIELDS} }} userErrors {{ field message code }} }}
}}
"""

UPDATE = f"""
mutation($input: UpdateCampaignInput!) {{
  updateCampaign(input: $input) {{ campaign {{ {FIELDS} }} userErrors {{ field message code }} }}
}}
"""

DELETE = """
mutation($input: DeleteCampaignInput!) {
  deleteCampaign(input: $input) { deletedId userErrors { field code } }
}
"""

MJML_BODY = """<mjml><mj-body><mj-section><mj-column>
<mj-text>Hello {{ subscriber.name }}</mj-text>
</mj-column></mj-section></mj-body></mjml>"""


async def make_template(db: Database, name: str, kind: TemplateKind = TemplateKind.CAMPAIGN) -> str:
    async with db.transaction() as session:
        row = Template(
            name=name, kind=kind, format=ContentFormat.HTML, subject="", body="<p>{{ subscriber.email }}</p>"
        )
        session.add(row)
        await session.flush()
        return to_global_id("Template", row.id)


async def set_status(db: Database, campaign_id: str, status: CampaignStatus) -> None:
    parsed = parse_global_id(campaign_id)
    assert parsed is not None
    async with db.transaction() as session:
        await session.execute(update(Campaign).where(Campaign.id == parsed[1]).values(status=status))


def base_input(list_ids: list[str], **extra: Any) -> dict[str, Any]:
    return {
        "name": "Spring sale",
        "subject": "Hi {{ subscriber.name }}, spring is here",
        "fromEmail": "News@Example.COM",
        "fromName": "Example News",
        "listIds": list_ids,
        "body": "<p>Hello {{ subscriber.name }}</p>",
        "format": "HTML",
        **extra,
    }


async def create(gql: GQL, payload: dict[str, Any]) -> dict[str, Any]:
    out: dict[str, Any] = data(await gql(CREATE, {"input": payload}))["createCampaign"]
    return out


async def test_create_with_inline_body_and_fetch_it(gql: GQL) -> None:
    a, b = await make_list(gql, "A"), await make_list(gql, "B")
    out = await create(
        gql, base_input([b, a, b], replyTo="replies@example.com", plainText="Hello", trackClicks=False)
    )
    assert out["userErrors"] == []
    c = out["campaign"]
    assert c["name"] == "Spring sale"
    assert c["status"] == "DRAFT"
    assert c["statusReason"] is None
    assert c["fromEmail"] == "news@example.com"
    assert c["fromName"] == "Example News"
    assert c["replyTo"] == "replies@example.com"
    assert c["format"] == "HTML"
    assert c["body"] == "<p>Hello {{ subscriber.name }}</p>"
    assert c["plainText"] == "Hello"
    assert (c["trackOpens"], c["trackClicks"]) == (True, False)
    assert c["sendAt"] is None and c["startedAt"] is None and c["finishedAt"] is None
    assert c["template"] is None
    # Duplicates collapse; lists come back once each.
    assert sorted(lst["name"] for lst in c["lists"]) == ["A", "B"]

    got = data(
        await gql(
            "query($id: ID!) { campaign(id: $id) { name lists { name } } node(id: $id) { id ... on Campaign { subject } } }",
            {"id": c["id"]},
        )
    )
    assert got["campaign"]["name"] == "Spring sale"
    assert sorted(lst["name"] for lst in got["campaign"]["lists"]) == ["A", "B"]
    assert got["node"] == {"id": c["id"], "subject": "Hi {{ subscriber.name }}, spring is here"}


async def test_create_with_mjml_body(gql: GQL) -> None:
    a = await make_list(gql, "A")
    out = await create(gql, base_input([a], body=MJML_BODY, format="MJML"))
    assert out["userErrors"] == []
    assert out["campaign"]["format"] == "MJML"


async def test_create_with_template(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    tpl = await make_template(db, "Monthly")
    out = await create(gql, base_input([a], body=None, format=None, templateId=tpl))
    assert out["userErrors"] == []
    c = out["campaign"]
    assert c["template"] == {"id": tpl, "name": "Monthly"}
    assert c["body"] is None and c["format"] is None


async def test_unknown_campaign_is_null(gql: GQL) -> None:
    got = data(await gql('{ campaign(id: "nonsense") { id } }'))
    assert got["campaign"] is None
    got = data(
        await gql("query($id: ID!) { campaign(id: $id) { id } }", {"id": to_global_id("Campaign", 999)})
    )
    assert got["campaign"] is None


@pytest.mark.parametrize(
    ("changes", "expected"),
    [
        ({"name": "  "}, [{"field": "name", "code": "REQUIRED"}]),
        ({"name": "x" * 256}, [{"field": "name", "code": "TOO_LONG"}]),
        ({"subject": ""}, [{"field": "subject", "code": "REQUIRED"}]),
        ({"subject": "Hello\r\nBcc: victim@example.com"}, [{"field": "subject", "code": "INVALID_INPUT"}]),
        ({"fromEmail": "not an address"}, [{"field": "fromEmail", "code": "INVALID_EMAIL"}]),
        ({"fromEmail": ""}, [{"field": "fromEmail", "code": "REQUIRED"}]),
        ({"replyTo": "nobody@"}, [{"field": "replyTo", "code": "INVALID_EMAIL"}]),
        ({"fromName": "Evil\nX-Header: 1"}, [{"field": "fromName", "code": "INVALID_INPUT"}]),
        ({"body": None, "format": None}, [{"field": "templateId", "code": "REQUIRED"}]),
        ({"format": None}, [{"field": "format", "code": "REQUIRED"}]),
        ({"listIds": ["garbage"]}, [{"field": "listIds", "code": "INVALID_ID"}]),
        (
            {"listIds": [to_global_id("MailingList", 4242)]},
            [{"field": "listIds", "code": "LIST_NOT_FOUND"}],
        ),
        (
            {"templateId": to_global_id("Template", 4242), "body": None, "format": None},
            [{"field": "templateId", "code": "TEMPLATE_NOT_FOUND"}],
        ),
    ],
)
async def test_bad_input_is_a_user_error(
    gql: GQL, changes: dict[str, Any], expected: list[dict[str, str]]
) -> None:
    a = await make_list(gql, "A")
    out = await create(gql, base_input([a], **changes))
    assert out["campaign"] is None
    assert [{"field": e["field"], "code": e["code"]} for e in out["userErrors"]] == expected
    assert data(await gql("{ campaigns { totalCount } }"))["campaigns"]["totalCount"] == 0


async def test_both_template_and_body_is_refused(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    tpl = await make_template(db, "T")
    out = await create(gql, base_input([a], templateId=tpl, format=None))
    assert out["campaign"] is None
    assert [(e["field"], e["code"]) for e in out["userErrors"]] == [("templateId", "INVALID_INPUT")]


async def test_transactional_template_is_refused(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    tpl = await make_template(db, "Receipt", TemplateKind.TRANSACTIONAL)
    out = await create(gql, base_input([a], templateId=tpl, body=None, format=None))
    assert out["campaign"] is None
    [err] = out["userErrors"]
    assert (err["field"], err["code"]) == ("templateId", "INVALID_INPUT")
    assert "TRANSACTIONAL" in err["message"]


@pytest.mark.parametrize(
    ("changes", "field", "code"),
    [
        ({"body": "<p>{% if %}</p>"}, "body", "TEMPLATE_SYNTAX"),
        ({"body": "<p>{{ name </p>"}, "body", "TEMPLATE_SYNTAX"),
        ({"body": "<p>{{ ''.__class__.__mro__ }}</p>"}, "body", "TEMPLATE_SECURITY"),
        (
            {"format": "MJML", "body": "<mjml><mj-body><mj-section><mj-column><mj-text>hi</mj-body></mjml>"},
            "body",
            "MJML_INVALID",
        ),
        ({"subject": "Hello {{ subscriber.name"}, "subject", "TEMPLATE_SYNTAX"),
    ],
)
async def test_bad_content_reports_the_rendering_code(
    gql: GQL, changes: dict[str, Any], field: str, code: str
) -> None:
    a = await make_list(gql, "A")
    out = await create(gql, base_input([a], **changes))
    assert out["campaign"] is None
    assert out["userErrors"], out
    assert {(e["field"], e["code"]) for e in out["userErrors"]} == {(field, code)}


async def test_bad_subject_is_checked_with_a_template_too(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    tpl = await make_template(db, "T")
    out = await create(gql, base_input([a], templateId=tpl, body=None, format=None, subject="{% for %}"))
    assert out["campaign"] is None
    assert {(e["field"], e["code"]) for e in out["userErrors"]} == {("subject", "TEMPLATE_SYNTAX")}


async def test_update_fields_lists_and_content(gql: GQL, db: Database) -> None:
    a, b, c = [await make_list(gql, n) for n in "ABC"]
    camp = (await create(gql, base_input([a, b], replyTo="r@example.com")))["campaign"]

    upd = data(
        await gql(
            UPDATE,
            {
                "input": {
                    "id": camp["id"],
                    "name": "Renamed",
                    "listIds": [b, c, c],
                    "replyTo": "",
                    "trackOpens": False,
                }
            },
        )
    )["updateCampaign"]
    assert upd["userErrors"] == []
    got = upd["campaign"]
    assert got["name"] == "Renamed"
    assert got["subject"] == camp["subject"]
    assert got["replyTo"] is None
    assert got["trackOpens"] is False
    assert sorted(lst["name"] for lst in got["lists"]) == ["B", "C"]

    tpl = await make_template(db, "T")
    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "templateId": tpl}}))["updateCampaign"]
    assert upd["userErrors"] == []
    assert upd["campaign"]["template"]["name"] == "T"
    assert upd["campaign"]["body"] is None

    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "body": MJML_BODY, "format": "MJML"}}))[
        "updateCampaign"
    ]
    assert upd["userErrors"] == []
    assert (upd["campaign"]["template"], upd["campaign"]["format"]) == (None, "MJML")

    # A bad body is refused and leaves the stored one alone.
    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "body": "{{ oops", "format": "HTML"}}))[
        "updateCampaign"
    ]
    assert upd["campaign"] is None
    assert [e["code"] for e in upd["userErrors"]] == ["TEMPLATE_SYNTAX"]
    still = data(await gql("query($id: ID!) { campaign(id: $id) { format body } }", {"id": camp["id"]}))
    assert still["campaign"] == {"format": "MJML", "body": MJML_BODY}


async def test_changing_format_alone_rechecks_the_stored_body(gql: GQL) -> None:
    a = await make_list(gql, "A")
    camp = (await create(gql, base_input([a])))["campaign"]
    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "format": "MJML"}}))["updateCampaign"]
    assert upd["campaign"] is None
    assert [(e["field"], e["code"]) for e in upd["userErrors"]] == [("body", "MJML_INVALID")]


async def test_format_without_body_on_a_template_campaign_is_refused(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    tpl = await make_template(db, "T")
    camp = (await create(gql, base_input([a], templateId=tpl, body=None, format=None)))["campaign"]
    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "format": "HTML"}}))["updateCampaign"]
    assert upd["campaign"] is None
    assert [(e["field"], e["code"]) for e in upd["userErrors"]] == [("body", "REQUIRED")]


async def test_update_with_unknown_list_changes_nothing(gql: GQL) -> None:
    a = await make_list(gql, "A")
    camp = (await create(gql, base_input([a])))["campaign"]
    upd = data(
        await gql(
            UPDATE, {"input": {"id": camp["id"], "name": "X", "listIds": [to_global_id("MailingList", 999)]}}
        )
    )["updateCampaign"]
    assert upd == {
        "campaign": None,
        "userErrors": [
            {"field": "listIds", "message": upd["userErrors"][0]["message"], "code": "LIST_NOT_FOUND"}
        ],
    }
    still = data(
        await gql("query($id: ID!) { campaign(id: $id) { name lists { name } } }", {"id": camp["id"]})
    )
    assert still["campaign"] == {"name": "Spring sale", "lists": [{"name": "A"}]}


@pytest.mark.parametrize(
    "status", [CampaignStatus.RUNNING, CampaignStatus.FINISHED, CampaignStatus.CANCELLED]
)
async def test_update_refused_once_sending_started(gql: GQL, db: Database, status: CampaignStatus) -> None:
    a = await make_list(gql, "A")
    camp = (await create(gql, base_input([a])))["campaign"]
    await set_status(db, camp["id"], status)
    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "name": "Too late"}}))["updateCampaign"]
    assert upd["campaign"] is None
    assert [(e["field"], e["code"]) for e in upd["userErrors"]] == [("id", "INVALID_STATE")]


async def test_update_allowed_while_paused(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    camp = (await create(gql, base_input([a])))["campaign"]
    await set_status(db, camp["id"], CampaignStatus.PAUSED)
    upd = data(await gql(UPDATE, {"input": {"id": camp["id"], "subject": "Fixed typo"}}))["updateCampaign"]
    assert upd["userErrors"] == []
    assert (upd["campaign"]["subject"], upd["campaign"]["status"]) == ("Fixed typo", "PAUSED")


async def test_delete(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    camp = (await create(gql, base_input([a])))["campaign"]

    await set_status(db, camp["id"], CampaignStatus.RUNNING)
    refused = data(await gql(DELETE, {"input": {"id": camp["id"]}}))["deleteCampaign"]
    assert refused == {"deletedId": None, "userErrors": [{"field": "id", "code": "INVALID_STATE"}]}

    await set_status(db, camp["id"], CampaignStatus.FINISHED)
    done = data(await gql(DELETE, {"input": {"id": camp["id"]}}))["deleteCampaign"]
    assert done == {"deletedId": camp["id"], "userErrors": []}
    again = data(await gql(DELETE, {"input": {"id": camp["id"]}}))["deleteCampaign"]
    assert again == {"deletedId": None, "userErrors": [{"field": "id", "code": "CAMPAIGN_NOT_FOUND"}]}
    # The list outlives the campaign.
    assert data(await gql("query($id: ID!) { list(id: $id) { name } }", {"id": a}))["list"] == {"name": "A"}


async def test_viewer_may_not_create(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    viewer = await make_key(db, Role.VIEWER, "viewer")
    body = await gql(CREATE, {"input": base_input([a])}, key=viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    assert data(await gql("{ campaigns { totalCount } }"))["campaigns"]["totalCount"] == 0


async def test_newest_first_pagination_and_status_filter(gql: GQL, db: Database) -> None:
    a = await make_list(gql, "A")
    ids = [(await create(gql, base_input([a], name=f"c{i}")))["campaign"]["id"] for i in range(5)]
    await set_status(db, ids[1], CampaignStatus.FINISHED)
    await set_status(db, ids[3], CampaignStatus.FINISHED)

    q = """query($a: String, $s: CampaignStatus) {
      campaigns(first: 2, after: $a, status: $s) {
        totalCount edges { node { name status } } pageInfo { hasNextPage endCursor }
      }
    }"""
    names: list[str] = []
    after = None
    while True:
        page = data(await gql(q, {"a": after}))["campaigns"]
        assert page["totalCount"] == 5
        names += [e["node"]["name"] for e in page["edges"]]
        if not page["pageInfo"]["hasNextPage"]:
            break
        after = page["pageInfo"]["endCursor"]
    assert names == ["c4", "c3", "c2", "c1", "c0"]

    finished = data(await gql(q, {"s": "FINISHED"}))["campaigns"]
    assert finished["totalCount"] == 2
    assert [e["node"] for e in finished["edges"]] == [
        {"name": "c3", "status": "FINISHED"},
        {"name": "c1", "status": "FINISHED"},
    ]
    assert finished["pageInfo"]["hasNextPage"] is False
    drafts = data(await gql(q, {"s": "DRAFT"}))["campaigns"]
    assert [e["node"]["name"] for e in drafts["edges"]] == ["c4", "c2"]
    assert drafts["pageInfo"]["hasNextPage"] is True
