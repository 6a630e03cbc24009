// clausewatch dashboard: live alerts from the SSE stream, alert detail with evidence chart,
// acknowledge / close, per-site compliance tiles. No build step; data is only ever inserted as
// text (never as HTML), so nothing from the API can inject markup.
"use strict";

const API = "/api/v1";
const TOKEN_KEY = "clausewatch.token";
const LANG_KEY = "clausewatch.lang";
const OPEN_STATES = ["firing", "acknowledged", "resolved"];
const LIMIT_PARAM = /^(limit|min|max|low|high|lower|upper)(_|$)/;

const LABELS = {
  zh: {
    subtitle: "标准条款实时监测", energy: "能耗与碳排放", register: "标准条款库", statistics: "统计",
    api: "API", offline: "未连接",
    live: "实时", sign_out: "退出", token_label: "访问令牌", sign_in: "登录",
    token_hint: "令牌由管理员用 clausewatch token create 生成。", alerts: "告警",
    no_alerts: "暂无告警", clause: "条款", clause_text: "条文", subject: "对象",
    responsible: "责任人", started: "开始", worst: "最差值", evidence: "证据",
    timeline: "处置记录", note: "备注", acknowledge: "确认", cause: "原因",
    corrective_action: "整改措施", close: "关闭", compliance: "达标率", open_alerts: "未关闭告警",
    coverage: "关键条款覆盖率", no_party: "未绑定责任人", bad_token: "令牌无效、已过期或已撤销",
    firing: "告警中", acknowledged: "已确认", resolved: "已恢复", closed: "已关闭",
    critical: "严重", major: "重要", warning: "警告", info: "提示",
    raised: "触发", escalated: "升级", reopened: "重新打开", notified: "已通知", corrected: "更正",
    no_data: "无数据", version: "版本", last_7_days: "近7天", data_time: "数据截至",
    holiday_calendar: "节假日安排", back_to_list: "← 告警列表",
  },
  en: {
    subtitle: "live standards compliance", energy: "Energy & carbon", register: "Register",
    statistics: "Statistics", api: "API", offline: "offline",
    live: "live", sign_out: "Sign out", token_label: "Access token", sign_in: "Sign in",
    token_hint: "An administrator creates tokens with clausewatch token create.", alerts: "Alerts",
    no_alerts: "No alerts", clause: "Clause", clause_text: "Text", subject: "Subject",
    responsible: "Responsible", started: "Started", worst: "Worst value", evidence: "Evidence",
    timeline: "Timeline", note: "Note", acknowledge: "Acknowledge", cause: "Cause",
    corrective_action: "Corrective action", close: "Close", compliance: "Compliance",
    open_alerts: "open alerts", coverage: "Key-clause coverage", no_party: "no responsible party",
    bad_token: "Unknown, expired or revoked token", firing: "firing", acknowledged: "acknowledged",
    resolved: "resolved", closed: "closed", critical: "critical", major: "major",
    warning: "warning", info: "info", raised: "raised", escalated: "escalated",
    reopened: "reopened", notified: "notified", corrected: "corrected", no_data: "no data",
    version: "version",
    last_7_days: "last 7 days", data_time: "data as of", holiday_calendar: "Holiday calendar",
    back_to_list: "← Alerts",
  },
};

// The token lives as long as the tab (sessionStorage, as on the other pages), never on disk; a
// token an earlier version left in localStorage is removed unused.
localStorage.removeItem(TOKEN_KEY);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  lang: localStorage.getItem(LANG_KEY) || "zh",
  alerts: new Map(), // id -> AlertPublic
  selected: null, // id of the alert in the detail pane
  lastEventId: null,
  streamAbort: null,
  calendar: null, // holiday_calendar of /healthz
};

const $ = (id) => document.getElementById(id);
const t = (key) => (LABELS[state.lang] && LABELS[state.lang][key]) || key;

