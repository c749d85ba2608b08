// Devices: the live table (Server-Sent Events), one device's page (telemetry charts, alerts,
// commands, rejected messages) and provisioning with credentials shown once.
import { KIND_NAMES, ago, api, atLeast, chart, h, notice, page, table, tableRow, toast, when } from "../lib.js";

let live = null;
export function stopLive() {
  if (live) { live.close(); live = null; }
}

function statusText(d) {
  if (d.online) return "Online";
  return d.offline_reason ? `Offline (${d.offline_reason})` : "Offline";
}

const COLUMNS = [
  { label: "Device", header: true, cell: (d) => h("a", { href: `#/devices/${encodeURIComponent(d.id)}` }, d.name ? `${d.name} (${d.id})` : d.id) },
  { label: "Kind", cell: (d) => KIND_NAMES[d.kind] || d.kind },
  { label: "Status", cell: (d) => h("span", { class: `pill ${d.online ? "ok" : "bad"}`, "data-status": d.online ? "online" : "offline" }, statusText(d)) },
  { label: "Last seen", cell: (d) => (d.last_seen ? h("time", { datetime: d.last_seen, title: when(d.last_seen) }, ago(d.last_seen)) : "never") },
  { label: "Firmware", cell: (d) => d.firmware || "unknown" },
  { label: "Open alerts", cell: (d) => (d.open_alerts ? h("a", { href: `#/devices/${encodeURIComponent(d.id)}`, class: "pill warn" }, String(d.open_alerts)) : "none") },
];

export async function devicesPage() {
  const devices = new Map();
  const q = h("input", { type: "search", id: "device-filter", placeholder: "name or id" });
  const kind = h("select", { id: "kind-filter" }, h("option", { value: "" }, "All kinds"),
    Object.entries(KIND_NAMES).map(([k, v]) => h("option", { value: k }, v)));
  const status = h("select", { id: "status-filter" },
    h("option", { value: "" }, "Any status"), h("option", { value: "online" }, "Online"),
    h("option", { value: "offline" }, "Offline"), h("option", { value: "alerts" }, "With alerts"));
  const liveState = h("p", { id: "live-state", class: "pill neutral", role: "status" }, "Connecting…");
  const summary = h("p", { id: "device-summary" });
  const staleNote = h("div", { id: "device-stale" });
  const tbody = h("tbody", { id: "device-rows" });
  const tbl = h("div", { class: "table-wrap" }, h("table", {},
    h("caption", { class: "sr-only" }, "Devices, updated live"),
    h("thead", {}, h("tr", {}, COLUMNS.map((c) => h("th", { scope: "col" }, c.label)))), tbody));

  const shown = (d) => {
    const text = q.value.trim().toLowerCase();
    if (text && !`${d.id} ${d.name}`.toLowerCase().includes(text)) return false;
    if (kind.value && d.kind !== kind.value) return false;
    if (status.value === "online" && !d.online) return false;
    if (status.value === "offline" && d.online) return false;
    if (status.value === "alerts" && !d.open_alerts) return false;
    return true;
  };
  const render = () => {
    const all = [...devices.values()].sort((a, b) => a.id.localeCompare(b.id));
    const rows = all.filter(shown).map((d) => tableRow(COLUMNS, d, { rowAttrs: () => ({ "data-device": d.id }) }));
    if (rows.length === 0) rows.push(h("tr", {}, h("td", { colspan: COLUMNS.length, class: "muted" }, all.length ? "No device matches the filters." : "No devices yet.")));
    tbody.replaceChildren(...rows);
    const online = all.filter((d) => d.online).length;
    summary.textContent = `${online} of ${all.length} devices online, ${all.length - online} offline.`;
    // While the box cannot write, presence is as of the failure: say so instead of showing it as now.
    const stale = all.find((d) => d.stale_since);
    staleNote.replaceChildren(...(stale ? [notice(`Status and last seen are as of ${when(stale.stale_since)}: ` +
      "the box cannot save device messages right now (see the overview). They update again once it can.", "error")] : []));
  };
  for (const el of [q, kind, status]) el.addEventListener("input", render);

  page("Devices",
    h("div", { class: "toolbar" },
      h("label", {}, "Search", q), h("label", {}, "Kind", kind), h("label", {}, "Status", status),
      atLeast("manager") ? h("a", { class: "button", href: "#/devices/new" }, "Add a device") : null),
    staleNote,
    h("div", { class: "row" }, summary, liveState),
    tbl);

  // Initial list, then live changes; the stream also starts with the full list.
  for (const d of await api("GET", "/devices")) devices.set(d.id, d);
  render();
  stopLive();
  const es = new EventSource("/api/v1/events");
  live = es;
  es.addEventListener("devices", (ev) => {
    devices.clear();
    for (const d of JSON.parse(ev.data)) devices.set(d.id, d);
    render();
  });
  es.addEventListener("device", (ev) => {
    const d = JSON.parse(ev.data);
    devices.set(d.id, d);
    render();
  });
  es.addEventListener("device-removed", (ev) => {
    devices.delete(JSON.parse(ev.data).id);
    render();
  });
  es.onopen = () => { liveState.textContent = "Live"; liveState.className = "pill ok"; };
  es.onerror = async () => {
    liveState.textContent = "Reconnecting…";
    liveState.className = "pill warn";
    // A closed stream may mean the session ended: check, which shows sign-in if so.
    await api("GET", "/session").catch(() => {});
  };
  const tick = setInterval(() => { if (es === live) render(); else clearInterval(tick); }, 15000);
}

