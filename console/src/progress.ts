import { h } from "./dom";

export interface Counts {
  status: string;
  recipients: number;
  sent: number;
  failed: number;
  skipped: number;
  inDoubt: number;
}

const FINAL = new Set(["FINISHED", "CANCELLED", "FAILED"]);

export function isFinal(status: string): boolean {
  return FINAL.has(status);
}

export function percent(p: Counts): number {
  const done = p.sent + p.failed + p.skipped + p.inDoubt;
  if (p.recipients > 0) return Math.min(100, Math.floor((done * 100) / p.recipients));
  return p.status === "FINISHED" ? 100 : 0;
}

/** A native <progress> (announced by screen readers) with its figure beside it. */
export function progressBar(label: string): { el: HTMLElement; update: (p: Counts) => void } {
  const bar = h("progress", { max: 100, value: 0, "aria-label": label });
  const figure = h("span", { class: "pct" }, "0%");
  const el = h("div", { class: "progress" }, bar, figure);
  return {
    el,
    update(p) {
      const pct = percent(p);
      bar.value = pct;
      bar.setAttribute("aria-valuetext", `${pct}%`);
      figure.textContent = `${pct}%`;
      el.dataset.status = p.status;
    },
  };
}