function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs)) {
    if (name === "class") node.className = value;
    else if (name.startsWith("data-")) node.setAttribute(name, value);
    else node[name] = value;
  }
  for (const child of children) {
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

function formatTime(iso) {
  if (!iso) return "—";
  return new Date(iso).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", { hour12: false });
}

class Unauthorized extends Error {}

async function api(path, options = {}) {
  const response = await fetch(API + path, {
    ...options,
    headers: {
      Authorization: `Bearer ${state.token}`,
      ...(options.body ? { "Content-Type": "application/json" } : {}),
    },
  });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail;
    const message = Array.isArray(detail)
      ? detail.map((d) => `${d.loc.slice(1).join(".")}: ${d.msg}`).join("; ")
      : detail || response.statusText;
    throw new Error(message);
  }
  return body;
}

// ---- language ----

function applyLanguage() {
  document.documentElement.lang = state.lang === "zh" ? "zh-CN" : "en";
  for (const node of document.querySelectorAll("[data-i18n]")) node.textContent = t(node.dataset.i18n);
  for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
    node.placeholder = t(node.dataset.i18nPlaceholder);
  }
  $("lang-toggle").textContent = state.lang === "zh" ? "English" : "中文";
  setConnection($("connection").dataset.state);
  renderCalendar();
  renderList();
  if (state.selected !== null) showDetail(state.selected);
  loadSites();
}

// ---- holiday calendar ----

// /healthz (no token needed) says which years have no State Council holiday schedule: this
// year, or next year when it starts within 60 days. Working days there are judged by a fallback
// rule (Monday to Friday), and the banner says so, with that rule, before and after sign-in.
async function loadCalendar() {
  try {
    const response = await fetch("/healthz"); // a 503 still carries the calendar
    state.calendar = (await response.json()).holiday_calendar || null;
  } catch (error) {
    state.calendar = null;
  }
  renderCalendar();
}

function renderCalendar() {
  const calendar = state.calendar;
  const lines = calendar ? (state.lang === "zh" ? calendar.warnings_zh : calendar.warnings) : [];
  const banner = $("calendar-banner");
  banner.hidden = lines.length === 0;
  banner.replaceChildren(
    ...lines.map((line) => el("p", {}, el("strong", {}, `${t("holiday_calendar")}: `), line)),
  );
}

// ---- sign in ----

