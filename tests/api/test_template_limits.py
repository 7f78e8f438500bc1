"""Template bombs through the API: TEMPLATE_LIMIT userErrors, quickly, and /healthz keeps answering."""

from __future__ import annotations

import asyncio
import threading
import time

import httpx
import pytest

from emailkit.db.engine import Database
from emailkit.db.tables.access import Role
from emailkit.domain.content.rendering.limits import RENDER_TIMEOUT_SECONDS, RenderBudget
from tests.api.test_campaigns import CREATE as CREATE_CAMPAIGN
from tests.api.test_campaigns import base_input
from tests.api.test_templates import CREATE, PREVIEW, UPDATE, create_ok, template_input
from tests.support.factories import make_key
from tests.support.graphql import GQL, data, make_list
from tests.unit.test_render_limits import BOMBS

API_BOMBS = ["power", "center", "format", "ljust", "repeat", "big_loop", "nested_loops", "str_format"]
SLOW_BODY = "<p>{{ subscriber.name }}</p>\n" + BOMBS["exponential_macro"]
# A transactional template whose loop length comes from the caller's data.
DATA_DRIVEN = (
    "<p>{% for i in range(rows | default(1)) %}{% for j in range(100) %}.{% endfor %}{% endfor %}</p>"
)


def only_limit(errors: list[dict[str, str]], field: str = "body") -> str:
    [error] = errors
    assert (error["field"], error["code"]) == (field, "TEMPLATE_LIMIT"), error
    return error["message"]


async def timed(gql: GQL, query: str, variables: dict[str, object]) -> tuple[dict[str, object], float]:
    start = time.monotonic()
    body = await gql(query, variables)
    return data(body), time.monotonic() - start


@pytest.mark.parametrize("name", API_BOMBS)
async def test_bombs_are_template_limits_in_preview_create_and_update(gql: GQL, name: str) -> None:
    body = "<p>Hi</p>\n" + BOMBS[name]
    out, elapsed = await timed(gql, PREVIEW, {"i": {"format": "HTML", "body": body}})
    preview = out["previewTemplate"]
    assert isinstance(preview, dict) and preview["html"] is None
    only_limit(preview["userErrors"])
    assert elapsed < 2

    out, elapsed = await timed(gql, CREATE, {"i": template_input(format="HTML", body=body)})
    created = out["createTemplate"]
    assert isinstance(created, dict) and created["template"] is None
    only_limit(created["userErrors"])
    assert elapsed < 2

    template = await create_ok(gql)
    out, _ = await timed(gql, UPDATE, {"i": {"id": template["id"], "format": "HTML", "body": body}})
    updated = out["updateTemplate"]
    assert isinstance(updated, dict) and updated["template"] is None
    only_limit(updated["userErrors"])


async def test_a_bomb_in_the_subject_is_a_template_limit_on_the_subject(gql: GQL) -> None:
    out = data(await gql(PREVIEW, {"i": {"format": "HTML", "body": "<p>x</p>", "subject": BOMBS["power"]}}))
    only_limit(out["previewTemplate"]["userErrors"], field="subject")


async def test_campaign_content_is_checked_for_limits(gql: GQL) -> None:
    list_id = await make_list(gql, "News")
    payload = base_input([list_id], body="<p>x</p>\n" + BOMBS["nested_loops"])
    out = data(await gql(CREATE_CAMPAIGN, {"input": payload}))["createCampaign"]
    assert out["campaign"] is None
    only_limit(out["userErrors"])
    out = data(await gql(CREATE_CAMPAIGN, {"input": base_input([list_id], subject=BOMBS["center"])}))
    only_limit(out["createCampaign"]["userErrors"], field="subject")


async def test_send_transactional_refuses_data_that_makes_the_render_go_over(gql: GQL) -> None:
    template = await create_ok(gql, kind="TRANSACTIONAL", format="HTML", body=DATA_DRIVEN, subject="Receipt")
    send = """mutation($i: SendTransactionalInput!) {
      sendTransactional(input: $i) { delivery { id } userErrors { field message code } } }"""
    base = {"templateId": template["id"], "to": "ada@example.com", "fromEmail": "shop@example.com"}
    out = data(await gql(send, {"i": {**base, "data": {"rows": 5000}}}))["sendTransactional"]
    assert out["delivery"] is None
    assert "iterations" in only_limit(out["userErrors"])


async def test_viewer_keys_may_not_preview_arbitrary_templates(
    gql: GQL, db: Database, client: httpx.AsyncClient
) -> None:
    viewer = await make_key(db, Role.VIEWER, "viewer")
    body = await gql(PREVIEW, {"i": {"format": "HTML", "body": BOMBS["power"]}}, key=viewer)
    assert body["errors"][0]["extensions"]["code"] == "FORBIDDEN"
    editor = await make_key(db, Role.EDITOR, "editor")
    ok = data(
        await gql(PREVIEW, {"i": {"format": "HTML", "body": "<p>{{ subscriber.name }}</p>"}}, key=editor)
    )
    assert ok["previewTemplate"]["html"] == "<p>Ada Lovelace</p>"


async def test_healthz_answers_while_a_slow_preview_renders(
    gql: GQL, client: httpx.AsyncClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    started = threading.Event()
    original = RenderBudget.__init__

    def init(self: RenderBudget) -> None:
        original(self)
        started.set()

    monkeypatch.setattr(RenderBudget, "__init__", init)
    preview = asyncio.create_task(gql(PREVIEW, {"i": {"format": "HTML", "body": SLOW_BODY}}))
    assert await asyncio.to_thread(started.wait, 30)
    start = time.monotonic()
    health = await asyncio.wait_for(client.get("/healthz"), timeout=RENDER_TIMEOUT_SECONDS)
    assert health.status_code == 200 and health.json() == {"status": "ok"}
    # /healthz answered while the render was still running, well before it reached its time limit.
    assert not preview.done()
    assert time.monotonic() - start < RENDER_TIMEOUT_SECONDS / 2
    out = data(await preview)["previewTemplate"]
    assert "longer than" in only_limit(out["userErrors"])
