// What a screen module gets from the shell (main.ts): the signed-in key and role, its <main>, and the shell's
// loading, error and user-error helpers, so every screen fails the same way (an alert with Retry).
import type { UserError } from "../api";
import { h } from "../dom";
import type * as G from "../generated/graphql";

export interface Screen {
  key: string;
  role: G.Role;
  main: HTMLElement;
  /** Shows "Loading…", then renders the data, or an error with Retry (which renders the route again). */
  load<T>(fetcher: () => Promise<T>, render: (data: T) => void): Promise<void>;
  showError(target: HTMLElement, err: unknown, retry: () => void): void;
  userErrors(errors: UserError[]): HTMLElement;
  /** Run when the user leaves the screen (timers, subscriptions). */
  onLeave(stop: () => void): void;
}

export function canWrite(s: Screen): boolean {
  return s.role !== "VIEWER";
}

export function isAdmin(role: G.Role): boolean {
  return role === "ADMIN" || role === "OWNER";
}

const dateFormat = new Intl.DateTimeFormat(undefined, { dateStyle: "medium", timeStyle: "short" });

export function when(iso: string | null | undefined): string {
  return iso ? dateFormat.format(new Date(iso)) : "—";
}

/** A table with a caption and column headers; `cls` names it for the narrow-screen rules. */
export function table(cls: string, caption: string, headers: string[], rows: HTMLElement[]): HTMLElement {
  return h(
    "div",
    { class: "table-wrap" },
    h(
      "table",
      { class: cls },
      h("caption", {}, caption),
      h("thead", {}, h("tr", {}, ...headers.map((t) => h("th", { scope: "col" }, t)))),
      h("tbody", {}, ...rows),
    ),
  );
}

/** Term/value pairs as a <dl>. */
export function facts(pairs: [string, Node | string][]): HTMLElement {
  return h("dl", { class: "facts" }, ...pairs.flatMap(([t, d]) => [h("dt", {}, t), h("dd", {}, d)]));
}

export function link(href: string, text: string): HTMLElement {
  return h("a", { href }, text);
}

export function idHref(prefix: string, id: string): string {
  return `${prefix}/${encodeURIComponent(id)}`;
}
