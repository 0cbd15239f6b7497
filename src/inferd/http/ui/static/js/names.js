// Keys by name: the names of key ids (records, jobs) and a key picker for filters.
import { api, list, canRead, session } from "./api.js";
import { el } from "./ui.js";

const names = new Map(); // key id -> its name (a promise while asked)

// The name of the key `id` ("key 12" when it has none or is gone; the id alone for a caller
// that may not read keys).
export function keyName(id) {
  if (id === null || id === undefined || id === "") return Promise.resolve("—");
  const key = String(id);
  if (key === session.keyId && session.name) return Promise.resolve(session.name); // one's own
  if (!canRead()) return Promise.resolve(`key ${key}`);
  if (!names.has(key)) {
    names.set(key, api("GET", `/admin/v1/keys/${encodeURIComponent(key)}`)
      .then((k) => k.name || `key ${key}`).catch(() => `key ${key}`));
  }
  return names.get(key);
}

// {id: name} for every id given (each asked once per page load).
export async function keyNames(ids) {
  const unique = [...new Set(ids.filter((id) => id !== null && id !== undefined && id !== ""))];
  const found = await Promise.all(unique.map((id) => keyName(id)));
  return Object.fromEntries(unique.map((id, i) => [String(id), found[i]]));
}

const label = (k) => `${k.name || "(no name)"} · #${k.id}`;

// Turns a text input into a key picker: typing lists the keys whose name, owner, team or
// prefix holds the text (GET /admin/v1/keys?search=…, its first page), picked by name.
export function keyPicker(input) {
  const box = el("datalist", { id: `${input.id || input.name}-keys` });
  input.after(box);
  input.setAttribute("list", box.id);
  input.setAttribute("autocomplete", "off");
  let asked = "";
  let timer = null;
  const fill = async () => {
    const text = input.value.trim();
    if (text === asked || /#\d+$/.test(text)) return;
    asked = text;
    const query = new URLSearchParams({ limit: "20" });
    if (text) query.set("search", text);
    const keys = list(await api("GET", `/admin/v1/keys?${query}`).catch(() => ({ data: [] })));
    for (const k of keys) names.set(String(k.id), Promise.resolve(k.name || `key ${k.id}`));
    box.replaceChildren(...keys.map((k) => el("option", { value: label(k) })));
  };
  input.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(fill, 200); });
  input.addEventListener("focus", fill);
}

// The key id a picker holds: a picked "name · #id", an id typed, or the one key of that name.
export async function pickedKey(input) {
  const text = input.value.trim();
  if (!text) return "";
  const picked = /#(\d+)$/.exec(text);
  if (picked) return picked[1];
  if (/^\d+$/.test(text)) return text;
  // `name` matches from the start: keep the keys named exactly so
  const keys = list(await api("GET", `/admin/v1/keys?${new URLSearchParams({ name: text, limit: "100" })}`))
    .filter((k) => k.name === text);
  if (keys.length === 1) return String(keys[0].id);
  throw new Error(keys.length ? `More than one key is named "${text}": pick one from the list.`
    : `No key is named "${text}".`);
}
