// New campaign: a list (made here if needed), then the campaign with either an HTML body typed here or a
// template saved from the compose page (#/compose), which links back here with ?template=<id>.
import { request } from "../api";
import { field, h, replace } from "../dom";
import type * as G from "../generated/graphql";
import * as Op from "../operations";
import * as C from "../operations-campaigns";
import { canWrite } from "./screen";
import type { Shell } from "./shell";

export function renderNewCampaign(scr: Shell, chosenTemplate: string | null): void {
  const key = scr.key;
  if (!canWrite(scr)) {
    replace(scr.main, h("p", {}, "This API key is read-only (VIEWER): it cannot create campaigns."));
    return;
  }
  void scr.load(() => request<G.NewCampaignChoicesQuery>(key, C.NEW_CAMPAIGN_CHOICES), (data) => {
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
            replace(listErrors, scr.userErrors(r.createList.userErrors));
            return;
          }
          lists.push(r.createList.list);
          fillLists(lists, r.createList.list.id);
          replace(listErrors, h("p", { role: "status" }, `List “${r.createList.list.name}” created.`));
          listName.value = "";
        } catch (err) {
          scr.showError(listErrors, err, () => listForm.requestSubmit());
        }
      })();
    });

    const templates = data.templates.edges.map((e) => e.node);
    const content = h(
      "select",
      {},
      h("option", { value: "" }, "The HTML body below"),
      ...templates.map((t) => h("option", { value: t.id, selected: t.id === chosenTemplate }, `Template: ${t.name} (${t.format})`)),
    );
    const name = h("input", { type: "text", required: true });
    const subject = h("input", { type: "text", required: true });
    const fromEmail = h("input", { type: "email", required: true });
    const fromName = h("input", { type: "text" });
    const body = h("textarea", { rows: 8 });
    body.value = "<p>Hello {{ subscriber.name or 'there' }},</p>\n<p></p>";
    const bodyField = field("Body (HTML)", body);
    const picked = () => templates.find((t) => t.id === content.value);
    const showContent = () => {
      const t = picked();
      bodyField.hidden = Boolean(t);
      body.required = !t;
      if (t && !subject.value) subject.value = t.subject;
    };
    content.addEventListener("change", showContent);
    showContent();
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
      field("Content", content),
      h("p", { class: "muted small" }, "Or ", h("a", { href: "#/compose" }, "write a template in the MJML editor"), " with a live preview, then come back with it."),
      bodyField,
      h("button", { type: "submit" }, "Create campaign"),
      errors,
    );
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      void (async () => {
        try {
          const t = picked();
          const r = await request<G.CreateCampaignFromMutation, G.CreateCampaignFromMutationVariables>(key, C.CREATE_CAMPAIGN_FROM, {
            input: {
              name: name.value.trim(),
              subject: subject.value,
              fromEmail: fromEmail.value.trim(),
              fromName: fromName.value.trim() || null,
              listIds: listSelect.value ? [listSelect.value] : null,
              ...(t ? { templateId: t.id } : { body: body.value, format: "HTML" as const }),
            },
          });
          if (r.createCampaign.userErrors.length || !r.createCampaign.campaign) {
            replace(errors, scr.userErrors(r.createCampaign.userErrors));
            return;
          }
          window.location.hash = `#/campaigns/${encodeURIComponent(r.createCampaign.campaign.id)}`;
        } catch (err) {
          scr.showError(errors, err, () => form.requestSubmit());
        }
      })();
    });
    replace(scr.main, h("h1", {}, "New campaign"), h("div", { class: "columns" }, form, listForm));
  });
}
