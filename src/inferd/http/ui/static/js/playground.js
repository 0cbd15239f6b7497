// Playground: streamed chat with TTFT and tokens/s, compare two models, run as a job, images.
import { api, events, list } from "./api.js";
import { $, $$, el, csv, fmtNum, say } from "./ui.js";

export const FINAL = ["completed", "failed", "cancelled"];
const histories = new Map(); // model -> messages of its conversation
let running = null; // AbortController of the answers being streamed (Stop aborts it)

function bubble(column, role, content) {
  const node = el("div", { class: `msg ${role}` }, content);
  column.querySelector(".log").append(node);
  return node;
}

function column(model) {
  let col = $$(".chat-col").find((c) => c.dataset.model === model);
  if (!col) {
    col = el("section", { class: "chat-col", "data-model": model, "aria-label": `Answers of ${model}` },
      el("h2", {}, model), el("div", { class: "log", "aria-live": "polite" }));
    $("#chat-columns").append(col);
  }
  return col;
}

function stats(usage, ttft, seconds, tokens) {
  const parts = [];
  if (ttft !== null) parts.push(`TTFT ${fmtNum(ttft)} ms`);
  const completion = usage ? usage.completion_tokens : tokens;
  if (seconds > 0 && completion) parts.push(`${fmtNum(completion / seconds, 1)} tokens/s`);
  if (usage) parts.push(`prompt ${usage.prompt_tokens} · completion ${usage.completion_tokens} tokens`);
  return el("div", { class: "usage" }, parts.join(" · "));
}

async function streamAnswer(body, target, signal) {
  const started = performance.now();
  let first = null, content = "", usage = null, chunks = 0;
  target.textContent = "";
  try {
    for await (const frame of events("/v1/chat/completions", { method: "POST", body, signal })) {
      if (frame.data === "[DONE]") break;
      const chunk = JSON.parse(frame.data);
      if (chunk.error) throw new Error(chunk.error.message);
      if (chunk.usage) usage = chunk.usage;
      const delta = chunk.choices && chunk.choices[0] && chunk.choices[0].delta;
      if (delta && delta.content) {
        if (first === null) first = performance.now();
        chunks += 1;
        content += delta.content;
        // One span per chunk, so the page (and its tests) can see tokens arrive one by one.
        target.append(el("span", { class: "tok" }, delta.content));
        target.dataset.chunks = String(chunks);
      }
    }
  } catch (error) {
    if (error.name !== "AbortError") throw error;
  }
  const end = performance.now();
  const ttft = first === null ? null : first - started;
  return { content, usage, ttft, seconds: first === null ? 0 : (end - first) / 1000, chunks };
}

async function jobAnswer(body, target, col, signal) {
  const job = await api("POST", "/v1/jobs", { endpoint: "/v1/chat/completions", body });
  const log = el("ol", { class: "events", "aria-label": `Events of job ${job.id}` });
  const status = el("span", { class: "badge" }, job.status);
  col.querySelector(".log").append(el("div", { class: "job-box" },
    el("div", {}, "job ", el("a", { href: `#jobs/${job.id}` }, job.id), " ", status), log));
  const started = performance.now();
  let first = null;
  target.textContent = "";
  // Stop cancels the job; its events then end with "cancelled".
  signal.addEventListener("abort", () => api("POST", `/v1/jobs/${job.id}/cancel`).catch(() => {}));
  for await (const frame of events(`/v1/jobs/${job.id}/events`)) {
    let data = {};
    try { data = JSON.parse(frame.data); } catch { /* plain text event */ }
    if (frame.event === "token") {
      if (first === null) first = performance.now();
      target.append(el("span", { class: "tok" }, data.text ?? data.content ?? ""));
    } else {
      log.append(el("li", {}, `${frame.event}${data.status ? `: ${data.status}` : ""}`));
      if (data.status) status.textContent = data.status;
    }
    // The last event is named after the final status and carries the whole job.
    if (FINAL.includes(frame.event)) break;
  }
  const done = await api("GET", `/v1/jobs/${job.id}`);
  status.textContent = done.status;
  if (done.status === "cancelled") return { content: target.textContent, usage: null, ttft: null, seconds: 0 };
  if (done.error) throw new Error(done.error.message || JSON.stringify(done.error));
  const content = done.result?.choices?.[0]?.message?.content ?? target.textContent;
  target.textContent = content;
  const end = performance.now();
  return { content, usage: done.usage || done.result?.usage, ttft: first === null ? null : first - started,
    seconds: first === null ? (end - started) / 1000 : (end - first) / 1000 };
}

function request(model, v) {
  const history = histories.get(model) || [];
  const messages = v.system ? [{ role: "system", content: v.system }, ...history] : [...history];
  const body = { model, messages, temperature: Number(v.temperature), max_tokens: Number(v.max_tokens) };
  const stop = csv(v.stop);
  if (stop.length) body.stop = stop;
  return body;
}

