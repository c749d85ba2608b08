// Alerts, support tickets, the audit log, users (admin) and About.
import { ago, api, atLeast, duration, h, notice, page, plural, session, table, toast, when } from "../lib.js";
import { syncSummary } from "./overview.js";

// A support guide from HQ: its title opens the body (HTML rendered and sanitized by the box).
function guideView(g) {
  const body = h("div", { class: "guide-body" });
  body.innerHTML = g.body_html;
  return h("details", { class: "guide" }, h("summary", {}, `Guide: ${g.title}`), body);
}

const CATEGORIES = [["pos", "Till / POS lane"], ["scale", "Scale"], ["printer", "Printer"], ["fridge", "Fridge or freezer"],
  ["network", "Network or HQ connection"], ["prices", "Prices or promotions"], ["other", "Something else"]];

export async function alertsPage() {
  const all = new URLSearchParams(location.hash.split("?")[1] || "").get("all") === "1";
  const [alerts, { guides }] = await Promise.all([api("GET", `/alerts?open=${all ? "false" : "true"}&limit=500`), api("GET", "/guides")]);
  const guideFor = (code) => guides.find((g) => g.alert_codes.includes(code));
  page("Alerts",
    h("p", {}, all ? "All alerts, newest first. " : "Alerts not cleared yet, newest first. ",
      h("a", { href: all ? "#/alerts" : "#/alerts?all=1" }, all ? "Show only open alerts" : "Show cleared alerts too")),
    table("Alerts", [
      { label: "Raised", cell: (a) => when(a.raised_at) },
      { label: "Device", header: true, cell: (a) => h("a", { href: `#/devices/${encodeURIComponent(a.device_id)}` }, a.device_id) },
      { label: "Alert", cell: (a) => `${a.code}${a.message ? `: ${a.message}` : ""}` },
      { label: "Severity", cell: (a) => h("span", { class: `pill ${a.severity === "critical" || a.severity === "error" ? "bad" : "warn"}` }, a.severity) },
      { label: "State", cell: (a) => (a.cleared_at ? `Cleared ${when(a.cleared_at)}` : "Open") },
      { label: "What to do", cell: (a) => { const g = guideFor(a.code); return g ? guideView(g) : ""; } },
    ], alerts, { empty: all ? "No alerts yet." : "No open alerts. All is well." }));
}

function statusPill(s) {
  const text = { open: "Waiting for HQ", answered: "HQ answered", closed: "Closed" }[s] || s;
  return h("span", { class: `pill ${s === "answered" ? "ok" : s === "closed" ? "neutral" : "warn"}` }, text);
}

