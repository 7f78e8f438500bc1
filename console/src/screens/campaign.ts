// A campaign's page: live counters and progress (campaignProgress, campaignStats), a chart of sent, opens and
// clicks over time, its links with their clicks, its deliveries (paged, filtered by status) with their
// errors, and the lifecycle buttons its status allows (writers only).
import uPlot from "uplot";
import { request, subscribe, type UserError } from "../api";
import { field, h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as Op from "../operations";
import * as C from "../operations-campaigns";
import { isFinal, progressBar } from "../progress";
import { canWrite } from "./screen";
import { actionButton, type Shell } from "./shell";

type Series = { t: number[]; sent: (number | null)[]; opens: number[]; clicks: number[] };

// Samples of a campaign's counters, kept across re-renders of its page so the chart goes on.
const samples = new Map<string, Series>();
// A message for the next rendering of a campaign's page (it is read again after an action).
let flash: { id: string; text: string } | null = null;

/** The chart starts from the campaign's hourly timeline (opens and clicks so far), then follows live updates. */
function seed(id: string, timeline: NonNullable<G.CampaignDetailQuery["campaign"]>["timeline"]): Series {
  let s = samples.get(id);
  if (s) return s;
  s = { t: [], sent: [], opens: [], clicks: [] };
  let opens = 0;
  let clicks = 0;
  for (const p of timeline) {
    opens += p.opens;
    clicks += p.clicks;
    s.t.push(Date.parse(p.start) / 1000 + 3600);
    s.sent.push(null);
    s.opens.push(opens);
    s.clicks.push(clicks);
  }
  samples.set(id, s);
  return s;
}

function record(s: Series, sent: number, opens: number, clicks: number): void {
  const now = Date.now() / 1000;
  // The timeline's last bucket ends in the future: live points go after it, never before.
  while (s.t.length && s.t[s.t.length - 1] > now && s.sent[s.sent.length - 1] === null) {
    s.t.pop();
    s.sent.pop();
    s.opens.pop();
    s.clicks.pop();
  }
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

function chart(scr: Shell, s: Series, target: HTMLElement): () => void {
  const width = () => Math.max(260, Math.min(target.clientWidth - 16 || 600, 900));
  const plot = new uPlot(
    {
      width: width(),
      height: 220,
      series: [
        {},
        { label: "Sent", stroke: "#1d4ed8", width: 2, spanGaps: true },
        { label: "Opens", stroke: "#047857", width: 2 },
        { label: "Clicks", stroke: "#b45309", width: 2, dash: [6, 3] },
      ],
      axes: [{}, {}],
    },
    [s.t, s.sent, s.opens, s.clicks],
    target,
  );
  const onResize = () => plot.setSize({ width: width(), height: 220 });
  window.addEventListener("resize", onResize);
  scr.onLeave(() => {
    window.removeEventListener("resize", onResize);
    plot.destroy();
  });
  return () => plot.setData([s.t, s.sent, s.opens, s.clicks]);
}

function counter(label: string, value: number | string): { el: HTMLElement; set: (v: number | string) => void } {
  const dd = h("dd", {}, String(value));
  return { el: h("div", { class: "counter" }, h("dt", {}, label), dd), set: (v) => (dd.textContent = String(v)) };
}

const pct = (x: number) => `${(x * 100).toFixed(1)}%`;

export function renderCampaign(scr: Shell, id: string): void {
  const key = scr.key;
  void scr.load(() => request<G.CampaignDetailQuery, G.CampaignDetailQueryVariables>(key, C.CAMPAIGN_DETAIL, { id }), (data) => {
    const c = data.campaign;
    if (!c) {
      replace(scr.main, h("p", {}, "No such campaign."), h("a", { href: "#/campaigns" }, "Back to campaigns"));
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
      rate: counter("Per second", c.progress.ratePerSecond.toFixed(1)),
    };
    const rates = h("p", { class: "muted" });
    const showRates = (st: G.CampaignStatsLiveSubscription["campaignStats"]) => {
      rates.textContent = `Open rate ${pct(st.openRate)} · click rate ${pct(st.clickRate)} · bounce rate ${pct(st.bounceRate)} · complaints ${pct(st.complaintRate)} · ${st.unsubscribed} unsubscribed`;
    };
    showRates(c.stats);

    const actionStatus = h("div", { role: "status", class: "action-status" });
    if (flash && flash.id === id) actionStatus.textContent = flash.text;
    flash = null;
    const actions = h("div", { class: "actions" });
    const input = { input: { id } };
    if (canWrite(scr)) {
      const lifecycle = (label: string, query: string, pick: (d: Record<string, { userErrors: UserError[] }>) => { userErrors: UserError[] }) =>
        actionButton(scr, actionStatus, label, async () => pick(await request<Record<string, { userErrors: UserError[] }>, { input: { id: string } }>(key, query, input)));
      if (c.status === "DRAFT" || c.status === "SCHEDULED") actions.append(lifecycle("Start", Op.START_CAMPAIGN, (d) => d.startCampaign));
      if (c.status === "RUNNING") actions.append(lifecycle("Pause", Op.PAUSE_CAMPAIGN, (d) => d.pauseCampaign));
      if (c.status === "PAUSED") actions.append(lifecycle("Resume", Op.RESUME_CAMPAIGN, (d) => d.resumeCampaign));
      if (c.status === "RUNNING" || c.status === "PAUSED" || c.status === "SCHEDULED")
        actions.append(lifecycle("Cancel", Op.CANCEL_CAMPAIGN, (d) => d.cancelCampaign));
      if ((c.progress.failed > 0 || c.progress.inDoubt > 0) && (c.status === "FINISHED" || c.status === "PAUSED" || c.status === "RUNNING")) {
        const inDoubt = h("input", { type: "checkbox" });
        const retry = actionButton(
          scr,
          actionStatus,
          "Retry failed",
          async () => {
            const r = await request<G.RetryFailedDeliveriesMutation, G.RetryFailedDeliveriesMutationVariables>(key, C.RETRY_FAILED_DELIVERIES, {
              input: { campaignId: id, includeInDoubt: inDoubt.checked },
            });
            return r.retryFailedDeliveries;
          },
          (r) => {
            const n = (r as G.RetryFailedDeliveriesMutation["retryFailedDeliveries"]).retried;
            flash = { id, text: `${n} ${n === 1 ? "delivery" : "deliveries"} queued again.` };
            scr.reread();
          },
        );
        actions.append(retry);
        if (c.progress.inDoubt > 0) {
          inDoubt.id = "retry-in-doubt";
          actions.append(h("label", { class: "check", for: "retry-in-doubt" }, inDoubt, " also the in-doubt ones (they may get it twice)"));
        }
      }
    }

    const series = seed(id, c.timeline);
    record(series, c.stats.sent || c.progress.sent, c.stats.opens, c.stats.clicks);
    const chartBox = h("div", { class: "chart" });
    const chartSummary = h("p", { class: "visually-hidden", "aria-live": "polite" });
    const summarise = (sent: number, opens: number, clicks: number) => {
      chartSummary.textContent = `Chart: ${sent} sent, ${opens} opens, ${clicks} clicks so far.`;
    };
    summarise(c.progress.sent, c.stats.opens, c.stats.clicks);
    const deliveries = h("section", { "aria-labelledby": "deliveries-title" });
    replace(
      scr.main,
      h("p", {}, h("a", { href: "#/campaigns" }, "← Campaigns")),
      h("h1", {}, c.name),
      h(
        "p",
        {},
        "Status: ",
        status,
        c.statusReason ? ` — ${c.statusReason}` : "",
        " · Subject: ",
        c.subject,
        " · From: ",
        c.fromEmail,
        " · Lists: ",
        c.lists.map((l) => l.name).join(", ") || "none",
        c.template ? ` · Template: ${c.template.name}` : "",
      ),
      bar.el,
      actions,
      actionStatus,
      h("dl", { class: "counters" }, ...Object.values(counters).map((x) => x.el)),
      rates,
      h("h2", { id: "chart-title" }, "Over time"),
      h("figure", { class: "chart-figure", "aria-labelledby": "chart-title" }, chartBox, chartSummary),
      h("h2", {}, "Links"),
      c.links.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "links" },
              h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "URL"), h("th", { scope: "col" }, "Clicks"), h("th", { scope: "col" }, "Unique"))),
              h("tbody", {}, ...c.links.map((l) => h("tr", {}, h("td", { class: "url" }, l.url), h("td", {}, String(l.clicks)), h("td", {}, String(l.uniqueClicks))))),
            ),
          )
        : h("p", { class: "muted" }, "No tracked link clicked yet."),
      deliveries,
    );
    const redraw = chart(scr, series, chartBox);
    const reloadDeliveries = renderDeliveries(scr, id, deliveries);

    let stats = { sent: c.stats.sent, opens: c.stats.opens, clicks: c.stats.clicks };
    let sent = c.progress.sent;
    const client = scr.live();
    const onLiveError = (message: string) => replace(actionStatus, h("p", { class: "error", role: "alert" }, message));
    scr.onLeave(
      subscribe<G.CampaignStatsLiveSubscription, G.CampaignStatsLiveSubscriptionVariables>(client, Op.CAMPAIGN_STATS, { id }, (d) => {
        const st = d.campaignStats;
        stats = { sent: st.sent, opens: st.opens, clicks: st.clicks };
        counters.opens.set(st.uniqueOpens);
        counters.clicks.set(st.uniqueClicks);
        counters.bounced.set(st.bounced);
        showRates(st);
        record(series, Math.max(sent, stats.sent), stats.opens, stats.clicks);
        summarise(Math.max(sent, stats.sent), stats.opens, stats.clicks);
        redraw();
      }, onLiveError),
    );
    if (!isFinal(c.status) || c.status !== c.progress.status) {
      let last = c.status;
      scr.onLeave(
        subscribe<G.CampaignProgressLiveSubscription, G.CampaignProgressLiveSubscriptionVariables>(client, Op.CAMPAIGN_PROGRESS, { id }, (d) => {
          const p = d.campaignProgress;
          sent = p.sent;
          bar.update(p);
          status.textContent = p.status;
          counters.recipients.set(p.recipients);
          counters.sent.set(p.sent);
          counters.failed.set(p.failed);
          counters.skipped.set(p.skipped);
          counters.inDoubt.set(p.inDoubt);
          counters.rate.set(p.ratePerSecond.toFixed(1));
          record(series, Math.max(p.sent, stats.sent), stats.opens, stats.clicks);
          summarise(Math.max(p.sent, stats.sent), stats.opens, stats.clicks);
          redraw();
          // A new status brings other buttons and the final deliveries: the page is read again (quietly).
          if (p.status !== last && (isFinal(p.status) || p.status === "PAUSED")) {
            last = p.status;
            window.setTimeout(() => scr.reread(), 300);
          } else if (p.status === "RUNNING") reloadDeliveries(false);
          last = p.status;
        }, onLiveError),
      );
    }
  });
}

