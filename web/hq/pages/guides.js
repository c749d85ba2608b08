// Support guides (operator): write or replace a guide (Markdown) for alert codes and ticket
// categories, for all stores, groups or stores; preview it exactly as stores render it
// (POST /hq/v1/guides/preview); publish as guide.upsert, or withdraw one with guide.delete.
import { api, h, notice, page } from "../lib.js";

const CATEGORIES = ["pos", "scale", "printer", "fridge", "network", "prices", "other"];

function field(id, label, control, hint) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control, hint ? h("p", { class: "muted", id: `${id}-hint` }, hint) : null);
}

const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);

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
  page("Support guides", status, form, h("h2", {}, "Preview"), preview);
}
