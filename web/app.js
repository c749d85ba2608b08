// storebox staff UI shell: sign-in, first-run setup, and the live device list.
"use strict";

const state = { csrf: "" };
const $ = (id) => document.getElementById(id);

async function api(method, path, body) {
  const headers = { "Accept": "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET") headers["X-CSRF-Token"] = state.csrf;
  const res = await fetch("/api/v1" + path, {
    method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  const data = res.status === 204 ? null : await res.json().catch(() => null);
  if (!res.ok) {
    const err = new Error((data && data.error && data.error.message) || res.statusText);
    err.status = res.status;
    throw err;
  }
  return data;
}

function show(section) {
  for (const id of ["login", "setup", "devices"]) $(id).hidden = id !== section;
  $("nav").hidden = section !== "devices";
}

function ago(iso) {
  if (!iso) return "never";
  const s = Math.max(0, Math.round((Date.now() - Date.parse(iso)) / 1000));
  if (s < 60) return s + " s ago";
  if (s < 3600) return Math.round(s / 60) + " min ago";
  return new Date(iso).toLocaleString();
}

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text;
  if (cls) td.className = cls;
  return td;
}

async function refreshDevices() {
  const devices = await api("GET", "/devices");
  const rows = $("device-rows");
  rows.replaceChildren();
  let online = 0;
  for (const d of devices) {
    if (d.online) online++;
    const tr = document.createElement("tr");
    tr.dataset.device = d.id;
    tr.append(
      cell(d.name ? `${d.name} (${d.id})` : d.id),
      cell(d.kind),
      cell(d.online ? "Online" : "Offline" + (d.offline_reason ? ` (${d.offline_reason})` : ""), d.online ? "ok" : "bad"),
      cell(ago(d.last_seen)),
      cell(d.firmware || "–"),
      cell(String(d.open_alerts), d.open_alerts > 0 ? "bad" : ""),
    );
    rows.append(tr);
  }
  $("summary").textContent = `${online} of ${devices.length} devices online`;
}

async function enter(session) {
  state.csrf = session.csrf;
  $("who").textContent = `${session.username} (${session.role})`;
  show("devices");
  await refreshDevices();
}

async function boot() {
  try {
    await enter(await api("GET", "/session"));
    return;
  } catch (e) {
    if (e.status !== 401) throw e;
  }
  const setup = await api("GET", "/setup");
  show(setup.needed ? "setup" : "login");
}

$("login-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await enter(await api("POST", "/session", { username: f.get("username"), password: f.get("password") }));
    $("login-error").textContent = "";
  } catch (e) {
    $("login-error").textContent = e.message;
  }
});

$("setup-form").addEventListener("submit", async (ev) => {
  ev.preventDefault();
  const f = new FormData(ev.target);
  try {
    await api("POST", "/setup", { code: f.get("code"), username: f.get("username"), password: f.get("password") });
    await enter(await api("POST", "/session", { username: f.get("username"), password: f.get("password") }));
  } catch (e) {
    $("setup-error").textContent = e.message;
  }
});

$("logout").addEventListener("click", async () => {
  await api("DELETE", "/session").catch(() => {});
  show("login");
});

setInterval(() => { if (!$("devices").hidden) refreshDevices().catch(() => show("login")); }, 3000);
boot().catch((e) => { document.body.textContent = "storebox: " + e.message; });
