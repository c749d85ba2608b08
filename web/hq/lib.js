// Shared helpers of the HQ console: the API client (session cookie + CSRF token), safe DOM
// building, time formatting with the zone always named, and charts (uPlot, vendored).

export const session = { csrf: "", user: "", role: "" };

export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** Calls HQ's /hq/v1 API; throws ApiError with HQ's plain message. */
export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = session.csrf;
  let res;
  try {
    res = await fetch("/hq/v1" + path, {
      method, headers, credentials: "same-origin", cache: "no-store",
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    throw new ApiError(0, "network", "HQ cannot be reached. Check the network and try again.");
  }
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const e = data && data.error;
    if (res.status === 401) window.dispatchEvent(new Event("signed-out"));
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
  document.title = `${title} · storebox HQ`;
  const view = document.getElementById("view");
  view.replaceChildren(h("h1", { id: "page-title" }, title),
    ...children.flat().filter((c) => c !== null && c !== undefined && c !== false));
  return view;
}

export function notice(text, kind = "info") {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : null }, text);
}

/** A table: columns [{label, cell(row) -> node|string, header}], rows; scrolls on narrow screens. */
export function table(caption, columns, rows, opts = {}) {
  const thead = h("thead", {}, h("tr", {}, columns.map((c) => h("th", { scope: "col" }, c.label))));
  const tbody = h("tbody", {});
  for (const r of rows) tbody.append(tableRow(columns, r, opts));
  if (rows.length === 0 && opts.empty) {
    tbody.append(h("tr", {}, h("td", { colspan: columns.length, class: "muted" }, opts.empty)));
  }
  const t = h("table", {}, h("caption", { class: opts.showCaption ? "" : "sr-only" }, caption), thead, tbody);
  return h("div", { class: "table-wrap", tabindex: "0", role: "region", "aria-label": caption }, t);
}

export function tableRow(columns, r, opts = {}) {
  const tr = h("tr", opts.rowAttrs ? opts.rowAttrs(r) : {});
  for (const c of columns) {
    const v = c.cell(r);
    const td = h(c.header ? "th" : "td", { scope: c.header ? "row" : null });
    td.append(v instanceof Node ? v : document.createTextNode(v === undefined || v === null ? "" : String(v)));
    tr.append(td);
  }
  return tr;
}

// ---- formatting -------------------------------------------------------------------------------

/** A time in `zone` (IANA; UTC when unknown), with the zone named. */
export function when(iso, zone) {
  if (!iso) return "never";
  const tz = zone || "UTC";
  let f;
  try {
    f = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "medium", timeZone: tz });
  } catch {
    return when(iso, "UTC");
  }
  return `${f.format(new Date(iso))} ${tz}`;
}

export function ago(iso, nowIso) {
  if (!iso) return "never";
  const now = nowIso ? Date.parse(nowIso) : Date.now();
  const s = Math.max(0, Math.round((now - Date.parse(iso)) / 1000));
  if (s < 120) return `${s} s ago`;
  if (s < 7200) return `${Math.round(s / 60)} min ago`;
  if (s < 172800) return `${Math.round(s / 3600)} h ago`;
  return `${Math.round(s / 86400)} days ago`;
}

export const plural = (n, word, many) => `${n} ${n === 1 ? word : many || word + "s"}`;

export const HEALTH = {
  online: { label: "Online", cls: "ok" },
  degraded: { label: "Degraded", cls: "warn" },
  behind: { label: "Behind", cls: "warn" },
  offline: { label: "Offline", cls: "bad" },
};

/** A verdict as a pill with its word (never colour alone). */
export function healthPill(health) {
  const x = HEALTH[health] || { label: health, cls: "neutral" };
  return h("span", { class: `pill ${x.cls}`, "data-health": health }, x.label);
}

// ---- charts ---------------------------------------------------------------------------------

/**
 * A chart (uPlot) inside a <figure> with a text description for screen readers.
 * series: [{label, values, color}], x: unix seconds; times shown in `zone`.
 */
export function chart(description, x, series, zone, opts = {}) {
  const box = h("div", { class: "chart", role: "img", "aria-label": description });
  const legend = h("ul", { class: "legend" }, series.map((s) => {
    const key = h("span", { class: "key", "aria-hidden": "true" });
    key.style.background = s.color;
    return h("li", {}, key, s.label);
  }));
  const fig = h("figure", {}, box, legend, h("figcaption", {}, description));
  if (!window.uPlot) {
    box.append(notice("Charts could not be loaded."));
    return fig;
  }
  const make = () => new window.uPlot({
    width: Math.max(280, box.clientWidth || 600), height: opts.height || 200,
    legend: { show: false },
    cursor: { drag: { x: false, y: false } },
    // The x axis spans the window asked for (a single point does not stretch it to years); counts
    // start at 0 and are labelled as whole numbers.
    scales: {
      x: { time: true, range: opts.range ? () => opts.range : undefined },
      y: { range: (u, min, max) => [0, Math.max(1, Math.ceil(max))] },
    },
    axes: [
      { stroke: "#333", grid: { stroke: "#e3e6ea" } },
      { stroke: "#333", grid: { stroke: "#e3e6ea" }, size: 50, values: (u, v) => v.map((y) => (Number.isInteger(y) ? y : "")) },
    ],
    tzDate: (ts) => window.uPlot.tzDate(new Date(ts * 1e3), zone || "UTC"),
    series: [{}, ...series.map((s) => ({
      label: s.label, stroke: s.color, width: 2, points: { show: !opts.bars && x.length < 40 },
      fill: opts.bars ? s.color : undefined, paths: opts.bars ? window.uPlot.paths.bars({ size: [0.9, 24] }) : undefined,
    }))],
  }, [x, ...series.map((s) => s.values)], box);
  requestAnimationFrame(() => { if (box.isConnected) make(); });
  return fig;
}
