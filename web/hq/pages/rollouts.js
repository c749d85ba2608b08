// Releases and rollouts: the registered releases, every rollout, and one rollout with its waves,
// per-store states, attempts, reasons and times; operators and admins pause, resume or abort it,
// and start a rollout from a release with a wave editor (groups → next groups → all).
import { api, h, notice, page, plural, session, table, when } from "../lib.js";

const canAct = () => session.role === "admin" || session.role === "operator";

const STATE_WORD = {
  running: "Running", paused: "Paused", completed: "Completed", aborted: "Aborted",
};

function waveEditor(releases) {
  const waves = h("ol", { id: "waves" });
  const addWave = (groups = "", all = false) => {
    const n = waves.childElementCount + 1;
    const gid = `wave-${n}-groups`;
    const aid = `wave-${n}-all`;
    waves.append(h("li", { class: "wave" },
      h("div", { class: "field" }, h("label", { for: gid }, `Wave ${n}: groups (comma separated)`),
        h("input", { id: gid, value: groups, list: "rollout-groups" })),
      h("label", { class: "check" }, h("input", { id: aid, type: "checkbox", checked: all }), `Wave ${n}: all remaining stores`),
      h("div", { class: "field" }, h("label", { for: `wave-${n}-soak` }, `Wave ${n}: soak minutes`),
        h("input", { id: `wave-${n}-soak`, type: "number", min: "0", value: "30" })),
      h("div", { class: "field" }, h("label", { for: `wave-${n}-min` }, `Wave ${n}: minimum success %`),
        h("input", { id: `wave-${n}-min`, type: "number", min: "0", max: "100", value: "100" }))));
  };
  addWave("pilot");
  addWave("", true);
  const msg = h("div", { id: "rollout-msg", "aria-live": "polite" });
  const start = async (ev) => {
    ev.preventDefault();
    const plan = {
      version: document.getElementById("r-version").value,
      waves: [...waves.children].map((_, i) => {
        const n = i + 1;
        const all = document.getElementById(`wave-${n}-all`).checked;
        const groups = document.getElementById(`wave-${n}-groups`).value.split(",").map((s) => s.trim()).filter(Boolean);
        return Object.assign(all ? { all: true } : { groups }, {
          soak_minutes: Number(document.getElementById(`wave-${n}-soak`).value),
          min_success_percent: Number(document.getElementById(`wave-${n}-min`).value),
        });
      }),
      abort_failure_percent: Number(document.getElementById("r-abort").value),
      store_timeout_minutes: Number(document.getElementById("r-timeout").value),
      urgent: document.getElementById("r-urgent").checked,
    };
    try {
      const v = await api("POST", "/rollouts", plan);
      location.hash = `#/rollouts/${encodeURIComponent(v.id)}`;
    } catch (e) {
      msg.replaceChildren(notice(e.message, "error"));
    }
  };
  return h("form", { class: "card", onsubmit: start },
    h("h2", {}, "Start a rollout"),
    h("div", { class: "field" }, h("label", { for: "r-version" }, "Release"),
      h("select", { id: "r-version" }, releases.map((r) => h("option", { value: r.version }, `${r.version} (${r.channel})`)))),
    waves,
    h("button", { type: "button", class: "secondary", onclick: () => addWave() }, "Add a wave"),
    h("div", { class: "field" }, h("label", { for: "r-abort" }, "Abort when this % of assigned stores fail"),
      h("input", { id: "r-abort", type: "number", min: "0", max: "100", value: "20" })),
    h("div", { class: "field" }, h("label", { for: "r-timeout" }, "A store that does not answer within (minutes) counts as failed"),
      h("input", { id: "r-timeout", type: "number", min: "1", value: "120" })),
    h("label", { class: "check" }, h("input", { id: "r-urgent", type: "checkbox" }), "Urgent (install outside the maintenance window)"),
    h("button", { type: "submit" }, "Start rollout"), msg);
}

