// storebox staff UI: sign-in, first-run setup, hash routing and the page shell. Pages live in
// pages/*.js; everything talks to the box's own /api/v1 (no other origin, no build step).
import { api, atLeast, h, notice, page, session } from "./lib.js";
import { overviewPage } from "./pages/overview.js";
import { devicesPage, devicePage, provisionPage, stopLive } from "./pages/devices.js";
import { pricesPage, productPage, promotionsPage } from "./pages/prices.js";
import { alertsPage, aboutPage, auditPage, ticketsPage, ticketPage, usersPage } from "./pages/admin.js";

const $ = (id) => document.getElementById(id);

// [pattern, handler, role needed, nav link]
const ROUTES = [
  [/^\/$/, overviewPage, "staff", "#/"],
  [/^\/devices$/, devicesPage, "staff", "#/devices"],
  [/^\/devices\/new$/, provisionPage, "manager", "#/devices"],
  [/^\/devices\/([^/]+)$/, devicePage, "staff", "#/devices"],
  [/^\/prices$/, pricesPage, "staff", "#/prices"],
  [/^\/prices\/([^/]+)$/, productPage, "staff", "#/prices"],
  [/^\/promotions$/, promotionsPage, "staff", "#/promotions"],
  [/^\/alerts$/, alertsPage, "staff", "#/alerts"],
  [/^\/tickets$/, ticketsPage, "staff", "#/tickets"],
  [/^\/tickets\/([^/]+)$/, ticketPage, "staff", "#/tickets"],
  [/^\/audit$/, auditPage, "manager", "#/audit"],
  [/^\/users$/, usersPage, "admin", "#/users"],
  [/^\/about$/, aboutPage, "staff", "#/about"],
];

function shell(signedIn) {
  $("nav").hidden = !signedIn;
  $("who-box").hidden = !signedIn;
  if (!signedIn) return;
  $("who").textContent = `${session.username} (${session.role})`;
  for (const li of document.querySelectorAll("#nav li[data-role]")) li.hidden = !atLeast(li.dataset.role);
  if (session.store) $("store-name").textContent = session.store.store_name || "storebox";
}

// Routes render one after another: a page still loading when the user (or a test) moves on must
// not paint over the newer page when its data finally arrives.
let routing = Promise.resolve();
function route() {
  routing = routing.then(routeNow, routeNow);
  return routing;
}

async function routeNow() {
  stopLive();
  if (!session.csrf) return;
  const path = decodeURIComponent((location.hash || "#/").slice(1).split("?")[0]) || "/";
  for (const a of document.querySelectorAll("#nav a")) a.removeAttribute("aria-current");
  for (const [re, handler, role, nav] of ROUTES) {
    const m = path.match(re);
    if (!m) continue;
    const link = document.querySelector(`#nav a[href="${nav}"]`);
    if (link) link.setAttribute("aria-current", "page");
    if (!atLeast(role)) {
      page("Not allowed", notice(`This page needs the ${role} role. You are signed in as ${session.role}. Ask an administrator if you need it.`, "error"));
      return;
    }
    try {
      await handler(...m.slice(1));
    } catch (e) {
      if (e.status === 401) return;
      page("Something went wrong", notice(e.message, "error"));
    }
    $("view").focus({ preventScroll: true });
    return;
  }
  page("Page not found", notice("There is no such page. Use the menu above."));
}

async function enter(s) {
  Object.assign(session, { csrf: s.csrf, username: s.username, role: s.role });
  session.store = await api("GET", "/about").catch(() => null);
  shell(true);
  await route();
}

function signInPage(message) {
  stopLive();
  Object.assign(session, { csrf: "", username: "", role: "" });
  shell(false);
  const err = h("p", { class: "error", id: "login-error", role: "alert" }, message || "");
  const form = h("form", { id: "login-form", class: "narrow" },
    h("label", {}, "User name", h("input", { name: "username", autocomplete: "username", required: true, autocapitalize: "none" })),
    h("label", {}, "Password", h("input", { name: "password", type: "password", autocomplete: "current-password", required: true })),
    h("button", { type: "submit" }, "Sign in"),
    err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    err.textContent = "";
    try {
      await enter(await api("POST", "/session", { username: f.get("username"), password: f.get("password") }));
    } catch (e) {
      err.textContent = e.status === 401 ? "Wrong user name or password." : e.message;
    }
  });
  page("Sign in", form);
  form.querySelector("input").focus();
}

function setupPage() {
  shell(false);
  const err = h("p", { class: "error", role: "alert" });
  const form = h("form", { id: "setup-form", class: "narrow" },
    h("label", {}, "Setup code", h("input", { name: "code", required: true, autocomplete: "off" })),
    h("label", {}, "Administrator name", h("input", { name: "username", autocomplete: "username", required: true })),
    h("label", {}, "Password (10 characters or more)", h("input", { name: "password", type: "password", autocomplete: "new-password", minlength: 10, required: true })),
    h("button", { type: "submit" }, "Create administrator"),
    err);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const f = new FormData(form);
    try {
      await api("POST", "/setup", { code: f.get("code"), username: f.get("username"), password: f.get("password") });
      await enter(await api("POST", "/session", { username: f.get("username"), password: f.get("password") }));
    } catch (e) {
      err.textContent = e.message;
    }
  });
  page("First-run setup",
    h("p", {}, "No staff account exists yet. Enter the one-time setup code printed in the storebox log ",
      h("code", {}, "journalctl -u storebox"), " and choose the first administrator's name and password."),
    h("p", {}, "Alternatively, on the box run ", h("code", {}, "storebox user add NAME --role admin"), "."),
    form);
}

async function boot() {
  try {
    await enter(await api("GET", "/session"));
    return;
  } catch (e) {
    if (e.status !== 401) throw e;
  }
  const setup = await api("GET", "/setup");
  if (setup.needed) setupPage(); else signInPage();
}

window.addEventListener("hashchange", () => { route(); });
window.addEventListener("signed-out", () => {
  if (session.csrf) signInPage("Your session has ended. Please sign in again.");
});
$("logout").addEventListener("click", async () => {
  await api("DELETE", "/session").catch(() => {});
  signInPage("You are signed out.");
});
boot().catch((e) => { page("storebox is not answering", notice(e.message, "error")); });
