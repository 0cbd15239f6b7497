// Models: every model with its replicas; add, edit, test and remove models and replicas.
import { api, list } from "./api.js";
import { $, el, badge, button, csv, fillTable, fmtTime, formValues, say } from "./ui.js";

let editingModel = null; // the model name being edited, or null when adding
let editingReplica = null; // the replica id being edited, or null when adding
// The last test of each model, kept here because the tables are redrawn every few seconds.
const tests = new Map();
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
    await api("POST", path, body);
    result = { text: `ok, ${Math.round(performance.now() - started)} ms`, cls: "badge ok" };
  } catch (error) {
    result = { text: error.message, cls: "error-text" };
  }
  tests.set(name, result);
  for (const node of document.querySelectorAll(".result")) {
    if (node.dataset.model === name) showTest(node, result);
  }
}

function act(label, run, cls = "") {
  return button(label, async () => {
    try { await run(); await load(); } catch (error) { say("#notice", error.message); }
  }, cls);
}

function modelActions(m) {
  const out = el("span", { class: "result", "data-model": m.name, "aria-live": "polite" });
  if (tests.has(m.name)) showTest(out, tests.get(m.name));
  // In-process models that load and unload (their weights in this server's memory).
  const verb = m.state === "unloaded" ? "load" : "unload";
  const residency = m.loadable
    ? [act(verb === "load" ? "Load" : "Unload", () => api("POST",
      `/admin/v1/engines/${encodeURIComponent(m.name)}/${verb}`), "quiet")]
    : [];
  return el("span", { class: "actions" },
    button("Test", () => testModel(m.name, out)),
    ...residency,
    button("Edit", () => editModel(m), "quiet"),
    act("Remove", () => api("DELETE", `/admin/v1/models/${encodeURIComponent(m.name)}`), "danger"),
    out);
}

function replicaActions(r) {
  if (r.kind === "local") return el("span", { class: "hint" }, "bundled");
  return el("span", { class: "actions" },
    button("Edit", () => editReplica(r), "quiet"),
    act(r.enabled ? "Disable" : "Enable",
      () => api("PATCH", `/admin/v1/replicas/${r.id}`, { enabled: !r.enabled }), "quiet"),
    act("Remove", () => api("DELETE", `/admin/v1/replicas/${r.id}`), "danger"));
}

function health(r) {
  if (r.enabled === false) return el("span", { class: "badge" }, "disabled");
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

async function load() {
  const models = list(await api("GET", "/admin/v1/models"));
  capabilities = new Map(list(await api("GET", "/v1/models")).map((m) => [m.id, m.capabilities || []]));
  fillTable($("#models-table"), models, [
    ["model", (m) => el("strong", {}, m.name)],
    ["health", (m) => badge(m.healthy, "serving", "down")],
    ["aliases", (m) => m.aliases.join(", ")],
    ["fallbacks", (m) => m.fallbacks.join(", ")],
    ["routing", (m) => (m.routing_default ? `${m.routing} (default)` : m.routing)],
    ["replicas", (m) => m.replicas.length],
    ["active", (m) => (m.active ? "yes" : "no")],
    ["memory", (m) => (m.state
      ? el("span", { class: "badge", "data-engine": m.name }, m.state) : "—")],
    ["", modelActions],
  ], "No models yet: add one below.");
  const select = $("#replica-model");
  const chosen = select.value;
  select.replaceChildren(...models.map((m) => new Option(m.name, m.name)));
  if (chosen) select.value = chosen;
  const replicas = list(await api("GET", "/admin/v1/replicas"));
  fillTable($("#replicas-table"), replicas, [
    ["model", (r) => r.model],
    ["kind", (r) => r.kind],
    ["url", (r) => r.url || "in process"],
    ["health", health],
    ["in flight", (r) => r.in_flight],
    ["latency ms", (r) => (r.latency_ms === null || r.latency_ms === undefined ? "—" : Math.round(r.latency_ms))],
    ["weight", (r) => r.weight ?? "—"],
    ["last error", lastError],
    ["", replicaActions],
  ], "No replicas.");
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
  $("#model-form-title").textContent = `Edit model ${m.name}`;
  $("#model-box").open = true;
  form.elements.aliases.focus();
}

function editReplica(r) {
  editingReplica = r.id;
  const form = $("#replica-form");
  for (const name of ["url", "upstream_model", "weight", "timeout"]) form.elements[name].value = r[name] ?? "";
  form.elements.model.value = r.model;
  form.elements.model.disabled = form.elements.kind.disabled = true;
  form.elements.enabled.checked = r.enabled;
  $("#replica-form-title").textContent = `Edit replica ${r.id}`;
  $("#replica-box").open = true;
  form.elements.url.focus();
}

async function saveModel(event) {
  event.preventDefault();
  const v = formValues(event.target);
  const body = { aliases: csv(v.aliases), fallbacks: csv(v.fallbacks) };
  try {
    if (editingModel) {
      await api("PATCH", `/admin/v1/models/${encodeURIComponent(editingModel)}`,
        { ...body, active: v.active, routing: v.routing });
    } else {
      const routing = v.routing === "default" ? null : v.routing;
      await api("POST", "/admin/v1/models", { name: v.name, ...body, routing });
    }
    event.target.reset();
    say("#model-say", "Saved.", "ok");
    await load();
  } catch (error) {
    say("#model-say", error.message);
  }
}

async function saveReplica(event) {
  event.preventDefault();
  const v = formValues(event.target);
  const body = { url: v.url, upstream_model: v.upstream_model, weight: Number(v.weight),
    timeout: Number(v.timeout), enabled: v.enabled };
  if (v.api_key) body.api_key = v.api_key;
  try {
    if (editingReplica) await api("PATCH", `/admin/v1/replicas/${editingReplica}`, body);
    else await api("POST", "/admin/v1/replicas", { ...body, model: v.model, kind: v.kind });
    event.target.reset();
    say("#replica-say", "Saved.", "ok");
    await load();
  } catch (error) {
    say("#replica-say", error.message);
  }
}

function resetForms(event) {
  if (event.target.id === "model-form") {
    editingModel = null;
    event.target.elements.name.disabled = false;
    $("#model-form-title").textContent = "Add a model";
  } else {
    editingReplica = null;
    event.target.elements.model.disabled = event.target.elements.kind.disabled = false;
    $("#replica-form-title").textContent = "Add a replica";
  }
}

export default {
  init() {
    // Replica health changes by itself: refresh while the page is shown.
    setInterval(() => {
      if (!$("#page-models").hidden && document.visibilityState === "visible") load().catch(() => {});
    }, 2000);
    $("#model-form").addEventListener("submit", saveModel);
    $("#replica-form").addEventListener("submit", saveReplica);
    $("#model-form").addEventListener("reset", resetForms);
    $("#replica-form").addEventListener("reset", resetForms);
  },
  load,
};
