// Monitoring: charts over time per model or key with a range picker, the usage records list
// and the read-only table viewer. A click on a bar of a count chart opens the Requests page
// filtered to that bar: its time window, its series (model or key), errors for the Errors
// chart and cancelled requests (499) for the Cancelled one.
import { api, list, canRead } from "./api.js";
import { $, el, fillTable, fmtTime, formValues, text } from "./ui.js";
import { loadSeries, drawChart } from "./chart.js";
import { keyNames, keyPicker, pickedKey } from "./names.js";

// The status filter of the requests behind each count chart's bars (undefined: none).
const PICKS = { Requests: null, Tokens: null, Errors: "error", Cancelled: "499", Images: null };

// The key id of a series of the key split: named "name", "name (key 12)" or "key 12".
async function seriesKey(name) {
  const id = /\(key (\d+)\)$/.exec(name) || /^key (\d+)$/.exec(name);
  if (id) return id[1];
  const keys = list(await api("GET", `/admin/v1/keys?${new URLSearchParams({ name, limit: "100" })}`))
    .filter((k) => k.name === name);
  return keys.length === 1 ? String(keys[0].id) : "";
}

async function openRequests(pick, status, split, filters) {
  const query = new URLSearchParams({ from: String(pick.from), to: String(pick.to) });
  const model = split === "model" && pick.name ? pick.name : filters.model;
  if (model) query.set("model", model);
  let key = filters.key || "";
  if (split === "key" && pick.name && canRead()) key = (await seriesKey(pick.name)) || key;
  if (key) query.set("key_id", key);
  if (status) query.set("status", status);
  location.hash = `#requests/${query}`;
}

const CHARTS = [
  ["Requests", "requests"], ["Tokens", "total_tokens"], ["Errors", "errors"],
  ["Cancelled", "cancelled"], ["Images", "images"],
  ["p50 latency (ms)", "p50_latency_ms"], ["p95 latency (ms)", "p95_latency_ms"],
  ["p50 time to first token (ms)", "p50_ttft_ms"], ["p95 time to first token (ms)", "p95_ttft_ms"],
];

// The charts drawn anew. `aria-busy` stays true while any drawing is under way (a change of
// the range and the form's submit may start two): the charts are whole, and keep the
// keyboard's focus, once it is false.
async function charts() {
  const box = $("#mon-charts");
  box.dataset.drawing = String(Number(box.dataset.drawing || 0) + 1);
  box.setAttribute("aria-busy", "true");
  try {
    await drawCharts(box);
  } finally {
    box.dataset.drawing = String(Number(box.dataset.drawing) - 1);
    if (box.dataset.drawing === "0") box.setAttribute("aria-busy", "false");
  }
}

async function drawCharts(box) {
  const v = formValues($("#mon-form"));
  const filters = { model: v.model };
  if (canRead()) filters.key = await pickedKey($("#mon-key"));
  const data = await loadSeries(v.range, v.split, filters);
  box.replaceChildren();
  box.dataset.requests = String(data.series.reduce((n, s) => n + s.data.reduce((m, b) => m + b.requests, 0), 0));
  for (const [title, metric] of CHARTS) {
    const onPick = title in PICKS
      ? (pick) => openRequests(pick, PICKS[title], v.split, filters).catch((e) => say(e)) : null;
    drawChart(box, title, data, metric, { onPick });
  }
}

async function records() {
  const v = formValues($("#records-form"));
  const query = new URLSearchParams({ limit: v.limit });
  const keyId = await pickedKey($("#records-key"));
  if (keyId) query.set("key_id", keyId);
  const rows = list(await api("GET", `/admin/v1/usage/records?${query}`));
  const named = await keyNames(rows.map((r) => r.key_id));
  fillTable($("#records-table"), rows, [
    ["time", (r) => fmtTime(r.created_at)], ["model", (r) => r.model], ["key", (r) => named[r.key_id] ?? "—"],
    ["endpoint", (r) => r.endpoint], ["status", (r) => r.status],
    ["tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
    ["cost", (r) => (r.cost ? String(r.cost) : "0")],
    ["latency ms", (r) => Math.round(r.latency_ms)],
    ["TTFT ms", (r) => (r.ttft_ms === null ? "—" : Math.round(r.ttft_ms))],
    ["error", (r) => r.error],
  ], "No requests recorded yet.");
}

const RANGES = { day: 86400, week: 7 * 86400, month: 30 * 86400 };
const GROUPED = {
  key: (r, named) => named[r.key_id] ?? r.key_id ?? "—",
  user: (r) => r.user_name ?? "(no user)",
  team: (r) => r.team_name ?? "(no team)",
  model: (r) => r.model,
};

// Requests, tokens and cost per key, user, team or model (``/admin/v1/usage?group_by=``).
async function totals() {
  const v = formValues($("#totals-form"));
  const since = Math.floor(Date.now() / 1000) - RANGES[v.range];
  const rows = list(await api("GET", `/admin/v1/usage?group_by=${v.group}&since=${since}`));
  const named = v.group === "key" ? await keyNames(rows.map((r) => r.key_id)) : {};
  fillTable($("#totals-table"), rows, [
    [v.group, (r) => GROUPED[v.group](r, named)], ["requests", (r) => r.requests],
    ["errors", (r) => r.errors], ["tokens", (r) => `${r.prompt_tokens} + ${r.completion_tokens}`],
    ["cost", (r) => (r.cost ? String(r.cost) : "0")],
  ], "No requests recorded in this range.");
}

async function table() {
  const select = $("#table-name");
  if (!select.options.length) {
    const tables = (await api("GET", "/tables")).tables.map((t) => (typeof t === "string" ? t : t.name));
    select.replaceChildren(...tables.map((t) => new Option(t, t)));
  }
  if (!select.value) return;
  const data = await api("GET", `/tables/${encodeURIComponent(select.value)}`);
  const rows = list(data);
  const columns = rows.length ? Object.keys(rows[0]) : [];
  fillTable($("#table-rows"), rows, columns.map((c) => [c, (r) => text(r[c])]), "This table is empty.");
}

export default {
  init() {
    const run = (fn) => (event) => { event?.preventDefault(); fn().catch((e) => say(e)); };
    $("#mon-form").addEventListener("submit", run(charts));
    $("#mon-range").addEventListener("change", run(charts));
    $("#mon-split").addEventListener("change", run(charts));
    $("#records-form").addEventListener("submit", run(records));
    $("#totals-form").addEventListener("submit", run(totals));
    $("#totals-group").addEventListener("change", run(totals));
    $("#table-name").addEventListener("change", run(table));
    keyPicker($("#mon-key"));
    keyPicker($("#records-key"));
  },
  async load() {
    await charts();
    if (canRead()) await Promise.all([totals(), records(), table()]);
  },
};

function say(error) {
  const box = $("#notice");
  box.textContent = error.message;
  box.hidden = false;
}
