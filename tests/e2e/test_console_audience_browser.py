"""The console's audience and sender screens in a real browser against a real `emailkit serve`: search finds a
subscriber, their page shows an event, the segment builder's live count equals the number of subscribers the
filter really matches (saved and read back), a sender's connection test, a VIEWER key that sees no action
on these screens, and the screens at 375 px wide. Screenshots go to the artifacts folder `.ci/run` prints."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from playwright.async_api import Browser, Page, Route, expect

from tests.e2e.console import UI_TIMEOUT_MS, graphql, new_page, shot_path, sign_in
from tests.e2e.served import Server

pytestmark = pytest.mark.e2e

PEOPLE = 10
ON_LIST = 6  # p0..p5 are on the list
PAGE = 25  # subscribers a page of the console's list


async def _seed(server: Server, unlisted: int = 0) -> dict[str, Any]:
    """A list, ten people with a plan and a score, Ada Lovelace, one event of Ada's, and `unlisted` people
    with nothing more than an address."""
    made = await graphql(server, 'mutation { createList(input: {name: "Readers"}) { list { id } } }')
    list_id = made["createList"]["list"]["id"]
    # Whoever joins the list enters a flow and waits there a day: a run to see on their page.
    flow = await graphql(
        server,
        "mutation($i: CreateFlowInput!) { createFlow(input: $i) { flow { id } userErrors { code message } } }",
        {
            "i": {
                "name": "Welcome",
                "trigger": {"type": "SUBSCRIBED", "listId": list_id},
                "steps": [{"key": "pause", "type": "WAIT", "waitSeconds": 86400}],
            }
        },
    )
    assert flow["createFlow"]["userErrors"] == [], flow
    published = await graphql(
        server,
        "mutation($id: ID!) { publishFlow(input: {id: $id}) { userErrors { code message } } }",
        {"id": flow["createFlow"]["flow"]["id"]},
    )
    assert published["publishFlow"]["userErrors"] == [], published
    people = [
        {
            "email": f"p{n}@example.com",
            "name": f"Person {n}",
            "attributes": {"plan": "pro" if n % 2 == 0 else "free", "score": n},
            "listIds": [list_id] if n < ON_LIST else [],
        }
        for n in range(PEOPLE)
    ]
    people.append(
        {
            "email": "ada@example.com",
            "name": "Ada Lovelace",
            "attributes": {"plan": "pro"},
            "listIds": [list_id],
        }
    )
    people += [{"email": f"bulk{n}@example.com", "attributes": {}, "listIds": []} for n in range(unlisted)]
    for person in people:
        data = await graphql(
            server,
            "mutation($input: CreateSubscriberInput!) { createSubscriber(input: $input) { userErrors { code } } }",
            {"input": person},
        )
        assert data["createSubscriber"]["userErrors"] == []
    tracked = await graphql(
        server,
        'mutation { trackEvent(input: {name: "order.completed", email: "ada@example.com"}) { userErrors { code } } }',
    )
    assert tracked["trackEvent"]["userErrors"] == []
    # Entering the flow happens in the server's background work: wait for Ada's run to be there.
    deadline = asyncio.get_running_loop().time() + UI_TIMEOUT_MS / 1000
    while True:
        runs = await graphql(server, '{ subscriber(email: "ada@example.com") { flowRuns { totalCount } } }')
        if runs["subscriber"]["flowRuns"]["totalCount"] == 1:
            break
        assert asyncio.get_running_loop().time() < deadline, "Ada never entered the flow"
        await asyncio.sleep(0.1)
    return {"list_id": list_id, "people": people}


async def _no_overflow(page: Page) -> None:
    too_wide = await page.evaluate(
        "() => [...document.querySelectorAll('body *')]"
        ".filter(e => e.getBoundingClientRect().right > 375.5)"
        ".map(e => `${e.tagName}.${e.className}: ${Math.round(e.getBoundingClientRect().right)}`)"
    )
    assert too_wide == [], too_wide


async def test_console_subscribers_segments_and_senders(browser: Browser, server: Server) -> None:
    seeded = await _seed(server, unlisted=PAGE)
    people: list[dict[str, Any]] = seeded["people"]
    problems: list[str] = []
    context, page = await new_page(browser, problems)
    await sign_in(page, server, server.api_key)

    # Search by name finds Ada, and only her.
    await page.get_by_role("link", name="Subscribers", exact=True).click()
    await expect(page.get_by_role("heading", name="Subscribers")).to_be_visible(timeout=UI_TIMEOUT_MS)
    status = page.locator("main [role=status]")
    await expect(status).to_have_text(f"1 to {PAGE} of {len(people)}", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("table.subscribers tbody tr")).to_have_count(PAGE)
    await page.get_by_role("button", name="Next page").click()
    await expect(status).to_have_text(f"{PAGE + 1} to {len(people)} of {len(people)}", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("table.subscribers tbody tr")).to_have_count(len(people) - PAGE)
    await expect(page.get_by_role("button", name="Next page")).to_have_count(0)
    await page.get_by_role("button", name="Previous page").click()
    await expect(status).to_have_text(f"1 to {PAGE} of {len(people)}", timeout=UI_TIMEOUT_MS)
    await page.get_by_label("Search by email or name").fill("lovelace")
    await page.get_by_label("Search by email or name").press("Enter")
    await expect(status).to_have_text("1 to 1 of 1", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("table.subscribers tbody tr")).to_have_count(1)
    await page.screenshot(path=shot_path("subscribers"))

    # Her page: details, her list, and the event her shop reported.
    await page.get_by_role("link", name="ada@example.com").click()
    await expect(page.get_by_role("heading", name="ada@example.com")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.locator("table.subscriptions")).to_contain_text("Readers")
    await expect(page.locator("table.events tbody tr")).to_have_count(1)
    await expect(page.locator("table.events")).to_contain_text("CUSTOM order.completed")
    runs = page.locator("table.runs tbody tr")
    await expect(runs).to_have_count(1)
    await expect(runs).to_contain_text("Welcome (v1)")
    await expect(runs).to_contain_text("ACTIVE")
    await expect(runs).to_contain_text("at pause (WAIT), goes on")
    await page.screenshot(path=shot_path("subscriber"), full_page=True)

    # The builder: plan = pro AND on Readers AND NOT (email contains "p4"), counted live as it is edited.
    await page.get_by_role("link", name="Segments", exact=True).click()
    await expect(page.get_by_role("heading", name="Segment builder")).to_be_visible(timeout=UI_TIMEOUT_MS)
    count = page.locator("main .preview .count")
    await expect(count).to_have_text(f"{len(people)} subscribers match", timeout=UI_TIMEOUT_MS)
    first = page.get_by_role("group", name="Filter, condition 1", exact=True)
    await first.get_by_label("Field").select_option("attribute")
    await first.get_by_label("Attribute", exact=True).fill("plan")
    await first.get_by_label("Value", exact=True).fill("pro")
    pro = [p for p in people if p["attributes"].get("plan") == "pro"]
    await expect(count).to_have_text(f"{len(pro)} subscribers match", timeout=UI_TIMEOUT_MS)

    # By keyboard: the new condition's first control takes the focus.
    root = page.get_by_role("group", name="Filter", exact=True)
    await root.get_by_role("button", name="Add condition").last.focus()
    await page.keyboard.press("Enter")
    second = page.get_by_role("group", name="Filter, condition 2", exact=True)
    await expect(second.get_by_label("Field")).to_be_focused()
    await second.get_by_label("Field").select_option("list")
    await second.get_by_label("List", exact=True).select_option(label="Readers")
    await root.get_by_role("button", name="Add group").last.click()
    inner = page.get_by_role("group", name="Filter, group 3, condition 1", exact=True)
    await inner.get_by_label("Text").fill("p4")
    await inner.get_by_label("Not").check()

    expected = [
        p for p in people if p["attributes"].get("plan") == "pro" and p["listIds"] and "p4" not in p["email"]
    ]
    assert len(expected) == 3
    await expect(count).to_have_text(f"{len(expected)} subscribers match", timeout=UI_TIMEOUT_MS)
    # The same filter through the subscribers query: the count is the real number of matches.
    real = await graphql(
        server,
        "query($f: SubscriberFilterInput!) { subscribers(filter: $f) { totalCount } }",
        {
            "f": {
                "and": [
                    {"attribute": {"path": "plan", "op": "EQ", "value": "pro"}},
                    {"list": {"listId": seeded["list_id"]}},
                    {"not": {"email": {"contains": "p4"}}},
                ]
            }
        },
    )
    assert real["subscribers"]["totalCount"] == len(expected)
    sample = page.get_by_role("list", name="First matches").get_by_role("link")
    assert sorted(await sample.all_inner_texts()) == sorted(p["email"] for p in expected)
    await page.screenshot(path=shot_path("segment-builder"), full_page=True)

    # Saved, then read back into the builder from the stored filter: the same count.
    await page.get_by_label("Segment name").fill("Pro readers")
    await page.get_by_role("button", name="Save segment").click()
    await expect(page.get_by_role("heading", name="Segment: Pro readers")).to_be_visible(
        timeout=UI_TIMEOUT_MS
    )
    await expect(count).to_have_text(f"{len(expected)} subscribers match", timeout=UI_TIMEOUT_MS)
    await expect(page.get_by_role("group", name="Filter, group 3", exact=True)).to_have_count(0)
    await expect(
        page.get_by_role("group", name="Filter, condition 3", exact=True).get_by_label("Not")
    ).to_be_checked()
    await expect(page.locator("ul.saved")).to_contain_text(f"Pro readers — {len(expected)}")

    # Phone width: the builder and a subscriber's page fit.
    await page.set_viewport_size({"width": 375, "height": 740})
    await _no_overflow(page)
    await page.screenshot(path=shot_path("segment-375px"), full_page=True)
    await page.get_by_role("list", name="First matches").get_by_role("link", name="ada@example.com").click()
    await expect(page.get_by_role("heading", name="ada@example.com")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await _no_overflow(page)
    await page.screenshot(path=shot_path("subscriber-375px"), full_page=True)
    await page.set_viewport_size({"width": 1280, "height": 800})

    # Senders: the default sender, and what its provider answers to a connection test.
    await page.get_by_role("link", name="Senders", exact=True).click()
    await expect(page.get_by_role("heading", name="Senders")).to_be_visible(timeout=UI_TIMEOUT_MS)
    default = await graphql(server, "{ defaultSender { id name type } }")
    sender = default["defaultSender"]
    await page.get_by_role("link", name=sender["name"]).click()
    await expect(page.get_by_role("heading", name=sender["name"])).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main .facts")).to_contain_text(sender["type"])
    await page.get_by_role("button", name="Test sender").click()
    answer = await graphql(
        server,
        "mutation($id: ID!) { testSender(input: {id: $id}) { ok message } }",
        {"id": sender["id"]},
    )
    verdict = "OK" if answer["testSender"]["ok"] else "Failed"
    await expect(page.locator("main [role=status]")).to_have_text(
        f"{verdict}: {answer['testSender']['message']}", timeout=UI_TIMEOUT_MS
    )
    await page.screenshot(path=shot_path("sender"), full_page=True)
    await context.close()
    assert problems == []


async def test_console_viewer_sees_no_action_on_audience_screens(browser: Browser, server: Server) -> None:
    await _seed(server)
    made = await graphql(
        server,
        "mutation($input: CreateSegmentInput!) { createSegment(input: $input) { userErrors { code } } }",
        {"input": {"name": "Pros", "filter": {"attribute": {"path": "plan", "op": "EQ", "value": "pro"}}}},
    )
    assert made["createSegment"]["userErrors"] == []
    created = await graphql(
        server,
        'mutation { createApiKey(input: {name: "watcher", role: VIEWER}) { key } }',
    )
    problems: list[str] = []
    context, page = await new_page(browser, problems)
    await sign_in(page, server, created["createApiKey"]["key"])
    nav = page.get_by_role("navigation", name="Screens")
    await expect(nav.get_by_role("link", name="Subscribers")).to_be_visible()
    await expect(nav.get_by_role("link", name="Senders")).to_have_count(0)

    # Searching is reading: the only button is Search.
    await nav.get_by_role("link", name="Subscribers").click()
    await expect(page.locator("table.subscribers tbody tr").first).to_be_visible(timeout=UI_TIMEOUT_MS)
    assert await page.locator("main button").all_inner_texts() == ["Search"]
    await page.get_by_role("link", name="ada@example.com").click()
    await expect(page.locator("table.events")).to_contain_text("order.completed", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main button")).to_have_count(0)

    # A saved segment: its count, the filter to explore, and nothing that saves or deletes.
    await nav.get_by_role("link", name="Segments").click()
    await page.get_by_role("link", name="Pros").click()
    await expect(page.get_by_role("heading", name="Segment: Pros")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main .preview .count")).to_have_text(
        "6 subscribers match", timeout=UI_TIMEOUT_MS
    )
    await expect(page.get_by_label("Segment name")).to_have_count(0)
    for name in ("Save changes", "Save segment", "Delete segment"):
        await expect(page.get_by_role("button", name=name)).to_have_count(0)
    await page.screenshot(path=shot_path("viewer-segment"), full_page=True)

    # The API goes away while the filter is edited: the count says so, with a retry, and the editor stays.
    async def refuse(route: Route) -> None:
        await route.abort("connectionrefused")

    await context.route("**/graphql", refuse)
    condition = page.get_by_role("group", name="Filter, condition 1", exact=True)
    await condition.get_by_label("Value", exact=True).fill("free")
    alert = page.locator("main .preview").get_by_role("alert")
    await expect(alert).to_contain_text("cannot be reached", timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main .preview .count")).to_have_text("No count.")
    await context.unroute("**/graphql", refuse)
    await alert.get_by_role("button", name="Retry").click()
    await expect(page.locator("main .preview .count")).to_have_text(
        "5 subscribers match", timeout=UI_TIMEOUT_MS
    )

    # No menu entry, and the screen itself says why when reached by its address.
    await page.goto(server.base_url + "/#/senders")
    await expect(page.get_by_text("Only ADMIN keys see senders")).to_be_visible(timeout=UI_TIMEOUT_MS)
    await expect(page.locator("main button")).to_have_count(0)
    await context.close()
    assert problems == []