function metricCharts(detail) {
  const byMetric = new Map();
  for (const p of detail.telemetry_minutes) {
    if (!byMetric.has(p.metric)) byMetric.set(p.metric, []);
    byMetric.get(p.metric).push(p);
  }
  if (byMetric.size === 0) {
    // No rollups yet: use the raw points.
    for (const t of [...detail.telemetry].reverse()) {
      for (const [k, v] of Object.entries(t.metrics || {})) {
        if (typeof v !== "number") continue;
        if (!byMetric.has(k)) byMetric.set(k, []);
        byMetric.get(k).push({ minute: t.ts, avg: v, min: v, max: v });
      }
    }
  }
  if (byMetric.size === 0) return [notice("This device has sent no readings in the last 24 hours.")];
  return [...byMetric.entries()].map(([metric, pts]) => {
    const last = pts[pts.length - 1];
    return h("section", { class: "metric" }, h("h3", {}, metric),
      chart(`${metric} over the last 24 hours: latest ${last.avg.toFixed(2)}, lowest ${Math.min(...pts.map((p) => p.min)).toFixed(2)}, highest ${Math.max(...pts.map((p) => p.max)).toFixed(2)}.`,
        pts.map((p) => Date.parse(p.minute) / 1000),
        [{ label: metric, values: pts.map((p) => p.avg) }], { height: 180 }));
  });
}

export async function devicePage(id) {
  const d = await api("GET", `/devices/${encodeURIComponent(id)}`);
  const alerts = table(`Alerts of ${d.id}`, [
    { label: "Raised", cell: (a) => when(a.raised_at) },
    { label: "Alert", cell: (a) => `${a.code}${a.message ? `: ${a.message}` : ""}` },
    { label: "Severity", cell: (a) => a.severity },
    { label: "State", cell: (a) => (a.cleared_at ? `Cleared ${when(a.cleared_at)}` : h("span", { class: "pill warn" }, "Open")) },
  ], d.alerts, { empty: "No alerts." });
  const commands = table(`Commands sent to ${d.id}`, [
    { label: "Sent", cell: (c) => when(c.sent_at) },
    { label: "Command", cell: (c) => `${c.name} ${Object.keys(c.args || {}).length ? JSON.stringify(c.args) : ""}` },
    { label: "By", cell: (c) => c.sent_by },
    { label: "Answer", cell: (c) => (c.acked_at ? `${c.ok ? "Done" : "Failed"}${c.result ? `: ${c.result}` : ""}` : "Waiting for the device") },
  ], d.commands, { empty: "No commands sent yet." });
  const rejected = table(`Rejected messages of ${d.id}`, [
    { label: "Received", cell: (r) => when(r.received_at) },
    { label: "Topic", cell: (r) => r.topic },
    { label: "Why it was rejected", cell: (r) => r.reason },
    { label: "Content", cell: (r) => h("code", { class: "clip" }, r.payload.slice(0, 200)) },
  ], d.dead_letters, { empty: "No rejected messages." });

  let commandForm = null;
  if (atLeast("manager")) {
    const err = h("p", { class: "error", role: "alert" });
    const name = h("select", { name: "name", id: "command-name" },
      ["reboot", "ping", "sync_time", "print_test", "refresh_prices"].map((n) => h("option", { value: n }, n)));
    const args = h("input", { name: "args", id: "command-args", value: "{}", autocomplete: "off" });
    commandForm = h("form", { class: "inline" },
      h("label", {}, "Command", name), h("label", {}, "Arguments (JSON)", args),
      h("button", { type: "submit" }, "Send command"), err);
    commandForm.addEventListener("submit", async (ev) => {
      ev.preventDefault();
      err.textContent = "";
      let parsed;
      try { parsed = JSON.parse(args.value || "{}"); } catch { err.textContent = "Arguments must be JSON, for example {}"; return; }
      try {
        await api("POST", `/devices/${encodeURIComponent(d.id)}/commands`, { name: name.value, args: parsed });
        toast(`Command ${name.value} sent to ${d.id}.`);
        await devicePage(id);
      } catch (e) { err.textContent = e.message; }
    });
  }
  const remove = atLeast("manager") ? h("button", {
    type: "button", class: "danger", onclick: async () => {
      if (!confirm(`Remove ${d.id}? Its credentials stop working at once.`)) return;
      try { await api("DELETE", `/devices/${encodeURIComponent(d.id)}`); location.hash = "#/devices"; } catch (e) { toast(e.message); }
    },
  }, "Remove this device") : null;

  page(d.name ? `${d.name} (${d.id})` : d.id,
    h("p", {}, h("a", { href: "#/devices" }, "← All devices")),
    h("dl", { class: "facts" },
      h("dt", {}, "Kind"), h("dd", {}, KIND_NAMES[d.kind] || d.kind),
      h("dt", {}, "Status"), h("dd", {}, h("span", { class: `pill ${d.online ? "ok" : "bad"}` }, statusText(d))),
      h("dt", {}, "Last seen"), h("dd", {}, d.last_seen ? `${ago(d.last_seen)} (${when(d.last_seen)})` : "never"),
      h("dt", {}, "Firmware"), h("dd", {}, d.firmware || "unknown"),
      h("dt", {}, "Added"), h("dd", {}, when(d.created_at))),
    h("section", { "aria-labelledby": "tele-h" }, h("h2", { id: "tele-h" }, "Readings (last 24 hours)"), ...metricCharts(d)),
    h("section", { "aria-labelledby": "alerts-h" }, h("h2", { id: "alerts-h" }, "Alerts"), alerts),
    h("section", { "aria-labelledby": "cmd-h" }, h("h2", { id: "cmd-h" }, "Commands"),
      commandForm || h("p", { class: "muted" }, "Managers can send commands to devices."), commands),
    h("section", { "aria-labelledby": "dl-h" }, h("h2", { id: "dl-h" }, "Rejected messages"),
      h("p", { class: "muted" }, "Messages from this device that the box refused, with the reason."), rejected),
    remove ? h("section", { "aria-labelledby": "rm-h" }, h("h2", { id: "rm-h" }, "Remove"), remove) : null,
  );
}

