// Log-in, navigation and the page router.
import { session, setKey, whoAmI, canRead, ssoEnabled, ssoSessionKey, ssoLogout } from "./api.js";
import { $, $$, say } from "./ui.js";
import home from "./home.js";
import models from "./models.js";
import playground from "./playground.js";
import keys from "./keys.js";
import teams from "./teams.js";
import prompts from "./prompts.js";
import jobs from "./jobs.js";
import monitoring from "./monitoring.js";
import audit from "./audit.js";
import requests from "./requests.js";

const pages = { home, models, playground, keys, teams, prompts, jobs, monitoring, requests, audit };
// Pages for admin and auditor keys (an auditor sees them without their forms and buttons).
const ADMIN_ONLY = new Set(["models", "keys", "teams", "prompts", "audit"]);
for (const page of Object.values(pages)) page.init?.();

function currentPage() {
  const page = location.hash.replace("#", "").split("/")[0];
  return pages[page] ? page : "home";
}

function applyRole() {
  const reader = canRead();
  document.body.dataset.role = session.role || "none";
  for (const node of $$("[data-admin]")) node.hidden = !reader;
  // Which key is signed in: its name and its scope.
  const scope = { admin: "admin key", auditor: "auditor key (reads only)", user: "user key", open: "keys off (everyone is admin)" }[session.role] || "";
  const who = session.sso && session.user ? `${session.user} (single sign-on)` : session.name;
  $("#who").textContent = who && scope && session.role !== "open" ? `signed in as ${who} · ${scope}` : scope;
  $("#logout").hidden = !session.key;
}

async function show(page) {
  for (const dialog of $$("dialog[open]")) dialog.close(); // a page's dialog leaves with it
  say("#notice", "");
  say("#login-say", "");
  const allowed = session.role !== null && (!ADMIN_ONLY.has(page) || canRead());
  // Home is public (server status); every other page needs a key that may use it.
  const visible = allowed || page === "home";
  $("#login").hidden = allowed;
  for (const section of $$(".page")) section.hidden = !visible || section.id !== `page-${page}`;
  for (const link of $$("nav a")) {
    const active = link.dataset.page === page;
    link.classList.toggle("active", active);
    if (active) link.setAttribute("aria-current", "page"); else link.removeAttribute("aria-current");
  }
  if (session.role === "user" && !allowed) say("#login-say", "This page needs an admin key.");
  if (!visible) return;
  try {
    await pages[page].load();
  } catch (error) {
    say("#notice", error.status === 401 ? `${error.message} Log in again.` : error.message);
  }
}

async function login(key) {
  setKey(key);
  try {
    session.role = await whoAmI();
  } catch (error) {
    session.role = null;
    if (error.status === 401) setKey("");
    applyRole();
    return error.status === 401 ? (key ? "That key was refused." : "") : error.message;
  }
  applyRole();
  return "";
}

$("#login-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const message = await login($("#login-key").value.trim());
  say("#login-say", message);
  if (!message) {
    $("#login-key").value = "";
    show(currentPage());
  }
});

$("#logout").addEventListener("click", async () => {
  if (session.sso) await ssoLogout();
  setKey("");
  await login("");
  location.hash = "#home";
  show("home");
});

window.addEventListener("hashchange", () => show(currentPage()));

// Back from the provider's login: take over the session's key (once).
const ssoKey = session.key ? null : await ssoSessionKey().catch(() => null);
$("#sso").hidden = !(await ssoEnabled());
await login(ssoKey || session.key);
show(currentPage());
