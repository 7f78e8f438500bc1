// The compose page: an MJML (or HTML) editor with line numbers, a live preview rendered by the server
// (previewTemplate, debounced) in a sandboxed frame, the line of each error marked and one keypress away,
// and saving as a campaign template that a new campaign can use.
import { request, type UserError } from "../api";
import { field, h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as C from "../operations-campaigns";
import { canWrite } from "./screen";
import type { Shell } from "./shell";

const STARTER = `<mjml>
  <mj-body>
    <mj-section>
      <mj-column>
        <mj-text font-size="20px">Hello {{ subscriber.name or "there" }},</mj-text>
        <mj-text>What is new this month.</mj-text>
        <mj-button href="https://example.com/">Read more</mj-button>
      </mj-column>
    </mj-section>
  </mj-body>
</mjml>
`;

// Quiet long enough to let a typist finish a word: one render per pause, not per keystroke.
const DEBOUNCE_MS = 350;

/** The number of the line a previewTemplate error names ("Line 3: …"), if any. */
export function errorLine(message: string): number | null {
  const m = /^Line (\d+):/.exec(message);
  return m ? Number(m[1]) : null;
}

export function renderCompose(scr: Shell, templateId: string | null): void {
  if (!canWrite(scr)) {
    replace(scr.main, h("h1", {}, "Compose"), h("p", {}, "This API key is read-only (VIEWER): composing and previewing templates needs an EDITOR or ADMIN key."));
    return;
  }
  const key = scr.key;
  void scr.load(
    async () => {
      const [saved, template] = await Promise.all([
        request<G.TemplatesQuery>(key, C.TEMPLATES),
        templateId ? request<G.TemplateDetailQuery, G.TemplateDetailQueryVariables>(key, C.TEMPLATE, { id: templateId }) : Promise.resolve(null),
      ]);
      return { saved, template: template?.template ?? null };
    },
    ({ saved, template }) => {
      if (templateId && !template) {
        replace(scr.main, h("h1", {}, "Compose"), h("p", {}, "No such template."), h("a", { href: "#/compose" }, "Start a new one"));
        return;
      }
      let currentId = template?.id ?? null;
      const name = h("input", { type: "text", required: true, value: template?.name ?? "" });
      const subject = h("input", { type: "text", value: template?.subject ?? "" });
      const format = h("select", {}, h("option", { value: "MJML" }, "MJML"), h("option", { value: "HTML" }, "HTML"));
      format.value = template?.format ?? "MJML";
      const editor = lineEditor(template?.body ?? STARTER);
      const problems = h("div", { class: "problems" });
      const state = h("p", { role: "status", class: "muted" });
      const subjectOut = h("p", { class: "preview-subject" });
      // A document with a CSP of its own (emailkit/web/console.py): an opaque origin that runs no script of
      // the email's; it is handed each rendered HTML by postMessage.
      const frame = h("iframe", { title: "Preview of the rendered email", sandbox: "allow-scripts", class: "preview", referrerpolicy: "no-referrer", src: "/static/console/preview.html" });
      let shown: string | null = null;
      let frameReady = false;
      const show = (html: string) => {
        shown = html;
        if (frameReady) frame.contentWindow?.postMessage(html, "*");
      };
      frame.addEventListener("load", () => {
        frameReady = true;
        if (shown !== null) show(shown);
      });
      const saveStatus = h("div", { role: "status" });

      let seq = 0;
      let timer = 0;
      const preview = async () => {
        const mine = ++seq;
        state.textContent = "Rendering the preview…";
        try {
          const r = await request<G.PreviewTemplateMutation, G.PreviewTemplateMutationVariables>(key, C.PREVIEW_TEMPLATE, {
            input: { body: editor.textarea.value, format: format.value as G.ContentFormat, subject: subject.value || null },
          });
          if (mine !== seq) return; // a newer edit is being rendered
          const p = r.previewTemplate;
          showProblems(p.userErrors);
          if (p.html != null) {
            show(p.html);
            subjectOut.textContent = p.subject ? `Subject: ${p.subject}` : "";
          }
          state.textContent = p.userErrors.length
            ? `${p.userErrors.length} ${p.userErrors.length === 1 ? "problem" : "problems"}: the preview shows the last version that rendered.`
            : "Preview up to date.";
        } catch (err) {
          if (mine !== seq) return;
          state.textContent = "";
          scr.showError(problems, err, () => void preview());
        }
      };
      const schedule = () => {
        window.clearTimeout(timer);
        state.textContent = "Changed: the preview follows when you pause.";
        timer = window.setTimeout(() => void preview(), DEBOUNCE_MS);
      };
      scr.onLeave(() => {
        window.clearTimeout(timer);
        seq++;
      });

      const showProblems = (errors: UserError[]) => {
        const lines = new Set<number>();
        const items = errors.map((e) => {
          const line = e.field === "subject" ? null : errorLine(e.message);
          if (line) lines.add(line);
          const text = e.field && e.field !== "body" ? `${e.field}: ${e.message}` : e.message;
          return h(
            "li",
            {},
            line
              ? h("button", { type: "button", class: "link", onclick: () => editor.jump(line), "aria-label": `${text} (go to line ${line})` }, text)
              : text,
          );
        });
        editor.mark(lines);
        replace(problems, items.length ? h("ul", { class: "user-errors", role: "alert" }, ...items) : null);
      };

      editor.textarea.addEventListener("input", schedule);
      subject.addEventListener("input", schedule);
      format.addEventListener("change", schedule);

      const save = h("button", { type: "submit" }, "Save template");
      const form = h(
        "form",
        { class: "card compose-form" },
        field("Template name", name),
        field("Subject", subject),
        field("Format", format),
        h("div", { class: "field" }, h("label", { for: editor.textarea.id }, "Source"), editor.el),
        problems,
        h("div", { class: "actions" }, save),
        saveStatus,
      );
      form.addEventListener("submit", (event) => {
        event.preventDefault();
        void (async () => {
          save.disabled = true;
          replace(saveStatus, "Saving…");
          try {
            const fields = { name: name.value.trim(), subject: subject.value, body: editor.textarea.value, format: format.value as G.ContentFormat };
            const out = currentId
              ? (await request<G.UpdateTemplateMutation, G.UpdateTemplateMutationVariables>(key, C.UPDATE_TEMPLATE, { input: { id: currentId, ...fields } })).updateTemplate
              : (await request<G.CreateTemplateMutation, G.CreateTemplateMutationVariables>(key, C.CREATE_TEMPLATE, { input: { kind: "CAMPAIGN", ...fields } })).createTemplate;
            if (out.userErrors.length || !out.template) {
              showProblems(out.userErrors);
              replace(saveStatus, scr.userErrors(out.userErrors));
              return;
            }
            currentId = out.template.id;
            // The address names the saved template (a reload edits it) without reading the page again.
            history.replaceState(null, "", `#/compose/${encodeURIComponent(currentId)}`);
            replace(
              saveStatus,
              h("p", {}, `Template “${out.template.name}” saved. `, h("a", { href: `#/campaigns/new?template=${encodeURIComponent(currentId)}` }, "New campaign with this template")),
            );
          } catch (err) {
            scr.showError(saveStatus, err, () => form.requestSubmit());
          } finally {
            save.disabled = false;
          }
        })();
      });

      const others = saved.templates.edges.map((e) => e.node).filter((t) => t.id !== currentId);
      replace(
        scr.main,
        h("div", { class: "title-row" }, h("h1", {}, template ? `Compose: ${template.name}` : "Compose"), h("a", { href: "#/campaigns/new" }, "New campaign")),
        h(
          "div",
          { class: "compose" },
          form,
          h("section", { class: "card preview-pane", "aria-labelledby": "preview-title" }, h("h2", { id: "preview-title" }, "Preview"), state, subjectOut, frame),
        ),
        others.length
          ? h("nav", { "aria-label": "Saved templates" }, h("h2", {}, "Saved templates"), h("ul", {}, ...others.map((t) => h("li", {}, h("a", { href: `#/compose/${encodeURIComponent(t.id)}` }, t.name), ` (${t.format})`))))
          : null,
      );
      editor.sync();
      void preview();
    },
  );
}

/** A textarea with a gutter of line numbers that scrolls with it; error lines are marked in the gutter. */
function lineEditor(text: string): { el: HTMLElement; textarea: HTMLTextAreaElement; mark: (lines: Set<number>) => void; jump: (line: number) => void; sync: () => void } {
  const textarea = h("textarea", { spellcheck: "false", wrap: "off", rows: 22, autocapitalize: "off", "aria-describedby": "editor-help" });
  textarea.id = "compose-source";
  textarea.value = text;
  const gutter = h("div", { class: "gutter", "aria-hidden": "true" });
  let bad = new Set<number>();
  let count = 0;
  const numbers = () => {
    const n = textarea.value.split("\n").length;
    if (n === count && !gutter.dataset.dirty) return;
    count = n;
    delete gutter.dataset.dirty;
    const spans: HTMLElement[] = [];
    for (let i = 1; i <= n; i++) spans.push(h("span", { class: bad.has(i) ? "bad" : null }, String(i)));
    replace(gutter, ...spans);
    gutter.scrollTop = textarea.scrollTop;
  };
  textarea.addEventListener("input", numbers);
  textarea.addEventListener("scroll", () => {
    gutter.scrollTop = textarea.scrollTop;
  });
  const el = h("div", { class: "editor" }, gutter, textarea);
  return {
    el: h("div", {}, el, h("p", { id: "editor-help", class: "muted small" }, "Tab moves to the next field; errors name their line: choose one to go to it.")),
    textarea,
    mark(lines) {
      bad = lines;
      gutter.dataset.dirty = "1";
      numbers();
    },
    jump(line) {
      const lines = textarea.value.split("\n");
      const target = Math.min(Math.max(line, 1), lines.length);
      let start = 0;
      for (let i = 0; i < target - 1; i++) start += lines[i].length + 1;
      textarea.focus();
      textarea.setSelectionRange(start, start + lines[target - 1].length);
      const lineHeight = parseFloat(getComputedStyle(textarea).lineHeight) || 20;
      textarea.scrollTop = Math.max(0, (target - 1) * lineHeight - textarea.clientHeight / 3);
      gutter.scrollTop = textarea.scrollTop;
    },
    sync: numbers,
  };
}