function showLogin(message = "") {
  stopStream();
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

async function start() {
  // The other pages read the token from the URL fragment, which browsers never send.
  const fragment = `#token=${encodeURIComponent(state.token)}`;
  $("energy-link").href = `/energy${fragment}`;
  $("register-link").href = `/register${fragment}`;
  $("statistics-link").href = `/statistics${fragment}`;
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  try {
    await api("/sites");
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(t("bad_token"));
  }
  startStream(); // the stream's hello event triggers the first load of the list
  loadSites();
  // A notification's link (/alerts/{id}) opens that alert.
  const linked = /^\/alerts\/(\d+)$/.exec(location.pathname);
  if (linked) openDetail(Number(linked[1]));
}

// ---- site tiles ----

// Each tile covers the 7 days up to the site's data time (its engine watermark): the same as
// the last 7 days in live operation, and the right window when the data runs on its own clock
// (replays, the accelerated demo). The tile says how old its data is.
async function siteFigures(site) {
  const query = new URLSearchParams({ site: site.id });
  if (site.data_time) {
    const until = new Date(Date.parse(site.data_time) + 1000);
    query.set("until", until.toISOString());
    query.set("since", new Date(until - 7 * 86400e3).toISOString());
  }
  const report = await api(`/compliance?${query}`);
  return report.sites[0];
}

async function loadSites() {
  if (!state.token || $("app").hidden) return;
  let sites, figures;
  try {
    sites = await api("/sites");
    figures = await Promise.all(sites.map(siteFigures));
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    return;
  }
  const tiles = sites.map((site, i) => {
    const f = figures[i];
    const rate = f && f.rate !== null ? `${(f.rate * 100).toFixed(1)} %` : "—";
    const coverage = f && f.coverage.rate !== null ? `${(f.coverage.rate * 100).toFixed(0)} %` : "—";
    return el(
      "div", { class: "tile", "data-site": site.id },
      el("h3", {}, site.name),
      el("div", { class: "open" }, `${t("compliance")} · ${t("last_7_days")}`),
      el("div", { class: "rate", title: t("compliance") }, rate),
      el("div", { class: "open" }, `${f ? f.open_alerts : 0} ${t("open_alerts")}`),
      el("div", { class: "open" }, `${t("coverage")} ${coverage}`),
      el("div", { class: "open" }, `${t("data_time")} ${formatTime(site.data_time)}`),
    );
  });
  $("sites").replaceChildren(...tiles);
}

// ---- alert list ----

async function loadAlerts() {
  const query = OPEN_STATES.map((s) => `state=${s}`).join("&");
  const page = await api(`/alerts?${query}&limit=200`);
  for (const alert of page.items) state.alerts.set(alert.id, alert);
  renderList();
}

function renderList(freshId = null) {
  const items = [...state.alerts.values()].sort(
    (a, b) => (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : b.id - a.id),
  );
  $("list-empty").hidden = items.length > 0;
  $("alerts").replaceChildren(...items.map((alert) => {
    const row = el(
      "li",
      {
        class: "alert" + (alert.id === state.selected ? " selected" : "") +
          (alert.id === freshId ? " fresh" : ""),
        "data-alert-id": alert.id, "data-severity": alert.severity, "data-state": alert.state,
      },
      el("div", { class: "title" }, `${alert.clause.title}`),
      el("div", { class: "meta" },
        el("span", { class: "sev", "data-severity": alert.severity }, t(alert.severity)), " ",
        el("span", { class: "state", "data-state": alert.state }, t(alert.state)), " ",
        `${alert.site} · ${alert.subject.space} · ${formatTime(alert.started_at)}`),
    );
    row.addEventListener("click", () => openDetail(alert.id));
    return row;
  }));
}

// ---- the live stream (fetch, so the token travels in a header, not in the URL) ----

function setConnection(value) {
  const node = $("connection");
  node.dataset.state = value;
  node.textContent = t(value === "live" ? "live" : "offline");
}

function stopStream() {
  if (state.streamAbort) state.streamAbort.abort();
  state.streamAbort = null;
  setConnection("off");
}

async function startStream() {
  stopStream();
  const controller = new AbortController();
  state.streamAbort = controller;
  let delay = 1000;
  while (!controller.signal.aborted) {
    try {
      const headers = { Authorization: `Bearer ${state.token}` };
      if (state.lastEventId !== null) headers["Last-Event-ID"] = state.lastEventId;
      const response = await fetch(`${API}/stream`, { headers, signal: controller.signal });
      if (response.status === 401) return showLogin(t("bad_token"));
      if (!response.ok) throw new Error(`stream: ${response.status}`);
      setConnection("live");
      delay = 1000;
      await readEvents(response.body, handleEvent);
    } catch (error) {
      if (controller.signal.aborted) return;
    }
    setConnection("off");
    // Reconnect after a pause; Last-Event-ID makes the server send whatever was missed.
    await new Promise((resolve) => setTimeout(resolve, delay));
    delay = Math.min(delay * 2, 15000);
  }
}

async function readEvents(body, onEvent) {
  const reader = body.pipeThrough(new TextDecoderStream()).getReader();
  let buffer = "";
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buffer += value;
    let end;
    while ((end = buffer.search(/\r?\n\r?\n/)) >= 0) {
      const block = buffer.slice(0, end);
      buffer = buffer.slice(end).replace(/^\r?\n\r?\n/, "");
      const event = { event: "message", id: null, data: [] };
      for (const line of block.split(/\r?\n/)) {
        if (line.startsWith(":")) continue;
        const colon = line.indexOf(":");
        const field = colon < 0 ? line : line.slice(0, colon);
        const text = colon < 0 ? "" : line.slice(colon + 1).replace(/^ /, "");
        if (field === "event") event.event = text;
        else if (field === "id") event.id = text;
        else if (field === "data") event.data.push(text);
      }
      if (event.data.length) onEvent(event);
    }
  }
}

async function handleEvent(event) {
  if (event.id !== null) state.lastEventId = event.id;
  if (event.event === "hello") {
    await loadAlerts().catch(() => {});
    return;
  }
  if (event.event !== "alert") return;
  const data = JSON.parse(event.data.join("\n"));
  state.alerts.set(data.alert.id, data.alert);
  renderList(data.action === "raised" ? data.alert.id : null);
  if (data.action === "raised" || data.action === "closed") loadSites();
  if (state.selected === data.alert.id) showDetail(data.alert.id);
}

