// Subscribers: search by email or name (the API's `search`), narrowed by status and list, a page at a time.
import { request } from "../api";
import { field, h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as Lists from "../operations";
import * as Op from "../operations-audience";
import { idHref, link, table, when, type Screen } from "./screen";

const PAGE = 25;

// Kept while the console is open, so coming back from a subscriber's page shows the same search and page.
const state = { search: "", status: "", listId: "", cursors: [] as (string | null)[] };

export function renderSubscribers(s: Screen): void {
  void s.load(
    () => request<G.ListsQuery>(s.key, Lists.LISTS),
    (lists) => {
      const search = h("input", { type: "search", value: state.search, autocomplete: "off", placeholder: "jane@example.com or Jane" });
      const status = h(
        "select",
        {},
        h("option", { value: "" }, "Any"),
        ...(["ENABLED", "BLOCKLISTED"] as const).map((v) => h("option", { value: v, selected: state.status === v }, v)),
      );
      const list = h(
        "select",
        {},
        h("option", { value: "" }, "Any list"),
        ...lists.lists.edges.map(({ node }) => h("option", { value: node.id, selected: state.listId === node.id }, node.name)),
      );
      const form = h(
        "form",
        { class: "filters", role: "search", "aria-label": "Search subscribers" },
        field("Search by email or name", search),
        field("Status", status),
        field("List", list),
        h("button", { type: "submit" }, "Search"),
      );
      const results = h("div", { "aria-live": "polite" });
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        state.search = search.value.trim();
        state.status = status.value;
        state.listId = list.value;
        state.cursors = [];
        void page(s, results);
      });
      replace(s.main, h("h1", {}, "Subscribers"), form, results);
      void page(s, results);
    },
  );
}

async function page(s: Screen, out: HTMLElement): Promise<void> {
  const after = state.cursors.length ? state.cursors[state.cursors.length - 1] : null;
  replace(out, h("p", { class: "muted" }, "Loading…"));
  try {
    const data = await request<G.SubscribersQuery, G.SubscribersQueryVariables>(s.key, Op.SUBSCRIBERS, {
      first: PAGE,
      after,
      search: state.search || null,
      status: (state.status || null) as G.SubscriberStatus | null,
      listId: state.listId || null,
    });
    const c = data.subscribers;
    const rows = c.edges.map(({ node }) =>
      h(
        "tr",
        {},
        h("td", { class: "email" }, link(idHref("#/subscribers", node.id), node.email)),
        h("td", {}, node.name),
        h("td", {}, node.status),
        h("td", {}, when(node.createdAt)),
      ),
    );
    const from = state.cursors.length * PAGE + 1;
    const about = c.totalCountPrecision === "EXACT" ? "" : c.totalCountPrecision === "AT_LEAST" ? "at least " : "about ";
    const summary = c.edges.length
      ? `${from} to ${from + c.edges.length - 1} of ${about}${c.totalCount}`
      : state.cursors.length ? "No more subscribers." : "No subscriber matches.";
    const nav = h("div", { class: "pager" });
    if (state.cursors.length)
      nav.append(h("button", { type: "button", class: "secondary", onclick: () => { state.cursors.pop(); void page(s, out); } }, "Previous page"));
    if (c.pageInfo.hasNextPage && c.pageInfo.endCursor) {
      const cursor = c.pageInfo.endCursor;
      nav.append(h("button", { type: "button", class: "secondary", onclick: () => { state.cursors.push(cursor); void page(s, out); } }, "Next page"));
    }
    replace(
      out,
      h("p", { role: "status" }, summary),
      rows.length ? table("subscribers", "Subscribers", ["Email", "Name", "Status", "Created"], rows) : null,
      nav,
    );
  } catch (err) {
    s.showError(out, err, () => void page(s, out));
  }
}
