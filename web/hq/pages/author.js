// Authoring (operator, admin): catalog items, prices, promotions and notices for all stores, some
// groups or some stores. "Preview" asks HQ what would change in each store and when, in the
// store's own time zone (POST /hq/v1/preview, nothing written); "Publish" sends exactly the
// previewed request (POST /hq/v1/events). HQ validates both the same way; its error is shown next
// to the field it names. CSV upload (POST /hq/v1/import) shows the line HQ refused.
import { api, h, notice, page, plural, session } from "../lib.js";

const KINDS = {
  price: "Price",
  promotion: "Promotion",
  item: "Catalog item",
  notice: "Notice to staff",
};

// The fields of each kind: [name, label, type, hint]
const FIELDS = {
  price: [
    ["sku", "SKU", "text", ""],
    ["price", "Price in minor units (129 = 1.29)", "number", ""],
    ["starts_at", "Starts", "datetime-local", "Store-local time: each store starts at this time on its own clock."],
    ["ends_at", "Ends (optional)", "datetime-local", "Store-local, exclusive. Empty: until replaced."],
    ["id", "Price id (optional)", "text", "Reuse an id to change an earlier price; empty: a new id."],
  ],
  promotion: [
    ["name", "Name", "text", "Shown on receipts."],
    ["kind", "Kind", "select:percent_off,amount_off,multi_buy,buy_x_get_y", ""],
    ["params", "Parameters (JSON)", "text", "e.g. {\"percent\":20}, {\"amount\":50}, {\"quantity\":3,\"price\":200}, {\"buy\":2,\"get\":1}"],
    ["skus", "SKUs (comma separated)", "text", ""],
    ["starts_at", "Starts", "datetime-local", "Store-local time."],
    ["ends_at", "Ends (optional)", "datetime-local", "Store-local, exclusive."],
    ["id", "Promotion id (optional)", "text", "Reuse an id to change a promotion."],
  ],
  item: [
    ["sku", "SKU", "text", ""],
    ["name", "Name", "text", ""],
    ["unit", "Sold by", "select:each,kg", "each: by the piece; kg: by weight (price per kg)."],
    ["department", "Department (optional)", "text", ""],
    ["barcodes", "Barcodes (comma separated, optional)", "text", ""],
  ],
  notice: [
    ["message", "Message", "textarea", "Shown on the store's staff displays (up to 4096 bytes)."],
  ],
};

let fleet = { stores: [], groups: [] };
let previewed = null; // the request the shown preview is for

const $ = (id) => document.getElementById(id);
const val = (name) => { const el = $(`f-${name}`); return el ? el.value.trim() : ""; };
const list = (s) => s.split(",").map((x) => x.trim()).filter(Boolean);
// datetime-local gives "2026-12-01T08:00"; HQ wants seconds. No offset: store-local.
const storeTime = (s) => (s && s.length === 16 ? `${s}:00` : s);
const newId = (p) => `${p}-${Date.now().toString(36)}`;

function buildEvent(kind) {
  switch (kind) {
    case "price": return { type: "price.set", payload: {
      id: val("id") || newId("price"), sku: val("sku"), price: Number(val("price")),
      starts_at: storeTime(val("starts_at")), ends_at: val("ends_at") ? storeTime(val("ends_at")) : null } };
    case "promotion": {
      let params = {};
      try { params = JSON.parse(val("params") || "{}"); } catch { throw fieldError("params", "Parameters must be JSON, e.g. {\"percent\":20}"); }
      return { type: "promotion.upsert", payload: {
        id: val("id") || newId("promo"), name: val("name"), kind: val("kind"), params,
        skus: list(val("skus")), starts_at: storeTime(val("starts_at")),
        ends_at: val("ends_at") ? storeTime(val("ends_at")) : null } };
    }
    case "item": return { type: "catalog.upsert", payload: {
      sku: val("sku"), name: val("name"), unit: val("unit"),
      department: val("department") || null, barcodes: list(val("barcodes")) } };
    default: return { type: "notice.post", payload: { message: val("message") } };
  }
}

function fieldError(field, message) {
  const e = new Error(message);
  e.field = field;
  return e;
}

function buildTarget() {
  const how = document.querySelector("input[name=target]:checked").value;
  if (how === "all") return { all: true };
  const sel = $(how === "groups" ? "t-groups" : "t-stores");
  const picked = [...sel.selectedOptions].map((o) => o.value);
  if (!picked.length) throw fieldError(how === "groups" ? "t-groups" : "t-stores", `Pick at least one ${how === "groups" ? "group" : "store"}.`);
  return how === "groups" ? { groups: picked } : { stores: picked };
}

function clearErrors() {
  for (const el of document.querySelectorAll("#author-form .error")) el.textContent = "";
  for (const el of document.querySelectorAll("#author-form [aria-invalid]")) el.removeAttribute("aria-invalid");
  $("author-msg").replaceChildren();
}

