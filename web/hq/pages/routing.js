// Desk routing and teams (admin): which team gets each ticket category, and each team's members,
// on-call member and where the on-call member is notified (webhook URL, e-mail address).
import { api, h, notice, page, table } from "../lib.js";

let teams = [];
let routes = [];
let categories = [];

function field(id, label, control) {
  return h("div", { class: "field" }, h("label", { for: id }, label), control);
}

function teamForm(t, i) {
  const id = (k) => `team-${i}-${k}`;
  const box = h("fieldset", { class: "team", "data-team": i },
    h("legend", {}, t.name ? `Team ${t.name}` : "New team"),
    field(id("name"), "Name", h("input", { id: id("name"), value: t.name || "", required: true })),
    field(id("members"), "Members (HQ user names, comma separated)", h("input", { id: id("members"), value: (t.members || []).join(", ") })),
    field(id("oncall"), "On call (one of the members)", h("input", { id: id("oncall"), value: t.on_call || "" })),
    field(id("webhook"), "Webhook URL", h("input", { id: id("webhook"), type: "url", value: t.webhook_url || "" })),
    field(id("email"), "E-mail", h("input", { id: id("email"), type: "email", value: t.email || "" })),
    h("button", { type: "button", onclick: () => { teams.splice(i, 1); draw(); } }, `Remove ${t.name || "this team"}`));
  return box;
}

function readTeams() {
  const v = (id) => document.getElementById(id).value.trim();
  return teams.map((_, i) => ({
    name: v(`team-${i}-name`),
    members: v(`team-${i}-members`).split(",").map((m) => m.trim()).filter(Boolean),
    on_call: v(`team-${i}-oncall`) || null,
    webhook_url: v(`team-${i}-webhook`) || null,
    email: v(`team-${i}-email`) || null,
  }));
}

function draw() {
  const status = h("div", { id: "routing-status", "aria-live": "polite" });
  const save = async (what, f) => {
    try {
      await f();
      await routingPage();
      document.getElementById("routing-status").replaceChildren(notice(`${what} saved.`));
    } catch (e) {
      document.getElementById("routing-status").replaceChildren(notice(e.message, "error"));
    }
  };
  const rulesForm = h("form", { "aria-label": "Routing rules", onsubmit: (e) => {
    e.preventDefault();
    const list = categories.map((c) => ({ category: c, team: document.getElementById(`route-${c}`).value }))
      .filter((r) => r.team);
    save("Routing", () => api("PUT", "/desk/routing", { routes: list }));
  } },
  table("Routing rules: ticket category to team", [
    { label: "Category", header: true, cell: (c) => c },
    { label: "Team", cell: (c) => {
      const sel = h("select", { id: `route-${c}`, "aria-label": `Team for ${c}` }, h("option", { value: "" }, "No team"),
        teams.map((t) => h("option", { value: t.name }, t.name)));
      sel.value = (routes.find((r) => r.category === c) || {}).team || "";
      return sel;
    } },
  ], categories),
  h("button", { type: "submit" }, "Save routing"));
  const teamsForm = h("form", { "aria-label": "Teams", onsubmit: (e) => {
    e.preventDefault();
    save("Teams", () => api("PUT", "/desk/teams", { teams: readTeams() }));
  } },
  teams.map(teamForm),
  h("button", { type: "button", onclick: () => { teams = readTeams(); teams.push({ name: "", members: [] }); draw(); } }, "Add team"),
  h("button", { type: "submit" }, "Save teams"));
  page("Desk routing and teams", status,
    h("h2", {}, "Routing"), h("p", { class: "muted" }, "A new ticket goes to the team of its category; its on-call member is notified."),
    rulesForm,
    h("h2", {}, "Teams"), teamsForm);
}

export async function routingPage() {
  const [r, t] = await Promise.all([api("GET", "/desk/routing"), api("GET", "/desk/teams")]);
  routes = r.routes;
  categories = r.categories;
  teams = t.teams;
  draw();
}
