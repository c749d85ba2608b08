// Shared helpers of the staff UI: the API client, safe DOM building, formatting in the store's
// time zone and currency, and charts (uPlot, vendored in /vendor).

export const session = { csrf: "", username: "", role: "", store: null };

const ROLES = ["staff", "manager", "admin"];
export const atLeast = (role) => ROLES.indexOf(session.role) >= ROLES.indexOf(role);

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls /api/v1; throws ApiError with the server's plain message. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = session.csrf;
  let res;
  try {
    res = await fetch("/api/v1" + path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "The box cannot be reached. Check the network and try again.");
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const e = data && data.error;
    if (res.status === 401 && path !== "/session") window.dispatchEvent(new Event("signed-out"));
    throw new ApiError(res.status, e ? e.code : "http", e ? e.message : res.statusText);
  }
  return data;
}

/** Builds an element: h("p", {class: "x"}, "text", child). Text is always set as text (no HTML). */
export function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) el.addEventListener(k.slice(2), v);
    else if (k === "class") el.className = v;
    else if (v === true) el.setAttribute(k, "");
    else el.setAttribute(k, String(v));
  }
  for (const c of children.flat()) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

export function page(title, ...children) {
  document.title = `${title} · storebox`;
  const view = document.getElementById("view");
  view.replaceChildren(h("h1", { id: "page-title" }, title),
    ...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return view;
}

export function notice(text, kind = "info") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null }, text);
}

export function toast(text) {
  const t = document.getElementById("toast");
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ""; }, 5000);
}

/** A table: columns [{label, cell(row) -> node|string, cls}], rows; wrapped for narrow screens. */
export function table(caption, columns, rows, opts = {}) {
  const thead = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label))));
  const tbody = h("tbody", {});
  for (const r of rows) tbody.append(tableRow(columns, r, opts));
  if (rows.length === 0 && opts.empty) {
    tbody.append(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, opts.empty)));
  }
  const t = h("table", {}, h("caption", { class: opts.showCaption ? "" : "sr-only" }, caption), thead, tbody);
  return h("div", { class: "table-wrap" }, t);
}

export function tableRow(columns, r, opts = {}) {
  const tr = h("tr", opts.rowAttrs ? opts.rowAttrs(r) : {});
  for (const c of columns) {
    const v = c.cell(r);
    const td = h(c.header ? "th" : "td", { class: c.cls ? c.cls(r) : null, scope: c.header ? "row" : null });
    td.append(v instanceof Node ? v : document.createTextNode(v === undefined || v === null ? "" : String(v)));
    tr.append(td);
  }
  return tr;
}

// ---- formatting -------------------------------------------------------------------------------

const tz = () => (session.store && session.store.timezone) || "UTC";
const currency = () => (session.store && session.store.currency) || "EUR";

export function money(minor, cur) {
  if (minor === null || minor === undefined) return "no price";
  const f = new Intl.NumberFormat(undefined, { style: "currency", currency: cur || currency() });
  const digits = f.resolvedOptions().maximumFractionDigits;
  return f.format(minor / 10 ** digits);
}

export function when(iso, opts) {
  if (!iso) return "never";
  return new Intl.DateTimeFormat(undefined, opts || { dateStyle: "medium", timeStyle: "short", timeZone: tz() })
    .format(new Date(iso));
}

export function day(iso) {
  return new Intl.DateTimeFormat(undefined, { weekday: "short", day: "numeric", month: "short", timeZone: tz() })
    .format(new Date(iso));
}

export function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return `${s} s ago`;
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return when(iso);
}

/** "1 product", "3 products". */
export const plural = (n, word, many) => `${n} ${n === 1 ? word : many || word + "s"}`;

export function duration(seconds) {
  const s = Math.round(seconds);
  const d = Math.floor(s / 86400), hh = Math.floor((s % 86400) / 3600), m = Math.floor((s % 3600) / 60);
  if (d) return `${d} d ${hh} h`;
  if (hh) return `${hh} h ${m} min`;
  if (m) return `${m} min`;
  return `${s} s`;
}

/** Store-local "YYYY-MM-DDTHH:MM" for a datetime-local input. */
export function localInputValue(date) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-CA", {
    timeZone: tz(), year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hourCycle: "h23",
  }).formatToParts(date).map((p) => [p.type, p.value]));
  return `${parts.year}-${parts.month}-${parts.day}T${parts.hour}:${parts.minute}`;
}

export const KIND_NAMES = {
  lane: "Checkout lane", scale: "Scale", label: "Shelf label", fridge: "Fridge sensor",
  printer: "Printer", kiosk: "Kiosk", generic: "Other device",
};

export function promoText(kind, params, cur) {
  const p = params || {};
  switch (kind) {
    case "percent_off": return `${p.percent}% off`;
    case "amount_off": return `${money(p.amount, cur)} off each`;
    case "multi_buy": return `${p.quantity} for ${money(p.price, cur)}`;
    case "buy_x_get_y": return `buy ${p.buy}, get ${p.get} free`;
    default: return kind;
  }
}

// ---- charts ---------------------------------------------------------------------------------

/**
 * A chart (uPlot) inside a <figure> with a text description for screen readers.
 * series: [{label, values, color}], x: unix seconds. opts.bars draws bars, opts.stepped steps.
 */
export function chart(description, x, series, opts = {}) {
  const box = h("div", { class: "chart", role: "img", "aria-label": description });
  const legend = series.length > 1 ? h("ul", { class: "legend" }, series.map((s) => {
    const key = h("span", { class: "key", "aria-hidden": "true" });
    key.style.background = s.color || "#1d4e89";
    return h("li", {}, key, s.label);
  })) : null;
  const fig = h("figure", {}, box, legend, h("figcaption", {}, description));
  if (!window.uPlot) {
    box.append(notice("Charts could not be loaded."));
    return fig;
  }
  const bars = opts.bars ? window.uPlot.paths.bars({ size: [0.7, 60] }) : undefined;
  const stepped = opts.stepped ? window.uPlot.paths.stepped({ align: 1 }) : undefined;
  const make = () => {
    const width = Math.max(280, box.clientWidth || 600);
    const u = new window.uPlot({
      width, height: opts.height || 220,
      legend: { show: false },
      cursor: { drag: { x: false, y: false } },
      scales: { x: { time: opts.time !== false } },
      axes: [
        { stroke: "#333", grid: { stroke: "#e3e6ea" }, values: opts.xValues },
        { stroke: "#333", grid: { stroke: "#e3e6ea" }, values: opts.yValues, size: 70 },
      ],
      tzDate: opts.time === false ? undefined : (ts) => window.uPlot.tzDate(new Date(ts * 1e3), tz()),
      series: [{}, ...series.map((s) => ({
        label: s.label, stroke: s.color || "#1d4e89", width: 2,
        fill: opts.bars ? (s.fill || "#7aa6d6") : undefined,
        paths: bars || stepped, points: { show: !opts.bars && x.length < 40 },
      }))],
    }, [x, ...series.map((s) => s.values)], box);
    return u;
  };
  // Size it once it is in the page.
  requestAnimationFrame(() => { if (box.isConnected) make(); });
  return fig;
}
