// Support desk: tickets from every store in one queue (filters: status, category, store, assignee,
// search), and one ticket with its diagnostics in words (raw JSON behind a details element), the
// record of who did what, a reply form, assign and close. Talks to /hq/v1/desk/… and the replies
// endpoint; everything is text (no HTML from stores is ever rendered).
import { ago, api, h, notice, page, plural, table, when } from "../lib.js";

const CATEGORIES = ["pos", "scale", "printer", "fridge", "network", "prices", "other"];
const STATUS = { open: "Open", answered: "Answered", closed: "Closed" };
const filters = { status: "", category: "", store: "", assignee: "", q: "" };

function statusPill(s) {
  const cls = s === "open" ? "warn" : s === "closed" ? "neutral" : "ok";
  return h("span", { class: `pill ${cls}` }, STATUS[s] || s);
}

function ticketLink(t) {
  return `#/desk/${encodeURIComponent(t.store)}/${encodeURIComponent(t.id)}`;
}

function age(secs) {
  if (secs < 120) return `${secs} s`;
  if (secs < 7200) return `${Math.round(secs / 60)} min`;
  if (secs < 172800) return `${Math.round(secs / 3600)} h`;
  return `${Math.round(secs / 86400)} days`;
}

const COLUMNS = [
  { label: "Subject", header: true, cell: (t) => h("a", { href: ticketLink(t) }, t.subject || t.id) },
  { label: "Status", cell: (t) => statusPill(t.status) },
  { label: "Store", cell: (t) => t.store },
  { label: "Category", cell: (t) => t.category },
  { label: "Team", cell: (t) => t.team || "—" },
  { label: "Assignee", cell: (t) => t.assignee || "nobody" },
  { label: "Age", cell: (t) => age(t.age_seconds) },
  { label: "Last reply", cell: (t) => (t.last_reply ? `${t.last_reply.author}, ${ago(t.last_reply.at)}` : "none yet") },
];

async function load() {
  const box = document.getElementById("desk-table");
  const qs = new URLSearchParams(Object.entries(filters).filter(([, v]) => v)).toString();
  try {
    const r = await api("GET", `/desk/tickets${qs ? "?" + qs : ""}`);
    document.getElementById("desk-summary").textContent = `${plural(r.tickets.length, "ticket")} shown.`;
    box.replaceChildren(table("Tickets", COLUMNS, r.tickets, {
      empty: "No ticket matches the filters.",
      rowAttrs: (t) => ({ "data-ticket": t.id, "data-store": t.store }),
    }));
  } catch (e) {
    box.replaceChildren(notice(e.message, "error"));
  }
}

function select(id, label, options, key) {
  const el = h("select", { id }, h("option", { value: "" }, label), options.map(([v, l]) => h("option", { value: v }, l)));
  el.value = filters[key];
  el.addEventListener("change", () => { filters[key] = el.value; load(); });
  return el;
}

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

export async function deskPage() {
  const q = h("input", { type: "search", id: "desk-q", value: filters.q, placeholder: "Subject or ticket id" });
  q.addEventListener("change", () => { filters.q = q.value; load(); });
  const store = h("input", { type: "text", id: "desk-store", value: filters.store, placeholder: "Store id" });
  store.addEventListener("change", () => { filters.store = store.value.trim(); load(); });
  const assignee = h("input", { type: "text", id: "desk-assignee", value: filters.assignee, placeholder: "User, or none" });
  assignee.addEventListener("change", () => { filters.assignee = assignee.value.trim(); load(); });
  page("Support desk",
    h("p", { id: "desk-summary", "aria-live": "polite" }, "Loading tickets…"),
    h("form", { class: "toolbar", role: "search", "aria-label": "Filter tickets", onsubmit: (e) => { e.preventDefault(); load(); } },
      field("desk-q", "Search", q),
      field("desk-status", "Status", select("desk-status", "Any status", Object.entries(STATUS), "status")),
      field("desk-category", "Category", select("desk-category", "Any category", CATEGORIES.map((c) => [c, c]), "category")),
      field("desk-store", "Store", store),
      field("desk-assignee", "Assignee", assignee)),
    h("div", { id: "desk-table" }),
    h("p", { class: "muted" }, "Open tickets first, oldest first. Age counts from when HQ received the ticket."));
  await load();
}

