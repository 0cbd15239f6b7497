// Prompts: templates for the Responses API's `prompt` parameter. Create one (for a key), add a
// version (the latest from then on), delete; each row shows the variables it uses.
import { api, list } from "./api.js";
import { $, el, fillTable, fmtTime, formValues, rowButton, say } from "./ui.js";

let versioning = null; // the prompt getting a new version, or null when creating

// The form's messages box: one user message per non-empty line.
function messages(textValue) {
  return textValue.split("\n").map((line) => line.trim()).filter(Boolean)
    .map((content) => ({ role: "user", content }));
}

function template(values) {
  const body = {};
  if (values.instructions) body.instructions = values.instructions;
  const input = messages(values.input);
  if (input.length) body.input = input;
  return body;
}

function messagesText(prompt) {
  return (prompt.input || []).map((item) => (typeof item.content === "string" ? item.content
    : (item.content || []).map((part) => part.text || "").join(""))).join("\n");
}

function actions(p) {
  const what = `prompt ${p.name}`;
  const out = el("span", { class: "row-say error", role: "status" });
  const remove = rowButton("Delete", what, () => {
    const confirm = rowButton("Confirm delete", what, async () => {
      try { await api("DELETE", `/admin/v1/prompts/${p.id}`); await load(); }
      catch (error) { out.textContent = error.message; }
    }, "danger");
    remove.replaceWith(confirm);
    confirm.focus();
  }, "danger");
  return el("span", { class: "actions" }, rowButton("New version", what, () => newVersion(p), "quiet"), remove, out);
}

async function load() {
  const prompts = list(await api("GET", "/admin/v1/prompts?limit=1000"));
  fillTable($("#prompts-table"), prompts, [
    ["name", (p) => el("strong", {}, p.name)],
    ["id", (p) => el("code", {}, p.id)],
    ["key", (p) => p.key_id ?? "—"],
    ["version", (p) => p.version],
    ["variables", (p) => p.variables.join(", ") || "—"],
    ["instructions", (p) => p.instructions ?? "—"],
    ["messages", (p) => messagesText(p) || "—"],
    ["created", (p) => fmtTime(p.created_at)],
    ["", actions],
  ], "No prompts yet.");
}

function newVersion(p) {
  versioning = p;
  const f = $("#prompt-form").elements;
  f.name.value = p.name;
  f.name.disabled = true;
  f.key_id.value = p.key_id ?? "";
  f.key_id.disabled = true;
  f.instructions.value = p.instructions ?? "";
  f.input.value = messagesText(p);
  $("#prompt-form-title").textContent = `New version of ${p.name}`;
  $("#prompt-box").open = true;
}

function reset() {
  versioning = null;
  const f = $("#prompt-form").elements;
  f.name.disabled = false;
  f.key_id.disabled = false;
  $("#prompt-form-title").textContent = "Create a prompt";
}

function init() {
  const form = $("#prompt-form");
  form.addEventListener("reset", reset);
  form.addEventListener("submit", async (event) => {
    event.preventDefault();
    const values = formValues(form);
    try {
      if (versioning) {
        const made = await api("POST", `/admin/v1/prompts/${versioning.id}/versions`, template(values));
        say("#prompt-say", `Version ${made.version} of ${made.name} is the latest.`, "ok");
      } else {
        const body = { name: values.name, ...template(values) };
        if (values.key_id) body.key_id = Number(values.key_id);
        const made = await api("POST", "/admin/v1/prompts", body);
        say("#prompt-say", `Created ${made.id}.`, "ok");
      }
      form.reset();
      await load();
    } catch (error) {
      say("#prompt-say", error.message);
    }
  });
}

export default { init, load };
