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
// An "ok" message clears itself after a few seconds; an error stays until the next message.
export function say(target, message, kind = "error") {
  const box = typeof target === "string" ? $(target) : target;
  box.textContent = message || "";
  box.className = `say ${kind}`;
  box.hidden = !message;
  clearTimeout(box.sayTimer);
  if (message && kind === "ok") box.sayTimer = setTimeout(() => say(box, ""), 5000);
}

// Like fillTable, but rows are matched by `key(row)` and a row whose data did not change is
// left in place, so a refresh keeps the keyboard focus; a changed row is rebuilt and the focus
// moves to its control of the same `data-action`.
export function syncTable(table, rows, columns, key, empty = "Nothing here yet.") {
  const thead = table.querySelector("thead");
  const names = columns.map(([name]) => name).join("\u0000");
  if (thead.dataset.names !== names) {
    thead.replaceChildren(el("tr", {}, columns.map(([name]) => el("th", { scope: "col" }, name))));
    thead.dataset.names = names;
  }
  const body = table.querySelector("tbody");
  table.dataset.loads = String(Number(table.dataset.loads || 0) + 1);
  if (!rows.length) {
    body.replaceChildren(el("tr", { class: "empty" }, el("td", { colspan: columns.length }, empty)));
    return;
  }
  const old = new Map([...body.children].filter((tr) => tr.dataset.key).map((tr) => [tr.dataset.key, tr]));
  const focused = document.activeElement;
  const wanted = rows.map((row) => {
    const id = String(key(row));
    const cells = columns.map(([name, get]) => {
      const value = get(row);
      return el("td", { "data-label": name }, value instanceof Node ? value : text(value));
    });
    const sig = cells.map((td) => td.innerHTML).join("\u0000");
    const previous = old.get(id);
    old.delete(id);
    if (previous && previous.dataset.sig === sig) return previous;
    const tr = el("tr", { "data-key": id }, cells);
    tr.dataset.sig = sig;
    if (previous) {
      const action = previous.contains(focused) && focused.dataset.action;
      previous.replaceWith(tr);
      if (action) tr.querySelector(`[data-action="${CSS.escape(action)}"]`)?.focus();
    }
    return tr;
  });
  for (const tr of old.values()) tr.remove();
  for (const tr of [...body.children]) if (!tr.dataset.key) tr.remove();
  wanted.forEach((tr, i) => {
    if (body.children[i] !== tr) body.insertBefore(tr, body.children[i] || null);
  });
}

// A button of a table row: its label, and for screen readers the row it acts on
// ("Edit key alice"); `data-action` names it across redraws.
export function rowButton(label, what, onclick, cls = "") {
  return el("button", { type: "button", class: cls, onclick, "aria-label": `${label} ${what}`,
    "data-action": label }, label);
}

// The message of a row action, shown in the row (kept across redraws in `messages`, by row).
export function rowSay(messages, id) {
  const m = messages.get(id);
  return el("span", { class: `row-say ${m ? m.kind : ""}`, role: "status", "data-row-say": id }, m ? m.text : "");
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
