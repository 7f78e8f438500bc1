// Senders (ADMIN keys: the API answers FORBIDDEN to others): the default sender and this workspace's own,
// and a sender's page with its credentials' last four characters, rate limit, warm-up and a connection test.
import { request } from "../api";
import { h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as Op from "../operations-audience";
import { facts, idHref, isAdmin, link, table, when, type Screen } from "./screen";

type Row = G.SendersQuery["senders"]["edges"][number]["node"];

function adminsOnly(s: Screen): boolean {
  if (isAdmin(s.role)) return false;
  replace(s.main, h("h1", {}, "Senders"), h("p", {}, `Only ADMIN keys see senders; this key is ${s.role}.`));
  return true;
}

function rate(r: number | null): string {
  return r === null ? "no limit of its own" : `${r} per second`;
}

export function renderSenders(s: Screen): void {
  if (adminsOnly(s)) return;
  void s.load(
    () => request<G.SendersQuery>(s.key, Op.SENDERS),
    (data) => {
      const all: Row[] = [...(data.defaultSender ? [data.defaultSender] : []), ...data.senders.edges.map((e) => e.node)];
      replace(
        s.main,
        h("h1", {}, "Senders"),
        all.length
          ? table(
              "senders",
              "Senders",
              ["Name", "Type", "Credentials", "Rate"],
              all.map((x) =>
                h(
                  "tr",
                  {},
                  h("td", {}, link(idHref("#/senders", x.id), x.name), x.isDefault ? " (default)" : ""),
                  h("td", {}, x.type),
                  h("td", {}, x.hasCredentials ? "set" : "none"),
                  h("td", {}, rate(x.ratePerSecond)),
                ),
              ),
            )
          : h("p", { class: "muted" }, "This server does not send, and has no sender of its own."),
      );
    },
  );
}

export function renderSender(s: Screen, id: string): void {
  if (adminsOnly(s)) return;
  void s.load(
    () => request<G.SenderDetailQuery, G.SenderDetailQueryVariables>(s.key, Op.SENDER, { id }),
    (data) => {
      const x = data.sender;
      if (!x) {
        replace(s.main, h("p", {}, "No such sender."), link("#/senders", "Back to senders"));
        return;
      }
      const w = x.warmup;
      const today = x.warmupToday;
      const answer = h("div", { role: "status", "aria-live": "polite" });
      const test = h("button", { type: "button" }, "Test sender");
      test.addEventListener("click", () => void probe());
      const probe = async () => {
        test.disabled = true;
        replace(answer, h("p", { class: "muted" }, "Connecting to the provider…"));
        try {
          const r = (await request<G.TestSenderMutation, G.TestSenderMutationVariables>(s.key, Op.TEST_SENDER, { input: { id: x.id } })).testSender;
          if (r.userErrors.length) replace(answer, s.userErrors(r.userErrors));
          else
            replace(
              answer,
              h("p", { class: r.ok ? "ok" : "err" }, h("strong", {}, r.ok ? "OK" : "Failed"), `: ${r.message ?? "no answer"}`),
            );
        } catch (err) {
          s.showError(answer, err, () => void probe());
        } finally {
          test.disabled = false;
        }
      };
      replace(
        s.main,
        h("p", { class: "crumbs" }, link("#/senders", "Senders")),
        h("h1", {}, x.name),
        facts([
          ["Type", x.type + (x.isDefault ? " (the default sender)" : "")],
          ["Credentials", x.hasCredentials ? `set, ending …${x.credentialsLast4 ?? ""}` : "none"],
          ["Rate limit", rate(x.ratePerSecond)],
          ["Connections per worker", String(x.poolSize)],
          ["Warm-up", w ? `${w.startPerDay} a day from ${String(w.startsOn)}, +${w.growthPercent}% a day, up to ${w.ceilingPerDay}` : "no plan (no daily limit)"],
          ["Today", today ? `${today.sent} of ${today.allowance} sent, ${today.remaining} left; resets ${when(today.resetsAt)}` : "—"],
          ["Created", when(x.createdAt)],
          ["Updated", when(x.updatedAt)],
        ]),
        h("h2", {}, "Settings"),
        h("pre", { class: "settings" }, JSON.stringify(x.settings, null, 2)),
        h("h2", {}, "Connection"),
        h("p", {}, "Connects to the provider and authenticates, sending nothing."),
        h("div", { class: "actions" }, test),
        answer,
      );
    },
  );
}