/** Shows HQ's message next to the field it names (or above the buttons). */
function showError(message, field) {
  const kind = $("f-kind").value;
  const names = FIELDS[kind].map((f) => f[0]);
  // HQ's message: "events[0]: price.set ID: price -5 for sku 1001 is negative"; the field is the
  // first field name after the event's prefix.
  const rest = message.replace(/^events\[\d+\]:\s*/, "").replace(/^[a-z]+\.[a-z]+ [^:\s]*:\s*/, "");
  const hits = names.map((n) => [n, rest.search(new RegExp(`\\b${n}\\b`))]).filter(([, i]) => i >= 0);
  hits.sort((a, b) => a[1] - b[1]);
  const named = field || (hits.length ? hits[0][0] : null);
  const slot = named && $(`err-${named}`);
  if (slot) {
    slot.textContent = message;
    const input = $(named.startsWith("t-") ? named : `f-${named}`);
    if (input) { input.setAttribute("aria-invalid", "true"); input.focus(); }
  }
  $("author-msg").replaceChildren(notice(slot ? `Not accepted: ${message}` : message, "error"));
}

function fieldNode([name, label, type, hint]) {
  const id = `f-${name}`;
  const described = [hint ? `hint-${name}` : null, `err-${name}`].filter(Boolean).join(" ");
  let input;
  if (type.startsWith("select:")) {
    input = h("select", { id, name, "aria-describedby": described }, type.slice(7).split(",").map((o) => h("option", { value: o }, o)));
  } else if (type === "textarea") {
    input = h("textarea", { id, name, rows: "3", "aria-describedby": described });
  } else {
    input = h("input", { id, name, type, "aria-describedby": described, step: type === "number" ? "1" : null });
  }
  return h("div", { class: "field" },
    h("label", { for: id }, label), input,
    hint ? h("small", { id: `hint-${name}`, class: "muted" }, hint) : null,
    h("span", { id: `err-${name}`, class: "error", "aria-live": "polite" }));
}

function renderFields() {
  $("kind-fields").replaceChildren(...FIELDS[$("f-kind").value].map(fieldNode));
  invalidatePreview();
}

function invalidatePreview() {
  previewed = null;
  const p = $("publish");
  if (p) p.disabled = true;
  const box = $("preview");
  if (box && box.childElementCount) box.replaceChildren(notice("The form changed: preview again before publishing."));
}

function fmtPrice(p) {
  return p == null ? "no price" : (p / 100).toFixed(2);
}

function previewStore(title, p) {
  const zone = p.timezone_known ? p.timezone : "UTC (this store has not reported its time zone)";
  const items = [];
  for (const s of p.skus) {
    const steps = s.changes.map((c) => h("li", {}, `from ${c.at.replace("T", " ")}: ${fmtPrice(c.price)}`));
    items.push(h("li", {}, h("strong", {}, `SKU ${s.sku}`),
      `: now ${fmtPrice(s.price_now)}${s.price_now !== s.price_now_before ? ` (was ${fmtPrice(s.price_now_before)})` : ""}`,
      steps.length ? h("ul", {}, steps) : h("span", { class: "muted" }, "; no change within the week")));
  }
  for (const pr of p.promotions) {
    items.push(h("li", {}, h("strong", {}, `Promotion ${pr.name || pr.id}`), `: ${pr.when}`,
      pr.starts ? `, from ${pr.starts.replace("T", " ")}` : "", pr.ends ? ` until ${pr.ends.replace("T", " ")}` : ""));
  }
  if (p.catalog_upserts.length) items.push(h("li", {}, `Catalog items added or changed: ${p.catalog_upserts.join(", ")}`));
  if (p.catalog_deletes.length) items.push(h("li", {}, `Catalog items removed: ${p.catalog_deletes.join(", ")}`));
  if (p.notices) items.push(h("li", {}, `${plural(p.notices, "notice")} shown to staff on arrival`));
  return h("section", { class: "card preview-store" },
    h("h3", {}, title),
    h("p", { class: "muted" }, `Times in ${zone}; week from ${p.now.replace("T", " ")} to ${p.until.replace("T", " ")}.`),
    items.length ? h("ul", {}, items) : h("p", {}, "Nothing changes here."));
}

function renderPreview(v) {
  const box = $("preview");
  const parts = [h("h2", { id: "preview-title", tabindex: "-1" }, `Preview: ${plural(v.affected, "store")} affected`)];
  if (v.affected === 0) parts.push(notice("No store is in this target.", "error"));
  if (v.per === "store") {
    for (const s of v.stores) parts.push(previewStore(`Store ${s.store}${s.group ? ` (group ${s.group})` : ""}`, s.preview));
  } else {
    parts.push(notice(`Many stores: one preview per group and time zone, computed for an example store.${v.groups_omitted ? ` ${v.groups_omitted} more groups not shown.` : ""}`));
    for (const g of v.groups) parts.push(previewStore(`Group ${g.group || "(none)"}: ${plural(g.stores, "store")} (e.g. ${g.example_store})`, g.preview));
  }
  box.replaceChildren(...parts);
  $("preview-title").focus();
}

