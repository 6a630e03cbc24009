// Helpers shared by the energy, register and statistics pages (loaded after request.js and
// nav.js, before each page's own script). Requests go through request.js, the one fetch of
// every page: a machine token (#token=…) or the signed-in user's cookie with its CSRF token.
// Text from the API goes in through textContent.
"use strict";

// The reason of a refused answer, thrown as an Error that carries the status.
async function refusal(answer) {
  const data = await answer.clone().json().catch(() => ({}));
  const why = Array.isArray(data.detail) ? data.detail.map((d) => d.msg).join("; ") : data.detail;
  const error = new Error(`${answer.status} ${why || answer.statusText}`);
  error.status = answer.status;
  return error;
}

// GET /api/v1/{path} and its Response (for CSV and other files); parameters are form strings,
// and an empty one is left out. A refusal throws with its reason.
async function fetchApi(path, params = {}) {
  const answer = await window.clausewatchRequest("GET", `/${path}`, { params });
  if (!answer.ok) throw await refusal(answer);
  return answer;
}

// GET /api/v1/{path} as JSON.
async function api(path, params = {}) {
  return (await fetchApi(path, params)).json();
}

// A write to /api/v1/{path}: a JSON body, or a file's bytes with their `type`; answers the
// Response whatever its status (the caller reads the body of a refusal it understands).
function upload(method, path, { params = {}, body, type } = {}) {
  return window.clausewatchRequest(method, `/${path}`, { params, body, type });
}

// A write to /api/v1/{path} with a JSON body; a refusal throws with its reason.
async function send(method, path, body) {
  const answer = await upload(method, path, { body: JSON.stringify(body) });
  if (!answer.ok) throw await refusal(answer);
  return answer.json().catch(() => ({}));
}

// A file the API answers (CSV, a report's HTML) fetched with the page's credentials and
// offered as a download or opened, so it works for a signed-in user and with a token alike.
async function download(path, params, filename) {
  const blob = await (await fetchApi(path, params)).blob();
  const link = document.createElement("a");
  link.href = URL.createObjectURL(blob);
  if (filename) link.download = filename;
  else link.target = "_blank";
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(link.href), 60000);
}

// Makes `link` a link to a file of the API (a report's HTML, a CSV): a plain link, which the
// session cookie signs, so it opens or downloads like any link; with a machine token (which a
// plain link cannot carry) a click fetches the file with it and hands it over instead.
// `filename` null opens the file in a new tab; a failed fetch goes to `failed(error)`.
function linkFile(link, path, params, filename, failed) {
  const query = new URLSearchParams(Object.entries(params).filter(([, v]) => v !== "")).toString();
  link.href = `/api/v1/${path}${query ? "?" + query : ""}`;
  if (filename) link.setAttribute("download", filename);
  else link.target = "_blank";
  link.onclick = (event) => {
    if (!window.clausewatchToken()) return;
    event.preventDefault();
    download(path, params, filename).catch(failed);
  };
  return link;
}

// A site's "now" and its time zone: the time its data has been judged up to (data_time of GET
// /sites), which in the demo is the simulated building's clock, not today; the wall clock
// before the site's first data (or for a site this person cannot see). Read once per page.
let siteClocks = null;
async function siteClock(site) {
  if (siteClocks === null) {
    siteClocks = new Map();
    for (const s of await api("sites").catch(() => [])) {
      siteClocks.set(s.id, { at: s.data_time ? new Date(s.data_time) : null, zone: s.timezone });
    }
  }
  const known = siteClocks.get(site);
  return { at: (known && known.at) || new Date(), zone: known ? known.zone : undefined };
}

// The calendar date (YYYY-MM-DD) of `at` in time zone `zone`, `days` later.
function localDay(at, zone, days = 0) {
  const day = new Intl.DateTimeFormat("en-CA", { timeZone: zone, year: "numeric", month: "2-digit", day: "2-digit" })
    .format(at);
  const d = new Date(`${day}T00:00:00Z`);
  d.setUTCDate(d.getUTCDate() + days);
  return d.toISOString().slice(0, 10);
}

// The first day (YYYY-MM-01) of the month `at` falls in, in time zone `zone`, `months` later.
function monthStart(at, zone, months = 0) {
  const d = new Date(`${localDay(at, zone).slice(0, 7)}-01T00:00:00Z`);
  d.setUTCMonth(d.getUTCMonth() + months);
  return d.toISOString().slice(0, 10);
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
