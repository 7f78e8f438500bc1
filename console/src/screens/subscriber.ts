// One subscriber: details and attributes, the lists they are on, their events and their runs through flows.
import { request } from "../api";
import { h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as Op from "../operations-audience";
import { facts, idHref, link, table, when, type Screen } from "./screen";

type Detail = NonNullable<G.SubscriberDetailQuery["subscriber"]>;
type EventNode = Detail["events"]["edges"][number]["node"];

export function renderSubscriber(s: Screen, id: string): void {
  void s.load(
    () => request<G.SubscriberDetailQuery, G.SubscriberDetailQueryVariables>(s.key, Op.SUBSCRIBER, { id }),
    (data) => {
      const sub = data.subscriber;
      if (!sub) {
        replace(s.main, h("p", {}, "No such subscriber."), link("#/subscribers", "Back to subscribers"));
        return;
      }
      replace(
        s.main,
        h("p", { class: "crumbs" }, link("#/subscribers", "Subscribers")),
        h("h1", { class: "email" }, sub.email),
        facts([
          ["Name", sub.name || "—"],
          ["Status", sub.status],
          ["Created", when(sub.createdAt)],
          ["Updated", when(sub.updatedAt)],
        ]),
        h("h2", {}, "Attributes"),
        attributes(sub.attributes),
        h("h2", {}, "Lists"),
        sub.subscriptions.length
          ? table(
              "subscriptions",
              "Lists",
              ["List", "Subscription", "Since"],
              sub.subscriptions.map((x) => h("tr", {}, h("td", {}, x.list.name), h("td", {}, x.status), h("td", {}, when(x.createdAt)))),
            )
          : h("p", { class: "muted" }, "On no list."),
        h("h2", {}, `Events (${sub.events.totalCount})`),
        sub.events.edges.length
          ? table(
              "events",
              sub.events.totalCount > sub.events.edges.length ? `The latest ${sub.events.edges.length} events` : "Events",
              ["Event", "When", "Campaign", "Detail"],
              sub.events.edges.map(({ node }) =>
                h(
                  "tr",
                  {},
                  h("td", {}, node.type === "CUSTOM" && node.name ? `CUSTOM ${node.name}` : node.type),
                  h("td", {}, when(node.occurredAt)),
                  h("td", {}, node.campaign ? link(idHref("#/campaigns", node.campaign.id), node.campaign.name) : "—"),
                  h("td", { class: "url" }, eventDetail(node)),
                ),
              ),
            )
          : h("p", { class: "muted" }, "No event yet."),
        h("h2", {}, `Flow runs (${sub.flowRuns.totalCount})`),
        sub.flowRuns.edges.length
          ? table(
              "runs",
              "Flow runs",
              ["Flow", "Status", "Entered", "Now"],
              sub.flowRuns.edges.map(({ node }) =>
                h(
                  "tr",
                  {},
                  h("td", {}, node.flow ? `${node.flow.name} (v${node.version})` : `(deleted flow, v${node.version})`),
                  h("td", {}, node.status),
                  h("td", {}, when(node.enteredAt)),
                  h("td", {}, runNow(node)),
                ),
              ),
            )
          : h("p", { class: "muted" }, "In no flow."),
      );
    },
  );
}

function attributes(value: unknown): HTMLElement {
  const entries = value && typeof value === "object" ? Object.entries(value as Record<string, unknown>) : [];
  if (!entries.length) return h("p", { class: "muted" }, "None.");
  return facts(entries.map(([k, v]) => [k, typeof v === "string" ? v : JSON.stringify(v)]));
}

function eventDetail(e: EventNode): string {
  const parts = [e.bounceType, e.url, e.reason, e.provider === "emailkit" || e.provider === "api" ? null : `via ${e.provider}`];
  return parts.filter(Boolean).join(" · ") || "—";
}

function runNow(r: Detail["flowRuns"]["edges"][number]["node"]): string {
  if (r.status === "ACTIVE") {
    const at = r.currentStep ? `at ${r.currentStep.key} (${r.currentStep.type})` : "entering";
    return r.dueAt ? `${at}, goes on ${when(r.dueAt)}` : at;
  }
  const end = `ended ${when(r.finishedAt)}`;
  return r.exitReason ? `${end}: ${r.exitReason}` : end;
}
