// inferd web UI: talks to inferd's own API with the key typed in the header.
"use strict";

const $ = (sel) => document.querySelector(sel);
const keyInput = $("#api-key");
keyInput.value = localStorage.getItem("inferd.key") || "";
keyInput.addEventListener("change", () => {
  localStorage.setItem("inferd.key", keyInput.value.trim());
  show(currentPage());
});

function headers(extra = {}) {
  const h = { "Content-Type": "application/json", ...extra };
  const key = keyInput.value.trim();
  if (key) h.Authorization = `Bearer ${key}`;
  return h;
}

function notice(message) {
  const box = $("#notice");
  box.textContent = message || "";
  box.hidden = !message;
}

async function api(method, path, body) {
  const response = await fetch(path, {
    method, headers: headers(), body: body === undefined ? undefined : JSON.stringify(body),
  });
  const text = await response.text();
  let data = null;
  try { data = text ? JSON.parse(text) : null; } catch { data = { raw: text }; }
  if (!response.ok) {
    const message = (data && data.error && data.error.message) || `${response.status} ${response.statusText}`;
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return data;
}

const rowsOf = (data) => (Array.isArray(data) ? data : (data && (data.data || data.tables || data.rows || data.items)) || []);

function cell(value) {
  const td = document.createElement("td");
  if (value === null || value === undefined) td.textContent = "";
  else if (typeof value === "object") td.textContent = JSON.stringify(value);
  else td.textContent = String(value);
  return td;
}

function fill(table, rows, columns) {
  const tbody = table.querySelector("tbody");
  tbody.replaceChildren();
  for (const row of rows) {
    const tr = document.createElement("tr");
    for (const column of columns) tr.appendChild(typeof column === "function" ? column(row) : cell(row[column]));
    tbody.appendChild(tr);
  }
}

function fillDynamic(table, rows) {
  const columns = rows.length ? Object.keys(rows[0]) : [];
  const head = document.createElement("tr");
  for (const c of columns) { const th = document.createElement("th"); th.textContent = c; head.appendChild(th); }
  table.querySelector("thead").replaceChildren(head);
  fill(table, rows, columns);
}

// ------------------------------------------------------------------------------- pages
const loaders = {
  async home() {
    $("#base-url").textContent = `${location.origin}/v1`;
    const status = $("#status");
    status.replaceChildren();
    const ready = await fetch("/ready?deep=true").then((r) => r.json()).catch(() => ({ status: "unreachable" }));
    const add = (term, value) => {
      const dt = document.createElement("dt"); dt.textContent = term;
      const dd = document.createElement("dd"); dd.textContent = value;
      status.append(dt, dd);
    };
    add("status", ready.status);
    add("store", ready.store ? "reachable" : "unreachable");
    for (const [name, ok] of Object.entries(ready.models || {})) add(`model ${name}`, ok ? "loaded" : "loading");
  },

  async models() {
    const models = rowsOf(await api("GET", "/v1/models"));
    fill($("#models-table"), models, ["id", "kind", (m) => cell((m.capabilities || []).join(", ")), "context_length"]);
    try {
      const replicas = rowsOf(await api("GET", "/admin/v1/replicas"));
      fill($("#replicas-table"), replicas, ["id", "model", "kind", "url",
        (r) => cell((r.state || r).healthy), (r) => cell((r.state || r).in_flight), (r) => cell((r.state || r).last_error)]);
    } catch (error) {
      fill($("#replicas-table"), [], []);
      if (error.status !== 401 && error.status !== 403) throw error;
    }
  },

  async playground() {
    const select = $("#chat-model");
    const previous = select.value;
    const models = rowsOf(await api("GET", "/v1/models"))
      .filter((m) => !m.capabilities || m.capabilities.includes("chat"));
    select.replaceChildren(...models.map((m) => new Option(m.id, m.id)));
    if (previous) select.value = previous;
  },

  async keys() {
    const keys = rowsOf(await api("GET", "/admin/v1/keys"));
    fill($("#keys-table"), keys, ["id", "name", "prefix", "scope",
      (k) => cell(k.models ? k.models.join(", ") : "all"),
      "rpm", "tpm",
      (k) => cell(k.enabled ? "active" : "disabled"),
      (k) => {
        const td = document.createElement("td");
        const button = document.createElement("button");
        button.type = "button"; button.textContent = "Revoke";
        button.addEventListener("click", async () => {
          await api("DELETE", `/admin/v1/keys/${encodeURIComponent(k.id)}`).catch((e) => notice(e.message));
          loaders.keys().catch((e) => notice(e.message));
        });
        td.appendChild(button);
        return td;
      }]);
  },

  async monitoring() {
    const usage = await api("GET", "/admin/v1/usage?group_by=model");
    fillDynamic($("#usage-table"), rowsOf(usage));
    const select = $("#table-name");
    if (!select.options.length) {
      const tables = rowsOf(await api("GET", "/tables")).map((t) => (typeof t === "string" ? t : t.name));
      select.replaceChildren(...tables.map((t) => new Option(t, t)));
    }
    if (select.value) fillDynamic($("#table-rows"), rowsOf(await api("GET", `/tables/${encodeURIComponent(select.value)}`)));
  },
};

function currentPage() {
  const page = location.hash.replace("#", "");
  return loaders[page] ? page : "home";
}

async function show(page) {
  notice("");
  for (const section of document.querySelectorAll(".page")) section.hidden = section.id !== `page-${page}`;
  for (const link of document.querySelectorAll("nav a")) link.classList.toggle("active", link.dataset.page === page);
  try {
    await loaders[page]();
  } catch (error) {
    notice(error.status === 401 || error.status === 403
      ? `${error.message} (enter an admin API key above)` : error.message);
  }
}

window.addEventListener("hashchange", () => show(currentPage()));
$("#table-name").addEventListener("change", () => loaders.monitoring().catch((e) => notice(e.message)));

// ----------------------------------------------------------------------------- playground
const history = [];

function addMessage(role, text) {
  const div = document.createElement("div");
  div.className = `msg ${role}`;
  div.textContent = text;
  $("#chat-log").appendChild(div);
  return div;
}

async function streamChat(body, target) {
  const response = await fetch("/v1/chat/completions", { method: "POST", headers: headers(), body: JSON.stringify(body) });
  if (!response.ok) {
    const data = await response.json().catch(() => ({}));
    throw new Error((data.error && data.error.message) || response.statusText);
  }
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "", text = "", usage = null;
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buffer += decoder.decode(value, { stream: true });
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const event = buffer.slice(0, end); buffer = buffer.slice(end + 2);
      const data = event.replace(/^data: /, "");
      if (data === "[DONE]") continue;
      const chunk = JSON.parse(data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) { text += delta.content; target.textContent = text; }
    }
  }
  return { text, usage };
}

