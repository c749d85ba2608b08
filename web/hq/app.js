// storebox HQ console: the shell (top bar, navigation, hash router). Pages live in pages/*.js, one
// file each; adding a page is one entry in PAGES below and one file. Everything talks to HQ's own
// /hq/v1 API (no other origin, no build step). The server answers this shell only to a signed-in
// user; a session that ends sends the browser back to the sign-in page.
import { api, h, notice, page, session } from "./lib.js";
import { fleetPage, stopFleet } from "./pages/fleet.js";
import { storePage } from "./pages/store.js";
import { deskPage, deskTicketPage } from "./pages/desk.js";
import { routingPage } from "./pages/routing.js";
import { guidesPage } from "./pages/guides.js";

const $ = (id) => document.getElementById(id);

// [pattern, handler, roles allowed (admin always), nav label or null, nav link]
const PAGES = [
  [/^\/$/, fleetPage, ["operator", "support"], "Fleet", "#/"],
  [/^\/stores\/([^/]+)$/, storePage, ["operator", "support"], null, "#/"],
  // --- support desk ---
  [/^\/desk$/, deskPage, ["operator", "support"], "Support desk", "#/desk"],
  [/^\/desk\/([^/]+)\/([^/]+)$/, deskTicketPage, ["operator", "support"], null, "#/desk"],
  [/^\/routing$/, routingPage, ["admin"], "Desk routing", "#/routing"],
  [/^\/guides$/, guidesPage, ["operator"], "Guides", "#/guides"],
  // Authoring and rollouts add their entries here.
];

/** Called when the page changes, so that pages can stop live updates. */
const stoppers = [stopFleet];

const allowed = (roles) => session.role === "admin" || roles.includes(session.role);

function nav() {
  const list = $("nav-list");
  list.replaceChildren(...PAGES.filter((p) => p[3] && allowed(p[2]))
    .map((p) => h("li", {}, h("a", { href: p[4] }, p[3]))));
}

let routing = Promise.resolve();
function route() {
  routing = routing.then(routeNow, routeNow);
  return routing;
}

async function routeNow() {
  for (const stop of stoppers) stop();
  const path = decodeURIComponent((location.hash || "#/").slice(1).split("?")[0]) || "/";
  for (const a of document.querySelectorAll("#nav a")) a.removeAttribute("aria-current");
  for (const [re, handler, roles, , link] of PAGES) {
    const m = path.match(re);
    if (!m) continue;
    const a = document.querySelector(`#nav a[href="${link}"]`);
    if (a) a.setAttribute("aria-current", "page");
    if (!allowed(roles)) {
      page("Not allowed", notice(`This page needs the role ${roles.join(" or ")}. You are signed in as ${session.role}.`, "error"));
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

async function boot() {
  const me = await api("GET", "/me");
  Object.assign(session, { csrf: me.csrf || "", user: me.user, role: me.role });
  $("who").textContent = `${me.user} (${me.role})`;
  nav();
  await route();
}

window.addEventListener("hashchange", () => { route(); });
window.addEventListener("signed-out", () => {
  for (const stop of stoppers) stop();
  location.replace("/");
});
$("logout").addEventListener("click", async () => {
  for (const stop of stoppers) stop();
  await api("DELETE", "/session").catch(() => {});
  location.replace("/");
});
boot().catch((e) => { page("HQ is not answering", notice(e.message, "error")); });
