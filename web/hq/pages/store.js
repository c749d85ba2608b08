// A store's page, "the story": its health, then one timeline that merges what the store sent
// (checkouts per hour, device alerts and status, tickets, release states, refused HQ data,
// telemetry), what HQ told it (authored events, rollouts) and sync milestones, by time, in the
// store's zone when HQ knows it (else UTC, always named). Charts of the hourly rollups on top.
import { api, chart, h, healthPill, notice, page, plural, when } from "../lib.js";

const KINDS = [
  ["alert", "Device alerts"], ["device", "Device status"], ["checkouts", "Checkouts per hour"],
  ["ticket", "Tickets"], ["release", "Release states"], ["quarantine", "Refused HQ data"],
  ["authored", "Sent by HQ"], ["rollout", "Rollouts"], ["sync", "Sync milestones"], ["telemetry", "Telemetry"],
];
const SOURCE = { store: "from the store", hq: "from HQ", sync: "HQ's record" };
const KIND_LABEL = {
  alert: "Device alert", device: "Device status", checkouts: "Checkouts", ticket: "Ticket", release: "Release",
  quarantine: "Refused HQ data", authored: "Sent by HQ", rollout: "Rollout", sync: "Sync milestone", telemetry: "Telemetry",
};
const WINDOWS = [["1", "Last 24 hours"], ["7", "Last 7 days"], ["31", "Last 31 days"]];

const chosen = new Set(KINDS.map((k) => k[0]).filter((k) => k !== "telemetry"));
let days = "1";

function storyUrl(id, cursor) {
  const to = new Date();
  const from = new Date(to.getTime() - Number(days) * 86400e3);
  const p = new URLSearchParams({ from: from.toISOString(), to: to.toISOString(), kinds: [...chosen].join(","), limit: "200" });
  if (cursor) p.set("cursor", cursor);
  return `/stores/${encodeURIComponent(id)}/story?${p}`;
}

function itemNode(it, zone) {
  // What the store sent late (it was offline) says when it reached HQ.
  const late = it.received_at && Date.parse(it.received_at) - Date.parse(it.at) > 60000
    ? h("span", { class: "muted" }, `reached HQ ${when(it.received_at, zone)}`) : null;
  return h("li", { class: `story-item kind-${it.kind}`, "data-kind": it.kind, "data-key": it.key },
    h("time", { datetime: it.at }, when(it.at, zone)),
    h("span", { class: `kind src-${it.source}` }, `${KIND_LABEL[it.kind] || it.kind} · ${SOURCE[it.source] || it.source}`),
    h("span", { class: "title" }, it.title), late);
}

async function loadStory(id, list, more, info, charts) {
  let data = await api("GET", storyUrl(id));
  const zone = data.timezone || "UTC";
  info.textContent = data.timezone ? `Times in ${zone}, the store's time zone.` : "Times in UTC (HQ does not know the store's time zone yet).";
  list.replaceChildren(...data.items.map((it) => itemNode(it, zone)));
  if (!data.items.length) list.append(h("li", { class: "muted" }, "Nothing in this window for the kinds chosen."));
  const c = data.chart;
  const range = { range: [Date.parse(data.from) / 1000, Date.parse(data.to) / 1000] };
  charts.replaceChildren(
    c.checkouts.length ? chart(`Checkouts per hour (times in ${zone}).`, c.checkouts.map((p) => p[0]),
      [{ label: "Checkouts", values: c.checkouts.map((p) => p[1]), color: "#1d4e89" }], zone, { ...range, bars: true }) : notice("No checkouts in this window."),
    c.telemetry.length ? chart(`Devices offline and alerts open, hourly from the store's telemetry (times in ${zone}).`, c.telemetry.map((p) => p[0]),
      [{ label: "Devices offline", values: c.telemetry.map((p) => p[1]), color: "#a4161a" },
        { label: "Alerts open", values: c.telemetry.map((p) => p[2]), color: "#7a4a00" }], zone, range) : notice("No telemetry rollups in this window."));
  const page2 = () => {
    more.hidden = !data.next_cursor;
  };
  page2();
  more.onclick = async () => {
    more.disabled = true;
    try {
      data = await api("GET", storyUrl(id, data.next_cursor));
      list.append(...data.items.map((it) => itemNode(it, zone)));
      page2();
    } finally {
      more.disabled = false;
    }
  };
}

export async function storePage(id) {
  const fleet = await api("GET", "/fleet");
  const s = fleet.stores.find((x) => x.id === id);
  if (!s) {
    page("Store not found", notice(`HQ has no store ${id}.`, "error"), h("p", {}, h("a", { href: "#/" }, "Back to the fleet")));
    return;
  }
  const zone = s.timezone || "UTC";
  const facts = h("dl", { class: "facts" },
    h("dt", {}, "Health"), h("dd", {}, healthPill(s.health), s.reasons.length ? ` ${s.reasons.join("; ")}` : ""),
    h("dt", {}, "Group"), h("dd", {}, s.group || "none"),
    h("dt", {}, "Last seen"), h("dd", {}, when(s.last_seen, zone)),
    h("dt", {}, "Version"), h("dd", {}, s.version || "unknown"),
    h("dt", {}, "Devices"), h("dd", {}, s.devices_total == null ? "unknown" : `${s.devices_total}, ${s.devices_offline} offline; ${plural(s.open_alerts ?? 0, "alert")} open`),
    h("dt", {}, "Time zone"), h("dd", {}, s.timezone || "unknown (times in UTC)"));
  const list = h("ol", { class: "story", id: "story", "aria-label": `Timeline of ${id}` });
  const more = h("button", { type: "button", class: "secondary", hidden: true }, "Show more");
  const info = h("p", { class: "muted", id: "story-zone" });
  const charts = h("div", { class: "charts" });
  const reload = () => loadStory(id, list, more, info, charts).catch((e) => {
    list.replaceChildren(h("li", {}, notice(e.message, "error")));
  });
  const boxes = KINDS.map(([k, label]) => {
    const input = h("input", { type: "checkbox", name: "kind", value: k, checked: chosen.has(k) });
    input.addEventListener("change", () => {
      if (input.checked) chosen.add(k); else chosen.delete(k);
      reload();
    });
    return h("label", { class: "check" }, input, label);
  });
  const win = h("select", { id: "story-window" }, WINDOWS.map(([v, l]) => h("option", { value: v }, l)));
  win.value = days;
  win.addEventListener("change", () => { days = win.value; reload(); });
  page(`Store ${id}`,
    h("p", {}, h("a", { href: "#/" }, "← Fleet")),
    facts,
    h("h2", {}, "Rollups"),
    charts,
    h("h2", { id: "story-title" }, "The story"),
    h("form", { class: "toolbar", "aria-labelledby": "story-title", onsubmit: (e) => e.preventDefault() },
      h("div", { class: "field" }, h("label", { for: "story-window" }, "Window"), win),
      h("fieldset", { class: "kinds" }, h("legend", {}, "Show"), boxes)),
    info, list, more);
  await reload();
}
