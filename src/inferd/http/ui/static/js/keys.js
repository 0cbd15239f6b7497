// API Keys: create with every limit (shown once, with Copy), spend against budget, edit,
// disable, delete; listed a page at a time ("Load more"), searched by name, owner, team, prefix.
import { api, list } from "./api.js";
import { $, $$, el, fillTable, fmtNum, fmtTime, formValues, rowButton, rowSay, say } from "./ui.js";

let editing = null; // the key being edited, or null when creating
const messages = new Map(); // key id -> {text, kind}: the outcome of its row's last action

// Start of the current budget period in UTC, as the server counts it (null: in total).
function periodStart(period) {
  const now = new Date();
  const day = Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), now.getUTCDate());
  if (period === "day") return day / 1000;
  if (period === "week") return (day - ((now.getUTCDay() + 6) % 7) * 86400000) / 1000;
  if (period === "month") return Date.UTC(now.getUTCFullYear(), now.getUTCMonth(), 1) / 1000;
  return 0;
}

// Tokens used and money spent per key since the start of each key's budget period.
async function spend(keys) {
  const out = new Map();
  const periods = new Set(keys.map((k) => k.budget_period || ""));
  for (const period of periods) {
    const since = periodStart(period);
    const rows = list(await api("GET", `/admin/v1/usage?group_by=key&since=${since}`));
    for (const row of rows) {
      for (const k of keys) if (String(k.id) === String(row.key_id) && (k.budget_period || "") === period) out.set(k.id, row);
    }
  }
  return out;
}

function spendCell(k, used) {
  const row = used.get(k.id);
  const tokens = row ? row.total_tokens : 0;
  const cells = [];
  if (k.token_budget === null || k.token_budget === undefined) cells.push(el("span", {}, `${fmtNum(tokens)} tokens`));
  else {
    const share = k.token_budget ? Math.min(1, tokens / k.token_budget) : 1;
    cells.push(el("meter", { min: 0, max: 1, value: share, high: 0.8, optimum: 0 }),
      el("span", {}, `${fmtNum(tokens)} / ${fmtNum(k.token_budget)} per ${k.budget_period || "total"}`));
  }
  if (k.max_budget !== null && k.max_budget !== undefined) {
    const cost = row ? row.cost : 0;
    const share = k.max_budget ? Math.min(1, cost / k.max_budget) : 1;
    cells.push(el("meter", { min: 0, max: 1, value: share, high: (k.budget_alert ?? 80) / 100, optimum: 0 }),
      el("span", {}, `spent ${cost} / ${k.max_budget} per ${k.budget_period || "total"}`));
  }
  if (cells.length === 1) return cells[0].textContent;
  return el("div", { class: "spend" }, ...cells);
}

// A row's action: its outcome is said in the row, the previous one cleared.
function act(k, label, run, cls = "quiet") {
  return rowButton(label, `key ${k.name}`, async () => {
    messages.delete(k.id);
    try { await run(); } catch (error) { messages.set(k.id, { text: error.message, kind: "error" }); }
    await load().catch((error) => say("#notice", error.message));
  }, cls);
}

function actions(k) {
  const remove = rowButton("Delete", `key ${k.name}`, () => {
    // Two steps so a stray click or key press deletes nothing.
    const confirm = act(k, "Confirm delete", () => api("DELETE", `/admin/v1/keys/${k.id}`), "danger");
    remove.replaceWith(confirm);
    confirm.focus();
  }, "danger");
  return el("span", { class: "actions" },
    rowButton("Edit", `key ${k.name}`, () => edit(k), "quiet"),
    act(k, k.enabled ? "Disable" : "Enable", () => api("POST", `/admin/v1/keys/${k.id}/${k.enabled ? "disable" : "enable"}`)),
    remove, rowSay(messages, k.id));
}

