// Overview: is the store healthy? HQ link, devices, today's sales by hour, changes in the next 7 days.
import { api, ago, chart, day, duration, h, money, notice, page, plural, promoText, table, when } from "../lib.js";

export function syncSummary(s) {
  if (!s.configured) {
    return { text: "Standalone: no HQ configured", cls: "neutral", detail: "This store runs on its own; nothing is sent to or received from HQ." };
  }
  if (s.connected) {
    return { text: "Connected to HQ", cls: "ok", detail: `Last successful contact ${ago(s.last_success)}.` };
  }
  const err = s.last_error ? `Last error: ${s.last_error}${s.last_error_at ? ` (${ago(s.last_error_at)})` : ""}.` : "No contact with HQ yet.";
  return { text: "Not connected to HQ", cls: "bad", detail: err };
}

function card(title, value, cls, ...rest) {
  return h("section", { class: `card ${cls || ""}`, "aria-label": title },
    h("h2", {}, title), h("p", { class: "big" }, value), ...rest);
}

let refresh = null;

export async function overviewPage() {
  // Kept fresh while it is shown: reloaded every 30 s (not while the tab is hidden).
  clearInterval(refresh);
  refresh = setInterval(() => {
    const here = (location.hash || "#/") === "#/" && document.getElementById("page-title")?.textContent === "Overview";
    if (!here) clearInterval(refresh);
    else if (!document.hidden) overviewPage().catch(() => {});
  }, 30000);
  const o = await api("GET", "/overview");
  const s = o.sync;
  const sync = syncSummary(s);
  const d = o.devices;
  const sales = o.sales_today;
  const cur = o.currency;

  const cards = h("div", { class: "cards" },
    card("HQ connection", sync.text, sync.cls,
      h("p", {}, sync.detail),
      s.configured ? h("dl", { class: "facts" },
        h("dt", {}, "Last sync"), h("dd", {}, s.last_success ? when(s.last_success) : "never"),
        h("dt", {}, "Behind HQ"), h("dd", {}, s.lag_events == null ? "unknown" : `${plural(s.lag_events, "change")}${s.lag_seconds ? ` (${duration(s.lag_seconds)})` : ""}`),
        h("dt", {}, "Waiting to send"), h("dd", {}, `${s.outbox.business} sales and events, ${s.outbox.telemetry} readings`),
      ) : h("p", {}, `Waiting to send when HQ is set up: ${s.outbox.business} sales and events.`)),
    card("Devices", `${d.online} of ${d.total} online`, d.offline > 0 ? "warn" : "ok",
      h("ul", { class: "plain" },
        h("li", {}, h("a", { href: "#/devices" }, `${d.offline} offline`)),
        h("li", {}, h("a", { href: "#/alerts" }, `${d.with_alerts} with alerts (${plural(d.alerts_open, "open alert")})`)))),
    card("Today's sales", money(sales.total, cur), "neutral",
      h("p", {}, `${plural(sales.checkouts, "checkout")} on ${day(o.now)}`)),
  );

  const hours = sales.by_hour;
  const busiest = hours.reduce((a, b) => (b.total > a.total ? b : a), hours[0]);
  const salesChart = chart(
    sales.checkouts ? `Sales by hour today; busiest hour ${busiest.hour}:00 with ${money(busiest.total, cur)}.` : "Sales by hour today: no checkouts yet.",
    hours.map((b) => b.hour), [{ label: "Sales", values: hours.map((b) => b.total) }],
    { bars: true, time: false, xValues: (u, v) => v.map((x) => `${x}:00`), yValues: (u, v) => v.map((y) => money(Math.round(y), cur)) });

  const up = o.upcoming;
  const priceTable = table("Price changes in the next 7 days", [
    { label: "When", cell: (r) => when(r.at) },
    { label: "Product", cell: (r) => h("a", { href: `#/prices/${encodeURIComponent(r.sku)}` }, `${r.name} (${r.sku})`) },
    { label: "From", cell: (r) => money(r.from, cur) },
    { label: "To", cell: (r) => money(r.to, cur) },
  ], up.price_changes, { empty: "No price changes in the next 7 days." });
  const promoTable = table("Promotions starting or ending in the next 7 days", [
    { label: "When", cell: (r) => when(r.at) },
    { label: "Change", cell: (r) => (r.change === "starts" ? "Starts" : "Ends") },
    { label: "Promotion", cell: (r) => r.name },
    { label: "Deal", cell: (r) => promoText(r.kind, r.params, cur) },
    { label: "For", cell: (r) => [r.department ? `department ${r.department}` : null, r.skus.length ? plural(r.skus.length, "product") : null].filter(Boolean).join(" and ") },
  ], up.promotions, { empty: "No promotions start or end in the next 7 days." });

  // Device ingest cannot write (disk full, I/O error): devices get no acknowledgement until it can.
  const f = o.ingest_failure;
  const ingestAlert = f ? notice(
    `${f.code === "disk_full" ? "The disk is full" : "The box cannot write to its database"} since ${when(f.since)}: ` +
    `device messages are not being saved or acknowledged (devices keep and resend them). ` +
    `It recovers by itself once it can write again. Details: ${f.message}`, "error") : null;

  page("Overview",
    ingestAlert,
    h("p", { class: "muted" }, `${o.store_name} (${o.store_id}), ${when(o.now)} store time (${o.timezone}).`),
    cards,
    h("section", { "aria-labelledby": "sales-h" }, h("h2", { id: "sales-h" }, "Sales by hour today"), salesChart),
    h("section", { "aria-labelledby": "prices-h" }, h("h2", { id: "prices-h" }, "Price changes in the next 7 days"),
      up.price_skus_total > up.price_changes.length ? notice(`Showing the first ${up.price_changes.length}; ${up.price_skus_total} products change.`) : null,
      priceTable),
    h("section", { "aria-labelledby": "promos-h" }, h("h2", { id: "promos-h" }, "Promotions starting or ending in the next 7 days"), promoTable),
  );
}