export async function provisionPage() {
  const err = h("p", { class: "error", role: "alert" });
  const result = h("div", { id: "provision-result" });
  const form = h("form", { class: "narrow", id: "provision-form" },
    h("label", {}, "Device id (letters, digits, - _ .)", h("input", { name: "id", required: true, pattern: "[A-Za-z0-9._\\-]{1,64}", autocomplete: "off", autocapitalize: "none" })),
    h("label", {}, "Kind", h("select", { name: "kind" }, Object.entries(KIND_NAMES).map(([k, v]) => h("option", { value: k }, v)))),
    h("label", {}, "Name shown to staff (optional)", h("input", { name: "name", maxlength: 128 })),
    h("button", { type: "submit" }, "Add device"), err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const f = new FormData(form);
    try {
      const p = await api("POST", "/devices", { id: f.get("id"), kind: f.get("kind"), name: f.get("name") });
      form.hidden = true;
      const host = location.hostname;
      const snippet = [
        `# storebox MQTT settings for ${p.id} (the password is shown only once)`,
        `host=${host}`, `port=${p.mqtt.port}`, `client_id=${p.mqtt.client_id}`,
        `username=${p.username}`, `password=${p.password}`,
      ].join("\n");
      const pre = h("pre", { id: "device-config", tabindex: "0", "aria-label": "Device configuration" }, snippet);
      result.replaceChildren(
        notice(`Device ${p.id} added. Copy these settings into the device now: the password cannot be shown again.`, "ok"),
        h("dl", { class: "facts" },
          h("dt", {}, "Server"), h("dd", {}, `${host}, port ${p.mqtt.port}`),
          h("dt", {}, "Client id and user name"), h("dd", { id: "cred-username" }, p.username),
          h("dt", {}, "Password"), h("dd", {}, h("code", { id: "cred-password" }, p.password))),
        pre,
        h("p", {},
          h("button", { type: "button", onclick: async () => {
            try { await navigator.clipboard.writeText(snippet); toast("Settings copied."); } catch {
              const r = document.createRange(); r.selectNodeContents(pre);
              const s = getSelection(); s.removeAllRanges(); s.addRange(r);
              toast("Select and copy the highlighted settings.");
            }
          } }, "Copy settings"), " ",
          h("a", { class: "button secondary", href: `#/devices/${encodeURIComponent(p.id)}` }, "Open the device")));
    } catch (e) { err.textContent = e.message; }
  });
  page("Add a device",
    h("p", {}, h("a", { href: "#/devices" }, "← All devices")),
    h("p", {}, "The box creates the device's MQTT credentials. They are shown once, right after adding."),
    form, result);
}
