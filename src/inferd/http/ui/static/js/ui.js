// Small DOM helpers shared by the pages.
export const $ = (sel, root = document) => root.querySelector(sel);
export const $$ = (sel, root = document) => [...root.querySelectorAll(sel)];

// el("button", {type: "button", onclick}, "Text") — attributes starting with "on" are listeners.
export function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (value === undefined || value === null || value === false) continue;
    if (name.startsWith("on")) node.addEventListener(name.slice(2), value);
    else if (name === "class") node.className = value;
    else if (name in node && typeof value !== "string") node[name] = value;
    else node.setAttribute(name, value === true ? "" : value);
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined && child !== false) {
      node.append(child instanceof Node ? child : String(child));
    }
  }
  return node;
}

export function text(value) {
  if (value === null || value === undefined || value === "") return "—";
  if (typeof value === "object") return JSON.stringify(value);
  return String(value);
}

export const fmtTime = (epoch) => (epoch ? new Date(epoch * 1000).toLocaleString() : "—");
export const fmtNum = (n, digits = 0) => (n === null || n === undefined ? "—"
  : Number(n).toLocaleString(undefined, { maximumFractionDigits: digits }));

// Fills a table body; columns are [header, row => value or Node]. Shows `empty` when no rows.
export function fillTable(table, rows, columns, empty = "Nothing here yet.") {
  const head = el("tr", {}, columns.map(([name]) => el("th", { scope: "col" }, name)));
  table.querySelector("thead").replaceChildren(head);
  const body = table.querySelector("tbody");
  if (!rows.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: columns.length }, empty)));
    return;
  }
  body.replaceChildren(...rows.map((row) => el("tr", {}, columns.map(([name, get]) => {
    const value = get(row);
    return el("td", { "data-label": name }, value instanceof Node ? value : text(value));
  }))));
}

// A message next to the form (or section) that caused it; `kind` is "error" or "ok".
export function say(target, message, kind = "error") {
  const box = typeof target === "string" ? $(target) : target;
  box.textContent = message || "";
  box.className = `say ${kind}`;
  box.hidden = !message;
}

export function badge(ok, yes = "healthy", no = "unhealthy") {
  return el("span", { class: `badge ${ok ? "ok" : "bad"}` }, ok ? yes : no);
}

export function button(label, onclick, cls = "") {
  return el("button", { type: "button", class: cls, onclick }, label);
}

// The form's named fields as an object of trimmed strings (checkboxes as booleans).
export function formValues(form) {
  const out = {};
  for (const field of form.elements) {
    if (!field.name) continue;
    out[field.name] = field.type === "checkbox" ? field.checked : field.value.trim();
  }
  return out;
}

export const csv = (value) => value.split(",").map((s) => s.trim()).filter(Boolean);
