// The segment builder: and/or/not groups of conditions over the typed SubscriberFilterInput, with a live
// segmentPreview count as the filter is edited, and saving it as a segment (ADMIN and EDITOR keys).
import { request } from "../api";
import { field, h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as Op from "../operations-audience";
import { canWrite, idHref, link, type Screen } from "./screen";

const PREVIEW_DELAY_MS = 300;

type Kind = "email" | "name" | "status" | "createdAt" | "attribute" | "list" | "engagement";

interface Leaf {
  type: "leaf";
  id: number;
  not: boolean;
  kind: Kind;
  op: string; // StringFilter key, DateTimeFilter key or FilterOp, by kind
  value: string;
  path: string;
  listId: string;
  subscription: string;
  event: G.EngagementEvent;
  campaignId: string;
  withinDays: string;
}

interface Group {
  type: "group";
  id: number;
  not: boolean;
  join: "and" | "or";
  children: Node[];
}

type Node = Leaf | Group;

const KINDS: [Kind, string][] = [
  ["email", "Email"],
  ["name", "Name"],
  ["status", "Status"],
  ["createdAt", "Created"],
  ["attribute", "Attribute"],
  ["list", "List membership"],
  ["engagement", "Engagement"],
];
const STRING_OPS: [string, string][] = [["contains", "contains"], ["eq", "is"], ["startsWith", "starts with"], ["endsWith", "ends with"]];
const DATE_OPS: [string, string][] = [["after", "after"], ["before", "before"]];
const ATTRIBUTE_OPS: [G.FilterOp, string][] = [
  ["EQ", "="], ["NE", "≠"], ["GT", ">"], ["GTE", "≥"], ["LT", "<"], ["LTE", "≤"], ["CONTAINS", "contains"], ["IN", "is one of"], ["EXISTS", "exists"],
];

let ids = 0;

function leaf(kind: Kind = "email"): Leaf {
  return {
    type: "leaf", id: ++ids, not: false, kind, op: defaultOp(kind), value: kind === "status" ? "ENABLED" : "",
    path: "", listId: "", subscription: "", event: "OPENED", campaignId: "", withinDays: "",
  };
}

function group(join: "and" | "or", children: Node[] = []): Group {
  return { type: "group", id: ++ids, not: false, join, children };
}

function defaultOp(kind: Kind): string {
  return kind === "createdAt" ? "after" : kind === "attribute" ? "EQ" : "contains";
}

// ---- the tree to the API's filter and back ----

/** A typed attribute value: numbers, true/false/null and "quoted" text as JSON, anything else as text. */
function scalar(text: string): unknown {
  const t = text.trim();
  if (/^(-?\d+(\.\d+)?|true|false|null|".*")$/.test(t)) return JSON.parse(t) as unknown;
  return t;
}

function unscalar(v: unknown): string {
  return typeof v === "string" && !/^(-?\d+(\.\d+)?|true|false|null|".*")$/.test(v) ? v : JSON.stringify(v);
}

/** Null: the condition is not filled in yet and is left out (an empty group matches everyone). */
function leafFilter(n: Leaf): G.SubscriberFilterInput | null {
  switch (n.kind) {
    case "email":
    case "name":
      return n.value ? { [n.kind]: { [n.op]: n.value } } : null;
    case "status":
      return { status: n.value as G.SubscriberStatus };
    case "createdAt": {
      const at = new Date(n.value);
      return Number.isNaN(at.getTime()) ? null : { createdAt: { [n.op]: at.toISOString() } };
    }
    case "attribute": {
      if (!n.path.trim()) return null;
      const op = n.op as G.FilterOp;
      const value =
        op === "EXISTS" ? n.value !== "false" : op === "IN" ? n.value.split(",").filter((v) => v.trim()).map(scalar) : scalar(n.value);
      return { attribute: { path: n.path.trim(), op, value } };
    }
    case "list":
      return n.listId ? { list: { listId: n.listId, status: (n.subscription || null) as G.SubscriptionStatus | null } } : null;
    case "engagement": {
      const days = parseInt(n.withinDays, 10);
      return { engagement: { event: n.event, campaignId: n.campaignId || null, withinDays: Number.isNaN(days) ? null : days } };
    }
  }
}

export function toFilter(n: Node): G.SubscriberFilterInput {
  let f: G.SubscriberFilterInput;
  if (n.type === "leaf") f = leafFilter(n) ?? {};
  else {
    const parts = n.children.filter((c) => c.type === "group" || leafFilter(c) !== null).map(toFilter);
    // An empty node matches everyone; a group of one is that one.
    f = parts.length === 0 ? {} : parts.length === 1 ? parts[0] : { [n.join]: parts };
  }
  return n.not ? { not: f } : f;
}

type Raw = Record<string, unknown>;

function fromFilter(f: Raw): Node {
  const keys = Object.keys(f).filter((k) => f[k] != null);
  if (keys.length === 1 && keys[0] === "not") {
    const inner = fromFilter(f.not as Raw);
    if (!inner.not) {
      inner.not = true;
      return inner;
    }
    const g = group("and", [inner]);
    g.not = true;
    return g;
  }
  if (keys.length === 1 && (keys[0] === "and" || keys[0] === "or")) return group(keys[0], (f[keys[0]] as Raw[]).map(fromFilter));
  if (keys.length === 1) return leafFrom(keys[0] as Kind, f[keys[0]]);
  return group("and", keys.map((k) => fromFilter({ [k]: f[k] })));
}

function leafFrom(kind: Kind, v: unknown): Leaf {
  const n = leaf(kind);
  const o = (v ?? {}) as Raw;
  if (kind === "email" || kind === "name" || kind === "createdAt") {
    const op = Object.keys(o).find((k) => o[k] != null) ?? n.op;
    n.op = op;
    n.value = kind === "createdAt" ? localInput(String(o[op])) : String(o[op] ?? "");
  } else if (kind === "status") n.value = String(v);
  else if (kind === "attribute") {
    n.path = String(o.path ?? "");
    n.op = String(o.op ?? "EQ");
    n.value = n.op === "IN" && Array.isArray(o.value) ? o.value.map(unscalar).join(", ") : n.op === "EXISTS" ? String(o.value !== false) : unscalar(o.value);
  } else if (kind === "list") {
    n.listId = String(o.listId ?? "");
    n.subscription = o.status ? String(o.status) : "";
  } else if (kind === "engagement") {
    n.event = (o.event as G.EngagementEvent) ?? "OPENED";
    n.campaignId = o.campaignId ? String(o.campaignId) : "";
    n.withinDays = o.withinDays != null ? String(o.withinDays) : "";
  }
  return n;
}

/** An ISO instant as a datetime-local value, in this browser's time zone. */
function localInput(iso: string): string {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return "";
  const p = (x: number) => String(x).padStart(2, "0");
  return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())}T${p(d.getHours())}:${p(d.getMinutes())}`;
}

// ---- the screen ----

interface Choices {
  lists: { id: string; name: string }[];
  campaigns: { id: string; name: string }[];
}

export function renderSegments(s: Screen, segmentId?: string): void {
  void s.load(
    async () => {
      const [choices, saved, segment] = await Promise.all([
        request<G.AudienceChoicesQuery>(s.key, Op.AUDIENCE_CHOICES),
        request<G.SegmentsQuery>(s.key, Op.SEGMENTS),
        segmentId ? request<G.SegmentDetailQuery, G.SegmentDetailQueryVariables>(s.key, Op.SEGMENT, { id: segmentId }) : null,
      ]);
      return { choices, saved, segment: segment?.segment ?? null };
    },
    ({ choices, saved, segment }) => {
      if (segmentId && !segment) {
        replace(s.main, h("p", {}, "No such segment."), link("#/segments", "Back to segments"));
        return;
      }
      builder(s, {
        lists: choices.lists.edges.map((e) => e.node),
        campaigns: choices.campaigns.edges.map((e) => e.node),
      }, saved.segments.edges.map((e) => e.node), segment);
    },
  );
}

function builder(s: Screen, choices: Choices, saved: G.SegmentsQuery["segments"]["edges"][number]["node"][], segment: G.SegmentDetailQuery["segment"]): void {
  let root: Group;
  if (segment) {
    const parsed = fromFilter(segment.filter as Raw);
    root = parsed.type === "group" ? parsed : group("and", [parsed]);
  } else root = group("and", [leaf()]);

  const editor = h("div", { class: "builder" });
  const count = h("p", { class: "count" }, "…");
  // The same figure, pinned to the top of a narrow screen (the card above is announced; this is not).
  const bar = h("p", { class: "count-bar", "aria-hidden": "true" }, "…");
  const show = (text: string, state: string) => {
    count.textContent = bar.textContent = text;
    count.dataset.state = bar.dataset.state = state;
  };
  const previewOut = h("div", {});
  const preview = h(
    "section",
    { class: "card preview", "aria-labelledby": "preview-title" },
    h("h2", { id: "preview-title" }, "Matching now"),
    h("div", { role: "status", "aria-live": "polite", "aria-atomic": "true" }, count),
    previewOut,
  );

  // ---- live preview, debounced; an answer to an older filter is dropped ----
  let timer: number | undefined;
  let asked = 0;
  const refresh = () => {
    window.clearTimeout(timer);
    count.dataset.state = bar.dataset.state = "pending";
    timer = window.setTimeout(() => void ask(), PREVIEW_DELAY_MS);
  };
  s.onLeave(() => window.clearTimeout(timer));
  const ask = async () => {
    const mine = ++asked;
    try {
      const data = await request<G.SegmentPreviewQuery, G.SegmentPreviewQueryVariables>(s.key, Op.SEGMENT_PREVIEW, { filter: toFilter(root) });
      if (mine !== asked) return;
      const p = data.segmentPreview;
      if (p.count === null) {
        show("The filter is not valid yet.", "done");
        replace(previewOut, s.userErrors(p.userErrors));
        return;
      }
      show(`${p.count} ${p.count === 1 ? "subscriber matches" : "subscribers match"}`, "done");
      replace(
        previewOut,
        p.sample.length
          ? h("ul", { class: "sample", "aria-label": "First matches" }, ...p.sample.map((x) => h("li", {}, link(idHref("#/subscribers", x.id), x.email))))
          : null,
      );
    } catch (err) {
      if (mine !== asked) return;
      show("No count.", "failed");
      s.showError(previewOut, err, () => void ask());
    }
  };

  // ---- the editor: re-drawn on structural changes, focus kept on the control that made them ----
  const draw = (focusId?: string) => {
    replace(editor, groupEditor(root, null, "Filter"));
    if (focusId) document.getElementById(focusId)?.focus();
  };
  const changed = (focusId?: string) => {
    if (focusId !== undefined) draw(focusId);
    refresh();
  };

  const groupEditor = (g: Group, parent: Group | null, title: string): HTMLElement => {
    const join = h(
      "select",
      { id: `n${g.id}-join` },
      h("option", { value: "and", selected: g.join === "and" }, "all of these (and)"),
      h("option", { value: "or", selected: g.join === "or" }, "any of these (or)"),
    );
    join.addEventListener("change", () => {
      g.join = join.value as "and" | "or";
      changed();
    });
    const children = g.children.map((c, i) =>
      c.type === "group" ? groupEditor(c, g, `${title}, group ${i + 1}`) : leafEditor(c, g, `${title}, condition ${i + 1}`),
    );
    const add = (make: () => Node) => () => {
      const n = make();
      g.children.push(n);
      changed(n.type === "group" ? `n${n.id}-join` : `n${n.id}-kind`);
    };
    return h(
      "fieldset",
      { class: parent ? "group nested" : "group" },
      h("legend", {}, title),
      h("div", { class: "row" }, field("Match", join), notBox(g)),
      ...(children.length ? children : [h("p", { class: "muted" }, "An empty group matches everyone.")]),
      h(
        "div",
        { class: "row" },
        h("button", { type: "button", class: "secondary", id: `n${g.id}-add`, onclick: add(() => leaf()) }, "Add condition"),
        h("button", { type: "button", class: "secondary", onclick: add(() => group(g.join === "and" ? "or" : "and", [leaf()])) }, "Add group"),
        parent ? removeButton(g, parent, "Remove group") : null,
      ),
    );
  };

  const notBox = (n: Node): HTMLElement => {
    const box = h("input", { type: "checkbox", id: `n${n.id}-not`, checked: n.not });
    box.addEventListener("change", () => {
      n.not = box.checked;
      changed();
    });
    return h("div", { class: "check" }, box, h("label", { for: box.id }, "Not"));
  };

  const removeButton = (n: Node, parent: Group, label: string): HTMLElement =>
    h("button", {
      type: "button",
      class: "secondary",
      onclick: () => {
        parent.children.splice(parent.children.indexOf(n), 1);
        changed(`n${parent.id}-add`);
      },
    }, label);

  const leafEditor = (n: Leaf, parent: Group, title: string): HTMLElement => {
    const kind = h("select", { id: `n${n.id}-kind` }, ...KINDS.map(([v, t]) => h("option", { value: v, selected: n.kind === v }, t)));
    kind.addEventListener("change", () => {
      const fresh = leaf(kind.value as Kind);
      Object.assign(n, { ...fresh, id: n.id, not: n.not });
      changed(kind.id);
    });
    return h(
      "fieldset",
      { class: "leaf" },
      h("legend", {}, title),
      h("div", { class: "row" }, field("Field", kind), ...leafControls(n), notBox(n)),
      h("div", { class: "row" }, removeButton(n, parent, "Remove condition")),
    );
  };

  /** A select or input bound to one property of the condition; edits refresh the preview. */
  const bind = (n: Leaf, prop: "op" | "value" | "path" | "listId" | "subscription" | "event" | "campaignId" | "withinDays", label: string, control: HTMLInputElement | HTMLSelectElement, redraw = false): HTMLElement => {
    control.id = `n${n.id}-${prop}`;
    control.value = n[prop];
    control.addEventListener(control instanceof HTMLSelectElement ? "change" : "input", () => {
      (n as unknown as Record<string, string>)[prop] = control.value;
      changed(redraw ? control.id : undefined);
    });
    return field(label, control);
  };
  const select = (options: [string, string][]) => h("select", {}, ...options.map(([v, t]) => h("option", { value: v }, t)));
  const text = (type = "text") => h("input", { type, autocomplete: "off" });

  const leafControls = (n: Leaf): HTMLElement[] => {
    switch (n.kind) {
      case "email":
      case "name":
        return [bind(n, "op", "Match", select(STRING_OPS)), bind(n, "value", "Text", text())];
      case "status":
        return [bind(n, "value", "Status", select([["ENABLED", "ENABLED"], ["BLOCKLISTED", "BLOCKLISTED"]]))];
      case "createdAt":
        return [bind(n, "op", "When", select(DATE_OPS)), bind(n, "value", "Date and time", text("datetime-local"))];
      case "attribute":
        return [
          bind(n, "path", "Attribute", Object.assign(text(), { placeholder: "plan or address.city" })),
          bind(n, "op", "Operator", select(ATTRIBUTE_OPS), true),
          n.op === "EXISTS"
            ? bind(n, "value", "Value", select([["true", "yes"], ["false", "no"]]))
            : bind(n, "value", n.op === "IN" ? "Values (comma-separated)" : "Value", text()),
        ];
      case "list":
        return [
          bind(n, "listId", "List", select([["", "Choose a list"], ...choices.lists.map((l): [string, string] => [l.id, l.name])])),
          bind(n, "subscription", "Subscription", select([["", "any state"], ["CONFIRMED", "CONFIRMED"], ["UNCONFIRMED", "UNCONFIRMED"], ["UNSUBSCRIBED", "UNSUBSCRIBED"]])),
        ];
      case "engagement":
        return [
          bind(n, "event", "Has", select([["OPENED", "opened"], ["CLICKED", "clicked"], ["RECEIVED", "received"]])),
          bind(n, "campaignId", "Campaign", select([["", "any campaign"], ...choices.campaigns.map((c): [string, string] => [c.id, c.name])])),
          bind(n, "withinDays", "Within days", Object.assign(text("number"), { min: "1" })),
        ];
    }
  };

  // ---- saving (not for VIEWER keys) ----
  let saveForm: HTMLElement | null = null;
  if (canWrite(s)) {
    const name = h("input", { type: "text", required: true, value: segment?.name ?? "" });
    const description = h("input", { type: "text", value: segment?.description ?? "" });
    const out = h("div", {});
    const form = h(
      "form",
      { class: "card" },
      h("h2", {}, segment ? "This segment" : "Save as a segment"),
      field("Segment name", name),
      field("Description", description),
      h("div", { class: "row" }, h("button", { type: "submit" }, segment ? "Save changes" : "Save segment")),
      out,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void (async () => {
        try {
          const fields = { name: name.value.trim(), description: description.value.trim(), filter: toFilter(root) };
          const r = segment
            ? (await request<G.UpdateSegmentMutation, G.UpdateSegmentMutationVariables>(s.key, Op.UPDATE_SEGMENT, { input: { id: segment.id, ...fields } })).updateSegment
            : (await request<G.CreateSegmentMutation, G.CreateSegmentMutationVariables>(s.key, Op.CREATE_SEGMENT, { input: fields })).createSegment;
          if (r.userErrors.length || !r.segment) {
            replace(out, s.userErrors(r.userErrors));
            return;
          }
          if (segment) replace(out, h("p", { role: "status" }, `Segment “${r.segment.name}” saved: ${r.segment.subscriberCount} subscribers.`));
          else window.location.hash = idHref("#/segments", r.segment.id);
        } catch (err) {
          s.showError(out, err, () => form.requestSubmit());
        }
      })();
    });
    if (segment) {
      const current = segment;
      form.querySelector(".row")!.append(
        h("button", {
          type: "button",
          class: "secondary",
          onclick: () => {
            if (!window.confirm(`Delete the segment “${current.name}”?`)) return;
            void (async () => {
              try {
                const r = await request<G.DeleteSegmentMutation, G.DeleteSegmentMutationVariables>(s.key, Op.DELETE_SEGMENT, { input: { id: current.id } });
                if (r.deleteSegment.userErrors.length) replace(out, s.userErrors(r.deleteSegment.userErrors));
                else window.location.hash = "#/segments";
              } catch (err) {
                s.showError(out, err, () => undefined);
              }
            })();
          },
        }, "Delete segment"),
      );
    }
    saveForm = form;
  }

  const savedList = h(
    "section",
    { class: "card", "aria-labelledby": "saved-title" },
    h("h2", { id: "saved-title" }, "Saved segments"),
    saved.length
      ? h("ul", { class: "saved" }, ...saved.map((x) => h("li", {}, link(idHref("#/segments", x.id), x.name), ` — ${x.subscriberCount}`)))
      : h("p", { class: "muted" }, "None yet."),
    segment ? link("#/segments", "New segment") : null,
  );

  replace(
    s.main,
    h("h1", {}, segment ? `Segment: ${segment.name}` : "Segment builder"),
    bar,
    h(
      "div",
      { class: "columns" },
      editor,
      h(
        "div",
        { class: "side" },
        preview,
        saveForm ?? h("p", { class: "muted" }, "This key is read-only (VIEWER): change the filter to see who matches; it cannot be saved."),
        savedList,
      ),
    ),
  );
  draw();
  void ask();
}
