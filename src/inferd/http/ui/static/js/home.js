// Home: version, uptime, store, models and replica health, the last hour in small charts.
import { api, headers, list, session, canRead } from "./api.js";
import { $, el, badge } from "./ui.js";
import { loadSeries, drawChart } from "./chart.js";

async function uptime() {
  const health = await fetch("/health").then((r) => r.json()).catch(() => ({}));
  if (typeof health.uptime_seconds !== "number") return "—";
  let s = Math.round(health.uptime_seconds);
  const d = Math.floor(s / 86400); s -= d * 86400;
  const h = Math.floor(s / 3600); s -= h * 3600;
  const m = Math.floor(s / 60);
  return d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : `${m} min`;
}

function stat(label, value, cls = "") {
  return el("div", { class: `stat ${cls}` }, el("span", { class: "label" }, label), el("strong", {}, value));
}

async function queueDepth() {
  const queued = await api("GET", "/v1/jobs?status=pending&limit=100");
  return `${list(queued).length}${queued.has_more ? "+" : ""}`;
}

async function modelTiles(ready) {
  const box = $("#home-models");
  const tiles = [];
  if (canRead()) {
    for (const m of list(await api("GET", "/admin/v1/models"))) {
      const healthy = m.replicas.filter((r) => r.healthy).length;
      tiles.push(el("div", { class: "tile" }, el("strong", {}, m.name), " ",
        badge(m.healthy, "serving", "down"),
        el("p", { class: "hint" }, `${healthy}/${m.replicas.length} replicas healthy`)));
    }
  }
  if (!tiles.length) {
    for (const [name, ok] of Object.entries(ready.models || {})) {
      tiles.push(el("div", { class: "tile" }, el("strong", {}, name), " ", badge(ok, "loaded", "loading")));
    }
  }
  box.replaceChildren(...(tiles.length ? tiles : [el("p", { class: "empty" }, "No models configured.")]));
}

export default {
  async load() {
    $("#base-url").textContent = `${location.origin}/v1`;
    $("#first-run").hidden = session.role !== "open";
    // the key: with INFERD_READY_REQUIRE_KEY, /ready names the models only to keyed callers
    const ready = await fetch("/ready?deep=true", { headers: headers() }).then((r) => r.json()).catch(() => ({ status: "unreachable" }));
    const info = await fetch("/openapi.json").then((r) => r.json()).catch(() => ({ info: {} }));
    const stats = [
      stat("status", ready.status, ready.status === "ready" ? "ok" : "bad"),
      stat("version", info.info.version || "—"),
      stat("uptime", await uptime()),
      stat("store", ready.store ? "reachable" : "unreachable", ready.store ? "ok" : "bad"),
    ];
    if (session.role) stats.push(stat("jobs queued", await queueDepth().catch(() => "—")));
    $("#home-stats").replaceChildren(...stats);
    await modelTiles(ready);
    const charts = $("#home-charts");
    charts.replaceChildren();
    if (!session.role) return;
    const data = await loadSeries("hour", "none").catch(() => null);
    if (!data) return;
    drawChart(charts, "requests, last hour", data, "requests", { height: 70, compact: true });
    drawChart(charts, "tokens, last hour", data, "total_tokens", { height: 70, compact: true });
    drawChart(charts, "errors, last hour", data, "errors", { height: 70, compact: true });
    drawChart(charts, "cancelled, last hour", data, "cancelled", { height: 70, compact: true });
  },
};
