// Support guides (operator): write or replace a guide (Markdown) for alert codes and ticket
// categories, for all stores, groups or stores; preview it exactly as stores render it
// (POST /hq/v1/guides/preview); publish as guide.upsert, or withdraw one with guide.delete. The
// published guides are listed first (GET /hq/v1/guides); "Edit" loads one into the form.
import { api, h, notice, page, table } from "../lib.js";

const CATEGORIES = ["pos", "scale", "printer", "fridge", "network", "prices", "other"];

function field(id, label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "muted", id: `${id}-hint` }, hint) : null);
}

const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

function targetText(targets) {
  return targets.map((t) => (t.all ? "all stores" : `${t.kind} ${t.name}`)).join(", ");
}

function target(kind, names) {
  if (kind === "groups") return { groups: list(names) };
  if (kind === "stores") return { stores: list(names) };
  return { all: true };
}

export async function guidesPage() {
  const v = (id) => document.getElementById(id).value;
  const status = h("div", { id: "guide-status", "aria-live": "polite" });
  const say = (text, kind) => document.getElementById("guide-status").replaceChildren(notice(text, kind));
  const preview = h("div", { id: "guide-preview", class: "guide-preview" });
  const cats = h("fieldset", {}, h("legend", {}, "Ticket categories"),
    CATEGORIES.map((c) => h("label", { class: "check" }, h("input", { type: "checkbox", name: "guide-cat", value: c }), ` ${c}`)));
  const kind = h("select", { id: "guide-target" }, h("option", { value: "all" }, "All stores"),
    h("option", { value: "groups" }, "Groups"), h("option", { value: "stores" }, "Stores"));
  const form = h("form", { "aria-label": "Guide", onsubmit: async (e) => {
    e.preventDefault();
    const categories = [...document.querySelectorAll("input[name=guide-cat]:checked")].map((x) => x.value);
    const payload = { id: v("guide-id").trim(), title: v("guide-title").trim(), body: v("guide-body"),
      alert_codes: list(v("guide-codes")), ticket_categories: categories };
    try {
      await api("POST", "/events", { target: target(v("guide-target"), v("guide-names")), events: [{ type: "guide.upsert", payload }] });
      say(`Guide ${payload.id} published.`);
    } catch (err) {
      say(err.message, "error");
    }
  } },
  field("guide-id", "Guide id", h("input", { id: "guide-id", required: true }), "Publishing an existing id replaces that guide."),
  field("guide-title", "Title", h("input", { id: "guide-title", required: true })),
  field("guide-body", "Text (Markdown)", h("textarea", { id: "guide-body", rows: 10, required: true })),
  field("guide-codes", "Alert codes (comma separated)", h("input", { id: "guide-codes" })),
  cats,
  field("guide-target", "For", kind),
  field("guide-names", "Group or store ids (comma separated; for groups or stores)", h("input", { id: "guide-names" })),
  h("button", { type: "button", onclick: async () => {
    try {
      const r = await api("POST", "/guides/preview", { body: v("guide-body") });
      // The HTML comes from HQ's renderer, which escapes raw HTML and drops unsafe links.
      preview.innerHTML = r.html;
    } catch (err) {
      say(err.message, "error");
    }
  } }, "Preview"),
  h("button", { type: "submit" }, "Publish guide"),
  h("button", { type: "button", onclick: async () => {
    try {
      await api("POST", "/events", { target: target(v("guide-target"), v("guide-names")), events: [{ type: "guide.delete", payload: { id: v("guide-id").trim() } }] });
      say(`Guide ${v("guide-id").trim()} withdrawn.`);
    } catch (err) {
      say(err.message, "error");
    }
  } }, "Withdraw guide"));
  const { guides } = await api("GET", "/guides");
  const edit = (g) => {
    const set = (id, value) => { document.getElementById(id).value = value; };
    set("guide-id", g.id);
    set("guide-title", g.title || "");
    set("guide-body", g.body || "");
    set("guide-codes", (g.alert_codes || []).join(", "));
    for (const box of document.querySelectorAll("input[name=guide-cat]")) box.checked = (g.ticket_categories || []).includes(box.value);
    const t = g.targets || [];
    const kindOf = t.some((x) => x.all) ? "all" : t.every((x) => x.kind === "group") ? "groups" : "stores";
    set("guide-target", kindOf);
    set("guide-names", kindOf === "all" ? "" : t.filter((x) => !x.all).map((x) => x.name).join(", "));
    document.getElementById("guide-title").focus();
  };
  const published = table("Published guides", [
    { label: "Guide", header: true, cell: (g) => g.title },
    { label: "Id", cell: (g) => g.id },
    { label: "Alert codes", cell: (g) => (g.alert_codes || []).join(", ") },
    { label: "Ticket categories", cell: (g) => (g.ticket_categories || []).join(", ") },
    { label: "For", cell: (g) => targetText(g.targets || []) },
    { label: "Actions", cell: (g) => h("button", { type: "button", class: "secondary", "aria-label": `Edit ${g.title}`, onclick: () => edit(g) }, "Edit") },
  ], guides, { empty: "No guide published yet." });
  page("Support guides", status, h("h2", {}, "Published"), published, h("h2", {}, "Write a guide"), form, h("h2", {}, "Preview"), preview);
}