export async function rolloutsPage() {
  const [rel, ro] = await Promise.all([api("GET", "/releases"), api("GET", "/rollouts")]);
  page("Releases and rollouts",
    table("Rollouts", [
      { label: "Rollout", header: true, cell: (r) => h("a", { href: `#/rollouts/${encodeURIComponent(r.id)}` }, r.id) },
      { label: "Version", cell: (r) => r.version },
      { label: "State", cell: (r) => STATE_WORD[r.state] || r.state },
      { label: "Reason", cell: (r) => r.reason || "" },
      { label: "Started", cell: (r) => when(r.created_at) },
    ], ro.rollouts, { showCaption: true, empty: "No rollouts yet." }),
    table("Releases", [
      { label: "Version", header: true, cell: (r) => r.version },
      { label: "Channel", cell: (r) => r.channel },
      { label: "Size", cell: (r) => `${Math.round(r.size / 1024)} KiB` },
      { label: "Uploaded", cell: (r) => when(r.uploaded_at) },
      { label: "Expires", cell: (r) => when(r.expires_at) },
    ], rel.releases, { showCaption: true, empty: "No releases registered (an admin uploads them)." }),
    canAct() && rel.releases.length ? waveEditor(rel.releases) : null);
}

export async function rolloutPage(id) {
  const r = await api("GET", `/rollouts/${encodeURIComponent(id)}`);
  const msg = h("div", { id: "rollout-msg", "aria-live": "polite" });
  const act = (action) => async () => {
    try {
      await api("POST", `/rollouts/${encodeURIComponent(id)}/${action}`, {});
      await rolloutPage(id);
    } catch (e) {
      msg.replaceChildren(notice(e.message, "error"));
    }
  };
  const buttons = canAct() ? h("div", { class: "actions" },
    r.state === "running" ? h("button", { type: "button", onclick: act("pause") }, "Pause") : null,
    r.state === "paused" ? h("button", { type: "button", onclick: act("resume") }, "Resume") : null,
    r.state === "running" || r.state === "paused" ? h("button", { type: "button", class: "danger", onclick: act("abort") }, "Abort") : null) : null;
  const counts = r.counts ? Object.entries(r.counts).map(([k, v]) => `${k.replace(/_/g, " ")}: ${v}`).join(", ") : "";
  page(`Rollout ${r.id}`,
    h("p", {}, h("a", { href: "#/rollouts" }, "All rollouts")),
    h("dl", { class: "facts" },
      h("dt", {}, "Version"), h("dd", {}, r.version),
      h("dt", {}, "State"), h("dd", { id: "rollout-state" }, STATE_WORD[r.state] || r.state),
      h("dt", {}, "Reason"), h("dd", {}, r.reason || "—"),
      h("dt", {}, "Started"), h("dd", {}, `${when(r.created_at)} by ${r.created_by || "?"}`),
      h("dt", {}, "Stores"), h("dd", {}, counts || "none assigned yet")),
    buttons, msg,
    r.waves.map((w) => h("section", { class: "card" },
      h("h2", {}, `Wave ${w.index + 1}: ${w.all ? "all stores" : (w.groups || []).join(", ")} — ${w.state.replace("_", " ")}`),
      h("p", { class: "muted" }, `At least ${w.min_success_percent} % must succeed, then ${plural(w.soak_minutes, "minute")} of soak${w.soak_ends_at ? ` (ends ${when(w.soak_ends_at)})` : ""}.`),
      table(`Stores in wave ${w.index + 1}`, [
        { label: "Store", header: true, cell: (s) => h("a", { href: `#/stores/${encodeURIComponent(s.store)}` }, s.store) },
        { label: "State", cell: (s) => s.state.replace(/_/g, " ") },
        { label: "Attempts", cell: (s) => String(s.attempts) },
        { label: "Reason", cell: (s) => s.reason || "" },
        { label: "Assigned", cell: (s) => when(s.assigned_at) },
        { label: "Updated", cell: (s) => when(s.updated_at) },
      ], w.stores, { empty: "No store assigned in this wave yet." }))));
}
