// Requests: the request log, newest first, with filters and paging by cursor; a row's
// Details show everything stored about the request, with its request and answer bodies when
// its key keeps them (log_bodies; capped and redacted by the server).
// Admin and auditor keys read every key's requests (/admin/v1/requests); a user key its own
// (/v1/requests), and filter by the team or user of the keys (as they were when the request
// was made): a choice of names when one page of /admin/v1/teams and /admin/v1/users holds them
// all, else the id typed.
import { api, canRead, list } from "./api.js";
import { $, el, button, fillTable, fmtTime, formValues, say } from "./ui.js";

const PAGE = 50;
const FILTERS = ["model", "status", "error", "request_id", "min_latency_ms"];

function query(extra = {}) {
  const v = formValues($("#requests-filter"));
  const params = new URLSearchParams();
  for (const name of FILTERS) if (v[name]) params.set(name, v[name]);
  if (canRead()) for (const name of ["key_id", "team", "user"]) if (v[name]) params.set(name, v[name]);
  for (const name of ["from", "to"]) {
    if (v[name]) params.set(name, String(new Date(v[name]).getTime() / 1000));
  }
  for (const [name, value] of Object.entries(extra)) params.set(name, String(value));
  return params;
}

// "team:3" / "user:5" -> the name, of the teams and users the filters list.
const names = new Map();
const OWNERS = [["team", "/admin/v1/teams"], ["user", "/admin/v1/users"]];
const LISTED = 1000; // the most a page of teams or users holds

const owner = (kind, id) => (id == null ? null : `${names.get(`${kind}:${id}`) ?? kind} #${id}`);

// The team and user filters: a <select> of their names, or a number field for the id when
// there are more than a page of them. The value chosen is kept.
async function owners() {
  if (!canRead()) return;
  const form = $("#requests-filter");
  for (const [kind, path] of OWNERS) {
    // not listed (the store is down): the id typed
    const answer = await api("GET", `${path}?limit=${LISTED}`).catch(() => ({ data: [], has_more: true }));
    const rows = list(answer);
    for (const row of rows) names.set(`${kind}:${row.id}`, row.name);
    const field = form.elements[kind];
    const kept = field.value;
    const next = answer.has_more
      ? el("input", { name: kind, type: "number", min: "1", step: "1", placeholder: "any (id)" })
      : el("select", { name: kind }, el("option", { value: "" }, "any"),
        rows.map((row) => el("option", { value: String(row.id) }, `${row.name} #${row.id}`)));
    field.replaceWith(next);
    next.value = kept;
  }
}

const ms = (value) => (value === null || value === undefined ? "—" : `${Math.round(value)} ms`);

function key(r) {
  if (!r.key_id) return el("span", { class: "hint" }, "no key");
  return el("span", {}, r.key_name || `key ${r.key_id}`, el("small", { class: "hint" }, ` #${r.key_id}`));
}

function status(r) {
  return el("span", {}, el("span", { class: r.status >= 400 ? "badge bad" : "badge ok" }, String(r.status)),
    r.error ? el("small", { class: "hint" }, ` ${r.error}`) : null);
}

const FIELDS = [
  ["Time", (r) => fmtTime(r.created_at)], ["Request id", (r) => r.request_id],
  ["Key", (r) => (r.key_id ? `${r.key_name || ""} #${r.key_id}` : "no key")],
  ["Team", (r) => owner("team", r.team_id)], ["User", (r) => owner("user", r.user_id)],
  ["Model", (r) => r.model], ["Replica", (r) => r.replica], ["Endpoint", (r) => r.endpoint],
  ["Streamed", (r) => (r.stream ? "yes" : "no")], ["Status", (r) => r.status],
  ["Error code", (r) => r.error], ["Latency", (r) => ms(r.latency_ms)],
  ["Time to first token", (r) => ms(r.ttft_ms)],
  ["Tokens in / out", (r) => `${r.prompt_tokens} / ${r.completion_tokens}`],
  ["Cached prompt tokens", (r) => r.cached_tokens], ["Cost", (r) => r.cost],
  ["Replicas tried", (r) => r.attempts], ["Client address", (r) => r.client_address],
  ["User agent", (r) => r.user_agent], ["Trace id", (r) => r.trace_id],
];

