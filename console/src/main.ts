import "uplot/dist/uPlot.min.css";
import "./style.css";
import { ApiError, closeLive, live, loadKey, request, saveKey, subscribe, upload, type UserError } from "./api";
import { field, h, replace } from "./dom";
import type * as G from "./generated/graphql";
import * as Op from "./operations";
import { progressBar } from "./progress";
import { isAdmin, type Screen } from "./screens/screen";
import type { Shell } from "./screens/shell";

const root = document.getElementById("app") as HTMLElement;

interface Session {
  key: string;
  name: string;
  role: G.Role;
}

let session: Session | null = null;
// Live subscriptions of the screen on show; a new screen stops them.
let stops: (() => void)[] = [];

function canWrite(): boolean {
  return session !== null && session.role !== "VIEWER";
}

function stopLive(): void {
  for (const stop of stops) stop();
  stops = [];
}

// ---- errors: always a message and a way forward, never a blank page ----

function describe(err: unknown): string {
  if (err instanceof ApiError) return err.message;
  return err instanceof Error ? err.message : String(err);
}

function showError(target: HTMLElement, err: unknown, retry: () => void): void {
  const signOutButton =
    err instanceof ApiError && err.failure === "unauthorized"
      ? h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out")
      : null;
  replace(
    target,
    h(
      "div",
      { class: "error", role: "alert" },
      h("p", {}, describe(err)),
      h("button", { type: "button", onclick: retry }, "Retry"),
      signOutButton,
    ),
  );
}

function userErrorList(errors: UserError[]): HTMLElement {
  return h("ul", { class: "user-errors", role: "alert" }, ...errors.map((e) => h("li", {}, e.field ? `${e.field}: ${e.message}` : e.message)));
}

function liveTrouble(_failure: string, message: string): void {
  const banner = document.getElementById("live-trouble");
  if (banner) showError(banner, new ApiError("unauthorized", message), () => void route());
}

// ---- sign-in ----

function signOut(): void {
  saveKey("");
  session = null;
  closeLive();
  stopLive();
  window.location.hash = "";
  renderSignIn("");
}

function renderSignIn(prefill: string, problem?: unknown): void {
  stopLive();
  const input = h("input", { type: "password", autocomplete: "off", spellcheck: "false", required: true, value: prefill });
  input.id = "api-key";
  const status = h("div", { role: "status" });
  const form = h(
    "form",
    { class: "card signin" },
    h("h1", {}, "emailkit console"),
    h("p", {}, "Sign in with an API key (", h("code", {}, "emailkit create-api-key"), ")."),
    field("API key", input),
    h("button", { type: "submit" }, "Sign in"),
    status,
  );
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    void signIn(input.value.trim(), status);
  });
  replace(root, h("main", { class: "narrow" }, form));
  if (problem) showError(status, problem, () => void signIn(input.value.trim(), status));
  input.focus();
}

async function signIn(key: string, status: HTMLElement): Promise<void> {
  replace(status, "Signing in…");
  try {
    const data = await request<G.ViewerQuery>(key, Op.VIEWER);
    saveKey(key);
    session = { key, name: data.viewer.name, role: data.viewer.role };
    if (!window.location.hash || window.location.hash === "#") window.location.hash = "#/campaigns";
    else void route();
  } catch (err) {
    showError(status, err, () => void signIn(key, status));
  }
}

// ---- the frame: header, menu (only screens that exist), main ----

// The third element: only ADMIN (and instance) keys get the entry.
const SCREENS: [string, string, boolean?][] = [
  ["#/campaigns", "Campaigns"],
  ["#/imports", "Imports"],
  ["#/compose", "Compose"],
  ["#/flows", "Flows"],
  ["#/subscribers", "Subscribers"],
  ["#/segments", "Segments"],
  ["#/senders", "Senders", true],
];

function frame(active: string): HTMLElement {
  const main = h("main", { id: "main", tabindex: "-1" });
  const nav = h(
    "nav",
    { "aria-label": "Screens" },
    ...SCREENS.filter(([, , admin]) => !admin || (session !== null && isAdmin(session.role))).map(([href, label]) =>
      h("a", { href, "aria-current": active === href ? "page" : null }, label),
    ),
  );
  const who = session ? `${session.name} (${session.role})` : "";
  const put = () => replace(
    root,
    h(
      "header",
      {},
      h("a", { class: "brand", href: "#/campaigns" }, "emailkit"),
      nav,
      h("span", { class: "who" }, who),
      h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"),
    ),
    h("div", { id: "live-trouble" }),
    main,
  );
  if (quiet) pendingFrame = put;
  else put();
  return main;
}

let pendingFrame: (() => void) | null = null;

/** The frame, and what a screen module (console/src/screens) needs of the shell. */
function screen(active: string): Screen {
  const main = frame(active);
  return { key: session!.key, role: session!.role, main, load: (f, r) => load(main, f, r), showError, userErrors: userErrorList, onLeave: (stop) => stops.push(stop) };
}

