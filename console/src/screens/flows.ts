// Flows: the list with each flow's runs by status, and a flow's page with its counters and per-step counters
// kept live by the flowStats subscription, its recent runs (filtered by status), and Publish, Pause, Resume
// and Archive for writers.
import { request, subscribe, type UserError } from "../api";
import { field, h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as F from "../operations-flows";
import { canWrite } from "./screen";
import { actionButton, type Shell } from "./shell";

type RunCounts = G.FlowStatsLiveSubscription["flowStats"]["stats"];
type StepCounts = G.FlowStatsLiveSubscription["flowStats"]["steps"][number]["stats"];

const RUN_COUNTS: [keyof RunCounts, string][] = [
  ["entered", "Entered"],
  ["active", "Active"],
  ["completed", "Completed"],
  ["exited", "Exited"],
];

const STEP_COUNTS: [keyof StepCounts, string][] = [
  ["entered", "Entered"],
  ["completed", "Completed"],
  ["sent", "Sent"],
  ["skipped", "Skipped"],
  ["failed", "Failed"],
  ["opened", "Opened"],
  ["clicked", "Clicked"],
];

const when = (iso: string | null | undefined) => (iso ? new Date(iso).toLocaleString() : "—");

export function renderFlows(scr: Shell): void {
  void scr.load(() => request<G.FlowsQuery>(scr.key, F.FLOWS), (data) => {
    const rows = data.flows.edges.map(({ node: f }) =>
      h(
        "tr",
        {},
        h("td", {}, h("a", { href: `#/flows/${encodeURIComponent(f.id)}` }, f.name)),
        h("td", {}, f.status),
        h("td", {}, f.version ? `v${f.version}` : "—"),
        ...RUN_COUNTS.map(([k]) => h("td", { class: "num" }, String(f.stats[k]))),
      ),
    );
    replace(
      scr.main,
      h("h1", {}, "Flows"),
      rows.length
        ? h(
            "div",
            { class: "table-wrap" },
            h(
              "table",
              { class: "flows" },
              h("caption", { class: "visually-hidden" }, "Flows and their runs by status"),
              h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Name"), h("th", { scope: "col" }, "Status"), h("th", { scope: "col" }, "Version"), ...RUN_COUNTS.map(([, label]) => h("th", { scope: "col", class: "num" }, label)))),
              h("tbody", {}, ...rows),
            ),
          )
        : h("p", { class: "muted" }, "No flow yet. Flows are made through the API (createFlow)."),
    );
  });
}

function describeTrigger(t: NonNullable<G.FlowDetailQuery["flow"]>["trigger"]): string {
  const what = t.list?.name ?? t.segment?.name ?? t.eventName ?? t.attribute;
  return what ? `${t.type} (${what})` : t.type;
}

function describeStep(s: NonNullable<G.FlowDetailQuery["flow"]>["steps"][number]): string {
  const parts: string[] = [];
  if (s.template) parts.push(`template ${s.template.name}`);
  if (s.waitSeconds) parts.push(`wait ${s.waitSeconds} s`);
  if (s.then || s.otherwise) parts.push(`then ${s.then ?? "end"}, else ${s.otherwise ?? "end"}`);
  else parts.push(s.next ? `next ${s.next}` : "then the run completes");
  return parts.join(" · ");
}

export function renderFlow(scr: Shell, id: string): void {
  const key = scr.key;
  void scr.load(() => request<G.FlowDetailQuery, G.FlowDetailQueryVariables>(key, F.FLOW, { id, runStatus: null }), (data) => {
    const f = data.flow;
    if (!f) {
      replace(scr.main, h("p", {}, "No such flow."), h("a", { href: "#/flows" }, "Back to flows"));
      return;
    }
    const status = h("div", { role: "status", class: "action-status" });
    const actions = h("div", { class: "actions" });
    if (canWrite(scr) && f.status !== "ARCHIVED") {
      const change = (label: string, query: string, pick: (d: Record<string, { userErrors: UserError[] }>) => { userErrors: UserError[] }) =>
        actionButton(scr, status, label, async () => pick(await request<Record<string, { userErrors: UserError[] }>, { input: { id: string } }>(key, query, { input: { id } })));
      if (f.status === "DRAFT" || f.hasUnpublishedChanges) actions.append(change("Publish", F.PUBLISH_FLOW, (d) => d.publishFlow));
      if (f.status === "ACTIVE") actions.append(change("Pause", F.PAUSE_FLOW, (d) => d.pauseFlow));
      if (f.status === "PAUSED") actions.append(change("Resume", F.RESUME_FLOW, (d) => d.resumeFlow));
      // Archiving is for good (every run still inside leaves): it asks first, in the page.
      const confirmBox = h("div", { class: "confirm", hidden: true });
      const archive = h("button", { type: "button", class: "danger" }, "Archive");
      archive.addEventListener("click", () => {
        confirmBox.hidden = false;
        (confirmBox.querySelector("button") as HTMLButtonElement | null)?.focus();
      });
      const keep = h("button", { type: "button", class: "secondary" }, "Keep it");
      keep.addEventListener("click", () => {
        confirmBox.hidden = true;
        archive.focus();
      });
      replace(confirmBox, h("span", {}, `Archive “${f.name}” for good? Every run still inside leaves it.`), change("Yes, archive", F.ARCHIVE_FLOW, (d) => d.archiveFlow), keep);
      actions.append(archive, confirmBox);
    }

    const runCounts = new Map<string, HTMLElement>();
    const counters = h(
      "dl",
      { class: "counters" },
      ...RUN_COUNTS.map(([k, label]) => {
        const dd = h("dd", {}, String(f.stats[k]));
        runCounts.set(k, dd);
        return h("div", { class: "counter" }, h("dt", {}, `${label} runs`), dd);
      }),
    );

    const stepCells = new Map<string, Map<string, HTMLElement>>();
    const stepRows = f.steps.map((s) => {
      const cells = new Map<string, HTMLElement>();
      stepCells.set(s.key, cells);
      return h(
        "tr",
        {},
        h("th", { scope: "row" }, s.key),
        h("td", {}, s.type),
        h("td", { class: "step-detail" }, describeStep(s)),
        ...STEP_COUNTS.map(([k]) => {
          const td = h("td", { class: "num" }, String(s.stats[k]));
          cells.set(k, td);
          return td;
        }),
      );
    });

    const runsBox = h("div", { "aria-live": "polite" });
    const runFilter = h("select", {}, h("option", { value: "" }, "All"), h("option", { value: "ACTIVE" }, "ACTIVE"), h("option", { value: "COMPLETED" }, "COMPLETED"), h("option", { value: "EXITED" }, "EXITED"));
    const showRuns = (runs: NonNullable<G.FlowDetailQuery["flow"]>["runs"]) => {
      const rows = runs.edges.map(({ node: r }) =>
        h("tr", {}, h("td", { class: "email" }, r.subscriber?.email ?? "(erased)"), h("td", {}, r.status), h("td", {}, r.currentStep?.key ?? "—"), h("td", {}, when(r.enteredAt)), h("td", {}, r.status === "ACTIVE" ? (r.dueAt ? `due ${when(r.dueAt)}` : "") : r.exitReason ?? when(r.finishedAt))),
      );
      replace(
        runsBox,
        rows.length
          ? h(
              "div",
              { class: "table-wrap" },
              h(
                "table",
                { class: "runs flow-runs" },
                h("caption", {}, `Latest runs (${runs.totalCount}${runs.totalCountPrecision === "EXACT" ? "" : "+"} in all)`),
                h("thead", {}, h("tr", {}, ...["Person", "Status", "At step", "Entered", "Due / ended"].map((t) => h("th", { scope: "col" }, t)))),
                h("tbody", {}, ...rows),
              ),
            )
          : h("p", { class: "muted" }, "No run."),
      );
    };
    showRuns(f.runs);
    const readRuns = async () => {
      try {
        const d = await request<G.FlowDetailQuery, G.FlowDetailQueryVariables>(key, F.FLOW, { id, runStatus: (runFilter.value || null) as G.FlowRunStatus | null });
        if (d.flow) showRuns(d.flow.runs);
      } catch (err) {
        scr.showError(runsBox, err, () => void readRuns());
      }
    };
    runFilter.addEventListener("change", () => void readRuns());

    replace(
      scr.main,
      h("p", {}, h("a", { href: "#/flows" }, "← Flows")),
      h("h1", {}, f.name),
      h(
        "p",
        {},
        "Status: ",
        h("span", { class: "status" }, f.status),
        ` · Version ${f.version || "none published"}`,
        f.hasUnpublishedChanges && f.status !== "DRAFT" ? " (the draft has unpublished changes)" : "",
        ` · Trigger: ${describeTrigger(f.trigger)}`,
      ),
      actions,
      status,
      h("h2", {}, "Runs by status"),
      counters,
      h("h2", {}, "Steps"),
      h(
        "div",
        { class: "table-wrap" },
        h(
          "table",
          { class: "steps" },
          h("caption", { class: "visually-hidden" }, "Each step and its counters"),
          h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Step"), h("th", { scope: "col" }, "Type"), h("th", { scope: "col" }, "Does"), ...STEP_COUNTS.map(([, label]) => h("th", { scope: "col", class: "num" }, label)))),
          h("tbody", {}, ...stepRows),
        ),
      ),
      h("h2", {}, "Runs"),
      h("div", { class: "filters" }, field("Show runs", runFilter)),
      runsBox,
    );

    let reading = false;
    let again = false;
    const refreshRuns = async () => {
      if (reading) {
        again = true;
        return;
      }
      reading = true;
      try {
        do {
          again = false;
          await readRuns();
        } while (again);
      } finally {
        reading = false;
      }
    };
    scr.onLeave(
      subscribe<G.FlowStatsLiveSubscription, G.FlowStatsLiveSubscriptionVariables>(
        scr.live(),
        F.FLOW_STATS,
        { id },
        (d) => {
          const u = d.flowStats;
          for (const [k] of RUN_COUNTS) {
            const dd = runCounts.get(k);
            if (dd) dd.textContent = String(u.stats[k]);
          }
          for (const step of u.steps) {
            const cells = stepCells.get(step.key);
            if (!cells) continue;
            for (const [k] of STEP_COUNTS) {
              const td = cells.get(k);
              if (td) td.textContent = String(step.stats[k]);
            }
          }
          // Any change of the counters may be a run moving on (a step sent, a wait begun), not only a new
          // one: the runs table is read again, one read at a time, and once more after the last change.
          void refreshRuns();
        },
        (message) => replace(status, h("p", { class: "error", role: "alert" }, message)),
      ),
    );
  });
}
