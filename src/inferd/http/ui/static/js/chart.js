// Time-series charts (vendored uPlot) over /admin/v1/usage/series and /v1/usage/series.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { api, canRead } from "./api.js";
import { el } from "./ui.js";

const PALETTE = ["#3b82f6", "#f97316", "#10b981", "#e11d48", "#8b5cf6", "#eab308", "#06b6d4"];
export const RANGES = { hour: [3600, "minute"], day: [86400, "5m"], week: [604800, "hour"] };

// The usage series of the last `range` (hour, day, week), split by model, key or none.
export async function loadSeries(range, splitBy = "model", filters = {}) {
  const [span, bucket] = RANGES[range];
  const to = Date.now() / 1000;
  const query = new URLSearchParams({ bucket, from: String(to - span), to: String(to), split_by: splitBy });
  for (const [name, value] of Object.entries(filters)) if (value) query.set(name, value);
  const base = canRead() ? "/admin/v1/usage/series" : "/v1/usage/series";
  return api("GET", `${base}?${query}`);
}

const css = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

// Draws `metric` (a field of each bucket, or a function of it) for every series into `box`.
export function drawChart(box, title, data, metric, { height = 180, compact = false } = {}) {
  const get = typeof metric === "function" ? metric : (b) => b[metric];
  const series = data.series || [];
  const xs = series.length ? series[0].data.map((b) => b.bucket_start) : [];
  const total = series.reduce((sum, s) => sum + s.data.reduce((n, b) => n + (get(b) || 0), 0), 0);
  const figure = el("figure", { class: "chart", "data-metric": title, "data-total": String(total) },
    el("figcaption", {}, title, el("span", { class: "total" }, compact ? ` ${fmt(total)}` : "")));
  box.append(figure);
  if (!series.length) {
    figure.append(el("p", { class: "empty" }, "No requests in this range."));
    return figure;
  }
  const axis = { stroke: css("--muted"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") } };
  const inner = () => Math.max(200, figure.clientWidth - 20); // the figure's width less its padding
  // Counts are bars (one bucket alone still shows); latencies are lines with points.
  const counts = !/latency|ttft/.test(typeof metric === "string" ? metric : "");
  const bars = counts ? uPlot.paths.bars({ size: [0.8, 24] }) : undefined;
  const opts = {
    width: inner(), height,
    legend: { show: !compact, live: false },
    cursor: { show: !compact },
    axes: compact ? [{ show: false }, { show: false }] : [axis, { ...axis, size: 56 }],
    scales: { x: { time: true } },
    series: [{}, ...series.map((s, i) => {
      const color = PALETTE[i % PALETTE.length];
      return { label: s.name, stroke: color, width: counts ? 1 : 2, spanGaps: true, paths: bars,
        fill: counts ? `${color}99` : undefined, points: { show: !counts, size: 5, fill: color } };
    })],
  };
  // The drawing's text alternative: each series' total and peak, read by screen readers.
  const summary = series.map((s) => {
    const values = s.data.map((b) => get(b) || 0);
    return `${s.name}: total ${fmt(values.reduce((a, b) => a + b, 0))}, peak ${fmt(Math.max(0, ...values))}`;
  }).join("; ");
  figure.append(el("p", { class: "sr-only" }, `${title} over ${xs.length} intervals. ${summary}.`));
  const plot = new uPlot(opts, [xs, ...series.map((s) => s.data.map((b) => get(b)))], figure);
  plot.root.setAttribute("aria-hidden", "true");
  new ResizeObserver(() => {
    const w = inner();
    if (Math.abs(w - plot.width) > 4) plot.setSize({ width: w, height });
  }).observe(figure);
  return figure;
}

function fmt(n) {
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: 0 });
}