// The allow-list is picked from the models that exist (a name not served is not offered).
async function loadModels() {
  const names = list(await api("GET", "/admin/v1/models")).map((m) => m.name);
  const box = $("#key-model-list");
  const ticked = new Set(chosenModels());
  box.replaceChildren(...names.map((name) => el("label", { class: "check" },
    el("input", { type: "checkbox", "data-model": name, checked: ticked.has(name) }), ` ${name}`)));
  showModels();
}

function chosenModels() {
  return $$("#key-model-list [data-model]").filter((c) => c.checked).map((c) => c.dataset.model);
}

function setModels(models) {
  $("#key-all-models").checked = !models;
  for (const c of $$("#key-model-list [data-model]")) c.checked = !!models && models.includes(c.dataset.model);
  // a name the key allows that no longer names a model stays visible (and can be unticked)
  for (const name of models || []) {
    if (!$$("#key-model-list [data-model]").some((c) => c.dataset.model === name)) {
      $("#key-model-list").append(el("label", { class: "check" },
        el("input", { type: "checkbox", "data-model": name, checked: true }), ` ${name} (no such model)`));
    }
  }
  showModels();
}

function showModels() {
  $("#key-model-list").hidden = $("#key-all-models").checked;
}

// A key belongs to a team, a user or both: picked from the first page of each (the labels
// follow the choice).
async function loadOwners() {
  for (const [kind, select] of [["teams", "#key-team"], ["users", "#key-user"]]) {
    const rows = list(await api("GET", `/admin/v1/${kind}?limit=1000`));
    const box = $(select);
    const chosen = box.value;
    box.replaceChildren(el("option", { value: "" }, "none"),
      ...rows.map((r) => el("option", { value: r.id }, r.name)));
    if (rows.some((r) => String(r.id) === chosen)) box.value = chosen;
  }
}

function pickOwner(select, label) {
  const box = $(select);
  $("#key-form").elements[label].value = box.value ? box.selectedOptions[0].textContent : "";
}

// The keys shown: pages of the list by cursor, for the search in the box.
const PAGE = 100;
let shown = [];
let lastId = null;

async function page(after) {
  const query = new URLSearchParams({ limit: PAGE });
  const search = $("#key-search").elements.search.value.trim();
  if (search) query.set("search", search);
  if (after !== null) query.set("after", after);
  const answer = await api("GET", `/admin/v1/keys?${query}`);
  shown = after === null ? list(answer) : shown.concat(list(answer));
  lastId = answer.last_id ?? lastId;
  $("#keys-more").hidden = !answer.has_more;
  await render();
}

async function load() {
  await page(null);
}

async function render() {
  const keys = shown;
  const used = await spend(keys);
  fillTable($("#keys-table"), keys, [
    ["name", (k) => el("strong", {}, k.name)],
    ["prefix", (k) => el("code", {}, k.prefix)],
    ["scope", (k) => k.scope],
    ["user / team", (k) => [k.owner, k.team].filter(Boolean).join(" / ") || "—"],
    ["models", (k) => (k.models ? k.models.join(", ") : "all")],
    ["rpm", (k) => k.rpm], ["tpm", (k) => k.tpm], ["ipm", (k) => k.ipm],
    ["spend", (k) => spendCell(k, used)],
    ["expires", (k) => (k.expires_at ? fmtTime(k.expires_at) : "never")],
    ["status", (k) => (k.user_disabled ? el("span", { class: "badge bad" }, "user disabled")
      : el("span", { class: `badge ${k.enabled ? "ok" : "bad"}` }, k.enabled ? "active" : "disabled"))],
    ["", actions],
  ], "No keys yet.");
  await loadModels();
  await loadOwners();
}

