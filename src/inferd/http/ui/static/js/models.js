// Models: every model with its replicas; add a model with its replica in one form (tested
// before it is saved), edit, test and remove models and replicas.
import { api, list } from "./api.js";
import { $, $$, el, badge, csv, fmtNum, fmtTime, formValues, rowButton, rowSay, say, syncTable } from "./ui.js";

let editingModel = null; // the model name being edited, or null when adding
let editingReplica = null; // the replica id being edited, or null when adding
// The last test of each model, kept here because the tables are redrawn every few seconds.
const tests = new Map();
const messages = new Map(); // row key -> {text, kind}: the outcome of a row's action
const confirming = new Set(); // rows whose "Remove" waits for its confirmation
let capabilities = new Map(); // model -> its capabilities, from /v1/models

// The smallest real request a model of each kind answers.
function probe(name) {
  const caps = capabilities.get(name) || ["chat"];
  if (caps.includes("chat") || caps.includes("completions")) {
    return ["/v1/chat/completions", { model: name, max_tokens: 1, messages: [{ role: "user", content: "Hi" }] }];
  }
  if (caps.includes("embeddings")) return ["/v1/embeddings", { model: name, input: "Hi" }];
  return ["/v1/images/generations", { model: name, prompt: "test", steps: 1 }];
}

function showTest(out, result) {
  out.textContent = result.text;
  out.className = `result ${result.cls}`;
}

async function testModel(name, out) {
  showTest(out, { text: "testing…", cls: "hint" });
  const started = performance.now();
  let result;
  try {
    const [path, body] = probe(name);
    await api("POST", path, body, { "X-Inferd-Probe": "1" }); // a probe, not metered
    result = { text: `ok, ${Math.round(performance.now() - started)} ms`, cls: "badge ok" };
  } catch (error) {
    result = { text: error.message, cls: "error-text" };
  }
  tests.set(name, result);
  for (const node of document.querySelectorAll(".result")) {
    if (node.dataset.model === name) showTest(node, result);
  }
}

// A row's action: its outcome is said in the row, the previous one cleared.
function act(row, label, what, run, cls = "quiet", done = "") {
  return rowButton(label, what, async () => {
    messages.delete(row);
    try {
      await run();
      if (done) messages.set(row, { text: done, kind: "ok" });
    } catch (error) {
      messages.set(row, { text: error.message, kind: "error" });
    }
    await load().catch((error) => say("#notice", error.message));
  }, cls);
}

// Remove in two steps (the second button replaces the first), so a stray click removes nothing.
function remove(row, what, run) {
  if (confirming.has(row)) {
    return el("span", { class: "actions" },
      act(row, "Confirm remove", what, async () => { confirming.delete(row); await run(); }, "danger"),
      rowButton("Keep", what, () => { confirming.delete(row); load(); }, "quiet"));
  }
  return rowButton("Remove", what, async () => {
    confirming.add(row);
    await load();
    $(`[aria-label="Confirm remove ${CSS.escape(what)}"]`)?.focus();
  }, "danger");
}

function modelActions(m) {
  const row = `model:${m.name}`;
  const what = `model ${m.name}`;
  const out = el("span", { class: "result", "data-model": m.name, "aria-live": "polite" });
  if (tests.has(m.name)) showTest(out, tests.get(m.name));
  // In-process models that load and unload (their weights in this server's memory).
  const verb = m.state === "unloaded" ? "load" : "unload";
  const residency = m.loadable
    ? [act(row, verb === "load" ? "Load" : "Unload", what, () => api("POST",
      `/admin/v1/engines/${encodeURIComponent(m.name)}/${verb}`))]
    : [];
  // A model served in this process is removed from the configuration, not here.
  const local = m.replicas.some((r) => r.kind === "local");
  return el("span", { class: "actions" },
    rowButton("Test", what, () => {
      if (messages.delete(row)) $(`[data-row-say="${CSS.escape(row)}"]`)?.replaceChildren();
      testModel(m.name, out);
    }),
    ...residency,
    rowButton("Edit", what, () => editModel(m), "quiet"),
    local ? null : remove(row, what, () => api("DELETE", `/admin/v1/models/${encodeURIComponent(m.name)}`)),
    out, rowSay(messages, row));
}

