// Audit: every change of the control plane, newest first, with filters, paging and an export
// as JSON lines. Read by admin and auditor keys; nothing here changes an event.
import { api, headers } from "./api.js";
import { $, el, button, fillTable, fmtTime, formValues, say } from "./ui.js";

const PAGE = 50;
let cursors = []; // the `after` of each page shown so far (null: the newest)

function query(extra = {}) {
  const v = formValues($("#audit-filter"));
  const params = new URLSearchParams();
  for (const name of ["action", "actor", "object_type", "object_id"]) {
    if (v[name]) params.set(name, v[name]);
  }
  for (const name of ["since", "until"]) {
    if (v[name]) params.set(name, String(new Date(v[name]).getTime() / 1000));
  }
  for (const [name, value] of Object.entries(extra)) params.set(name, String(value));
  return params;
}

function actor(e) {
  const who = e.actor.name || (e.actor.key_id ? `key ${e.actor.key_id}` : "—");
  return el("span", {}, who, e.actor.key_id ? el("small", { class: "hint" }, ` #${e.actor.key_id}`) : null,
    e.actor.via !== "api" ? el("small", { class: "hint" }, ` (${e.actor.via})`) : null);
}

function change(e) {
  if (e.action.startsWith("auth.")) return `${e.after.count}× ${e.after.code}`;
  const before = e.before || {};
  const after = e.after || {};
  const changed = Object.keys({ ...before, ...after })
    .filter((k) => k !== "updated_at" && JSON.stringify(before[k]) !== JSON.stringify(after[k]));
  if (!e.before) return "created";
  if (!e.after) return "removed";
  return changed.join(", ") || "—";
}

function detail(e) {
  const box = $("#audit-detail");
  box.replaceChildren(el("h3", {}, `${e.action} ${e.object_type} ${e.object_id ?? ""}`),
    el("p", {}, `${fmtTime(e.created_at)} · request ${e.request_id ?? "—"} · from ${e.client_address ?? "—"}`),
    el("h4", {}, "Before"), el("pre", { class: "json" }, JSON.stringify(e.before, null, 2)),
    el("h4", {}, "After"), el("pre", { class: "json" }, JSON.stringify(e.after, null, 2)));
  box.hidden = false;
}

async function show(after) {
  const extra = { limit: PAGE };
  if (after) extra.after = after;
  const page = await api("GET", `/admin/v1/audit?${query(extra)}`);
  fillTable($("#audit-table"), page.data, [
    ["when", (e) => fmtTime(e.created_at)],
    ["action", (e) => el("code", {}, e.action)],
    ["object", (e) => `${e.object_type} ${e.object_id ?? ""}`],
    ["actor", actor],
    ["from", (e) => e.client_address],
    ["change", change],
    ["", (e) => button("Details", () => detail(e), "quiet")],
  ], "No events match.");
  $("#audit-next").disabled = !page.has_more;
  $("#audit-next").onclick = async () => { cursors.push(page.last_id); await show(page.last_id); };
  $("#audit-first").disabled = !after;
}

async function exportLines() {
  const response = await fetch(`/admin/v1/audit/export?${query()}`, { headers: headers() });
  if (!response.ok) { say("#audit-say", `Export failed: ${response.status}.`); return; }
  const link = el("a", { href: URL.createObjectURL(await response.blob()), download: "audit.jsonl" });
  link.click();
  URL.revokeObjectURL(link.href);
}

async function load() {
  cursors = [];
  $("#audit-detail").hidden = true;
  say("#audit-say", "");
  await show(null);
}

function init() {
  $("#audit-filter").addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await load(); } catch (error) { say("#audit-say", error.message); }
  });
  $("#audit-first").addEventListener("click", () => load());
  $("#audit-export").addEventListener("click", () => exportLines());
}

export default { init, load };
