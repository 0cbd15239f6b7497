// Teams & users: create and edit teams and users, list them a page at a time ("Load more"), a
// team's members (add, change role, remove), disable or enable a user, delete (two steps).
import { api, list } from "./api.js";
import { $, el, fillTable, fmtNum, formValues, rowButton, rowSay, say } from "./ui.js";

const PAGE = 100;
const messages = new Map(); // "team:1", "user:2", "member:3" -> the outcome of its row's last action
const state = { teams: [], teamsLast: null, users: [], usersLast: null, members: [], membersLast: null, team: null };

const number = (s) => (s === "" || s === undefined ? null : Number(s));
// The team or user being edited in its form (null: the form creates one).
const editing = { team: null, user: null };
const FORMS = {
  team: { form: "#team-form", box: "#team-box", title: "#team-form-title", say: "#team-say", path: "/admin/v1/teams", noun: "team" },
  user: { form: "#user-form", box: "#user-box", title: "#user-form-title", say: "#user-say", path: "/admin/v1/users", noun: "user" },
};

function edit(kind, row) {
  const spec = FORMS[kind];
  editing[kind] = row;
  const f = $(spec.form).elements;
  for (const field of f) {
    if (!field.name) continue;
    const value = field.name === "models" ? (row.models || []).join(", ") : row[field.name];
    field.value = value ?? "";
  }
  $(spec.title).textContent = `Edit ${spec.noun} ${row.name}`;
  $(`${spec.form} button[type=submit]`).textContent = `Save ${spec.noun}`;
  $(spec.box).open = true;
  f.name.focus();
}

function limits(row) {
  const parts = [];
  if (row.rpm) parts.push(`${fmtNum(row.rpm)} req/min`);
  if (row.tpm) parts.push(`${fmtNum(row.tpm)} tok/min`);
  if (row.token_budget !== null && row.token_budget !== undefined) parts.push(`${fmtNum(row.token_budget)} tokens per ${row.budget_period || "total"}`);
  if (row.max_budget !== null && row.max_budget !== undefined) parts.push(`budget ${row.max_budget} per ${row.budget_period || "total"} (alert at ${row.budget_alert ?? 80}%)`);
  if (row.queue_weight !== null && row.queue_weight !== undefined) parts.push(`queue weight ${row.queue_weight}`);
  return parts.join(", ") || "none";
}

// A row's action: its outcome is said in the row, the previous one cleared.
function act(id, label, what, run, cls = "quiet") {
  return rowButton(label, what, async () => {
    messages.delete(id);
    try { await run(); } catch (error) { messages.set(id, { text: error.message, kind: "error" }); }
    await load().catch((error) => say("#notice", error.message));
  }, cls);
}

// Two steps so a stray click or key press deletes nothing.
function remove(id, what, label, run) {
  const first = rowButton(label, what, () => {
    const confirm = act(id, `Confirm ${label.toLowerCase()}`, what, run, "danger");
    first.replaceWith(confirm);
    confirm.focus();
  }, "danger");
  return first;
}

async function pageOf(kind, after) {
  const query = new URLSearchParams({ limit: PAGE });
  if (kind === "users") {
    const search = $("#user-search").elements.search.value.trim();
    if (search) query.set("search", search);
  }
  if (after !== null) query.set("after", after);
  const answer = await api("GET", `/admin/v1/${kind}?${query}`);
  state[kind] = after === null ? list(answer) : state[kind].concat(list(answer));
  state[`${kind}Last`] = answer.last_id ?? state[`${kind}Last`];
  $(`#${kind}-more`).hidden = !answer.has_more;
}

async function membersPage(after) {
  if (!state.team) return;
  const query = new URLSearchParams({ limit: PAGE });
  if (after !== null) query.set("after", after);
  const answer = await api("GET", `/admin/v1/teams/${state.team.id}/members?${query}`);
  state.members = after === null ? list(answer) : state.members.concat(list(answer));
  state.membersLast = answer.last_id ?? state.membersLast;
  $("#members-more").hidden = !answer.has_more;
}

function renderTeams() {
  fillTable($("#teams-table"), state.teams, [
    ["name", (t) => el("strong", {}, t.name)],
    ["models", (t) => (t.models ? t.models.join(", ") : "all")],
    ["limits", limits],
    ["", (t) => el("span", { class: "row-actions" },
      rowButton("Members", `of team ${t.name}`, () => showMembers(t), "quiet"),
      el("span", { class: "actions" },
        rowButton("Edit", `team ${t.name}`, () => edit("team", t), "quiet"),
        remove(`team:${t.id}`, `team ${t.name}`, "Delete", () => api("DELETE", `/admin/v1/teams/${t.id}`)),
        rowSay(messages, `team:${t.id}`)))],
  ], "No teams yet.");
}

