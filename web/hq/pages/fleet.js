// Fleet: every store with its health verdict (online, degraded, behind, offline) and why, kept
// live by the fleet stream (Server-Sent Events, /hq/v1/fleet/stream) without reloading.
// Filters: group, verdict, text search over store id, group and version.
import { ago, api, h, HEALTH, healthPill, page, plural, table, when } from "../lib.js";

const filters = { group: "", health: "", q: "" };
let source = null;
let latest = null;

/** Closes the live stream (the router calls it when the user leaves the page). */
export function stop() {
  if (source) source.close();
  source = null;
}

function releaseText(s) {
  if (!s.release) return "—";
  const r = s.release;
  return [r.state || "status", r.version ? `v${r.version}` : null].filter(Boolean).join(" ");
}

function lagText(s) {
  if (s.lag_events == null) return "unknown";
  if (s.lag_events === 0) return "up to date";
  return `${plural(s.lag_events, "event")}${s.lag_seconds ? `, ${Math.round(s.lag_seconds)} s` : ""}`;
}

function n(v) {
  return v == null ? "—" : String(v);
}

const COLUMNS = (at) => [
  { label: "Store", header: true, cell: (s) => h("a", { href: `#/stores/${encodeURIComponent(s.id)}` }, s.id) },
  { label: "Health", cell: (s) => h("div", { class: "health" }, healthPill(s.health),
    s.reasons.length ? h("span", { class: "reasons" }, s.reasons.join("; ")) : null) },
  { label: "Group", cell: (s) => s.group || "—" },
  { label: "Last seen", cell: (s) => (s.last_seen ? h("span", { title: when(s.last_seen, s.timezone) }, ago(s.last_seen, at)) : "never") },
  { label: "Version", cell: (s) => s.version || "—" },
  { label: "Release", cell: releaseText },
  { label: "Sync lag", cell: lagText },
  { label: "Outbox", cell: (s) => (s.outbox_business == null ? "—" : `${s.outbox_business + (s.outbox_telemetry || 0)}`) },
  { label: "Devices offline", cell: (s) => (s.devices_total == null ? "—" : `${s.devices_offline} of ${s.devices_total}`) },
  { label: "Open alerts", cell: (s) => n(s.open_alerts) },
  { label: "Checkouts last hour", cell: (s) => String(s.checkouts_last_hour) },
];

function matches(s) {
  if (filters.group && s.group !== filters.group) return false;
  if (filters.health && s.health !== filters.health) return false;
  const q = filters.q.trim().toLowerCase();
  if (q && ![s.id, s.group, s.version || ""].some((x) => x.toLowerCase().includes(q))) return false;
  return true;
}

function render() {
  const box = document.getElementById("fleet-table");
  const sum = document.getElementById("fleet-summary");
  if (!box || !latest) return;
  const rows = latest.stores.filter(matches);
  const m = latest.summary;
  sum.textContent = `${plural(m.total, "store")}: ${m.online} online, ${m.degraded} degraded, ${m.behind} behind, ${m.offline} offline.` +
    (rows.length !== m.total ? ` Showing ${rows.length}.` : "");
  box.replaceChildren(table("Stores and their health", COLUMNS(latest.at), rows, {
    empty: latest.stores.length ? "No store matches the filters." : "No store is registered yet (storebox hq store add).",
    rowAttrs: (s) => ({ "data-store": s.id, "data-health": s.health }),
  }));
  const groups = [...new Set(latest.stores.map((s) => s.group).filter(Boolean))].sort();
  const sel = document.getElementById("filter-group");
  const have = [...sel.options].slice(1).map((o) => o.value);
  if (have.join("\n") !== groups.join("\n")) {
    sel.replaceChildren(h("option", { value: "" }, "All groups"), ...groups.map((g) => h("option", { value: g }, g)));
    sel.value = groups.includes(filters.group) ? filters.group : "";
  }
}

function setLive(text, cls) {
  const el = document.getElementById("fleet-live");
  if (el) {
    el.textContent = text;
    el.className = `pill ${cls}`;
  }
}

function connect() {
  stop();
  source = new EventSource("/hq/v1/fleet/stream");
  source.addEventListener("open", () => setLive("Live", "ok"));
  source.addEventListener("fleet", (ev) => {
    latest = JSON.parse(ev.data);
    setLive("Live", "ok");
    render();
  });
  source.addEventListener("ended", () => {
    stop();
    window.dispatchEvent(new Event("signed-out"));
  });
  source.addEventListener("error", () => {
    setLive("Reconnecting…", "warn");
    // EventSource reconnects by itself after a dropped stream, but not after a refusal (a session
    // that ended, too many streams): then ask who we are (a 401 goes back to the sign-in page)
    // and try again a little later.
    if (source && source.readyState === EventSource.CLOSED) {
      const mine = source;
      setTimeout(async () => {
        if (source !== mine) return;
        try {
          await api("GET", "/me");
          if (source === mine) connect();
        } catch (e) {
          // A 401: api() already sent the browser back to the sign-in page. Else try again.
          if (e.status !== 401 && source === mine) connect();
        }
      }, 5000);
    }
  });
}

export async function fleetPage() {
  const search = h("input", { type: "search", id: "filter-q", value: filters.q, placeholder: "Store, group or version" });
  search.addEventListener("input", () => { filters.q = search.value; render(); });
  const group = h("select", { id: "filter-group" }, h("option", { value: "" }, "All groups"));
  group.addEventListener("change", () => { filters.group = group.value; render(); });
  const health = h("select", { id: "filter-health" }, h("option", { value: "" }, "Any health"),
    Object.entries(HEALTH).map(([k, v]) => h("option", { value: k }, v.label)));
  health.value = filters.health;
  health.addEventListener("change", () => { filters.health = health.value; render(); });
  page("Fleet",
    h("div", { class: "row" },
      h("p", { id: "fleet-summary", "aria-live": "polite" }, "Loading the fleet…"),
      h("span", { id: "fleet-live", class: "pill neutral" }, "Connecting…")),
    h("form", { class: "toolbar", role: "search", "aria-label": "Filter stores", onsubmit: (e) => e.preventDefault() },
      h("div", { class: "field" }, h("label", { for: "filter-q" }, "Search"), search),
      h("div", { class: "field" }, h("label", { for: "filter-group" }, "Group"), group),
      h("div", { class: "field" }, h("label", { for: "filter-health" }, "Health"), health)),
    h("div", { id: "fleet-table" }),
    h("p", { class: "muted" }, "Offline: not seen for longer than the configured limit. Behind: HQ data not applied yet. ",
      "Degraded: devices offline, warning alerts open, outbox backlog or refused HQ data. Times in each store's zone on hover."));
  connect();
}
