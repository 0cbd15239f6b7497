// Jobs & batches: filtered, paged lists; a job's detail with live events, webhook attempts
// and cancel; batches with their request counts and output/error files.
import { api, events, list, headers } from "./api.js";
import { $, el, button, fillTable, fmtTime, formValues, say, text } from "./ui.js";
import { FINAL } from "./playground.js";
import { keyNames } from "./names.js";

const pages = [null]; // the `after` cursor of each page seen, for going back
let page = 0;
let watching = null; // AbortController of the detail's event stream

function statusBadge(status) {
  const cls = { completed: "ok", failed: "bad", cancelled: "bad" }[status] || "";
  return el("span", { class: `badge ${cls}` }, status);
}

// The model the filter names: the exact name, else the one model whose name holds the text.
async function filterModel(typed) {
  if (!typed) return "";
  const names = list(await api("GET", "/v1/models")).map((m) => m.id);
  if (names.includes(typed)) return typed;
  const found = names.filter((n) => n.toLowerCase().includes(typed.toLowerCase()));
  if (found.length === 1) return found[0];
  throw new Error(found.length ? `Several models match "${typed}": ${found.join(", ")}.`
    : `No model name holds "${typed}".`);
}

async function loadJobs() {
  const v = formValues($("#jobs-filter"));
  const query = new URLSearchParams({ limit: "20" });
  if (v.status) query.set("status", v.status);
  say("#jobs-say", "");
  let model = "";
  try { model = await filterModel(v.model); } catch (error) { say("#jobs-say", error.message); return; }
  if (model) query.set("model", model);
  if (model && model !== v.model) say("#jobs-say", `Jobs of ${model}.`, "info");
  if (pages[page]) query.set("after", pages[page]);
  const data = await api("GET", `/v1/jobs?${query}`);
  const owners = await keyNames(list(data).map((j) => j.owner));
  fillTable($("#jobs-table"), list(data), [
    ["id", (j) => el("a", { href: `#jobs/${j.id}` }, j.id)],
    ["status", (j) => statusBadge(j.status)],
    ["model", (j) => j.model], ["endpoint", (j) => j.endpoint],
    ["created", (j) => fmtTime(j.created_at)], ["finished", (j) => fmtTime(j.finished_at)],
    ["tokens", (j) => j.usage?.total_tokens],
    ["owner", (j) => owners[j.owner] ?? "—"],
    ["error", (j) => (j.error ? j.error.code || j.error.message || "error" : "")],
  ], "No jobs match.");
  pages[page + 1] = data.has_more ? data.last_id : undefined;
  $("#jobs-next").disabled = !data.has_more;
  $("#jobs-prev").disabled = page === 0;
}

async function download(fileId) {
  const response = await fetch(`/v1/files/${fileId}/content`, { headers: headers() });
  if (!response.ok) { say("#notice", `Could not download ${fileId}.`); return; }
  const link = el("a", { href: URL.createObjectURL(await response.blob()), download: `${fileId}.jsonl` });
  link.click();
  URL.revokeObjectURL(link.href);
}

async function loadBatches() {
  const data = await api("GET", "/v1/batches?limit=50");
  const file = (id) => (id ? button(id, () => download(id), "link") : "—");
  fillTable($("#batches-table"), list(data), [
    ["id", (b) => b.id], ["status", (b) => statusBadge(b.status)],
    ["endpoint", (b) => b.endpoint], ["created", (b) => fmtTime(b.created_at)],
    ["requests", (b) => `${b.request_counts.completed} done · ${b.request_counts.failed} failed · ${b.request_counts.total} total`],
    ["input", (b) => file(b.input_file_id)], ["output", (b) => file(b.output_file_id)],
    ["errors", (b) => file(b.error_file_id)],
  ], "No batches yet.");
}

function pre(value) {
  return el("pre", { tabindex: "0" }, value === null || value === undefined ? "—" : JSON.stringify(value, null, 2));
}

export function eventLine(kind, data) {
  if (kind === "token") return `token ${JSON.stringify(data.text)}`;
  if (kind === "progress") return `progress: step ${data.step} of ${data.of}`;
  return `${kind}${data.status ? `: ${data.status}` : ""}`;
}

async function detail(id) {
  watching?.abort();
  const box = $("#job-detail");
  const job = await api("GET", `/v1/jobs/${id}`);
  const status = statusBadge(job.status);
  const log = el("ol", { class: "events", id: "job-events", "aria-live": "polite" });
  const result = el("div", { id: "job-result" }, pre(job.result ?? job.error));
  const attempts = el("table", { id: "webhook-table" }, el("thead"), el("tbody"));
  const said = el("span", { class: "row-say", role: "status" });
  const cancel = job.status === "pending" || job.status === "running"
    ? button("Cancel job", async () => {
      cancel.disabled = true;
      try {
        await api("POST", `/v1/jobs/${id}/cancel`);
        said.textContent = "Cancelling…";
      } catch (error) {
        cancel.disabled = false;
        said.className = "row-say error";
        said.textContent = error.message;
      }
    }, "danger") : null;
  box.replaceChildren(el("h2", {}, "Job ", el("code", {}, id), " ", status, " ", cancel || ""), said,
    el("p", { class: "hint" }, `${job.endpoint} · ${job.model} · created ${fmtTime(job.created_at)} · attempts ${job.attempts}`),
    el("div", { class: "columns" },
      el("div", {}, el("h3", {}, "Request"), pre(job.request)),
      el("div", {}, el("h3", {}, "Result"), result)),
    el("h3", {}, "Events"), log, el("h3", {}, "Webhook attempts"), attempts);
  box.hidden = false;
  const hooks = list(await api("GET", `/v1/jobs/${id}/webhook_attempts`));
  fillTable(attempts, hooks, Object.keys(hooks[0] || { attempt: 0 }).map((k) => [k, (a) => text(a[k])]),
    job.webhook_url ? "No attempts yet." : "This job has no webhook.");
  watching = new AbortController();
  try {
    for await (const frame of events(`/v1/jobs/${id}/events`, { signal: watching.signal })) {
      let data = {};
      try { data = JSON.parse(frame.data); } catch { /* plain text */ }
      log.append(el("li", {}, eventLine(frame.event, data)));
      if (data.status) status.textContent = data.status;
      if (FINAL.includes(frame.event)) {
        status.replaceWith(statusBadge(frame.event));
        result.replaceChildren(pre(data.result ?? data.error));
        cancel?.remove();
        said.textContent = "";
        // the list shows the job's final status too
        loadJobs().catch((e) => say("#notice", e.message));
        break;
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") say("#notice", error.message);
  }
}

export default {
  init() {
    $("#jobs-filter").addEventListener("submit", (event) => {
      event.preventDefault();
      pages.length = 1; page = 0;
      loadJobs().catch((e) => say("#notice", e.message));
    });
    $("#jobs-next").addEventListener("click", () => { page += 1; loadJobs().catch((e) => say("#notice", e.message)); });
    $("#jobs-prev").addEventListener("click", () => { page = Math.max(0, page - 1); loadJobs().catch((e) => say("#notice", e.message)); });
  },
  async load() {
    const id = location.hash.split("/")[1];
    await Promise.all([loadJobs(), loadBatches()]);
    if (id) await detail(decodeURIComponent(id));
    else { watching?.abort(); $("#job-detail").hidden = true; }
  },
};
