// Time-series charts (vendored uPlot) over /admin/v1/usage/series and /v1/usage/series.
import uPlot from "../vendor/uplot/uPlot.esm.js";
import { api, canRead } from "./api.js";
import { el } from "./ui.js";

const PALETTE = ["#3b82f6", "#f97316", "#10b981", "#e11d48", "#8b5cf6", "#eab308", "#06b6d4",
  "#db2777", "#65a30d", "#7c3aed", "#0d9488", "#b45309"];
const COLOURS = "inferd.colours"; // series name -> palette index, kept across reloads

// The colour of a series: fixed per name (the same model or key has the same colour on
// every chart, page and reload). A new name takes the first colour no other name holds,
// starting from its name's hash, so two series of one chart rarely share one.
export function colourOf(name) {
  let kept = {};
  try { kept = JSON.parse(localStorage.getItem(COLOURS) || "{}") || {}; } catch { kept = {}; }
  if (!(name in kept)) {
    let h = 0;
    for (const c of String(name)) h = (h * 31 + c.codePointAt(0)) >>> 0;
    const taken = new Set(Object.values(kept));
    let i = h % PALETTE.length;
    for (let n = 0; n < PALETTE.length && taken.has(i); n += 1) i = (i + 1) % PALETTE.length;
    kept[name] = i;
    try { localStorage.setItem(COLOURS, JSON.stringify(kept)); } catch { /* private mode */ }
  }
  return PALETTE[kept[name] % PALETTE.length];
}
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
// `onPick` (count charts): called with {name, from, to} when a bar is clicked: the series
// under the pointer (null above the bars) and the bucket's time window (epoch seconds). From
// the keyboard, such a chart takes the focus: the arrow keys choose a bar (left, right, Home,
// End) and a series' part of it (up, down), shown by the cursor and the values' tooltip and
// told to screen readers, and Enter (or Space) picks it.
export function drawChart(box, title, data, metric, { height = 180, compact = false, onPick = null } = {}) {
  const get = typeof metric === "function" ? metric : (b) => b[metric];
  const series = data.series || [];
  const xs = series.length ? series[0].data.map((b) => b.bucket_start) : [];
  const total = series.reduce((sum, s) => sum + s.data.reduce((n, b) => n + (get(b) || 0), 0), 0);
  const figure = el("figure", { class: "chart", "data-metric": title, "data-total": String(total) },
    el("figcaption", {}, title, el("span", { class: "total" }, ` ${fmt(total)}`)));
  box.append(figure);
  if (!series.length) {
    figure.append(el("p", { class: "empty" }, "No requests in this range."));
    return figure;
  }
  const axis = { stroke: css("--muted"), grid: { stroke: css("--line") }, ticks: { stroke: css("--line") } };
  const inner = () => Math.max(200, figure.clientWidth - 20); // the figure's width less its padding
  // Counts are stacked bars (one bucket alone still shows); latencies are lines with points.
  const counts = !/latency|ttft/.test(typeof metric === "string" ? metric : "");
  const bars = counts ? uPlot.paths.bars({ size: [0.8, 24] }) : undefined;
  const values = series.map((s) => s.data.map((b) => get(b)));
  // Stacked: series i is drawn from the sum of the series below it to that sum plus its own
  // count. uPlot draws series in order, so the tallest (the last sum) goes first and each
  // lower one over it; the legend still reads in the series' order.
  const tops = [];
  if (counts) {
    let sum = xs.map(() => 0);
    for (const v of values) {
      sum = sum.map((n, j) => n + (v[j] || 0));
      tops.push(sum);
    }
  }
  const order = counts ? series.map((_, i) => series.length - 1 - i) : series.map((_, i) => i);
  const opts = {
    width: inner(), height,
    legend: { show: false }, // ours below, in the series' order (uPlot's follows the drawing's)
    cursor: { show: !compact },
    axes: compact ? [{ show: false }, { show: false }] : [axis, { ...axis, size: 56 }],
    scales: { x: { time: true } },
    series: [{}, ...order.map((i) => {
      const color = colourOf(series[i].name);
      return { label: series[i].name, stroke: color, width: counts ? 1 : 2, spanGaps: true, paths: bars,
        fill: counts ? color : undefined, points: { show: !counts, size: 5, fill: color } };
    })],
    hooks: { setCursor: [(u) => tip(u, u.cursor.idx)] },
  };
  // The drawing's text alternative: each series' total and peak, read by screen readers.
  const summary = series.map((s, i) => {
    const own = values[i].map((v) => v || 0);
    return `${s.name}: total ${fmt(own.reduce((a, b) => a + b, 0))}, peak ${fmt(Math.max(0, ...own))}`;
  }).join("; ");
  const pickable = Boolean(onPick && counts && !compact);
  const hint = pickable ? " Arrow keys choose a bar, Enter opens its requests." : "";
  figure.append(el("p", { class: "sr-only" }, `${title} over ${xs.length} intervals. ${summary}.${hint}`));
  // Values on hover: the bucket's time and each series' own value (and their sum).
  const tipBox = el("div", { class: "chart-tip", hidden: "" });
  const tip = (u, idx) => {
    if (idx === null || idx === undefined || !u.over) { tipBox.hidden = true; return; }
    const when = new Date(xs[idx] * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
    const lines = series.map((s, i) => `${s.name}: ${values[i][idx] === null ? "—" : fmt(values[i][idx])}`);
    if (counts && series.length > 1) lines.push(`total: ${fmt(tops[tops.length - 1][idx])}`);
    if (pickable) lines.push("click: these requests");
    tipBox.replaceChildren(el("strong", {}, when), ...lines.map((line) => el("div", {}, line)));
    tipBox.hidden = false;
    const left = u.valToPos(xs[idx], "x");
    tipBox.style.left = `${Math.min(left + 12, Math.max(0, u.over.clientWidth - 160))}px`;
  };
  const drawn = counts ? order.map((i) => tops[i]) : values;
  const plot = new uPlot(opts, [xs, ...drawn], figure);
  plot.over.append(tipBox);
  plot.over.addEventListener("mouseleave", () => { tipBox.hidden = true; });
  plot.root.setAttribute("aria-hidden", "true");
  if (pickable) {
    figure.classList.add("pickable");
    const step = data.bucket_seconds || (xs.length > 1 ? xs[1] - xs[0] : 60);
    const pick = (idx, name) => onPick({ name, from: xs[idx], to: xs[idx] + step });
    plot.over.addEventListener("click", () => {
      const idx = plot.cursor.idx;
      if (idx === null || idx === undefined || !tops[tops.length - 1][idx]) return; // no bar
      pick(idx, seriesAt(tops, idx, plot.posToVal(plot.cursor.top, "y"), series));
    });
    byKeyboard(figure, plot, { xs, series, values, tops, pick, hide: () => { tipBox.hidden = true; } });
  }
  if (!compact) {
    const swatch = (name) => {
      const box = el("span", { class: "swatch" });
      box.style.background = colourOf(name); // a property, not a style attribute (the CSP)
      return box;
    };
    figure.append(el("ul", { class: "chart-legend", "aria-hidden": "true" },
      ...series.map((s) => el("li", {}, swatch(s.name), s.name))));
  }
  // For the page's tests: what is drawn (the stacked tops) and each series' own values.
  figure.chart = { plot, names: series.map((s) => s.name), values, tops,
    colours: Object.fromEntries(series.map((s) => [s.name, colourOf(s.name)])) };
  figure.dataset.series = JSON.stringify(series.map((s) => s.name));
  new ResizeObserver(() => {
    const w = inner();
    if (Math.abs(w - plot.width) > 4) plot.setSize({ width: w, height });
  }).observe(figure);
  return figure;
}

// The keyboard's way to the bars of a pickable chart: the figure takes the focus (shown by
// its outline); left and right (Home, End) choose a bar among those with requests, up and
// down a series' part of it (bottom first), Enter or Space picks it. The choice moves the
// cursor over that part (its crosshair and tooltip, as the pointer would) and an aria-live
// line tells its time and values.
function byKeyboard(figure, plot, { xs, series, values, tops, pick, hide }) {
  const total = tops[tops.length - 1];
  const bars = xs.map((_, j) => j).filter((j) => total[j]);
  const parts = (j) => series.map((_, i) => i).filter((i) => values[i][j]);
  const live = el("p", { class: "sr-only chart-choice", "aria-live": "polite" });
  figure.append(live);
  figure.tabIndex = 0;
  figure.setAttribute("aria-keyshortcuts", "ArrowLeft ArrowRight ArrowUp ArrowDown Home End Enter");
  let at = -1; // the chosen bar, in `bars` (-1: none yet)
  let part = 0; // the chosen series' part of it, in `parts(bar)`
  const chosen = () => {
    const j = bars[at];
    const list = parts(j);
    return [j, list[Math.min(part, list.length - 1)]];
  };
  const show = () => {
    const [j, i] = chosen();
    const below = i ? tops[i - 1][j] : 0;
    plot.setCursor({ left: Math.min(plot.valToPos(xs[j], "x"), plot.over.clientWidth - 1),
      top: plot.valToPos((below + tops[i][j]) / 2, "y") });
    const when = new Date(xs[j] * 1000).toLocaleString(undefined, { dateStyle: "short", timeStyle: "short" });
    const others = series.length > 1 ? ` of ${fmt(total[j])} in this bar` : "";
    live.textContent = `${when}: ${series[i].name} ${fmt(values[i][j])}${others}. Enter opens these requests.`;
    figure.dataset.chosen = JSON.stringify({ bucket: j, series: series[i].name });
  };
  figure.addEventListener("keydown", (event) => {
    if (!bars.length) return;
    const last = bars.length - 1;
    const moves = {
      ArrowRight: () => { at = Math.min(last, at + 1); part = 0; },
      ArrowLeft: () => { at = at < 0 ? last : Math.max(0, at - 1); part = 0; },
      Home: () => { at = 0; part = 0; },
      End: () => { at = last; part = 0; },
      ArrowUp: () => { if (at < 0) at = last; else part = Math.min(parts(bars[at]).length - 1, part + 1); },
      ArrowDown: () => { if (at < 0) at = last; else part = Math.max(0, part - 1); },
    };
    if (event.key in moves) {
      event.preventDefault(); // the page does not scroll
      moves[event.key]();
      show();
    } else if ((event.key === "Enter" || event.key === " ") && at >= 0) {
      event.preventDefault();
      const [j, i] = chosen();
      pick(j, series[i].name);
    }
  });
  figure.addEventListener("blur", hide);
}

// The name of the stacked series whose bar holds the height `y` at bucket `idx` (null: above
// every bar).
function seriesAt(tops, idx, y, series) {
  for (let i = 0; i < series.length; i += 1) {
    const below = i ? tops[i - 1][idx] : 0;
    if (tops[i][idx] > below && y <= tops[i][idx]) return series[i].name;
  }
  return null;
}

function fmt(n) {
  return Number(n).toLocaleString(undefined, { maximumFractionDigits: 0 });
}