function replicaActions(r) {
  if (r.kind === "local") return el("span", { class: "hint" }, "in this process");
  const row = `replica:${r.id}`;
  const what = `replica ${r.id} of ${r.model}`;
  return el("span", { class: "actions" },
    rowButton("Edit", what, () => editReplica(r), "quiet"),
    act(row, r.enabled ? "Disable" : "Enable", what,
      () => api("PATCH", `/admin/v1/replicas/${r.id}`, { enabled: !r.enabled })),
    remove(row, what, () => api("DELETE", `/admin/v1/replicas/${r.id}`)),
    rowSay(messages, row));
}

function health(r) {
  if (r.enabled === false) return el("span", { class: "badge" }, "disabled");
  // Added or enabled, not probed yet: its health is not known.
  if (r.checking) return el("span", { class: "badge" }, "checking");
  const cell = el("span", {}, badge(r.healthy));
  if (r.cooled_down_until && r.cooled_down_until * 1000 > Date.now()) {
    cell.append(el("div", { class: "hint" }, `cooldown until ${fmtTime(r.cooled_down_until)}`));
  }
  return cell;
}

function lastError(r) {
  if (!r.last_error) return "—";
  return el("span", { class: "error-text" }, r.last_error,
    el("div", { class: "hint" }, fmtTime(r.last_error_at)));
}

function priceCell(m) {
  return m.price ? `${m.price.input} · ${m.price.output}` : "—";
}

// -- a model's price: five optional fields; all empty is no price --------------------------------
const PRICE_FIELDS = ["input", "output", "cached_input", "image", "step"];

function priceOf(form) {
  const price = {};
  for (const f of PRICE_FIELDS) {
    const value = form.elements[`price_${f}`].value.trim();
    if (value !== "") price[f] = value;
  }
  return Object.keys(price).length ? price : null;
}

function fillPrice(form, price) {
  for (const f of PRICE_FIELDS) form.elements[`price_${f}`].value = price?.[f] ?? "";
}

function errorsCell(r) {
  if (!r.errors) return fmtNum(r.errors ?? 0);
  return el("span", { class: "error-text" }, `${fmtNum(r.errors)} (${fmtNum(100 * r.errors / r.requests, 1)}%)`);
}

async function load() {
  const models = list(await api("GET", "/admin/v1/models"));
  capabilities = new Map(list(await api("GET", "/v1/models")).map((m) => [m.id, m.capabilities || []]));
  syncTable($("#models-table"), models, [
    ["model", (m) => el("strong", {}, m.name)],
    ["health", (m) => badge(m.healthy, "serving", "down")],
    ["aliases", (m) => m.aliases.join(", ")],
    ["fallbacks", (m) => m.fallbacks.join(", ")],
    ["routing", (m) => (m.routing_default ? `${m.routing} (default)` : m.routing)],
    ["price / 1M in · out", priceCell],
    ["replicas", (m) => m.replicas.length],
    ["queued", (m) => fmtNum(m.queued ?? 0)],
    ["active", (m) => (m.active ? "yes" : "no")],
    ["memory", (m) => (m.state
      ? el("span", { class: "badge", "data-engine": m.name }, m.state) : "—")],
    ["", modelActions],
  ], (m) => m.name, "No models yet: add one below.");
  const select = $("#replica-model");
  const names = models.map((m) => m.name);
  if ([...select.options].map((o) => o.value).join("\n") !== names.join("\n")) {
    const chosen = select.value;
    select.replaceChildren(...names.map((n) => new Option(n, n)));
    if (chosen) select.value = chosen;
  }
  const replicas = list(await api("GET", "/admin/v1/replicas"));
  syncTable($("#replicas-table"), replicas, [
    ["model", (r) => r.model],
    ["kind", (r) => r.kind],
    ["url", (r) => r.url || "in process"],
    ["health", health],
    ["in flight", (r) => r.in_flight],
    ["load", loadCell],
    ["requests", (r) => fmtNum(r.requests ?? 0)],
    ["errors", errorsCell],
    ["latency ms", (r) => (r.latency_ms === null || r.latency_ms === undefined ? "—" : Math.round(r.latency_ms))],
    ["weight", (r) => r.weight ?? "—"],
    ["last error", lastError],
    ["", replicaActions],
  ], (r) => r.id, "No replicas.");
}

