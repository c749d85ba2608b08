// Prices and promotions: find a product, see its price now and why, what it will cost at a
// given time, its upcoming changes, and the promotions calendar.
import { api, chart, day, h, localInputValue, money, notice, page, promoText, session, table, when } from "../lib.js";

const RECORD_STATE = {
  in_effect: "In effect now",
  overridden: "Replaced by a newer price",
  not_started: "Not started yet",
  ended: "Ended",
  never: "Never applies (ends before it starts)",
};
const PROMO_STATE = {
  active: "Running",
  not_started: "Not started yet",
  ended: "Ended",
  not_for_unit: "Does not apply to products sold by weight",
};

function searchForm(initial) {
  const input = h("input", { type: "search", name: "q", id: "product-search", value: initial || "", required: true, autocomplete: "off" });
  const form = h("form", { class: "inline", role: "search" },
    h("label", {}, "Product name, sku or barcode", input), h("button", { type: "submit" }, "Find"));
  form.addEventListener("submit", (ev) => {
    ev.preventDefault();
    const next = `#/prices?q=${encodeURIComponent(input.value.trim())}`;
    if (location.hash === next) pricesPage(); else location.hash = next;
  });
  return form;
}

export async function pricesPage() {
  const q = new URLSearchParams(location.hash.split("?")[1] || "").get("q") || "";
  const children = [searchForm(q)];
  if (q) {
    const r = await api("GET", `/catalog?q=${encodeURIComponent(q)}&limit=50`);
    children.push(table(`Products matching ${q}`, [
      { label: "Product", header: true, cell: (i) => h("a", { href: `#/prices/${encodeURIComponent(i.sku)}` }, i.name) },
      { label: "Sku", cell: (i) => i.sku },
      { label: "Barcodes", cell: (i) => i.barcodes.join(", ") },
      { label: "Department", cell: (i) => i.department || "" },
      { label: "Sold", cell: (i) => (i.unit === "kg" ? "by weight (per kg)" : "per unit") },
    ], r.items, { empty: `No product matches “${q}”.` }));
    if (r.items.length === 1 && (r.items[0].sku === q || r.items[0].barcodes.includes(q))) {
      location.hash = `#/prices/${encodeURIComponent(r.items[0].sku)}`;
      return;
    }
  } else {
    children.push(h("p", { class: "muted" }, "Type part of a product name, or scan or type a barcode or sku."));
  }
  page("Prices", ...children);
}

function why(w) {
  const cur = w.currency;
  const per = w.unit === "kg" ? " per kg" : "";
  if (w.price === null) {
    return [notice(`${w.name} has no price at this time and cannot be sold.`, "error")];
  }
  const inEffect = w.records.find((r) => r.state === "in_effect");
  const applied = w.promotions.find((p) => p.applied);
  const out = [
    h("p", { class: "price-now" },
      h("span", { class: "big", id: "price-value" }, money(w.one ? w.one.total : w.price, cur)), per,
      w.one && w.one.discount ? h("span", { class: "muted" }, ` (regular ${money(w.price, cur)}${per})`) : null),
    h("ul", { class: "why" },
      h("li", {}, `Regular price ${money(w.price, cur)}${per} from price record `, h("code", {}, inEffect.id),
        `, valid from ${when(inEffect.starts_at)}${inEffect.ends_at ? ` until ${when(inEffect.ends_at)}` : " with no end date"}.`),
      applied ? h("li", {}, `Promotion “${applied.name}” (${promoText(applied.kind, applied.params, cur)}) takes ${money(applied.discount_one, cur)} off ${w.unit === "kg" ? "each kg" : "one unit"}.`)
        : h("li", {}, "No promotion lowers the price of a single unit."),
      ...w.promotions.filter((p) => p.state === "active" && !p.applied).map((p) =>
        h("li", {}, `Also running: “${p.name}” (${promoText(p.kind, p.params, cur)})${p.discount_one === 0 ? ", which applies only when buying several" : ", a smaller discount"}.`)),
      w.next_change ? h("li", {}, `Next change: ${w.next_change.price === null ? "no price" : money(w.next_change.price, cur) + per} from ${when(w.next_change.at)}.`)
        : h("li", {}, "No price change is planned."),
    ),
  ];
  return out;
}

function recordsTable(w) {
  return table(`Price records of ${w.name}`, [
    { label: "Record", cell: (r) => h("code", {}, r.id) },
    { label: "Price", cell: (r) => money(r.price, w.currency) },
    { label: "From", cell: (r) => when(r.starts_at) },
    { label: "Until", cell: (r) => (r.ends_at ? when(r.ends_at) : "no end") },
    { label: "Used?", cell: (r) => h("span", { class: r.state === "in_effect" ? "pill ok" : "" }, RECORD_STATE[r.state] || r.state) },
  ], w.records, { empty: "This product has no price records." });
}

function promosTable(w) {
  return table(`Promotions for ${w.name}`, [
    { label: "Promotion", cell: (p) => p.name },
    { label: "Deal", cell: (p) => promoText(p.kind, p.params, w.currency) },
    { label: "From", cell: (p) => when(p.starts_at) },
    { label: "Until", cell: (p) => (p.ends_at ? when(p.ends_at) : "no end") },
    { label: "Reaches it by", cell: (p) => ({ sku: "product", department: "department", sku_and_department: "product and department" }[p.targets]) },
    { label: "State", cell: (p) => h("span", { class: p.applied ? "pill ok" : "" }, (PROMO_STATE[p.state] || p.state) + (p.applied ? ", applied" : "")) },
  ], w.promotions, { empty: "No promotion reaches this product." });
}