/** The diagnostics a store attaches, said in words where they are known. */
function facts(opened) {
  const d = (opened && opened.diagnostics) || {};
  const rows = [];
  const add = (k, v) => { if (v !== undefined && v !== null && v !== "") rows.push([k, String(v)]); };
  add("Description", opened && opened.description);
  add("Device", opened && opened.device_id);
  add("Opened by", opened && opened.opened_by);
  add("Version", d.version);
  const sync = d.sync || {};
  add("Sync cursor", sync.cursor);
  add("Sync lag", sync.lag_events != null ? plural(sync.lag_events, "event") : undefined);
  add("Sync last error", sync.last_error);
  const devices = Array.isArray(d.devices) ? d.devices : null;
  if (devices) {
    const offline = devices.filter((x) => x.online === false || x.status === "offline").length;
    add("Devices", `${devices.length} (${offline} offline)`);
  }
  const alerts = Array.isArray(d.alerts) ? d.alerts : Array.isArray(d.open_alerts) ? d.open_alerts : null;
  if (alerts) add("Open alerts", alerts.length ? alerts.map((a) => a.code || a.id || "alert").join(", ") : "none");
  return h("dl", { class: "facts" }, rows.flatMap(([k, v]) => [h("dt", {}, k), h("dd", {}, v)]));
}

export async function deskTicketPage(store, id) {
  const path = `/desk/tickets/${encodeURIComponent(id)}?store=${encodeURIComponent(store)}`;
  const t = await api("GET", path);
  const status = h("p", { id: "desk-status-line", "aria-live": "polite" });
  const act = async (f, done) => {
    try {
      await f();
      await deskTicketPage(store, id);
      document.getElementById("desk-status-line").textContent = done;
    } catch (e) {
      status.replaceChildren(notice(e.message, "error"));
    }
  };
  const message = h("textarea", { id: "reply-message", rows: 4, required: true });
  const reply = h("form", { "aria-label": "Reply", onsubmit: (e) => {
    e.preventDefault();
    act(() => api("POST", `/tickets/${encodeURIComponent(id)}/replies?store=${encodeURIComponent(store)}`, { message: message.value }),
      "Reply sent to the store.");
  } }, field("reply-message", "Reply to the store", message), h("button", { type: "submit" }, "Send reply"));
  const user = h("input", { type: "text", id: "assign-user", value: t.assignee || "" });
  const assign = h("form", { "aria-label": "Assign", onsubmit: (e) => {
    e.preventDefault();
    act(() => api("POST", `/desk/tickets/${encodeURIComponent(id)}/assign?store=${encodeURIComponent(store)}`, { user: user.value.trim() || null }),
      "Assignment saved.");
  } }, field("assign-user", "Assign to (HQ user; empty: nobody)", user), h("button", { type: "submit" }, "Assign"));
  const close = h("button", { type: "button", disabled: t.status === "closed", onclick: () =>
    act(() => api("POST", `/desk/tickets/${encodeURIComponent(id)}/close?store=${encodeURIComponent(store)}`, {}), "Ticket closed.") }, "Close ticket");
  page(`Ticket: ${t.subject || t.id}`,
    h("p", {}, h("a", { href: "#/desk" }, "Back to the desk")),
    h("p", {}, statusPill(t.status), ` Store ${t.store} · ${t.category} · team ${t.team || "none"} · assigned to ${t.assignee || "nobody"} · received ${when(t.opened_at)}`),
    status,
    h("h2", {}, "Diagnostics"),
    facts(t.opened),
    h("details", {}, h("summary", {}, "Everything the store sent (JSON)"), h("pre", {}, JSON.stringify(t.opened, null, 2))),
    h("h2", {}, "History"),
    h("ol", { id: "desk-history" }, t.changes.map((c) =>
      h("li", {}, `${when(c.at)}: ${c.actor} ${c.action}${c.detail ? ` — ${c.detail}` : ""}`))),
    h("h2", {}, "Work the ticket"),
    reply, assign, close);
}