// The load the replica's engine reports: running + waiting, and its KV cache use.
function loadCell(r) {
  if (r.running === null || r.running === undefined) return "—";
  const kv = r.kv_cache_usage === null || r.kv_cache_usage === undefined
    ? "" : ` · KV ${Math.round(r.kv_cache_usage * 100)}%`;
  return `${fmtNum(r.running)} running · ${fmtNum(r.waiting ?? 0)} waiting${kv}`;
}

// -- the replica fields, in the model form and in the replica form ---------------------------

function fields(form) {
  return form.querySelector(".replica-fields");
}

// The replica the form describes (its `options` from the option fields), or null without URL.
function replicaSpec(form) {
  const v = formValues(form);
  if (!v.url) return null;
  let options = {};
  if (v.options) {
    try { options = JSON.parse(v.options); } catch { throw new Error("Other options: not a JSON object."); }
    if (!options || typeof options !== "object" || Array.isArray(options)) throw new Error("Other options: not a JSON object.");
  }
  const caps = $$("[data-cap]", form).filter((c) => c.checked).map((c) => c.dataset.cap);
  if (caps.length) options.capabilities = caps;
  if (v.health_url) options.health_url = v.health_url;
  const spec = { kind: v.kind, url: v.url, upstream_model: v.upstream_model, weight: Number(v.weight),
    timeout: Number(v.timeout), enabled: v.enabled, options };
  if (v.api_key) spec.api_key = v.api_key;
  return spec;
}

function fillReplica(form, r) {
  const f = form.elements;
  for (const name of ["url", "upstream_model", "weight", "timeout"]) f[name].value = r[name] ?? "";
  f.kind.value = r.kind;
  f.enabled.checked = r.enabled;
  f.api_key.value = "";
  const options = { ...(r.options || {}) };
  const caps = options.capabilities || [];
  for (const c of $$("[data-cap]", form)) c.checked = caps.includes(c.dataset.cap);
  f.health_url.value = options.health_url || "";
  delete options.capabilities;
  delete options.health_url;
  f.options.value = Object.keys(options).length ? JSON.stringify(options) : "";
}

// Test before Save: the server reaches the upstream and lists its models to pick from.
// Returns the test's answer; the outcome is said under the form.
async function testConnection(form) {
  const out = form.nextElementSibling; // the form's "…-test" line
  let spec;
  try {
    spec = replicaSpec(form);
  } catch (error) {
    say(out, error.message);
    return { ok: false };
  }
  if (!spec) {
    say(out, "Give the replica's URL to test it.");
    return { ok: false };
  }
  say(out, "Testing the connection…", "info");
  const test = await api("POST", "/admin/v1/replicas/test", spec);
  const pick = form.querySelector("[data-upstream-list]");
  const select = pick.querySelector("select");
  select.replaceChildren(new Option("—", ""), ...test.models.map((m) => new Option(m, m)));
  select.value = test.models.includes(spec.upstream_model) ? spec.upstream_model : "";
  pick.hidden = !test.models.length;
  if (test.ok) {
    const listed = test.models.length ? `; it lists ${test.models.length} model${test.models.length === 1 ? "" : "s"}` : "";
    say(out, `Connected in ${Math.round(test.latency_ms)} ms${listed}.${test.warning ? ` ${test.warning}` : ""}`,
      test.warning ? "error" : "info");
  } else {
    say(out, `Connection failed: ${test.error}`);
  }
  form.dataset.tested = test.ok ? JSON.stringify(spec) : "";
  return test;
}

// Save tests first (unless this very replica was just tested): a failed test turns the
// button into "Save anyway" for a replica that is not up yet.
async function tested(form) {
  const spec = replicaSpec(form);
  if (!spec || form.dataset.tested === JSON.stringify(spec) || form.dataset.force === "1") return true;
  const test = await testConnection(form);
  if (test.ok) return true;
  form.dataset.force = "1";
  form.querySelector("button[type=submit]").textContent = "Save anyway";
  return false;
}

function editModel(m) {
  editingModel = m.name;
  const form = $("#model-form");
  form.elements.name.value = m.name;
  form.elements.name.disabled = true;
  form.elements.aliases.value = m.aliases.join(", ");
  form.elements.fallbacks.value = m.fallbacks.join(", ");
  form.elements.routing.value = m.routing_default ? "default" : m.routing;
  form.elements.active.checked = m.active;
  fillPrice(form, m.price);
  fields(form).hidden = true; // its replicas are edited in the replica form
  form.querySelector("[data-test]").hidden = true;
  $("#model-form-title").textContent = `Edit model ${m.name}`;
  $("#model-box").open = true;
  form.elements.aliases.focus();
}