export async function productPage(sku) {
  const enc = encodeURIComponent(sku);
  const [w, tl] = await Promise.all([api("GET", `/prices/${enc}/explain`), api("GET", `/prices/${enc}/timeline`)]);
  const cur = w.currency;

  // What will it cost at <date time> (store time).
  const atInput = h("input", { type: "datetime-local", id: "price-at", required: true, value: localInputValue(new Date(Date.now() + 86400000)) });
  const atResult = h("div", { id: "price-at-result", "aria-live": "polite" });
  const atForm = h("form", { class: "inline" },
    h("label", {}, `Date and time (store time, ${session.store ? session.store.timezone : "UTC"})`, atInput),
    h("button", { type: "submit" }, "Show price"));
  atForm.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const at = atInput.value.length === 16 ? `${atInput.value}:00` : atInput.value;
    try {
      const r = await api("GET", `/prices/${enc}/explain?at=${encodeURIComponent(at)}`);
      atResult.replaceChildren(h("h3", {}, `At ${when(r.at)}`), ...why(r));
    } catch (e) { atResult.replaceChildren(notice(e.message, "error")); }
  });

  // Timeline: changes in the next 30 days.
  const pts = tl.points;
  const changes = pts.filter((p, i) => i === 0 || p.price !== pts[i - 1].price || p.one_total !== pts[i - 1].one_total || p.promotions.join() !== pts[i - 1].promotions.join());
  const end = Date.parse(tl.to) / 1000;
  const xs = [...changes.map((p) => Date.parse(p.at) / 1000), end];
  const last = changes[changes.length - 1];
  const timelineChart = changes.length > 1 ? chart(
    `Price of ${w.name} over the next 30 days: ${changes.length - 1} changes.`, xs,
    [{ label: "Regular", values: [...changes.map((p) => p.price), last.price], color: "#1d4e89" },
     { label: "With promotion", values: [...changes.map((p) => p.one_total), last.one_total], color: "#b5541c" }],
    { stepped: true, yValues: (u, v) => v.map((y) => money(Math.round(y), cur)) }) : null;
  const timelineTable = table(`Upcoming price changes of ${w.name}`, [
    { label: "From", cell: (p) => when(p.at) },
    { label: "Regular price", cell: (p) => money(p.price, cur) },
    { label: "One unit pays", cell: (p) => (p.one_total === null ? "cannot be sold" : money(p.one_total, cur)) },
    { label: "Promotions", cell: (p) => (p.promotions.length ? p.promotions.join(", ") : "none") },
  ], changes, {});

  page(w.name,
    h("p", {}, h("a", { href: "#/prices" }, "← Find another product")),
    h("p", { class: "muted" }, `Sku ${w.sku}${w.department ? `, department ${w.department}` : ""}, sold ${w.unit === "kg" ? "by weight" : "per unit"}.`),
    h("section", { "aria-labelledby": "now-h", id: "price-now" }, h("h2", { id: "now-h" }, "Price now and why"), ...why(w)),
    h("section", { "aria-labelledby": "at-h" }, h("h2", { id: "at-h" }, "What will it cost at…"), atForm, atResult),
    h("section", { "aria-labelledby": "tl-h" }, h("h2", { id: "tl-h" }, "Upcoming changes (next 30 days)"),
      timelineChart || h("p", { class: "muted" }, "No change in the next 30 days."), timelineTable),
    h("section", { "aria-labelledby": "rec-h" }, h("h2", { id: "rec-h" }, "All price records"), recordsTable(w)),
    h("section", { "aria-labelledby": "pr-h" }, h("h2", { id: "pr-h" }, "Promotions for this product"), promosTable(w)),
  );
}

export async function promotionsPage() {
  const cal = await api("GET", "/promotions");
  const cur = session.store ? session.store.currency : "EUR";
  const from = Date.parse(cal.from), to = Date.parse(cal.to);
  const span = to - from;
  const rows = cal.promotions.map((p) => {
    const s = Math.max(from, Date.parse(p.starts_at));
    const e = Math.min(to, p.ends_at ? Date.parse(p.ends_at) : to);
    const bar = h("div", { class: "bar", "aria-hidden": "true" });
    bar.style.marginLeft = `${((s - from) / span) * 100}%`;
    bar.style.width = `${Math.max(1, ((e - s) / span) * 100)}%`;
    return { p, bar };
  });
  const weeks = [];
  for (let t = from; t < to; t += 7 * 86400000) weeks.push(day(new Date(t).toISOString()));
  page("Promotions calendar",
    h("p", {}, `Promotions running between ${when(cal.from)} and ${when(cal.to)} (store time).`),
    cal.truncated ? notice("Only the first 1000 promotions are shown.") : null,
    h("div", { class: "calendar-scale", "aria-hidden": "true" }, weeks.map((w) => h("span", {}, w))),
    table("Promotions calendar", [
      { label: "Promotion", header: true, cell: ({ p }) => p.name },
      { label: "Deal", cell: ({ p }) => promoText(p.kind, p.params, cur) },
      { label: "For", cell: ({ p }) => [p.department ? `department ${p.department}` : null, p.skus.length ? `products ${p.skus.slice(0, 5).join(", ")}${p.skus.length > 5 ? "…" : ""}` : null].filter(Boolean).join(" and ") },
      { label: "Runs", cell: ({ p }) => `${when(p.starts_at)} – ${p.ends_at ? when(p.ends_at) : "no end"}` },
      { label: "Period", cls: () => "bar-cell", cell: ({ bar }) => h("div", { class: "bar-track" }, bar) },
    ], rows, { empty: "No promotions in this period." }));
}
