// storebox HQ console: the shell (top bar, navigation, hash router). Pages live in pages/*.js, one
// file each, loaded when first opened; adding a page is one entry in PAGES below and one file that
// exports its render function (and, if it keeps something running, a `stop()` called when the
// user leaves it). Everything talks to HQ's own /hq/v1 API (no other origin, no build step). The
// server answers this shell only to a signed-in user; a session that ends sends the browser back
// to the sign-in page.
import { api, h, notice, page, session } from "./lib.js";

const $ = (id) => document.getElementById(id);

// path: pattern of the hash route (groups are the render function's arguments); module and
// render: the page; roles: who may open it (admin always may); nav: its menu label (null: not in
// the menu); link: the menu entry it belongs to.
const PAGES = [
  { path: /^\/$/, module: "./pages/fleet.js", render: "fleetPage", roles: ["operator", "support"], nav: "Fleet", link: "#/" },
  { path: /^\/stores\/([^/]+)$/, module: "./pages/store.js", render: "storePage", roles: ["operator", "support"], nav: null, link: "#/" },
  // --- authoring, stores and groups, rollouts ---
  { path: /^\/author$/, module: "./pages/author.js", render: "authorPage", roles: ["operator"], nav: "Author", link: "#/author" },
  { path: /^\/groups$/, module: "./pages/stores.js", render: "storesPage", roles: ["operator"], nav: "Stores and groups", link: "#/groups" },
  { path: /^\/rollouts$/, module: "./pages/rollouts.js", render: "rolloutsPage", roles: ["operator", "support"], nav: "Rollouts", link: "#/rollouts" },
  { path: /^\/rollouts\/([^/]+)$/, module: "./pages/rollouts.js", render: "rolloutPage", roles: ["operator", "support"], nav: null, link: "#/rollouts" },
  // --- support desk ---
  { path: /^\/desk$/, module: "./pages/desk.js", render: "deskPage", roles: ["operator", "support"], nav: "Support desk", link: "#/desk" },
  { path: /^\/desk\/([^/]+)\/([^/]+)$/, module: "./pages/desk.js", render: "deskTicketPage", roles: ["operator", "support"], nav: null, link: "#/desk" },
  { path: /^\/routing$/, module: "./pages/routing.js", render: "routingPage", roles: [], nav: "Desk routing", link: "#/routing" },
  { path: /^\/guides$/, module: "./pages/guides.js", render: "guidesPage", roles: ["operator"], nav: "Guides", link: "#/guides" },
];

/** The module of the page on screen (its stop() runs when the user leaves it). */
let current = null;
function leave() {
  if (current && typeof current.stop === "function") current.stop();
  current = null;
}

const allowed = (roles) => session.role === "admin" || roles.includes(session.role);

function nav() {
  $("nav-list").replaceChildren(...PAGES.filter((p) => p.nav && allowed(p.roles))
    .map((p) => h("li", {}, h("a", { href: p.link }, p.nav))));
}

let routing = Promise.resolve();
function route() {
  routing = routing.then(routeNow, routeNow);
  return routing;
}

async function routeNow() {
  leave();
  const path = decodeURIComponent((location.hash || "#/").slice(1).split("?")[0]) || "/";
  for (const a of document.querySelectorAll("#nav a")) a.removeAttribute("aria-current");
  for (const p of PAGES) {
    const m = path.match(p.path);
    if (!m) continue;
    const a = document.querySelector(`#nav a[href="${p.link}"]`);
    if (a) a.setAttribute("aria-current", "page");
    if (!allowed(p.roles)) {
      page("Not allowed", notice(`This page needs the role ${p.roles.join(" or ")}. You are signed in as ${session.role}.`, "error"));
      return;
    }
    try {
      const mod = await import(p.module);
      current = mod;
      await mod[p.render](...m.slice(1));
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
  leave();
  location.replace("/");
});
$("logout").addEventListener("click", async () => {
  leave();
  await api("DELETE", "/session").catch(() => {});
  location.replace("/");
});
boot().catch((e) => { page("HQ is not answering", notice(e.message, "error")); });