export async function ticketsPage() {
  const [list, devices, sync, { guides }] = await Promise.all([api("GET", "/tickets"), api("GET", "/devices"), api("GET", "/sync"), api("GET", "/guides")]);
  const err = h("p", { class: "error", role: "alert" });
  const category = h("select", { name: "category", id: "ticket-category" }, CATEGORIES.map(([v, label]) => h("option", { value: v, selected: v === "other" }, label)));
  const help = h("div", { id: "ticket-guides", "aria-live": "polite" });
  const showGuides = () => {
    const found = guides.filter((g) => g.ticket_categories.includes(category.value));
    help.replaceChildren(...(found.length ? [h("p", {}, "Before you send it, HQ suggests:"), ...found.map(guideView)] : []));
  };
  category.addEventListener("change", showGuides);
  const form = h("form", { id: "ticket-form", class: "narrow" },
    h("label", {}, "What is it about?", category),
    help,
    h("label", {}, "What is wrong? (one line)", h("input", { name: "subject", required: true, maxlength: 200 })),
    h("label", {}, "Describe the problem: what happened, since when, what you tried",
      h("textarea", { name: "description", required: true, rows: 5, maxlength: 5000 })),
    h("label", {}, "Device concerned (optional)", h("select", { name: "device_id" },
      h("option", { value: "" }, "No particular device"),
      devices.map((d) => h("option", { value: d.id }, d.name ? `${d.name} (${d.id})` : d.id)))),
    h("label", { class: "check" }, h("input", { type: "checkbox", name: "attach_bundle", id: "ticket-attach-bundle" }),
      "Attach the full support bundle (configuration, database health, recent log lines; never passwords or tokens)"),
    h("button", { type: "submit" }, "Send to support"), err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    err.textContent = "";
    const f = new FormData(form);
    try {
      const t = await api("POST", "/tickets", { subject: f.get("subject"), description: f.get("description"), category: f.get("category"), device_id: f.get("device_id") || null, attach_bundle: f.get("attach_bundle") === "on" });
      toast("Ticket opened.");
      location.hash = `#/tickets/${encodeURIComponent(t.id)}`;
    } catch (e) { err.textContent = e.message; }
  });
  const s = syncSummary(sync);
  page("Support",
    h("section", { "aria-labelledby": "new-h" }, h("h2", { id: "new-h" }, "Open a ticket"),
      h("p", {}, "The box attaches a technical summary (device states, alerts, recent errors; never passwords) so support can see what you see."),
      sync.configured ? null : notice(`${s.text}. The ticket is kept here and sent when HQ is connected.`),
      form),
    h("section", { "aria-labelledby": "list-h" }, h("h2", { id: "list-h" }, "Tickets"),
      table("Support tickets", [
        { label: "Opened", cell: (t) => when(t.opened_at) },
        { label: "Subject", header: true, cell: (t) => h("a", { href: `#/tickets/${encodeURIComponent(t.id)}` }, t.subject) },
        { label: "About", cell: (t) => (CATEGORIES.find(([v]) => v === t.category) || [t.category, t.category])[1] },
        { label: "Device", cell: (t) => t.device_id || "" },
        { label: "By", cell: (t) => t.opened_by },
        { label: "Status", cell: (t) => statusPill(t.status) },
        { label: "Replies", cell: (t) => String(t.replies.length) },
      ], list.tickets, { empty: "No tickets yet." })));
}

export async function ticketPage(id) {
  const t = await api("GET", `/tickets/${encodeURIComponent(id)}`);
  const d = t.diagnostics || {};
  page(t.subject,
    h("p", {}, h("a", { href: "#/tickets" }, "← All tickets")),
    h("dl", { class: "facts" },
      h("dt", {}, "Ticket"), h("dd", {}, h("code", {}, t.id)),
      h("dt", {}, "Status"), h("dd", {}, statusPill(t.status)),
      h("dt", {}, "Opened"), h("dd", {}, `${when(t.opened_at)} by ${t.opened_by}`),
      h("dt", {}, "Device"), h("dd", {}, t.device_id ? h("a", { href: `#/devices/${encodeURIComponent(t.device_id)}` }, t.device_id) : "none")),
    h("section", { "aria-labelledby": "desc-h" }, h("h2", { id: "desc-h" }, "Description"), h("p", { class: "prewrap" }, t.description)),
    h("section", { "aria-labelledby": "rep-h" }, h("h2", { id: "rep-h" }, "Replies from HQ"),
      t.replies.length ? h("ol", { class: "replies" }, t.replies.map((r) =>
        h("li", {}, h("p", { class: "muted" }, `${when(r.at)}, ${r.author}${r.status ? ` (status: ${r.status})` : ""}`), h("p", { class: "prewrap" }, r.message))))
        : h("p", { class: "muted" }, "No reply yet. Replies appear here when HQ answers.")),
    h("section", { "aria-labelledby": "diag-h" }, h("h2", { id: "diag-h" }, "Attached diagnostics"),
      h("p", {}, d.devices ? `${d.devices.online} of ${d.devices.total} devices online; ${plural((d.open_alerts || []).length, "open alert")}; version ${d.version}.` : ""),
      h("details", {}, h("summary", {}, "Show the technical details"), h("pre", { tabindex: "0" }, JSON.stringify(d, null, 2)))));
}