// ---- detail ----

// A tap on a row: the detail shows the alert from its top (on a phone it covers the list as a
// full-screen panel, at the desk it sits beside the list).
function openDetail(alertId) {
  $("detail").scrollTop = 0;
  return showDetail(alertId);
}

// The panel's back control (phone): the list again, at the row that was open.
function closeDetail() {
  const open = state.selected;
  state.selected = null;
  $("detail").hidden = true;
  renderList();
  const row = document.querySelector(`li.alert[data-alert-id="${open}"]`);
  if (row) row.scrollIntoView({ block: "nearest" });
}

async function showDetail(alertId) {
  state.selected = alertId;
  let alert;
  try {
    alert = await api(`/alerts/${alertId}`);
  } catch (error) {
    $("action-error").textContent = error.message;
    return;
  }
  if (state.selected !== alertId) return;
  state.alerts.set(alert.id, { ...state.alerts.get(alert.id), ...alert });
  renderList();
  $("detail").hidden = false;
  $("detail").dataset.alertId = alert.id;
  $("detail-title").textContent = alert.clause.title;
  const severity = $("detail-severity");
  severity.dataset.severity = alert.severity;
  severity.textContent = t(alert.severity);
  const badge = $("detail-state");
  badge.dataset.state = alert.state;
  badge.textContent = t(alert.state);
  const escalation = $("detail-escalation");
  escalation.hidden = alert.escalation_level === 0;
  escalation.textContent = `${t("escalated")} L${alert.escalation_level}`;
  const clause = alert.clause;
  $("detail-clause").textContent =
    `${clause.standard} ${clause.number} · ${clause.id} ${t("version")} ${clause.version}` +
    ` (${clause.content_hash.slice(0, 12)})`;
  $("detail-text").textContent = clause.text;
  $("detail-subject").textContent =
    [alert.site, alert.subject.space, alert.subject.device, alert.subject.metric]
      .filter(Boolean).join(" / ");
  $("detail-responsible").textContent = alert.responsible.name
    ? `${alert.responsible.name} (${alert.responsible.party})` : t("no_party");
  $("detail-started").textContent =
    `${formatTime(alert.started_at)}${alert.ended_at ? " – " + formatTime(alert.ended_at) : ""}`;
  $("detail-worst").textContent =
    alert.worst_value === null ? "—" : `${alert.worst_value} ${alert.unit || ""}`;
  $("timeline").replaceChildren(...alert.timeline.map((entry) => el(
    "li", { "data-action": entry.action },
    `${formatTime(entry.at)} · ${t(entry.action)} · ${entry.actor}${entry.note ? " · " + entry.note : ""}`,
  )));
  $("ack-button").disabled = !(alert.state === "firing" ||
    (alert.state === "resolved" && !alert.acknowledged_at));
  $("close-button").disabled = alert.state !== "resolved";
  $("action-error").textContent = "";
  drawChart(alert);
}

// Readings of the alert's device and metric around it (10 min either side, at most 6 h), with
// the evidence the engine kept drawn as dots. Falls back to the evidence alone.
async function chartSeries(alert) {
  const evidence = alert.evidence.map((e) => ({ x: Date.parse(e.ts), y: e.value }));
  const { device, metric } = alert.subject;
  if (!device || !metric) return { line: evidence, evidence };
  const margin = 10 * 60 * 1000;
  const start = Date.parse(alert.started_at);
  const end = Math.min(alert.ended_at ? Date.parse(alert.ended_at) : Date.now(), start + 6 * 3600e3);
  const query = new URLSearchParams({
    site: alert.site, device, metric,
    since: new Date(start - margin).toISOString(), until: new Date(end + margin).toISOString(),
  });
  if (end - start > 2 * 3600e3) query.set("bucket", "5m"); // a few hundred points at most
  try {
    const series = await api(`/readings?${query}`);
    const line = series.points.map((p) => ({ x: Date.parse(p.ts), y: p.value }));
    return { line: line.length ? line : evidence, evidence };
  } catch (error) {
    return { line: evidence, evidence };
  }
}

