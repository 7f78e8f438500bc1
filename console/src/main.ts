import uPlot from "uplot";
import "uplot/dist/uPlot.min.css";
import "./style.css";
import { ApiError, closeLive, live, loadKey, request, saveKey, subscribe, upload, type UserError } from "./api";
import { field, h, replace } from "./dom";
import type * as G from "./generated/graphql";
import * as Op from "./operations";
import { isFinal, progressBar } from "./progress";
import { isAdmin, type Screen } from "./screens/screen";
import { renderSegments } from "./screens/segments";
import { renderSender, renderSenders } from "./screens/senders";
import { renderSubscriber } from "./screens/subscriber";
import { renderSubscribers } from "./screens/subscribers";

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

function renderCampaigns(): void {
  const main = frame("#/campaigns");
  const key = session!.key;
  void load(main, () => request<G.CampaignsQuery>(key, Op.CAMPAIGNS), (data) => {
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
  });
}

function renderNewCampaign(): void {
  const main = frame("#/campaigns");
  const key = session!.key;
  if (!canWrite()) {
    replace(main, h("p", {}, "This API key is read-only (VIEWER): it cannot create campaigns."));
    return;
  }
  void load(main, () => request<G.ListsQuery>(key, Op.LISTS), (data) => {
    const listSelect = h("select", { required: true });
    const fillLists = (lists: { id: string; name: string }[], selected?: string) => {
      replace(listSelect, ...lists.map((l) => h("option", { value: l.id, selected: l.id === selected }, l.name)));
    };
    const lists = data.lists.edges.map((e) => e.node);
    fillLists(lists);

    const listName = h("input", { type: "text", required: true });
    const listErrors = h("div", {});
    const listForm = h("form", { class: "card" }, h("h2", {}, "New list"), field("List name", listName), h("button", { type: "submit" }, "Create list"), listErrors);
    listForm.addEventListener("submit", (event) => {
      event.preventDefault();
      void (async () => {
        try {
          const r = await request<G.CreateListMutation, G.CreateListMutationVariables>(key, Op.CREATE_LIST, { input: { name: listName.value.trim() } });
          if (r.createList.userErrors.length || !r.createList.list) {
            replace(listErrors, userErrorList(r.createList.userErrors));
            return;
          }
          lists.push(r.createList.list);
          fillLists(lists, r.createList.list.id);
          replace(listErrors, h("p", { role: "status" }, `List “${r.createList.list.name}” created.`));
          listName.value = "";
        } catch (err) {
          showError(listErrors, err, () => listForm.requestSubmit());
        }
      })();
    });

    const name = h("input", { type: "text", required: true });
    const subject = h("input", { type: "text", required: true });
    const fromEmail = h("input", { type: "email", required: true });
    const fromName = h("input", { type: "text" });
    const body = h("textarea", { rows: 8, required: true });
    body.value = "<p>Hello {{ subscriber.name or 'there' }},</p>\n<p></p>";
    const errors = h("div", {});
    const form = h(
      "form",
      { class: "card" },
      h("h2", {}, "Campaign"),
      field("Campaign name", name),
      field("Subject", subject),
      field("From email", fromEmail),
      field("From name", fromName),
      field("Send to list", listSelect),
      field("Body (HTML)", body),
      h("button", { type: "submit" }, "Create campaign"),
      errors,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void (async () => {
        try {
          const r = await request<G.CreateCampaignMutation, G.CreateCampaignMutationVariables>(key, Op.CREATE_CAMPAIGN, {
            input: {
              name: name.value.trim(),
              subject: subject.value,
              fromEmail: fromEmail.value.trim(),
              fromName: fromName.value.trim() || null,
              listIds: listSelect.value ? [listSelect.value] : null,
              body: body.value,
              format: "HTML",
            },
          });
          if (r.createCampaign.userErrors.length || !r.createCampaign.campaign) {
            replace(errors, userErrorList(r.createCampaign.userErrors));
            return;
          }
          window.location.hash = `#/campaigns/${encodeURIComponent(r.createCampaign.campaign.id)}`;
        } catch (err) {
          showError(errors, err, () => form.requestSubmit());
        }
      })();
    });
    replace(main, h("h1", {}, "New campaign"), h("div", { class: "columns" }, form, listForm));
  });
}

// Samples of a campaign's counters, kept across re-renders of its page so the chart goes on.
const samples = new Map<string, { t: number[]; sent: number[]; opens: number[]; clicks: number[] }>();

function record(id: string, sent: number, opens: number, clicks: number): void {
  let s = samples.get(id);
  if (!s) samples.set(id, (s = { t: [], sent: [], opens: [], clicks: [] }));
  const now = Date.now() / 1000;
  // Several updates within one tenth of a second are one point.
  if (s.t.length && now - s.t[s.t.length - 1] < 0.1) {
    s.sent[s.sent.length - 1] = sent;
    s.opens[s.opens.length - 1] = opens;
    s.clicks[s.clicks.length - 1] = clicks;
  } else {
    s.t.push(now);
    s.sent.push(sent);
    s.opens.push(opens);
    s.clicks.push(clicks);
  }
}