export async function auditPage() {
  const entries = [];
  const tbodyHolder = h("div");
  const more = h("button", { type: "button", class: "secondary" }, "Show older entries");
  const load = async () => {
    const before = entries.length ? `&before=${entries[entries.length - 1].id}` : "";
    const got = await api("GET", `/audit?limit=100${before}`);
    entries.push(...got);
    more.hidden = got.length < 100;
    tbodyHolder.replaceChildren(table("Audit log", [
      { label: "When", cell: (e) => when(e.at) },
      { label: "Who", cell: (e) => e.actor },
      { label: "What", cell: (e) => e.action },
      { label: "On", cell: (e) => e.target },
      { label: "Details", cell: (e) => e.detail },
    ], entries, { empty: "Nothing recorded yet." }));
  };
  more.addEventListener("click", () => load().catch((e) => toast(e.message)));
  await load();
  page("Audit log", h("p", {}, "Who did what, newest first: sign-ins, devices, commands, users, price activations."), tbodyHolder, more);
}

export async function usersPage() {
  const users = await api("GET", "/users");
  const change = async (u, body, what) => {
    try {
      await api("PATCH", `/users/${encodeURIComponent(u.username)}`, body);
      toast(`${u.username}: ${what}.`);
      await usersPage();
    } catch (e) { toast(e.message); }
  };
  const rows = users.map((u) => {
    const role = h("select", { "aria-label": `Role of ${u.username}` }, ["staff", "manager", "admin"].map((r) => h("option", { value: r, selected: r === u.role }, r)));
    role.addEventListener("change", () => change(u, { role: role.value }, `role is now ${role.value}`));
    const pw = h("button", { type: "button", class: "secondary", onclick: async () => {
      const p = prompt(`New password for ${u.username} (10 characters or more):`);
      if (!p) return;
      try { await api("POST", `/users/${encodeURIComponent(u.username)}/password`, { password: p }); toast(`Password of ${u.username} changed; their sessions ended.`); } catch (e) { toast(e.message); }
    } }, "Set password");
    const dis = h("button", { type: "button", class: u.disabled ? "secondary" : "danger", onclick: () => change(u, { disabled: !u.disabled }, u.disabled ? "enabled" : "disabled") }, u.disabled ? "Enable" : "Disable");
    return { u, role, pw, dis };
  });
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { class: "inline", id: "user-form" },
    h("label", {}, "User name", h("input", { name: "username", required: true, autocomplete: "off", autocapitalize: "none" })),
    h("label", {}, "Password (10+ characters)", h("input", { name: "password", type: "password", required: true, minlength: 10, autocomplete: "new-password" })),
    h("label", {}, "Role", h("select", { name: "role" }, ["staff", "manager", "admin"].map((r) => h("option", { value: r }, r)))),
    h("button", { type: "submit" }, "Add user"), err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await api("POST", "/users", { username: f.get("username"), password: f.get("password"), role: f.get("role") });
      toast(`User ${f.get("username")} added.`);
      await usersPage();
    } catch (e) { err.textContent = e.message; }
  });
  page("Users",
    h("p", {}, "Staff can look and open tickets; managers also handle devices and commands and read the audit log; admins also manage users and see the configuration."),
    table("Users", [
      { label: "User", header: true, cell: ({ u }) => u.username + (u.username === session.username ? " (you)" : "") },
      { label: "Role", cell: ({ u, role }) => (u.username === session.username ? u.role : role) },
      { label: "State", cell: ({ u }) => (u.disabled ? "Disabled" : "Active") },
      { label: "Added", cell: ({ u }) => when(u.created_at) },
      { label: "Actions", cell: ({ u, pw, dis }) => h("span", { class: "actions" }, pw, u.username === session.username ? null : dis) },
    ], rows, {}),
    h("section", { "aria-labelledby": "add-h" }, h("h2", { id: "add-h" }, "Add a user"), form));
}

const UPDATE_STATES = {
  idle: "Nothing assigned", downloading: "Downloading", staged: "Downloaded and verified",
  waiting_window: "Waiting for the install window", installing: "Installing", probation: "On probation",
  committed: "Installed and committed", rolled_back: "Rolled back", refused: "Refused", failed: "Failed",
};