async function ask(model, v, signal) {
  const col = column(model);
  const history = histories.get(model) || [];
  histories.set(model, history);
  history.push({ role: "user", content: v.message });
  bubble(col, "user", v.message);
  const target = bubble(col, "assistant", "…");
  const body = request(model, v);
  try {
    const result = v.job ? await jobAnswer(body, target, col, signal)
      : await streamAnswer({ ...body, stream: true, stream_options: { include_usage: true } }, target, signal);
    history.push({ role: "assistant", content: result.content });
    const line = stats(result.usage, result.ttft, result.seconds, result.chunks);
    if (signal.aborted) line.textContent = `stopped${line.textContent ? ` · ${line.textContent}` : ""}`;
    target.after(line);
  } catch (error) {
    history.pop();
    target.replaceWith(el("div", { class: "msg error", role: "alert" }, error.message));
  }
}

async function send(event) {
  event.preventDefault();
  const form = event.target;
  const v = Object.fromEntries(new FormData(form));
  v.job = form.elements.job.checked;
  v.message = (v.message || "").trim();
  if (!v.message) return;
  say("#chat-say", "");
  form.elements.message.value = "";
  const models = [v.model, v.compare].filter((m, i, all) => m && all.indexOf(m) === i);
  for (const col of $$(".chat-col")) if (!models.includes(col.dataset.model)) col.remove();
  $("#chat-send").disabled = true;
  running = new AbortController();
  $("#chat-stop").hidden = false;
  try {
    await Promise.all(models.map((m) => ask(m, v, running.signal)));
  } finally {
    running = null;
    $("#chat-stop").hidden = true;
    $("#chat-send").disabled = false;
    if (document.activeElement === document.body) $("#chat-input").focus();
  }
}

async function generate(event) {
  event.preventDefault();
  const v = Object.fromEntries(new FormData(event.target));
  const started = performance.now();
  say("#image-say", "Generating…", "ok");
  try {
    const body = { model: v.model, prompt: v.prompt, size: v.size, response_format: "b64_json" };
    if (v.steps) body.steps = Number(v.steps);
    const data = await api("POST", "/v1/images/generations", body);
    const image = data.data[0];
    const out = $("#image-out");
    out.querySelector("img").src = image.b64_json ? `data:image/png;base64,${image.b64_json}` : image.url;
    const steps = data.usage?.steps ?? v.steps;
    out.querySelector("figcaption").textContent =
      `${v.size === "auto" ? "default size" : v.size}, ${steps} steps, ${fmtNum((performance.now() - started) / 1000, 1)} s`;
    out.hidden = false;
    say("#image-say", "");
  } catch (error) {
    say("#image-say", error.message);
  }
}

function tab(name) {
  for (const b of $$("[data-tab]")) {
    b.setAttribute("aria-selected", String(b.dataset.tab === name));
    b.tabIndex = b.dataset.tab === name ? 0 : -1;
  }
  $("#tab-chat").hidden = name !== "chat";
  $("#tab-image").hidden = name !== "image";
}

export default {
  init() {
    $("#chat-form").addEventListener("submit", send);
    $("#image-form").addEventListener("submit", generate);
    $("#chat-clear").addEventListener("click", () => {
      histories.clear();
      $("#chat-columns").replaceChildren();
    });
    for (const b of $$("[data-tab]")) b.addEventListener("click", () => tab(b.dataset.tab));
    // Arrow keys move between tabs (the tab pattern); only the chosen tab is in the Tab order.
    $(".tabs").addEventListener("keydown", (event) => {
      if (event.key !== "ArrowRight" && event.key !== "ArrowLeft") return;
      const shown = $$("[data-tab]").filter((b) => !b.hidden);
      const at = shown.indexOf(document.activeElement);
      const next = shown[(at + (event.key === "ArrowRight" ? 1 : shown.length - 1)) % shown.length];
      tab(next.dataset.tab);
      next.focus();
    });
    // Ctrl+Enter (Cmd+Enter) in the message sends it.
    $("#chat-input").addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        if (!$("#chat-send").disabled) $("#chat-form").requestSubmit();
      }
    });
    $("#chat-stop").addEventListener("click", () => running?.abort());
  },
  async load() {
    const models = list(await api("GET", "/v1/models"));
    const has = (m, c) => !m.capabilities || m.capabilities.includes(c);
    const chat = models.filter((m) => has(m, "chat") && !(m.capabilities || []).every((c) => c === "embeddings"));
    const images = models.filter((m) => (m.capabilities || []).includes("images"));
    for (const [select, rows, blank] of [[$("#chat-model"), chat, false], [$("#chat-compare"), chat, true],
      [$("#image-model"), images, false]]) {
      const previous = select.value;
      select.replaceChildren(...(blank ? [new Option("—", "")] : []), ...rows.map((m) => new Option(m.id, m.id)));
      if (previous) select.value = previous;
    }
    $("#image-tab").hidden = !images.length;
    if (!images.length) tab("chat");
    if (!chat.length) say("#chat-say", "No chat model is available to this key.");
  },
};