const STATUSES: G.DeliveryStatus[] = ["QUEUED", "SENDING", "SENT", "FAILED", "SKIPPED", "IN_DOUBT"];
const PAGE = 50;

/** The deliveries table with its status filter and pages; returns a function that reads the page again. */
function renderDeliveries(scr: Shell, id: string, box: HTMLElement): (announce: boolean) => void {
  const filter = h("select", {}, h("option", { value: "" }, "All"), ...STATUSES.map((s) => h("option", { value: s }, s)));
  const title = h("h2", { id: "deliveries-title" }, "Deliveries");
  const body = h("div", { "aria-live": "polite" });
  const pager = h("div", { class: "pager" });
  // The cursors of the pages before this one, so that "Previous" needs no backwards pagination.
  let cursors: (string | null)[] = [null];
  let busy = false;
  let lastRead = 0;

  const read = async (announce: boolean) => {
    if (busy) return;
    busy = true;
    lastRead = Date.now();
    const after = cursors[cursors.length - 1];
    if (announce) replace(body, h("p", { class: "muted" }, "Loading deliveries…"));
    try {
      const d = await request<G.CampaignDeliveriesQuery, G.CampaignDeliveriesQueryVariables>(scr.key, C.CAMPAIGN_DELIVERIES, {
        id,
        first: PAGE,
        after,
        status: (filter.value || null) as G.DeliveryStatus | null,
      });
      const conn = d.campaign?.deliveries;
      if (!conn) {
        replace(body, h("p", {}, "No such campaign."));
        return;
      }
      const total = conn.totalCountPrecision === "EXACT" ? String(conn.totalCount) : `${conn.totalCount}+`;
      title.textContent = `Deliveries (${total}${filter.value ? ` ${filter.value}` : ""})`;
      const rows = conn.edges.map(({ node: x }) =>
        h("tr", {}, h("td", { class: "email" }, x.email), h("td", {}, x.status), h("td", {}, String(x.attempts)), h("td", { class: "err" }, x.lastError ?? x.skipReason ?? "")),
      );
      replace(
        body,
        rows.length
          ? h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                { class: "deliveries" },
                h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Email"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Attempts"), h("th", { scope: "col" }, "Error"))),
                h("tbody", {}, ...rows),
              ),
            )
          : h("p", { class: "muted" }, filter.value ? `No ${filter.value} delivery.` : "No delivery yet."),
      );
      const page = cursors.length;
      replace(
        pager,
        page > 1 ? h("button", { type: "button", class: "secondary", onclick: () => { cursors.pop(); void read(true); } }, "Previous page") : null,
        page > 1 || conn.pageInfo.hasNextPage ? h("span", { class: "muted" }, `Page ${page}`) : null,
        conn.pageInfo.hasNextPage && conn.pageInfo.endCursor
          ? h("button", { type: "button", class: "secondary", onclick: () => { cursors.push(conn.pageInfo.endCursor); void read(true); } }, "Next page")
          : null,
      );
    } catch (err) {
      scr.showError(body, err, () => void read(true));
    } finally {
      busy = false;
    }
  };
  filter.addEventListener("change", () => {
    cursors = [null];
    void read(true);
  });
  replace(box, title, h("div", { class: "filters" }, field("Show deliveries", filter)), body, pager);
  void read(true);
  // While sending, the table follows along at most once every two seconds.
  return (announce) => {
    if (Date.now() - lastRead > 2000) void read(announce);
  };
}
