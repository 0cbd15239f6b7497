// The one way the pages talk to inferd: its public HTTP API, with the key typed at log-in.
const STORE = "inferd.key";

export const session = {
  key: sessionStorage.getItem(STORE) || "",
  role: null, // "admin", "auditor", "user" or "open" (keys not enforced: the anonymous admin)
  name: null, // the signed-in key's name (null in open mode)
  keyId: null, // and its id
  user: null, // the key's user, if any
  sso: false, // the key of a single sign-on session (signing out deletes it)
};

export function setKey(key) {
  session.key = key;
  if (key) sessionStorage.setItem(STORE, key);
  else sessionStorage.removeItem(STORE);
}

// May change the control plane (admin pages' forms and buttons).
export const isAdmin = () => session.role === "admin" || session.role === "open";
// May read what an admin reads: an admin, or an auditor key (which changes nothing).
export const canRead = () => isAdmin() || session.role === "auditor";

export function headers(extra = {}) {
  const h = { "Content-Type": "application/json", ...extra };
  if (session.key) h.Authorization = `Bearer ${session.key}`;
  return h;
}

export class ApiError extends Error {
  constructor(message, status, param) {
    super(message);
    this.status = status;
    this.param = param;
  }
}

async function failure(response) {
  const text = await response.text();
  let error = null;
  try { error = JSON.parse(text).error; } catch { /* not JSON: use the status line */ }
  return new ApiError((error && error.message) || `${response.status} ${response.statusText}`,
    response.status, error && error.param);
}

// `extra`: more request headers (the Models page's Test sends X-Inferd-Probe: not traffic).
export async function api(method, path, body, extra = {}) {
  const response = await fetch(path, {
    method, headers: headers(extra), body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  const text = await response.text();
  return text ? JSON.parse(text) : null;
}

export const list = (data) => (Array.isArray(data) ? data : (data && data.data) || []);

// Server-sent events over fetch (EventSource cannot send the Authorization header).
// Yields {event, data, id} for each frame until the stream ends or `signal` aborts.
export async function* events(path, { method = "GET", body, signal } = {}) {
  const response = await fetch(path, {
    method, headers: headers({ Accept: "text/event-stream" }), signal,
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  if (!response.ok) throw await failure(response);
  const reader = response.body.getReader();
  const decoder = new TextDecoder();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += decoder.decode(value, { stream: true }).replace(/\r\n/g, "\n");
    let end;
    while ((end = buffer.indexOf("\n\n")) >= 0) {
      const frame = buffer.slice(0, end);
      buffer = buffer.slice(end + 2);
      const out = { event: "message", data: "", id: null };
      for (const line of frame.split("\n")) {
        const colon = line.indexOf(":");
        if (colon <= 0) continue;
        const field = line.slice(0, colon);
        const value = line.slice(colon + 1).replace(/^ /, "");
        if (field === "data") out.data += (out.data ? "\n" : "") + value;
        else if (field === "event") out.event = value;
        else if (field === "id") out.id = value;
      }
      if (out.data) yield out;
    }
  }
}

// Logs the typed key in (the server records it in the audit log) and answers what it may do:
// admin, auditor, user, or "open" (no key needed at all).
export async function whoAmI() {
  const me = await api("POST", "/ui/session");
  session.name = me.name || null;
  session.keyId = me.key_id === null || me.key_id === undefined ? null : String(me.key_id);
  session.user = me.user || null;
  session.sso = Boolean(me.sso);
  return me.scope;
}

// Single sign-on: whether it is configured, and the key of a session the provider's login
// just made (handed over once from an HttpOnly cookie; null when there is none).
export async function ssoEnabled() {
  try {
    return Boolean((await api("GET", "/ui/sso/config")).enabled);
  } catch {
    return false;
  }
}

export async function ssoSessionKey() {
  const response = await fetch("/ui/sso/session", { method: "POST", credentials: "same-origin" });
  if (!response.ok) return null;
  return (await response.json()).key || null;
}

export async function ssoLogout() {
  await api("POST", "/ui/sso/logout").catch(() => null); // the key may be gone already
}