// A stored body, indented when it is (still) JSON: a cut or masked one is shown as it is.
function pretty(text) {
  try { return JSON.stringify(JSON.parse(text), null, 2); } catch { return text; }
}

function bodies(r) {
  if (r.request_body == null && r.response_body == null) return [];
  return [["Request body", r.request_body, "requests-detail-request-body"],
    ["Response body", r.response_body, "requests-detail-response-body"]].flatMap(([title, text, id]) => [
    el("h3", {}, title), text == null ? el("p", { class: "hint" }, "—") : el("pre", { id, class: "json" }, pretty(text))]);
}

function detail(r) {
  const box = $("#requests-detail");
  const list = el("dl", { class: "facts" }, FIELDS.flatMap(([name, get]) => {
    const value = get(r);
    return [el("dt", {}, name), el("dd", {}, value === null || value === undefined || value === "" ? "—" : String(value))];
  }));
  box.replaceChildren(el("h2", { id: "requests-detail-title", tabindex: "-1" }, `Request ${r.request_id ?? r.id}`), list, ...bodies(r));
  box.hidden = false;
  $("#requests-detail-title").focus();
}

// Only the last page asked for is drawn: an earlier answer arriving after it (the page's
// first read, then a filter submitted at once) is dropped.
let asked = 0;

async function show(cursor) {
  const extra = { limit: PAGE };
  if (cursor) extra.cursor = cursor;
  const path = canRead() ? "/admin/v1/requests" : "/v1/requests";
  const mine = ++asked;
  const page = await api("GET", `${path}?${query(extra)}`);
  if (mine !== asked) return;
  fillTable($("#requests-table"), page.data, [
    ["when", (r) => fmtTime(r.created_at)],
    ["model", (r) => el("code", {}, r.model)],
    ["endpoint", (r) => `${r.endpoint}${r.stream ? " (stream)" : ""}`],
    ["status", status],
    ["key", key],
    ["latency", (r) => ms(r.latency_ms)],
    ["tokens in / out", (r) => `${r.prompt_tokens} / ${r.completion_tokens}`],
    ["", (r) => button("Details", () => detail(r), "quiet")],
  ], "No requests match.");
  $("#requests-next").disabled = !page.has_more;
  $("#requests-next").onclick = () => show(page.next_cursor).catch((error) => say("#requests-say", error.message));
  $("#requests-first").disabled = !cursor;
}

// Filters given in the address (#requests/model=…&from=…): a chart's bar on Monitoring opens
// the page so. They replace the form's, and leave the address (a reload shows the form's).
const local = (epoch) => {
  const d = new Date(epoch * 1000 - new Date(epoch * 1000).getTimezoneOffset() * 60000);
  return d.toISOString().slice(0, 16);
};

function fromAddress() {
  const [page, rest] = location.hash.split("/");
  if (!rest) return;
  const form = $("#requests-filter");
  form.reset();
  for (const [name, value] of new URLSearchParams(rest)) {
    const field = form.elements[name];
    if (!field) continue;
    field.value = name === "from" || name === "to" ? local(Number(value)) : value;
  }
  history.replaceState(null, "", page);
}

async function refresh() {
  $("#requests-detail").hidden = true;
  say("#requests-say", "");
  await show(null);
}

async function load() {
  await owners();
  fromAddress();
  await refresh();
}

function init() {
  $("#requests-filter").addEventListener("submit", async (event) => {
    event.preventDefault();
    try { await refresh(); } catch (error) { say("#requests-say", error.message); }
  });
  $("#requests-first").addEventListener("click", () => refresh().catch((error) => say("#requests-say", error.message)));
}

export default { init, load };