function edit(k) {
  editing = k;
  const f = $("#key-form").elements;
  for (const name of ["name", "owner", "team", "rpm", "tpm", "ipm", "upm", "token_budget", "max_budget", "budget_alert", "image_budget", "storage_bytes", "storage_objects", "queue_weight"]) f[name].value = k[name] ?? "";
  f.scope.value = k.scope;
  f.team_id.value = k.team_id ?? "";
  f.user_id.value = k.user_id ?? "";
  setModels(k.models);
  f.budget_period.value = k.budget_period || "";
  f.log_bodies.checked = Boolean(k.log_bodies);
  f.expires.value = k.expires_at ? new Date(k.expires_at * 1000 - new Date().getTimezoneOffset() * 60000).toISOString().slice(0, 16) : "";
  $("#key-form-title").textContent = `Edit key ${k.name}`;
  $("#key-form button[type=submit]").textContent = "Save key";
  $("#key-box").open = true;
  f.name.focus();
}

function body(v) {
  const number = (s) => (s === "" ? null : Number(s));
  const out = { name: v.name, owner: v.owner || null, team: v.team || null, scope: v.scope,
    team_id: number(v.team_id), user_id: number(v.user_id),
    models: $("#key-all-models").checked ? null : chosenModels(), rpm: number(v.rpm), tpm: number(v.tpm), ipm: number(v.ipm),
    upm: number(v.upm), image_budget: number(v.image_budget),
    storage_bytes: number(v.storage_bytes), storage_objects: number(v.storage_objects),
    token_budget: number(v.token_budget), budget_period: v.budget_period || null,
    max_budget: number(v.max_budget), budget_alert: number(v.budget_alert),
    expires_at: v.expires ? new Date(v.expires).getTime() / 1000 : null, log_bodies: Boolean(v.log_bodies),
    queue_weight: number(v.queue_weight) };
  if (!editing) for (const [name, value] of Object.entries(out)) if (value === null) delete out[name];
  return out;
}

async function save(event) {
  event.preventDefault();
  const v = formValues(event.target);
  say("#key-say", "");
  if (!$("#key-all-models").checked && !chosenModels().length) {
    say("#key-say", "Tick the models the key may use, or All models.");
    return;
  }
  try {
    if (editing) {
      await api("PATCH", `/admin/v1/keys/${editing.id}`, body(v));
      say("#key-say", "Saved.", "ok");
    } else {
      const created = await api("POST", "/admin/v1/keys", body(v));
      $("#key-secret").textContent = created.key;
      $("#key-copy").textContent = "Copy";
      $("#key-created").showModal();
    }
    event.target.reset();
    await load();
  } catch (error) {
    say("#key-say", error.message);
  }
}

export default {
  init() {
    $("#key-form").addEventListener("submit", save);
    $("#key-all-models").addEventListener("change", showModels);
    $("#key-team").addEventListener("change", () => pickOwner("#key-team", "team"));
    $("#key-user").addEventListener("change", () => pickOwner("#key-user", "owner"));
    // The secret is shown once: it leaves the page when its dialog closes.
    $("#key-created").addEventListener("close", () => { $("#key-secret").textContent = ""; });
    $("#key-close").addEventListener("click", () => $("#key-created").close());
    $("#key-search").addEventListener("submit", (event) => {
      event.preventDefault();
      load().catch((error) => say("#key-say", error.message));
    });
    $("#keys-more").addEventListener("click", () => {
      page(lastId).catch((error) => say("#key-say", error.message));
    });
    $("#key-form").addEventListener("reset", () => {
      editing = null;
      setTimeout(() => setModels(null)); // after the form's own reset of the boxes
      $("#key-form-title").textContent = "Create a key";
      $("#key-form button[type=submit]").textContent = "Create key";
    });
    $("#key-copy").addEventListener("click", async () => {
      const secret = $("#key-secret").textContent;
      try {
        await navigator.clipboard.writeText(secret);
      } catch {
        // Clipboard API needs a secure context: select the text so Ctrl+C copies it.
        getSelection().selectAllChildren($("#key-secret"));
      }
      $("#key-copy").textContent = "Copied";
    });
  },
  load,
};
