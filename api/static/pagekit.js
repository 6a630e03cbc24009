// Helpers shared by the register and statistics pages (loaded before each page's own script).
// Token: from the URL fragment (#token=…, never sent to the server) or the form's token field,
// kept in sessionStorage like the energy page. Text from the API goes in through textContent.
"use strict";

function token() {
  const form = document.getElementById("controls");
  const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
  if (fromHash) {
    sessionStorage.setItem("clausewatch.token", fromHash);
    history.replaceState(null, "", location.pathname + location.search);
  }
  if (form.elements.token.value) sessionStorage.setItem("clausewatch.token", form.elements.token.value);
  return sessionStorage.getItem("clausewatch.token") || "";
}

// GET /api/v1/{path} with the token, else with the signed-in user's session cookie; parameters
// are form strings, and an empty one is left out. Signed in with neither: on to /login.
async function api(path, params = {}) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== ""));
  const bearer = token();
  const answer = await fetch(`/api/v1/${path}?${query}`, {
    headers: bearer ? { Authorization: `Bearer ${bearer}` } : {},
  });
  if (answer.status === 401 && !bearer && !window.clausewatchSigningOut) {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
  }
  if (!answer.ok) throw new Error(`${answer.status} ${answer.statusText}`);
  return answer.json();
}

function el(tag, text, attrs = {}) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
  if (text !== undefined) node.textContent = text;
  return node;
}

// The product's one language choice (nav.js, loaded first): the English or the Chinese text.
function L(en, zh) {
  return typeof window.clausewatchLang === "function" && window.clausewatchLang() === "en" ? en : zh;
}

function pct(v) { return v === null || v === undefined ? "–" : `${(v * 100).toFixed(1)}%`; }

// What a write carries: the token, else (a signed-in user, whose session cookie goes by itself)
// the session's CSRF token (nav.js reads it).
function credentials() {
  const bearer = token();
  if (bearer) return { Authorization: `Bearer ${bearer}` };
  const csrf = typeof window.clausewatchCsrf === "function" ? window.clausewatchCsrf() : "";
  return { "X-CSRF-Token": csrf };
}

// A write to /api/v1/{path} with the token or the user's session and a JSON body; a refusal
// throws with its reason.
async function send(method, path, body) {
  const answer = await fetch(`/api/v1/${path}`, {
    method,
    headers: { ...credentials(), "Content-Type": "application/json" },
    body: JSON.stringify(body),
  });
  const data = await answer.json().catch(() => ({}));
  if (!answer.ok) {
    const why = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
    throw new Error(`${answer.status} ${why || answer.statusText}`);
  }
  return data;
}