function editReplica(r) {
  editingReplica = r.id;
  const form = $("#replica-form");
  fillReplica(form, r);
  form.elements.model.value = r.model;
  form.elements.model.disabled = form.elements.kind.disabled = true;
  form.elements.api_key.placeholder = r.has_api_key ? "kept unless typed" : "";
  $("#replica-form-title").textContent = `Edit replica ${r.id} of ${r.model}`;
  $("#replica-box").open = true;
  form.elements.url.focus();
}

async function saveModel(event) {
  event.preventDefault();
  const form = event.target;
  say("#model-say", "");
  const v = formValues(form);
  const body = { aliases: csv(v.aliases), fallbacks: csv(v.fallbacks) };
  try {
    if (editingModel) {
      await api("PATCH", `/admin/v1/models/${encodeURIComponent(editingModel)}`,
        { ...body, active: v.active, routing: v.routing, price: priceOf(form) });
    } else {
      if (!(await tested(form))) return;
      const spec = replicaSpec(form);
      const routing = v.routing === "default" ? null : v.routing;
      await api("POST", "/admin/v1/models",
        { name: v.name, ...body, routing, price: priceOf(form), replicas: spec ? [spec] : [] });
      if (!v.active) await api("PATCH", `/admin/v1/models/${encodeURIComponent(v.name)}`, { active: false });
    }
    form.reset();
    say("#model-say", "Saved.", "ok");
    await load();
  } catch (error) {
    say("#model-say", error.message);
  }
}

async function saveReplica(event) {
  event.preventDefault();
  const form = event.target;
  say("#replica-say", "");
  try {
    if (!(await tested(form))) return;
    const spec = replicaSpec(form);
    if (!spec) throw new Error("Give the replica's URL.");
    if (editingReplica) {
      const { kind, ...changes } = spec;
      await api("PATCH", `/admin/v1/replicas/${editingReplica}`, changes);
    } else {
      await api("POST", "/admin/v1/replicas", { ...spec, model: form.elements.model.value });
    }
    form.reset();
    say("#replica-say", "Saved.", "ok");
    await load();
  } catch (error) {
    say("#replica-say", error.message);
  }
}

function resetForm(event) {
  const form = event.target;
  delete form.dataset.tested;
  delete form.dataset.force;
  say(form.nextElementSibling, "");
  form.querySelector("[data-upstream-list]").hidden = true;
  if (form.id === "model-form") {
    editingModel = null;
    form.elements.name.disabled = false;
    fields(form).hidden = false;
    form.querySelector("[data-test]").hidden = false;
    form.querySelector("button[type=submit]").textContent = "Save model";
    $("#model-form-title").textContent = "Add a model";
  } else {
    editingReplica = null;
    form.elements.model.disabled = form.elements.kind.disabled = false;
    form.elements.api_key.placeholder = "";
    form.querySelector("button[type=submit]").textContent = "Save replica";
    $("#replica-form-title").textContent = "Add a replica to a model";
  }
}

export default {
  init() {
    for (const form of [$("#model-form"), $("#replica-form")]) {
      fields(form).append($("#replica-template").content.cloneNode(true));
      form.addEventListener("reset", resetForm);
      form.querySelector("[data-test]").addEventListener("click", () =>
        testConnection(form).catch((error) => say(form.nextElementSibling, error.message)));
      form.elements.upstream_pick.addEventListener("change", (event) => {
        if (event.target.value) form.elements.upstream_model.value = event.target.value;
      });
      // A changed replica is tested again before it is saved.
      form.addEventListener("input", () => {
        delete form.dataset.force;
        const submit = form.querySelector("button[type=submit]");
        if (submit.textContent === "Save anyway") submit.textContent = form.id === "model-form" ? "Save model" : "Save replica";
      });
    }
    $("#replica-form").elements.url.required = true;
    $("#model-form").addEventListener("submit", saveModel);
    $("#replica-form").addEventListener("submit", saveReplica);
    // Replica health changes by itself: refresh while the page is shown (rows change in place).
    setInterval(() => {
      if (!$("#page-models").hidden && document.visibilityState === "visible") load().catch(() => {});
    }, 2000);
  },
  load,
};