$("#chat-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  notice("");
  const input = $("#chat-input");
  const content = input.value.trim();
  if (!content) return;
  input.value = "";
  history.push({ role: "user", content });
  addMessage("user", content);
  const target = addMessage("assistant", "…");
  const system = $("#chat-system").value.trim();
  const body = {
    model: $("#chat-model").value,
    messages: system ? [{ role: "system", content: system }, ...history] : [...history],
    temperature: Number($("#chat-temperature").value),
    max_tokens: Number($("#chat-max-tokens").value),
  };
  $("#chat-send").disabled = true;
  try {
    let result;
    if ($("#chat-stream").checked) {
      result = await streamChat({ ...body, stream: true, stream_options: { include_usage: true } }, target);
    } else {
      const data = await api("POST", "/v1/chat/completions", body);
      result = { text: data.choices[0].message.content, usage: data.usage };
      target.textContent = result.text;
    }
    history.push({ role: "assistant", content: result.text });
    if (result.usage) {
      $("#chat-usage").textContent = `prompt ${result.usage.prompt_tokens} tokens, completion ${result.usage.completion_tokens} tokens`;
    }
  } catch (error) {
    target.remove();
    history.pop();
    notice(error.message);
  } finally {
    $("#chat-send").disabled = false;
  }
});

$("#chat-clear").addEventListener("click", () => {
  history.length = 0;
  $("#chat-log").replaceChildren();
  $("#chat-usage").textContent = "";
});

// ------------------------------------------------------------------------------- keys
$("#key-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const models = $("#key-models").value.split(",").map((m) => m.trim()).filter(Boolean);
  const body = { name: $("#key-name").value.trim(), scope: $("#key-scope").value };
  if (models.length) body.models = models;
  if ($("#key-rpm").value) body.rpm = Number($("#key-rpm").value);
  if ($("#key-tpm").value) body.tpm = Number($("#key-tpm").value);
  try {
    const created = await api("POST", "/admin/v1/keys", body);
    $("#key-secret").textContent = created.key;
    $("#key-created").hidden = false;
    await loaders.keys();
  } catch (error) {
    notice(error.message);
  }
});

show(currentPage());