function renderUsers() {
  fillTable($("#users-table"), state.users, [
    ["name", (u) => el("strong", {}, u.name)],
    ["email", (u) => u.email || "—"],
    ["role", (u) => u.role || "none"],
    ["limits", limits],
    ["status", (u) => el("span", { class: `badge ${u.disabled ? "bad" : "ok"}` }, u.disabled ? "disabled" : "active")],
    ["", (u) => el("span", { class: "actions" },
      rowButton("Edit", `user ${u.name}`, () => edit("user", u), "quiet"),
      act(`user:${u.id}`, u.disabled ? "Enable" : "Disable", `user ${u.name}`,
        () => api("PATCH", `/admin/v1/users/${u.id}`, { disabled: !u.disabled })),
      remove(`user:${u.id}`, `user ${u.name}`, "Delete", () => api("DELETE", `/admin/v1/users/${u.id}`)),
      rowSay(messages, `user:${u.id}`))],
  ], "No users yet.");
  const select = $("#member-user");
  const chosen = select.value;
  select.replaceChildren(...state.users.map((u) => el("option", { value: u.id }, u.name)));
  if (state.users.some((u) => String(u.id) === chosen)) select.value = chosen;
}

function renderMembers() {
  const box = $("#members-box");
  box.hidden = !state.team;
  if (!state.team) return;
  $("#members-title").textContent = `Members of ${state.team.name}`;
  fillTable($("#members-table"), state.members, [
    ["user", (m) => el("strong", {}, m.name)],
    ["email", (m) => m.email || "—"],
    ["role", (m) => m.role],
    ["", (m) => el("span", { class: "actions" },
      remove(`member:${m.user_id}`, `${m.name} from team ${state.team.name}`, "Remove",
        () => api("DELETE", `/admin/v1/teams/${state.team.id}/members/${m.user_id}`)),
      rowSay(messages, `member:${m.user_id}`))],
  ], "No members yet.");
}

async function showMembers(team) {
  state.team = team;
  await membersPage(null);
  renderMembers();
  $("#members-title").scrollIntoView({ block: "nearest" });
}

async function load() {
  await Promise.all([pageOf("teams", null), pageOf("users", null)]);
  if (state.team) state.team = state.teams.find((t) => t.id === state.team.id) || null;
  if (state.team) await membersPage(null);
  renderTeams();
  renderUsers();
  renderMembers();
}

// A new one leaves out what is not set; an edit sends it as null (cleared).
function drop(out, kind) {
  if (!editing[kind]) for (const [name, value] of Object.entries(out)) if (value === null) delete out[name];
  return out;
}

function teamBody(v) {
  const models = v.models.split(",").map((m) => m.trim()).filter(Boolean);
  return drop({ name: v.name, models: models.length ? models : null, rpm: number(v.rpm), tpm: number(v.tpm),
    token_budget: number(v.token_budget), budget_period: v.budget_period || null,
    max_budget: number(v.max_budget), budget_alert: number(v.budget_alert),
    queue_weight: number(v.queue_weight) }, "team");
}

function userBody(v) {
  return drop({ name: v.name, email: v.email || null, role: v.role || null, rpm: number(v.rpm), tpm: number(v.tpm),
    token_budget: number(v.token_budget), budget_period: v.budget_period || null,
    max_budget: number(v.max_budget), budget_alert: number(v.budget_alert) }, "user");
}

function form(kind, body) {
  const spec = FORMS[kind];
  $(spec.form).addEventListener("submit", async (event) => {
    event.preventDefault();
    say(spec.say, "");
    const row = editing[kind];
    try {
      if (row) await api("PATCH", `${spec.path}/${row.id}`, body(formValues(event.target)));
      else await api("POST", spec.path, body(formValues(event.target)));
      event.target.reset();
      say(spec.say, row ? "Saved." : `${spec.noun[0].toUpperCase()}${spec.noun.slice(1)} created.`, "ok");
      await load();
    } catch (error) {
      say(spec.say, error.message);
    }
  });
  $(spec.form).addEventListener("reset", () => {
    editing[kind] = null;
    $(spec.title).textContent = `Create a ${spec.noun}`;
    $(`${spec.form} button[type=submit]`).textContent = `Create ${spec.noun}`;
  });
}

export default {
  init() {
    form("team", teamBody);
    form("user", userBody);
    $("#member-form").addEventListener("submit", async (event) => {
      event.preventDefault();
      say("#member-say", "");
      const v = formValues(event.target);
      try {
        await api("PUT", `/admin/v1/teams/${state.team.id}/members/${v.user_id}`, { role: v.role });
        say("#member-say", "Saved.", "ok");
        await load();
      } catch (error) {
        say("#member-say", error.message);
      }
    });
    $("#user-search").addEventListener("submit", (event) => {
      event.preventDefault();
      pageOf("users", null).then(renderUsers).catch((error) => say("#user-say", error.message));
    });
    $("#teams-more").addEventListener("click", () => {
      pageOf("teams", state.teamsLast).then(renderTeams).catch((error) => say("#team-say", error.message));
    });
    $("#users-more").addEventListener("click", () => {
      pageOf("users", state.usersLast).then(renderUsers).catch((error) => say("#user-say", error.message));
    });
    $("#members-more").addEventListener("click", () => {
      membersPage(state.membersLast).then(renderMembers).catch((error) => say("#member-say", error.message));
    });
  },
  load,
};
