// What the campaign, compose and flow screens need of the shell besides a Screen: reading their route again
// after an action (quietly: the page stays until the new data is there) and the shared live connection.
import type { Client } from "graphql-ws";
import type { Screen } from "./screen";

export interface Shell extends Screen {
  reread(): void;
  live(): Client;
}

/** A button that runs a mutation, shows its userErrors in `status`, and reads the page again on success. */
export function actionButton(
  s: Shell,
  status: HTMLElement,
  label: string,
  run: () => Promise<{ userErrors: { field: string | null; message: string; code: string }[] }>,
  done?: (result: unknown) => void,
): HTMLButtonElement {
  const button = document.createElement("button");
  button.type = "button";
  button.textContent = label;
  button.addEventListener("click", () => {
    button.disabled = true;
    status.textContent = `${label}…`;
    void (async () => {
      try {
        const r = await run();
        if (r.userErrors.length) status.replaceChildren(s.userErrors(r.userErrors));
        else if (done) done(r);
        else s.reread();
      } catch (err) {
        s.showError(status, err, () => button.click());
      } finally {
        button.disabled = false;
      }
    })();
  });
  return button;
}