async function doPreview(ev) {
  ev.preventDefault();
  clearErrors();
  let body;
  try {
    body = { target: buildTarget(), events: [buildEvent($("f-kind").value)] };
  } catch (e) {
    showError(e.message, e.field);
    return;
  }
  try {
    const v = await api("POST", "/preview", body);
    renderPreview(v);
    previewed = body;
    $("publish").disabled = false;
  } catch (e) {
    showError(e.message);
  }
}

async function doPublish() {
  if (!previewed) return;
  clearErrors();
  try {
    const v = await api("POST", "/events", previewed);
    $("author-msg").replaceChildren(notice(`Published (${plural(v.accepted, "event")}, feed position ${v.last_seq}). Stores receive it on their next sync.`));
    previewed = null;
    $("publish").disabled = true;
  } catch (e) {
    showError(e.message);
  }
}

async function doImport(ev) {
  ev.preventDefault();
  const out = $("csv-msg");
  out.replaceChildren();
  const file = $("csv-file").files[0];
  if (!file) { out.replaceChildren(notice("Choose a CSV file first.", "error")); return; }
  let target;
  try {
    const t = buildTarget();
    target = t.all ? "all" : t.groups ? t.groups.map((g) => `group:${g}`).join(",") : t.stores.map((s) => `store:${s}`).join(",");
  } catch (e) { out.replaceChildren(notice(e.message, "error")); return; }
  const res = await fetch(`/hq/v1/import?target=${encodeURIComponent(target)}`, {
    method: "POST", credentials: "same-origin",
    headers: { "Content-Type": "text/csv", "X-CSRF-Token": session.csrf, Accept: "application/json" },
    body: file,
  }).catch(() => null);
  const data = res ? await res.json().catch(() => null) : null;
  if (!res) out.replaceChildren(notice("HQ cannot be reached.", "error"));
  else if (res.ok) out.replaceChildren(notice(`Imported ${plural(data.accepted, "row")}.`));
  else {
    const e = (data && data.error) || { message: res.statusText };
    out.replaceChildren(notice(e.line ? `Line ${e.line} of ${file.name}: ${e.message.replace(/^line \d+: /, "")}` : e.message, "error"));
  }
}

export async function authorPage() {
  const v = await api("GET", "/stores");
  fleet.stores = v.stores.map((s) => s.id);
  fleet.groups = [...new Set(v.stores.map((s) => s.group).filter(Boolean))].sort();
  const radio = (value, label, checked) => h("label", { class: "check" },
    h("input", { type: "radio", name: "target", value, checked, onchange: invalidatePreview }), label);
  const multi = (id, label, options) => h("div", { class: "field" },
    h("label", { for: id }, label),
    h("select", { id, multiple: true, size: String(Math.min(6, Math.max(2, options.length))), "aria-describedby": `err-${id}`, onchange: invalidatePreview },
      options.map((o) => h("option", { value: o }, o))),
    h("span", { id: `err-${id}`, class: "error", "aria-live": "polite" }));
  page("Author data",
    h("p", {}, "Prices, promotions, catalog items and notices for your stores. Times are store-local: a price from 08:00 starts at 08:00 on each store's own clock, whatever its time zone. Preview shows what changes in each store and when before you publish."),
    h("form", { id: "author-form", class: "card", novalidate: true, oninput: invalidatePreview, onsubmit: doPreview },
      h("fieldset", {}, h("legend", {}, "Who receives it"),
        radio("all", "All stores", true), radio("groups", "Groups", false), radio("stores", "Single stores", false),
        multi("t-groups", "Groups that receive it", fleet.groups), multi("t-stores", "Stores that receive it", fleet.stores)),
      h("div", { class: "field" }, h("label", { for: "f-kind" }, "What"),
        h("select", { id: "f-kind", onchange: renderFields }, Object.entries(KINDS).map(([k, l]) => h("option", { value: k }, l)))),
      h("div", { id: "kind-fields" }),
      h("div", { class: "actions" },
        h("button", { type: "submit", id: "preview-btn" }, "Preview"),
        h("button", { type: "button", id: "publish", disabled: true, onclick: doPublish }, "Publish")),
      h("div", { id: "author-msg", "aria-live": "polite" })),
    h("div", { id: "preview", "aria-live": "polite" }),
    h("form", { id: "csv-form", class: "card", onsubmit: doImport },
      h("h2", {}, "Upload a CSV"),
      h("p", {}, "Header sku,name,department,unit,barcodes for items or id,sku,price,starts_at,ends_at for prices. Up to 128 MiB; all rows or none are applied. Sent to the target chosen above."),
      h("div", { class: "field" }, h("label", { for: "csv-file" }, "CSV file"), h("input", { id: "csv-file", type: "file", accept: ".csv,text/csv" })),
      h("button", { type: "submit" }, "Upload"),
      h("div", { id: "csv-msg", "aria-live": "polite" })));
  renderFields();
}
