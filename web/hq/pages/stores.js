// Stores and groups (operator, admin): the fleet list with a group field per store; "Move" sends
// PUT /hq/v1/stores/{id}/group. Authored data and rollouts target groups, so a move changes what
// the store receives from then on.
import { api, h, healthPill, notice, page, table } from "../lib.js";

async function move(id, input, status) {
  status.textContent = "";
  input.removeAttribute("aria-invalid");
  try {
    const v = await api("PUT", `/stores/${encodeURIComponent(id)}/group`, { group: input.value.trim() });
    status.textContent = v.group ? `Moved to ${v.group}.` : "Now in no group.";
  } catch (e) {
    input.setAttribute("aria-invalid", "true");
    status.textContent = e.message;
    status.className = "error";
  }
}

export async function storesPage() {
  const v = await api("GET", "/fleet");
  const groups = [...new Set(v.stores.map((s) => s.group).filter(Boolean))].sort();
  const datalist = h("datalist", { id: "group-names" }, groups.map((g) => h("option", { value: g })));
  const columns = [
    { label: "Store", header: true, cell: (s) => h("a", { href: `#/stores/${encodeURIComponent(s.id)}` }, s.id) },
    { label: "Health", cell: (s) => healthPill(s.health) },
    { label: "Version", cell: (s) => s.version || "—" },
    { label: "Group", cell: (s) => {
      const id = `group-${s.id}`;
      const input = h("input", { id, value: s.group, list: "group-names", "aria-describedby": `moved-${s.id}`, size: "14" });
      const status = h("span", { id: `moved-${s.id}`, "aria-live": "polite" });
      return h("form", { class: "inline", onsubmit: (e) => { e.preventDefault(); move(s.id, input, status); } },
        h("label", { for: id, class: "sr-only" }, `Group of ${s.id}`), input,
        h("button", { type: "submit", class: "secondary" }, "Move"), status);
    } },
  ];
  page("Stores and groups",
    h("p", {}, "Type a group name (or clear it) and press Move. Groups are what authoring targets and rollout waves name; a store receives data for its current group from its next sync. Group names: letters, digits, '-', '_' and '.'."),
    datalist,
    v.stores.length ? table("Stores and their groups", columns, v.stores) : notice("No stores are registered yet (storebox hq store add)."));
}