async function drawChart(alert) {
  const box = $("chart");
  const { line, evidence } = await chartSeries(alert);
  if (state.selected !== alert.id) return;
  if (line.length === 0) {
    box.replaceChildren(el("p", { class: "muted" }, t("no_data")));
    return;
  }
  const NS = "http://www.w3.org/2000/svg";
  const width = 600, height = 160, pad = 28;
  // Limits among the parameters the alert was judged with (limit, min, max, low, high...).
  const limits = Object.entries(alert.clause.params)
    .filter(([name]) => LIMIT_PARAM.test(name))
    .map(([, value]) => value);
  const all = line.concat(evidence);
  const ys = all.map((p) => p.y).concat(limits);
  const x0 = Math.min(...all.map((p) => p.x)), x1 = Math.max(...all.map((p) => p.x));
  const y0 = Math.min(...ys), y1 = Math.max(...ys);
  const sx = (x) => pad + ((x - x0) / ((x1 - x0) || 1)) * (width - 2 * pad);
  const sy = (y) => height - pad - ((y - y0) / ((y1 - y0) || 1)) * (height - 2 * pad);
  const svg = document.createElementNS(NS, "svg");
  svg.setAttribute("viewBox", `0 0 ${width} ${height}`);
  svg.setAttribute("role", "img");
  const add = (tag, attrs, text) => {
    const node = document.createElementNS(NS, tag);
    for (const [k, v] of Object.entries(attrs)) node.setAttribute(k, v);
    if (text !== undefined) node.textContent = text;
    svg.append(node);
  };
  for (const limit of limits) {
    add("line", { x1: pad, x2: width - pad, y1: sy(limit), y2: sy(limit),
      stroke: "#b42318", "stroke-dasharray": "4 3" });
    add("text", { x: width - pad, y: sy(limit) - 4, "text-anchor": "end", "font-size": 11,
      fill: "#b42318" }, `${limit} ${alert.unit || ""}`);
  }
  add("polyline", { fill: "none", stroke: "#1570ef", "stroke-width": 2,
    points: line.map((p) => `${sx(p.x)},${sy(p.y)}`).join(" ") });
  for (const p of evidence) add("circle", { cx: sx(p.x), cy: sy(p.y), r: 3.5, fill: "#b42318" });
  add("text", { x: pad, y: 14, "font-size": 11, fill: "#667085" },
    `${alert.subject.metric || ""} ${y0.toFixed(1)}–${y1.toFixed(1)} ${alert.unit || ""}`);
  add("text", { x: pad, y: height - 8, "font-size": 10, fill: "#667085" }, formatTime(new Date(x0)));
  add("text", { x: width - pad, y: height - 8, "font-size": 10, fill: "#667085",
    "text-anchor": "end" }, formatTime(new Date(x1)));
  box.replaceChildren(svg);
}

async function act(path, body) {
  const alertId = state.selected;
  try {
    const updated = await api(`/alerts/${alertId}/${path}`, { method: "POST", body: JSON.stringify(body) });
    state.alerts.set(updated.id, updated);
    await showDetail(updated.id);
    return true;
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    else $("action-error").textContent = error.message;
    return false;
  }
}

// ---- wiring ----

$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});
$("sign-out").addEventListener("click", () => {
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.alerts.clear();
  state.lastEventId = null;
  showLogin();
});
$("detail-back").addEventListener("click", closeDetail);
$("lang-toggle").addEventListener("click", () => {
  state.lang = state.lang === "zh" ? "en" : "zh";
  localStorage.setItem(LANG_KEY, state.lang);
  applyLanguage();
});
$("ack-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await act("ack", { note: $("ack-note").value })) $("ack-note").value = "";
});
$("close-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { cause: $("close-cause").value, corrective_action: $("close-action").value };
  if (await act("close", body)) {
    $("close-cause").value = "";
    $("close-action").value = "";
  }
});

applyLanguage();
loadCalendar();
setInterval(loadCalendar, 3600e3); // the count of days to the next year moves on
if (state.token) start();
else showLogin();