function chart(id: string, target: HTMLElement): () => void {
  const width = () => Math.max(280, Math.min(target.clientWidth || 600, 900));
  const s = samples.get(id)!;
  const plot = new uPlot(
    {
      width: width(),
      height: 220,
      series: [
        {},
        { label: "Sent", stroke: "#1d4ed8", width: 2 },
        { label: "Opens", stroke: "#047857", width: 2 },
        { label: "Clicks", stroke: "#b45309", width: 2 },
      ],
      axes: [{}, {}],
    },
    [s.t, s.sent, s.opens, s.clicks],
    target,
  );
  const onResize = () => plot.setSize({ width: width(), height: 220 });
  window.addEventListener("resize", onResize);
  stops.push(() => {
    window.removeEventListener("resize", onResize);
    plot.destroy();
  });
  return () => plot.setData([s.t, s.sent, s.opens, s.clicks]);
}

function counter(label: string, value: number | string): { el: HTMLElement; set: (v: number | string) => void } {
  const dd = h("dd", {}, String(value));
  return { el: h("div", { class: "counter" }, h("dt", {}, label), dd), set: (v) => (dd.textContent = String(v)) };
}

function renderCampaign(id: string): void {
  const main = frame("#/campaigns");
  const key = session!.key;
  void load(main, () => request<G.CampaignQuery, G.CampaignQueryVariables>(key, Op.CAMPAIGN, { id }), (data) => {
    const c = data.campaign;
    if (!c) {
      replace(main, h("p", {}, "No such campaign."), h("a", { href: "#/campaigns" }, "Back to campaigns"));
      return;
    }
    const status = h("span", { class: "status" }, c.status);
    const bar = progressBar(`Progress of ${c.name}`);
    bar.update(c.progress);
    const counters = {
      recipients: counter("Recipients", c.progress.recipients),
      sent: counter("Sent", c.progress.sent),
      failed: counter("Failed", c.progress.failed),
      skipped: counter("Skipped", c.progress.skipped),
      inDoubt: counter("In doubt", c.progress.inDoubt),
      opens: counter("Unique opens", c.stats.uniqueOpens),
      clicks: counter("Unique clicks", c.stats.uniqueClicks),
      bounced: counter("Bounced", c.stats.bounced),
    };
    const actionStatus = h("div", { role: "status" });
    const actions = h("div", { class: "actions" });
    const act = (label: string, run: () => Promise<{ userErrors: UserError[] }>) =>
      h("button", {
        type: "button",
        onclick: () => {
          void (async () => {
            try {
              const r = await run();
              if (r.userErrors.length) replace(actionStatus, userErrorList(r.userErrors));
              else void route(true);
            } catch (err) {
              showError(actionStatus, err, () => void route(true));
            }
          })();
        },
      }, label);
    const input = { input: { id } };
    if (canWrite()) {
      if (c.status === "DRAFT" || c.status === "SCHEDULED")
        actions.append(act("Start", async () => (await request<G.StartCampaignMutation, G.StartCampaignMutationVariables>(key, Op.START_CAMPAIGN, input)).startCampaign));
      if (c.status === "RUNNING")
        actions.append(act("Pause", async () => (await request<G.PauseCampaignMutation, G.PauseCampaignMutationVariables>(key, Op.PAUSE_CAMPAIGN, input)).pauseCampaign));
      if (c.status === "PAUSED")
        actions.append(act("Resume", async () => (await request<G.ResumeCampaignMutation, G.ResumeCampaignMutationVariables>(key, Op.RESUME_CAMPAIGN, input)).resumeCampaign));
      if (c.status === "RUNNING" || c.status === "PAUSED" || c.status === "SCHEDULED")
        actions.append(act("Cancel", async () => (await request<G.CancelCampaignMutation, G.CancelCampaignMutationVariables>(key, Op.CANCEL_CAMPAIGN, input)).cancelCampaign));
      if (c.progress.failed > 0 && (c.status === "FINISHED" || c.status === "PAUSED" || c.status === "RUNNING"))
        actions.append(act("Retry failed", async () => (await request<G.RetryFailedMutation, G.RetryFailedMutationVariables>(key, Op.RETRY_FAILED, { input: { campaignId: id, includeInDoubt: false } })).retryFailedDeliveries));
    }

    record(id, c.stats.sent, c.stats.uniqueOpens, c.stats.uniqueClicks);
    const chartBox = h("div", { class: "chart", role: "img", "aria-label": "Sent, opens and clicks over time" });

    const deliveries = c.deliveries.edges.map(({ node: d }) =>
      h("tr", {}, h("td", {}, d.email), h("td", {}, d.status), h("td", {}, String(d.attempts)), h("td", { class: "err" }, d.lastError ?? d.skipReason ?? "")),
    );
    replace(
      main,
      h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")),
      h("h1", {}, c.name),
      h("p", {}, "Status: ", status, c.statusReason ? ` — ${c.statusReason}` : "", " · Subject: ", c.subject, " · From: ", c.fromEmail, " · Lists: ", c.lists.map((l) => l.name).join(", ") || "none"),
      bar.el,
      actions,
      actionStatus,
      h("dl", { class: "counters" }, ...Object.values(counters).map((x) => x.el)),
      h("h2", {}, "Over time"),
      chartBox,
      h("h2", {}, "Links"),
      c.links.length
        ? h("table", {}, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "URL"), h("th", { scope: "col" }, "Clicks"), h("th", { scope: "col" }, "Unique"))), h("tbody", {}, ...c.links.map((l) => h("tr", {}, h("td", { class: "url" }, l.url), h("td", {}, String(l.clicks)), h("td", {}, String(l.uniqueClicks))))))
        : h("p", { class: "muted" }, "No tracked link clicked yet."),
      h("h2", {}, `Deliveries (${c.deliveries.totalCount})`),
      deliveries.length
        ? h("table", { class: "deliveries" }, h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Email"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Attempts"), h("th", { scope: "col" }, "Error"))), h("tbody", {}, ...deliveries))
        : h("p", { class: "muted" }, "No delivery yet."),
    );
    const redraw = chart(id, chartBox);
    let stats = { sent: c.stats.sent, opens: c.stats.uniqueOpens, clicks: c.stats.uniqueClicks };
    const client = live(key, liveTrouble);
    const onLiveError = (message: string) => replace(actionStatus, h("p", { class: "error", role: "alert" }, message));
    stops.push(
      subscribe<G.CampaignStatsLiveSubscription, G.CampaignStatsLiveSubscriptionVariables>(client, Op.CAMPAIGN_STATS, { id }, (d) => {
        const s = d.campaignStats;
        stats = { sent: s.sent, opens: s.uniqueOpens, clicks: s.uniqueClicks };
        counters.opens.set(s.uniqueOpens);
        counters.clicks.set(s.uniqueClicks);
        counters.bounced.set(s.bounced);
        record(id, stats.sent, stats.opens, stats.clicks);
        redraw();
      }, onLiveError),
    );
    if (!isFinal(c.status)) {
      let last = c.status;
      stops.push(
        subscribe<G.CampaignProgressLiveSubscription, G.CampaignProgressLiveSubscriptionVariables>(client, Op.CAMPAIGN_PROGRESS, { id }, (d) => {
          const p = d.campaignProgress;
          bar.update(p);
          status.textContent = p.status;
          counters.recipients.set(p.recipients);
          counters.sent.set(p.sent);
          counters.failed.set(p.failed);
          counters.skipped.set(p.skipped);
          counters.inDoubt.set(p.inDoubt);
          record(id, Math.max(p.sent, stats.sent), stats.opens, stats.clicks);
          redraw();
          // A new status brings other buttons and the final deliveries: the page is read again (the bar stays live).
          if (p.status !== last && isFinal(p.status)) {
            last = p.status;
            window.setTimeout(() => void route(true), 300);
          }
          last = p.status;
        }, onLiveError),
      );
    }
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
    try {
      const data = await request<G.ViewerQuery>(key, Op.VIEWER);
      session = { key, name: data.viewer.name, role: data.viewer.role };
    } catch (err) {
      if (err instanceof ApiError && err.failure === "unauthorized") renderSignIn("", err);
      else showError(root, err, () => void route());
      return;
    }
  }
  const hash = window.location.hash || "#/campaigns";
  const campaign = /^#\/campaigns\/(.+)$/.exec(hash);
  if (hash === "#/campaigns/new") renderNewCampaign();
  else if (campaign) renderCampaign(decodeURIComponent(campaign[1]));
  else if (hash === "#/imports") renderImports();
  else if (hash === "#/subscribers") renderSubscribers(screen(hash));
  else if (hash.startsWith("#/subscribers/")) renderSubscriber(screen("#/subscribers"), decodeURIComponent(hash.slice(14)));
  else if (hash === "#/segments") renderSegments(screen(hash));
  else if (hash.startsWith("#/segments/")) renderSegments(screen("#/segments"), decodeURIComponent(hash.slice(11)));
  else if (hash === "#/senders") renderSenders(screen(hash));
  else if (hash.startsWith("#/senders/")) renderSender(screen("#/senders"), decodeURIComponent(hash.slice(10)));
  else renderCampaigns();
  document.getElementById("main")?.focus({ preventScroll: true });
}

window.addEventListener("hashchange", () => void route());
void route();