function shell(active: string): Shell {
  return { ...screen(active), reread: () => void route(true), live: () => live(session!.key, liveTrouble) };
}

/** A screen whose module is loaded when first shown (kept out of the first load's bundle). */
function later<M>(active: string, loader: () => Promise<M>, show: (m: M, s: Shell) => void): void {
  const reread = quiet;
  loader().then(
    (m) => {
      quiet = reread;
      show(m, shell(active));
    },
    (err) => showError(root, err, () => void route()),
  );
}

// A quiet load (a live page reading itself again) keeps the old content until the new data is there.
let quiet = false;

async function load<T>(main: HTMLElement, fetcher: () => Promise<T>, render: (data: T) => void): Promise<void> {
  if (!quiet) replace(main, h("p", { class: "muted" }, "Loading…"));
  try {
    render(await fetcher());
  } catch (err) {
    showError(main, err, () => void route());
  }
  pendingFrame?.();
  pendingFrame = null;
}

// ---- campaigns ----

// On a first load the campaigns are asked for together with the viewer, not after it: one round trip fewer.
let early: Promise<G.CampaignsQuery> | null = null;
// Set once the first campaigns list is in the page; the browser test reads it (navigation start → list).
const FIRST_LIST_MARK = "emailkit:campaigns-rendered";

function renderCampaigns(): void {
  const main = frame("#/campaigns");
  const key = session!.key;
  const fetched = early ?? request<G.CampaignsQuery>(key, Op.CAMPAIGNS);
  early = null;
  void load(main, () => fetched, (data) => {
    const rows = data.campaigns.edges.map(({ node }) => {
      const bar = progressBar(`Progress of ${node.name}`);
      bar.update(node.progress);
      const status = h("td", {}, node.status);
      if (node.status === "RUNNING") {
        stops.push(
          subscribe<G.CampaignProgressLiveSubscription, G.CampaignProgressLiveSubscriptionVariables>(
            live(key, liveTrouble),
            Op.CAMPAIGN_PROGRESS,
            { id: node.id },
            (d) => {
              bar.update(d.campaignProgress);
              status.textContent = d.campaignProgress.status;
            },
            () => undefined,
          ),
        );
      }
      return h(
        "tr",
        {},
        h("td", {}, h("a", { href: `#/campaigns/${encodeURIComponent(node.id)}` }, node.name)),
        status,
        h("td", { class: "bar-cell" }, node.status === "DRAFT" ? "" : bar.el),
      );
    });
    replace(
      main,
      h(
        "div",
        { class: "title-row" },
        h("h1", {}, "Campaigns"),
        canWrite() ? h("a", { class: "button", href: "#/campaigns/new" }, "New campaign") : null,
      ),
      rows.length
        ? h(
            "table",
            { class: "campaigns" },
            h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Progress"))),
            h("tbody", {}, ...rows),
          )
        : h("p", { class: "muted" }, "No campaign yet."),
    );
    if (!performance.getEntriesByName(FIRST_LIST_MARK).length) performance.mark(FIRST_LIST_MARK);
  });
}

// ---- imports ----

function renderImports(): void {
  const main = frame("#/imports");
  const key = session!.key;
  if (!canWrite()) {
    replace(main, h("h1", {}, "Imports"), h("p", {}, "This API key is read-only (VIEWER): it cannot import subscribers."));
    return;
  }
  void load(main, () => request<G.ListsQuery>(key, Op.LISTS), (data) => {
    const file = h("input", { type: "file", accept: ".csv,text/csv", required: true });
    const listSelect = h("select", {}, h("option", { value: "" }, "(no list)"), ...data.lists.edges.map((e) => h("option", { value: e.node.id }, e.node.name)));
    const out = h("div", { class: "import-result" });
    const form = h("form", { class: "card" }, field("CSV file", file), field("Add to list", listSelect), h("button", { type: "submit" }, "Import"), out);
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      const chosen = file.files?.[0];
      if (!chosen) return;
      void runImport(key, chosen, listSelect.value, out);
    });
    replace(main, h("h1", {}, "Imports"), h("p", {}, "Upload a CSV with an email column; name and any other column (as attributes) are optional."), form);
  });
}