// The self-update section of About (GET /api/v1/updates): running and assigned version, state, window, history.
function updatesSection(u) {
  const state = UPDATE_STATES[u.state] || u.state;
  return h("section", { "aria-labelledby": "upd-h" }, h("h2", { id: "upd-h" }, "Software updates"),
    u.enabled ? null : h("p", { class: "muted", id: "updates-off" }, u.off_reason),
    h("dl", { class: "facts" },
      h("dt", {}, "Running version"), h("dd", { id: "updates-running" }, u.running_version),
      h("dt", {}, "Assigned version"), h("dd", { id: "updates-assigned" }, u.assigned ? `${u.assigned.version} (serial ${u.assigned.serial}, rollout ${u.assigned.rollout})` : "none"),
      h("dt", {}, "State"), h("dd", { id: "updates-state" }, u.reason ? `${state}: ${u.reason}` : state),
      h("dt", {}, "Install window"), h("dd", {}, `${u.window} (${u.timezone}), not during trading hours ${u.trading_hours}`),
      h("dt", {}, "Next possible install"), h("dd", {}, u.next_install_at ? `${when(u.next_install_at)} (if no sale is in progress)` : "never: the window lies inside trading hours"),
      h("dt", {}, "Probation"), h("dd", {}, u.probation_started_at ? `since ${when(u.probation_started_at)}, ${duration(u.probation_seconds)} in all` : duration(u.probation_seconds))),
    table("Update history, newest first", [
      { label: "When", cell: (e) => when(e.at) },
      { label: "Version", header: true, cell: (e) => e.version },
      { label: "State", cell: (e) => UPDATE_STATES[e.state] || e.state },
      { label: "Reason", cell: (e) => e.reason || "" },
    ], u.history, { empty: "No update activity yet." }));
}

export async function aboutPage() {
  const [a, u] = await Promise.all([api("GET", "/about"), api("GET", "/updates")]);
  const cfg = a.config;
  const flat = [];
  const walk = (prefix, v) => {
    if (v && typeof v === "object" && !Array.isArray(v)) for (const [k, x] of Object.entries(v)) walk(prefix ? `${prefix}.${k}` : k, x);
    else flat.push({ key: prefix, value: Array.isArray(v) ? (v.length ? v.join(", ") : "none") : v === null ? "not set" : String(v) });
  };
  if (cfg) walk("", cfg);
  page("About this box",
    h("dl", { class: "facts" },
      h("dt", {}, "Store"), h("dd", {}, `${a.store_name} (${a.store_id})`),
      h("dt", {}, "Version"), h("dd", { id: "about-version" }, a.version),
      h("dt", {}, "Running for"), h("dd", {}, `${duration(a.uptime_s)} (since ${when(a.started_at)}, ${ago(a.started_at)})`),
      h("dt", {}, "Time zone"), h("dd", {}, a.timezone),
      h("dt", {}, "Currency"), h("dd", {}, a.currency)),
    updatesSection(u),
    h("section", { "aria-labelledby": "cfg-h" }, h("h2", { id: "cfg-h" }, "Configuration"),
      cfg ? [h("p", {}, "The settings in force. Secrets such as the HQ token are never shown."),
        table("Configuration", [{ label: "Setting", header: true, cell: (r) => h("code", {}, r.key) }, { label: "Value", cell: (r) => r.value }], flat, {})]
        : h("p", { class: "muted" }, atLeast("admin") ? "" : "Only administrators can see the configuration.")),
    atLeast("manager") ? h("section", { "aria-labelledby": "diag-h" }, h("h2", { id: "diag-h" }, "Support bundle"),
      h("p", {}, "One file for support: version, configuration, sync, devices and alerts, database health, disk space and recent log lines. It never contains passwords, tokens or the setup code. The same as ",
        h("code", {}, "storebox diag"), " on the box, and it can be attached to a ", h("a", { href: "#/tickets" }, "support ticket"), "."),
      h("p", {}, h("a", { href: "/api/v1/diag", download: "", id: "diag-download", class: "button" }, "Download the support bundle"))) : null);
}