async function runImport(key: string, file: File, listId: string, out: HTMLElement): Promise<void> {
  replace(out, h("p", { role: "status" }, "Uploading…"));
  try {
    const r = await upload<G.ImportSubscribersMutation, G.ImportSubscribersMutationVariables>(
      key,
      Op.IMPORT_SUBSCRIBERS,
      { input: { file: null, listIds: listId ? [listId] : null } },
      file,
    );
    const started = r.importSubscribers.import;
    if (r.importSubscribers.userErrors.length || !started) {
      replace(out, userErrorList(r.importSubscribers.userErrors));
      return;
    }
    const bar = progressBar(`Import of ${file.name}`);
    const figures = h("p", { role: "status" }, started.status);
    const details = h("div", {});
    replace(out, h("h2", {}, `Import of ${file.name}`), bar.el, figures, details);
    const show = (p: G.ImportProgressLiveSubscription["importProgress"]) => {
      const total = Math.max(p.total, p.processed);
      bar.update({ status: p.status === "FINISHED" ? "FINISHED" : p.status, recipients: total, sent: p.processed, failed: 0, skipped: 0, inDoubt: 0 });
      figures.textContent = `${p.status}: ${p.processed} of ${total} rows · ${p.inserted} new · ${p.updated} updated · ${p.skipped} skipped · ${p.failed} failed${p.error ? ` — ${p.error}` : ""}`;
    };
    let finished = false;
    const finish = async () => {
      if (finished) return;
      finished = true;
      const d = await request<G.ImportDetailQuery, G.ImportDetailQueryVariables>(key, Op.IMPORT, { id: started.id });
      const imp = d.import;
      if (!imp) return;
      show(imp);
      const rows = imp.errors.edges.map(({ node }) => h("tr", {}, h("td", {}, String(node.row)), h("td", { class: "err" }, node.message)));
      replace(
        details,
        rows.length
          ? h("table", { class: "row-errors" }, h("caption", {}, `Rows not imported (${imp.errors.totalCount})`), h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Row"), h("th", { scope: "col" }, "Why"))), h("tbody", {}, ...rows))
          : h("p", {}, "Every row was imported."),
      );
    };
    stops.push(
      subscribe<G.ImportProgressLiveSubscription, G.ImportProgressLiveSubscriptionVariables>(live(key, liveTrouble), Op.IMPORT_PROGRESS, { id: started.id }, (d) => {
        show(d.importProgress);
        if (d.importProgress.status === "FINISHED" || d.importProgress.status === "FAILED") void finish().catch((err) => showError(details, err, () => void finish()));
      }, (message) => replace(details, h("p", { class: "error", role: "alert" }, message))),
    );
  } catch (err) {
    showError(out, err, () => void runImport(key, file, listId, out));
  }
}

// ---- routing ----

async function route(reread = false): Promise<void> {
  stopLive();
  quiet = reread;
  if (!session) {
    const key = loadKey();
    if (!key) {
      renderSignIn("");
      return;
    }
    const hash = window.location.hash;
    if (!hash || hash === "#" || hash === "#/campaigns") {
      early = request<G.CampaignsQuery>(key, Op.CAMPAIGNS);
      early.catch(() => undefined); // its failure is shown by the screen, or the viewer's by the sign-in
    }
    try {
      const data = await request<G.ViewerQuery>(key, Op.VIEWER);
      session = { key, name: data.viewer.name, role: data.viewer.role };
    } catch (err) {
      early = null;
      if (err instanceof ApiError && err.failure === "unauthorized") renderSignIn("", err);
      else showError(root, err, () => void route());
      return;
    }
  }
  const hash = window.location.hash || "#/campaigns";
  const campaign = /^#\/campaigns\/(.+)$/.exec(hash);
  const newCampaign = /^#\/campaigns\/new(?:\?template=(.+))?$/.exec(hash);
  if (newCampaign) later("#/campaigns", () => import("./screens/campaign-new"), (m, s) => m.renderNewCampaign(s, newCampaign[1] ? decodeURIComponent(newCampaign[1]) : null));
  else if (campaign) later("#/campaigns", () => import("./screens/campaign"), (m, s) => m.renderCampaign(s, decodeURIComponent(campaign[1])));
  else if (hash === "#/imports") renderImports();
  else if (hash === "#/compose" || hash.startsWith("#/compose/")) later("#/compose", () => import("./screens/compose"), (m, s) => m.renderCompose(s, hash.length > 10 ? decodeURIComponent(hash.slice(10)) : null));
  else if (hash === "#/flows") later("#/flows", () => import("./screens/flows"), (m, s) => m.renderFlows(s));
  else if (hash.startsWith("#/flows/")) later("#/flows", () => import("./screens/flows"), (m, s) => m.renderFlow(s, decodeURIComponent(hash.slice(8))));
  else if (hash === "#/subscribers") later(hash, () => import("./screens/subscribers"), (m, s) => m.renderSubscribers(s));
  else if (hash.startsWith("#/subscribers/")) later("#/subscribers", () => import("./screens/subscriber"), (m, s) => m.renderSubscriber(s, decodeURIComponent(hash.slice(14))));
  else if (hash === "#/segments") later(hash, () => import("./screens/segments"), (m, s) => m.renderSegments(s));
  else if (hash.startsWith("#/segments/")) later("#/segments", () => import("./screens/segments"), (m, s) => m.renderSegments(s, decodeURIComponent(hash.slice(11))));
  else if (hash === "#/senders") later(hash, () => import("./screens/senders"), (m, s) => m.renderSenders(s));
  else if (hash.startsWith("#/senders/")) later("#/senders", () => import("./screens/senders"), (m, s) => m.renderSender(s, decodeURIComponent(hash.slice(10))));
  else renderCampaigns();
  document.getElementById("main")?.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => void route());
void route();
