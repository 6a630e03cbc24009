// clausewatch dashboard, the alert desk: live alerts from the SSE stream; a list with filters,
// search, state tabs (open / history / all), pages and bulk acknowledge / close; each alert's
// detail at its own address (/alerts/{id}) with its evidence chart, acknowledge / close,
// comments and reassignment; new alerts announced (tab title counter, browser notification when
// permitted, a sound when switched on); per-site compliance tiles. Every time is shown in the
// site's time zone, with its offset. No build step; data is only ever inserted as text (never
// as HTML), so nothing from the API can inject markup.
"use strict";

const TOKEN_KEY = "clausewatch.token";
const LANG_KEY = "clausewatch.lang";
const SOUND_KEY = "clausewatch.sound";
const PAGE_SIZE = 50;
// The states of each tab; the state filter narrows a tab to one of them.
const TABS = {
  open: ["firing", "acknowledged", "resolved"],
  closed: ["closed"],
  all: ["firing", "acknowledged", "resolved", "closed"],
};
const BASE_TITLE = document.title;
const LIMIT_PARAM = /^(limit|min|max|low|high|lower|upper)(_|$)/;
// A limit's name on a chart, in the page's language: the kind of bound its parameter names.
const bound = (param) => t(param.match(LIMIT_PARAM)[1]);

const LABELS = {
  zh: {
    subtitle: "标准条款实时监测", energy: "能耗与碳排放", register: "标准条款库", statistics: "统计", sites: "站点模型", users: "用户管理",
    api: "API", offline: "未连接",
    live: "实时", sign_out: "退出", token_label: "访问令牌", sign_in: "登录",
    token_hint: "令牌由管理员用 clausewatch token create 生成。", alerts: "告警",
    no_alerts: "暂无告警", clause: "条款", clause_text: "条文", subject: "对象",
    responsible: "责任人", started: "开始", worst: "最差值", evidence: "证据",
    timeline: "处置记录", note: "备注", acknowledge: "确认", cause: "原因",
    checkins: "现场签到", photo: "照片", checkin: "签到二维码",
    corrective_action: "整改措施", close: "关闭", compliance: "达标率", open_alerts: "未关闭告警",
    coverage: "关键条款覆盖率", no_party: "未绑定责任人", bad_token: "令牌无效、已过期或已撤销",
    firing: "告警中", acknowledged: "已确认", resolved: "已恢复", closed: "已关闭",
    critical: "严重", major: "重要", warning: "警告", info: "提示",
    raised: "触发", escalated: "升级", reopened: "重新打开", notified: "已通知", corrected: "更正",
    no_data: "无数据", version: "版本", last_7_days: "近7天", data_time: "数据截至",
    holiday_calendar: "节假日安排", back_to_list: "← 告警列表",
    quiet: "静默与维护窗口", no_quiet: "当前没有静默或维护窗口", silence: "静默（不发通知）",
    maintenance: "维护窗口（豁免达标率）", scope_site: "整个站点", scope_space: "空间（含下级）",
    scope_device: "设备", scope_clause: "条款", target: "空间/设备/条款编号", from: "开始（空：现在）", until: "截止",
    reason: "原因", add: "添加", cancel: "取消", silenced_by: "静默", silence_short: "静默",
    maintenance_short: "维护", retroactive: "补登", set_by: "设置人", exempt: "维护豁免",
    tab_open: "待处理", tab_history: "历史（已关闭）", tab_all: "全部",
    search_hint: "条款、标准、空间、设备、责任人", all_sites: "全部站点", space_id: "空间（含下级）",
    clause_id: "条款编号", any_severity: "全部级别", any_state: "本页全部状态", from_day: "起",
    to_day: "止", apply_filters: "筛选", clear_filters: "清除", select_all: "全选",
    selected: "已选", bulk_ack: "确认所选", bulk_close: "关闭所选", more: "加载更多",
    done: "已处理", refused: "未处理", timezone: "时区", closed_at: "关闭于",
    comment: "评论", comment_hint: "评论（进入处置记录和台账）", reassign: "转派",
    commented: "评论", reassigned: "转派", escalation: "升级", enable_notifications: "启用桌面通知",
    more_filters: "更多筛选", sound: "声音提醒", new_alert: "新告警", to: "转给", time_axis: "时间", readings: "读数",
    mean_5m: "5分钟均值", min_5m: "5分钟最小值", max_5m: "5分钟最大值", evidence_raw: "证据（原始读数）",
    no_chart_library: "图表库未安装：运行 scripts/vendor",
    per_hour: "每小时用量", per_day: "每日用量", per_month: "每月用量", cumulative: "本期累计",
    consumption: "用量", limit: "限值", min: "下限", max: "上限", low: "下限", high: "上限", lower: "下限",
    upper: "上限", budget_to_date: "按时间分摊的限值", register_reset: "表计回零/更换",
    area: "面积", no_reading_hours: "小时无读数", alert_value: "告警时累计",
    events: "记录", last_done: "上次完成", due: "应完成", overdue: "逾期", overdue_by: "已逾期",
    done_again: "再次完成", not_done_since: "判定开始以来未完成", still_overdue: "仍未完成",
    inhibited_by: "被抑制于", inhibits: "抑制的告警", released: "解除抑制",
  },
  en: {
    subtitle: "live standards compliance", energy: "Energy & carbon", register: "Register",
    statistics: "Statistics", sites: "Sites", users: "Users", api: "API", offline: "offline",
    live: "live", sign_out: "Sign out", token_label: "Access token", sign_in: "Sign in",
    token_hint: "An administrator creates tokens with clausewatch token create.", alerts: "Alerts",
    no_alerts: "No alerts", clause: "Clause", clause_text: "Text", subject: "Subject",
    responsible: "Responsible", started: "Started", worst: "Worst value", evidence: "Evidence",
    timeline: "Timeline", note: "Note", acknowledge: "Acknowledge", cause: "Cause",
    checkins: "Field check-ins", photo: "photo", checkin: "Check-in codes",
    corrective_action: "Corrective action", close: "Close", compliance: "Compliance",
    open_alerts: "open alerts", coverage: "Key-clause coverage", no_party: "no responsible party",
    bad_token: "Unknown, expired or revoked token", firing: "firing", acknowledged: "acknowledged",
    resolved: "resolved", closed: "closed", critical: "critical", major: "major",
    warning: "warning", info: "info", raised: "raised", escalated: "escalated",
    reopened: "reopened", notified: "notified", corrected: "corrected", no_data: "no data",
    version: "version",
    last_7_days: "last 7 days", data_time: "data as of", holiday_calendar: "Holiday calendar",
    back_to_list: "← Alerts",
    quiet: "Silences and maintenance", no_quiet: "No silences or maintenance windows now",
    silence: "Silence (no notifications)", maintenance: "Maintenance (exempt from rates)",
    scope_site: "whole site", scope_space: "space (with its subtree)", scope_device: "device",
    scope_clause: "clause", target: "space, device or clause id", from: "From (empty: now)",
    until: "Until",
    reason: "Reason", add: "Add", cancel: "Cancel", silenced_by: "Silenced",
    silence_short: "silence", maintenance_short: "maintenance", retroactive: "retroactive",
    set_by: "set by", exempt: "exempt (maintenance)",
    tab_open: "Open", tab_history: "History (closed)", tab_all: "All",
    search_hint: "clause, standard, space, device, party", all_sites: "All sites",
    space_id: "Space (and below)", clause_id: "Clause id", any_severity: "Any severity",
    any_state: "Any state of the tab", from_day: "From", to_day: "To", apply_filters: "Filter",
    clear_filters: "Clear", select_all: "Select all", selected: "selected",
    bulk_ack: "Acknowledge selected", bulk_close: "Close selected", more: "Load more",
    done: "done", refused: "refused", timezone: "Time zone", closed_at: "Closed",
    comment: "Comment", comment_hint: "Comment (goes into the timeline and the ledger)",
    reassign: "Reassign", commented: "commented", reassigned: "reassigned",
    escalation: "escalation", enable_notifications: "Enable notifications", sound: "Sound",
    more_filters: "More filters", new_alert: "New alert", to: "to", time_axis: "Time", readings: "readings",
    mean_5m: "5-min mean", min_5m: "5-min min", max_5m: "5-min max", evidence_raw: "evidence (raw)",
    no_chart_library: "chart library not installed: run scripts/vendor",
    per_hour: "per hour", per_day: "per day", per_month: "per month", cumulative: "cumulative",
    consumption: "consumption", limit: "limit", min: "min", max: "max", low: "low", high: "high",
    lower: "lower", upper: "upper", budget_to_date: "limit pro rata",
    register_reset: "register reset or meter replaced", area: "area",
    no_reading_hours: "h without readings", alert_value: "at the alert",
    events: "events", last_done: "Last done", due: "due", overdue: "overdue",
    overdue_by: "overdue by", done_again: "done again", not_done_since: "not done since judging began",
    still_overdue: "still not done",
    inhibited_by: "Inhibited by", inhibits: "Inhibits", released: "released",
  },
};

// The token lives as long as the tab (sessionStorage, as on the other pages), never on disk; a
// token an earlier version left in localStorage is removed unused.
localStorage.removeItem(TOKEN_KEY);

const state = {
  token: sessionStorage.getItem(TOKEN_KEY),
  lang: localStorage.getItem(LANG_KEY) || "zh",
  alerts: new Map(), // id -> AlertPublic, the rows of the list in their order
  selected: null, // id of the alert in the detail pane
  tab: "open",
  filters: {}, // the filter form's values when it was last applied
  nextCursor: null, // the list's next page (null: none)
  checked: new Set(), // ids ticked for a bulk step
  loads: 0, // list loads started (the latest one's answer is the list)
  firstPagePending: false, // a first page asked for and not yet answered
  streamed: null, // alerts the stream brought while a load was on its way
  unseen: new Set(), // alerts raised since the page was last looked at
  sites: [], // SitePublic of the token's sites (their time zones)
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

// A time as the site's clock shows it, with the zone's offset: "2026-07-01 09:00:00 GMT+8" (one
// unambiguous form in both languages); `zone` is an IANA name (the alert's site_timezone, a
// site's timezone); without one, the browser's.
function formatTime(iso, zone) {
  if (!iso) return "—";
  const options = {
    year: "numeric", month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit",
    second: "2-digit", hourCycle: "h23", timeZoneName: "shortOffset",
  };
  let parts;
  try {
    parts = new Intl.DateTimeFormat("en-US", { ...options, ...(zone ? { timeZone: zone } : {}) })
      .formatToParts(new Date(iso));
  } catch (error) { // a zone this browser does not know
    parts = new Intl.DateTimeFormat("en-US", options).formatToParts(new Date(iso));
  }
  const p = Object.fromEntries(parts.map((part) => [part.type, part.value]));
  return `${p.year}-${p.month}-${p.day} ${p.hour}:${p.minute}:${p.second} ${p.timeZoneName}`;
}

// Minutes the zone is ahead of UTC at `date`.
function zoneOffset(zone, date) {
  const parts = Object.fromEntries(new Intl.DateTimeFormat("en-US", {
    timeZone: zone, hourCycle: "h23", year: "numeric", month: "2-digit", day: "2-digit",
    hour: "2-digit", minute: "2-digit", second: "2-digit",
  }).formatToParts(date).map((p) => [p.type, p.value]));
  const wall = Date.UTC(+parts.year, +parts.month - 1, +parts.day, +parts.hour, +parts.minute,
    +parts.second);
  return Math.round((wall - date.getTime()) / 60000);
}

// The start of a day (YYYY-MM-DD, plus `days`) in the zone, as an RFC 3339 instant.
function dayStart(day, zone, days = 0) {
  const guess = Date.parse(`${day}T00:00:00Z`) + days * 86400e3;
  if (!zone) return new Date(guess + new Date(guess).getTimezoneOffset() * 60000).toISOString();
  const first = guess - zoneOffset(zone, new Date(guess)) * 60000;
  return new Date(guess - zoneOffset(zone, new Date(first)) * 60000).toISOString();
}

// The zone the day filters mean: the chosen site's, else the one zone all sites share.
function filterZone() {
  const site = state.sites.find((s) => s.id === state.filters.site);
  if (site) return site.timezone;
  const zones = new Set(state.sites.map((s) => s.timezone));
  return zones.size === 1 ? [...zones][0] : null;
}

function siteZone(siteId) {
  const site = state.sites.find((s) => s.id === siteId);
  return site ? site.timezone : null;
}

class Unauthorized extends Error {}

// Who signs the requests (request.js): the pasted token (machines, the demo), else the
// signed-in user's session cookie, with the session's CSRF token on every write.
async function api(path, options = {}) {
  const response = await window.clausewatchRequest(options.method || "GET", path, {
    body: options.body, bearer: state.token || "", login: false,
  });
  if (response.status === 401) throw new Unauthorized();
  const body = await response.json().catch(() => null);
  if (!response.ok) {
    const detail = body && body.detail;
    const message = Array.isArray(detail)
      ? detail.map((d) => {
        const where = d.loc.slice(1).join(".");
        return where ? `${where}: ${d.msg}` : d.msg;
      }).join("; ")
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
  loadQuiet();
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
  // A person signs in at /login; the token form stays for machines and the demo (/#token).
  if (window.clausewatchSigningOut) return; // nav.js / the sign-out button go to /login
  if (!state.token && location.hash !== "#token") {
    location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    return;
  }
  $("app").hidden = true;
  $("sign-out").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
}

async function start() {
  // The other pages read the token from the URL fragment, which browsers never send (a
  // signed-in user's cookie needs none).
  const fragment = state.token ? `#token=${encodeURIComponent(state.token)}` : "";
  $("energy-link").href = `/energy${fragment}`;
  $("register-link").href = `/register${fragment}`;
  $("statistics-link").href = `/statistics${fragment}`;
  $("checkin-link").href = `/checkin/sheet${fragment}`;
  try {
    state.sites = await api("/sites");
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(t("bad_token"));
  }
  // Nothing arriving later may move the controls under a finger: the calendar's banner is
  // in place before the app shows (or it has not answered in 3 s), and the site tiles show
  // at their size at once, their figures filled in as they come.
  await Promise.race([calendarLoaded, new Promise((resolve) => setTimeout(resolve, 3000))]);
  $("login").hidden = true;
  $("app").hidden = false;
  $("sign-out").hidden = false;
  fillSiteFilter();
  renderTiles(state.sites, null);
  startStream(); // the stream's hello event triggers the first load of the list
  route(); // an alert's own address opens its detail
  fillFilterOptions();
  loadSites();
  loadQuietSites();
  loadQuiet();
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
  if ($("app").hidden) return;
  let sites, figures;
  try {
    sites = await api("/sites");
    state.sites = sites;
    fillSiteFilter();
    figures = await Promise.all(sites.map(siteFigures));
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    return;
  }
  renderTiles(sites, figures);
}

// A tile per site, of the same lines whether its figures are in (`figures`, by site) or still
// on their way (null: "…"), so their arrival moves nothing below.
function renderTiles(sites, figures) {
  const tiles = sites.map((site, i) => {
    const f = figures && figures[i];
    const pending = figures === null;
    const percent = (rate, digits) => (rate !== null ? `${(rate * 100).toFixed(digits)} %` : "—");
    const rate = pending ? "…" : f ? percent(f.rate, 1) : "—";
    const coverage = pending ? "…" : f ? percent(f.coverage.rate, 0) : "—";
    const open = pending ? "…" : f ? f.open_alerts : 0;
    const exempt = pending ? "…" : f ? (f.exempt_s / 3600).toFixed(1) : "0.0";
    return el(
      "div", { class: "tile", "data-site": site.id },
      el("h3", {}, site.name),
      el("div", { class: "open" }, `${t("compliance")} · ${t("last_7_days")}`),
      el("div", { class: "rate", title: t("compliance") }, rate),
      el("div", { class: "open" }, `${open} ${t("open_alerts")}`),
      el("div", { class: "open" }, `${t("coverage")} ${coverage}`),
      el("div", { class: "open" }, `${t("exempt")} ${exempt} h`),
      el("div", { class: "open" },
        `${t("data_time")} ${formatTime(site.data_time, site.timezone)}`),
    );
  });
  $("sites").replaceChildren(...tiles);
}

// ---- alert list: tabs, filters, search, pages, bulk steps ----

function fillSiteFilter() {
  const select = $("f-site");
  const chosen = select.value;
  select.replaceChildren(
    el("option", { value: "", "data-i18n": "all_sites" }, t("all_sites")),
    ...state.sites.map((site) => el("option", { value: site.id }, site.name)),
  );
  select.value = chosen;
}

// What the space and clause filters offer as one types: the token's spaces and the clauses.
async function fillFilterOptions() {
  const [spaces, clauses] = await Promise.all([api("/spaces"), api("/clauses")]).catch(() => [[], []]);
  $("space-options").replaceChildren(...spaces.map((space) => el(
    "option", { value: space.id }, `${space.name || space.type} · ${space.site}`,
  )));
  $("clause-options").replaceChildren(...clauses.map((clause) => el(
    "option", { value: clause.id }, `${clause.standard.code} ${clause.number} ${clause.title}`,
  )));
}

// The query of the list as the tab and the applied filters say.
function listQuery() {
  const f = state.filters;
  const query = new URLSearchParams();
  const states = f.state && TABS[state.tab].includes(f.state) ? [f.state] : TABS[state.tab];
  for (const s of states) query.append("state", s);
  for (const name of ["site", "space", "clause", "severity", "search"]) {
    if (f[name]) query.set(name, f[name]);
  }
  const zone = filterZone();
  if (f.from) query.set("since", dayStart(f.from, zone));
  if (f.to) query.set("until", dayStart(f.to, zone, 1)); // the whole last day
  query.set("limit", PAGE_SIZE);
  return query;
}

// Does a streamed alert belong in the list as filtered? (The space filter covers a subtree the
// page does not know: with it, only rows already listed are updated.)
function matches(alert) {
  const f = state.filters;
  const states = f.state ? [f.state] : TABS[state.tab];
  if (!states.includes(alert.state) || f.space || f.from || f.to) return false;
  if (f.site && alert.site !== f.site) return false;
  if (f.severity && alert.severity !== f.severity) return false;
  if (f.clause && alert.clause.id !== f.clause) return false;
  const text = [alert.clause.id, alert.clause.number, alert.clause.title, alert.clause.standard,
    alert.subject.space, alert.subject.device, alert.responsible.party, alert.responsible.name]
    .filter(Boolean).join(" ").toLowerCase();
  return (f.search || "").toLowerCase().split(/\s+/).every((word) => text.includes(word));
}

// The first page (`more`: the next one, appended). What the stream brings while the page is
// on its way is newer than the page: it is kept, and an answer overtaken by a later load is
// dropped. While a first page is on its way there is no next page to ask for: the cursor on
// hand continues the list being replaced, under its filters, not the new ones.
async function loadAlerts(more = false) {
  const query = listQuery();
  if (more) {
    if (!state.nextCursor || state.firstPagePending) return;
    query.set("cursor", state.nextCursor);
  } else {
    state.nextCursor = null;
    state.firstPagePending = true;
    $("more").hidden = true;
    $("alerts").setAttribute("aria-busy", "true");
  }
  const load = ++state.loads;
  const streamed = new Map();
  state.streamed = streamed;
  let page;
  try {
    page = await api(`/alerts?${query}`);
  } finally {
    if (load === state.loads) {
      state.firstPagePending = false;
      $("alerts").setAttribute("aria-busy", "false");
    }
  }
  if (load !== state.loads) return;
  state.streamed = null;
  if (!more) {
    state.alerts.clear();
    state.checked.clear();
  }
  for (const alert of page.items) state.alerts.set(alert.id, alert);
  for (const [id, alert] of streamed) {
    if (state.alerts.has(id) || matches(alert)) state.alerts.set(id, alert);
  }
  state.nextCursor = page.next_cursor;
  renderList();
}

function readFilters() {
  const form = $("filters");
  const values = {};
  for (const name of ["search", "site", "space", "clause", "severity", "state", "from", "to"]) {
    const value = form.elements[name].value.trim();
    if (value) values[name] = value;
  }
  state.filters = values;
}

function selectTab(tab) {
  state.tab = tab;
  for (const button of document.querySelectorAll(".tabs [data-tab]")) {
    button.setAttribute("aria-selected", String(button.dataset.tab === tab));
  }
  reloadList();
}

async function reloadList() {
  try {
    await loadAlerts();
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    else $("bulk-result").textContent = error.message;
  }
}

function rowFacts(alert) {
  const zone = alert.site_timezone;
  const party = alert.responsible.name
    ? `${t("responsible")}: ${alert.responsible.name}` : t("no_party");
  const facts = [
    el("div", { class: "meta" },
      el("span", { class: "sev", "data-severity": alert.severity }, t(alert.severity)), " ",
      el("span", { class: "state", "data-state": alert.state }, t(alert.state)), " ",
      ...(alert.escalation_level > 0
        ? [el("span", { class: "state level" }, `${t("escalation")} L${alert.escalation_level}`), " "]
        : []),
      // Inhibition: the outage alert it is inhibited by (no notice of its own meanwhile).
      ...(alert.inhibited_by
        ? [el("span", { class: "state inhibited" }, `${t("inhibited_by")} #${alert.inhibited_by}`), " "]
        : []),
      `${alert.site} · ${alert.subject.space} · ${formatTime(alert.started_at, zone)}`),
    el("div", { class: "meta party" }, party),
  ];
  if (alert.state === "closed") {
    facts.push(el("div", { class: "meta closure" },
      `${t("cause")}: ${alert.cause || "—"} · ${t("corrective_action")}: ` +
      `${alert.corrective_action || "—"} · ${t("closed_at")} ${formatTime(alert.closed_at, zone)}`));
  }
  return facts;
}

function renderList(freshId = null) {
  const items = [...state.alerts.values()].sort(
    (a, b) => (a.started_at < b.started_at ? 1 : a.started_at > b.started_at ? -1 : b.id - a.id),
  );
  $("list-empty").hidden = items.length > 0;
  $("more").hidden = !state.nextCursor;
  $("alerts").replaceChildren(...items.map((alert) => {
    const box = el("input", {
      type: "checkbox", class: "pick", checked: state.checked.has(alert.id),
      "data-alert-id": alert.id,
    });
    box.setAttribute("aria-label", `${t("select_all")} ${alert.id}`);
    box.addEventListener("click", (event) => event.stopPropagation());
    box.addEventListener("change", () => {
      if (box.checked) state.checked.add(alert.id);
      else state.checked.delete(alert.id);
      renderBulk();
    });
    const row = el(
      "li",
      {
        class: "alert" + (alert.id === state.selected ? " selected" : "") +
          (alert.id === freshId ? " fresh" : ""),
        "data-alert-id": alert.id, "data-severity": alert.severity, "data-state": alert.state,
      },
      box,
      el("div", { class: "body" },
        el("a", { class: "title", href: `/alerts/${alert.id}` }, `${alert.clause.title}`),
        ...rowFacts(alert)),
    );
    row.querySelector("a.title").addEventListener("click", (event) => {
      if (event.ctrlKey || event.metaKey || event.shiftKey) return; // a new tab: the link
      event.preventDefault();
    });
    row.addEventListener("click", () => openDetail(alert.id));
    return row;
  }));
  renderBulk();
}

function renderBulk() {
  for (const id of [...state.checked]) if (!state.alerts.has(id)) state.checked.delete(id);
  const count = state.checked.size;
  $("bulk-count").textContent = count ? `${t("selected")} ${count}` : "";
  $("bulk-ack").hidden = count === 0; // the batch steps show once a row is ticked
  $("bulk-close-form").hidden = count === 0;
  $("select-all").checked = count > 0 && count === state.alerts.size;
}

// One step for every ticked alert; the answer says which were done and why others were not.
async function bulk(path, body) {
  const ids = [...state.checked];
  let outcome;
  try {
    outcome = await api(`/alerts/bulk/${path}`, {
      method: "POST", body: JSON.stringify({ ids, ...body }),
    });
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    else $("bulk-result").textContent = error.message;
    return false;
  }
  const refused = outcome.refused.map((r) => `#${r.id}: ${r.detail}`);
  $("bulk-result").textContent = `${t("done")} ${outcome.done.length}` +
    (refused.length ? ` · ${t("refused")} ${refused.length} — ${refused.join("; ")}` : "");
  await reloadList();
  if (state.selected !== null) showDetail(state.selected);
  return true;
}

// ---- new alerts announce themselves ----

function renderTitle() {
  const count = state.unseen.size;
  document.title = count ? `(${count}) ${BASE_TITLE}` : BASE_TITLE;
}

function soundOn() {
  return localStorage.getItem(SOUND_KEY) === "on";
}

function beep() {
  try {
    const audio = new AudioContext();
    const tone = audio.createOscillator();
    const gain = audio.createGain();
    tone.frequency.value = 880;
    gain.gain.setValueAtTime(0.15, audio.currentTime);
    gain.gain.exponentialRampToValueAtTime(0.001, audio.currentTime + 0.4);
    tone.connect(gain).connect(audio.destination);
    tone.start();
    tone.stop(audio.currentTime + 0.4);
    tone.onended = () => audio.close();
  } catch (error) {
    // no audio output: the title and the notification still say it
  }
}

function announce(alert) {
  state.unseen.add(alert.id);
  renderTitle();
  if (soundOn()) beep();
  if ("Notification" in window && Notification.permission === "granted") {
    const note = new Notification(`${t("new_alert")} · ${t(alert.severity)} · ${alert.clause.title}`, {
      body: `${alert.site} · ${alert.subject.space} · ${formatTime(alert.started_at, alert.site_timezone)}`,
      tag: `clausewatch-alert-${alert.id}`,
      lang: state.lang === "zh" ? "zh-CN" : "en",
    });
    note.addEventListener("click", () => {
      window.focus();
      openDetail(alert.id);
    });
  }
}

function renderNotifyButton() {
  $("notify-permission").hidden = !("Notification" in window) ||
    Notification.permission !== "default";
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
      const headers = state.lastEventId !== null ? { "Last-Event-ID": state.lastEventId } : {};
      const response = await window.clausewatchRequest("GET", "/stream", {
        headers, signal: controller.signal, bearer: state.token || "", login: false,
      });
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
  if (state.streamed) state.streamed.set(data.alert.id, data.alert);
  const listed = state.alerts.has(data.alert.id);
  if (listed) state.alerts.set(data.alert.id, { ...state.alerts.get(data.alert.id), ...data.alert });
  else if (matches(data.alert)) state.alerts.set(data.alert.id, data.alert);
  renderList(data.action === "raised" ? data.alert.id : null);
  if (data.action === "raised") announce(data.alert);
  if (data.action === "raised" || data.action === "closed") loadSites();
  if (state.selected === data.alert.id) showDetail(data.alert.id);
}

// ---- detail, at the alert's own address /alerts/{id} ----

const ALERT_PATH = /^\/alerts\/([1-9][0-9]{0,18})$/;

// A tap on a row: the detail shows the alert from its top (on a phone it covers the list as a
// full-screen panel, at the desk it sits beside the list), and the address is the alert's.
function openDetail(alertId) {
  const path = `/alerts/${alertId}`;
  if (location.pathname !== path) history.pushState({ alert: alertId }, "", path);
  $("detail").scrollTop = 0;
  return showDetail(alertId);
}

// The panel's back control (phone): the list again, at the row that was open.
function closeDetail(push = true) {
  const open = state.selected;
  state.selected = null;
  $("detail").hidden = true;
  if (push && location.pathname !== "/") history.pushState(null, "", "/");
  renderList();
  const row = document.querySelector(`li.alert[data-alert-id="${open}"]`);
  if (row) row.scrollIntoView({ block: "nearest" });
}

// What the address says: an alert's detail, or the list alone.
function route() {
  const match = ALERT_PATH.exec(location.pathname);
  if (match) showDetail(Number(match[1]));
  else if (state.selected !== null) closeDetail(false);
}

// The parties of the alert's site, for reassignment (cached per site).
const partiesOf = new Map();
async function fillParties(alert) {
  if (!partiesOf.has(alert.site)) {
    partiesOf.set(alert.site, await api(`/parties?site=${encodeURIComponent(alert.site)}`)
      .catch(() => []));
  }
  if (state.selected !== alert.id) return;
  const current = partiesOf.get(alert.site).filter((p) => !p.retired_at);
  $("reassign-party").replaceChildren(...current.map((party) => el(
    "option", { value: party.id, disabled: party.id === alert.responsible.party },
    `${party.name} (${party.id})`,
  )));
  const other = current.find((p) => p.id !== alert.responsible.party);
  if (other) $("reassign-party").value = other.id;
  $("reassign-button").disabled = !other;
}

async function showDetail(alertId) {
  state.selected = alertId;
  state.unseen.delete(alertId);
  renderTitle();
  let alert;
  try {
    alert = await api(`/alerts/${alertId}`);
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(t("bad_token"));
    $("detail").hidden = false;
    $("detail-title").textContent = `#${alertId}`;
    $("action-error").textContent = error.message;
    return;
  }
  if (state.selected !== alertId) return;
  if (state.alerts.has(alert.id)) state.alerts.set(alert.id, { ...state.alerts.get(alert.id), ...alert });
  renderList();
  const zone = alert.site_timezone;
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
    [alert.site, alert.subject.space, alert.subject.device,
     alert.subject.metric && metricName(alert.subject.metric, state.lang)]
      .filter(Boolean).join(" / ");
  $("detail-responsible").textContent = alert.responsible.name
    ? `${alert.responsible.name} (${alert.responsible.party})` : t("no_party");
  $("detail-started").textContent =
    `${formatTime(alert.started_at, zone)}${alert.ended_at ? " – " + formatTime(alert.ended_at, zone) : ""}`;
  $("detail-timezone").textContent = zone || "—";
  // An obligation has no value: how long it was overdue is its worst.
  $("detail-worst").textContent = alert.obligation
    ? `${t("overdue_by")} ${duration(alert.obligation.overdue_s)}`
    : alert.worst_value === null ? "—" : `${alert.worst_value} ${alert.unit || ""}`;
  $("detail-silenced").hidden = $("detail-silenced-label").hidden = !alert.silenced_by;
  $("detail-silenced").textContent = alert.silenced_by ? `#${alert.silenced_by}` : "";
  // Inhibition: an outage alert lists the device alerts it stands for; they name it.
  $("detail-inhibited").hidden = $("detail-inhibited-label").hidden = !alert.inhibited_by;
  $("detail-inhibited").textContent = alert.inhibited_by ? `#${alert.inhibited_by}` : "";
  const inhibits = alert.inhibits || [];
  $("detail-inhibits").hidden = $("detail-inhibits-label").hidden = inhibits.length === 0;
  $("detail-inhibits").textContent = inhibits
    .map((each) => `#${each.id} ${each.device || each.space} (${t(each.state)})`).join(", ");
  $("detail-closure").hidden = alert.state !== "closed";
  $("detail-closed").textContent = `${formatTime(alert.closed_at, zone)} · ${alert.closed_by || ""}`;
  $("detail-cause").textContent = alert.cause || "—";
  $("detail-action").textContent = alert.corrective_action || "—";
  $("timeline").replaceChildren(...alert.timeline.map((entry) => {
    const to = entry.action === "reassigned" && entry.data.responsible
      ? ` · ${t("to")} ${entry.data.responsible.name} (${entry.data.responsible.party})` : "";
    return el(
      "li", { "data-action": entry.action },
      `${formatTime(entry.at, zone)} · ${t(entry.action)} · ${entry.actor}${to}` +
        `${entry.note ? " · " + entry.note : ""}`,
    );
  }));
  // An obligation's field check-ins while it was open (who did the task, the note, the photo).
  $("checkins-title").hidden = $("checkins").hidden = !alert.checkins.length;
  $("checkins").replaceChildren(...alert.checkins.map((item) => {
    const li = el("li", { "data-event-id": item.event_id },
      `${formatTime(item.ts, zone)} · ${state.lang === "en" ? item.task_en : item.task_zh} · ${item.actor}` +
        `${item.note ? " · " + item.note : ""}`);
    if (item.photo_url) {
      const show = el("button", { type: "button", class: "link" }, t("photo"));
      show.addEventListener("click", () => showPhoto(li, item.photo_url, show));
      li.append(" · ", show);
    }
    return li;
  }));
  // Only the steps the alert's state allows are offered (a phone has no room for the rest).
  $("ack-form").hidden = !(alert.state === "firing" ||
    (alert.state === "resolved" && !alert.acknowledged_at));
  $("close-form").hidden = alert.state !== "resolved";
  $("reassign-form").hidden = alert.state === "closed";
  $("action-error").textContent = "";
  fillParties(alert);
  drawChart(alert);
}

// A check-in's photo: read with the token or the session and shown as a data URI,
// the only image source besides the service's own files that the page's policy allows.
async function showPhoto(item, url, button) {
  const answer = await window.clausewatchRequest("GET", url.replace(/^\/api\/v1/, ""), {
    bearer: state.token || "", login: false,
  });
  if (!answer.ok) return;
  const blob = await answer.blob();
  const reader = new FileReader();
  reader.onload = () => {
    button.remove();
    item.append(el("img", { src: reader.result, alt: t("photo"), class: "checkin-photo" }));
  };
  reader.readAsDataURL(blob);
}

// Readings of the alert's device and metric around it (10 min either side, at most 6 h): raw,
// or 5-minute buckets whose mean is drawn with their min and max, so an aggregate never hides
// the worst reading. The evidence the engine kept is raw readings. Falls back to the evidence.
async function chartSeries(alert) {
  // Only the plotted metric's readings: a clause over two metrics (temperature and humidity)
  // keeps both as evidence, and a humidity of 51 % is no point on a temperature axis.
  const { metric: plotted } = alert.subject;
  const evidence = alert.evidence
    .filter((e) => !plotted || e.metric === plotted)
    .map((e) => [Date.parse(e.ts), e.value]);
  const none = { line: evidence, low: null, high: null, evidence, bucketed: false };
  const { device, metric } = alert.subject;
  if (!device || !metric) return none;
  const margin = 10 * 60 * 1000;
  const start = Date.parse(alert.started_at);
  const end = Math.min(alert.ended_at ? Date.parse(alert.ended_at) : Date.now(), start + 6 * 3600e3);
  const query = new URLSearchParams({
    site: alert.site, device, metric,
    since: new Date(start - margin).toISOString(), until: new Date(end + margin).toISOString(),
  });
  const bucketed = end - start > 2 * 3600e3; // a few hundred points at most
  if (bucketed) query.set("bucket", "5m");
  try {
    const series = await api(`/readings?${query}`);
    if (!series.points.length) return none;
    const at = (p) => Date.parse(p.ts);
    return {
      line: series.points.map((p) => [at(p), p.value]),
      low: bucketed ? series.points.map((p) => [at(p), p.min]) : null,
      high: bucketed ? series.points.map((p) => [at(p), p.max]) : null,
      evidence,
      bucketed,
    };
  } catch (error) {
    return none;
  }
}

// A reading as people read it: at most two decimals, no float noise (18.466666666666665 → 18.47).
function shown(value) {
  return String(Number(value.toFixed(2)));
}

// The raw reading to mark as the worst: the one at the alert's worst value, else the nearest.
function worstPoint(alert, raw) {
  if (alert.worst_value === null || raw.length === 0) return null;
  return raw.reduce((best, p) =>
    (Math.abs(p[1] - alert.worst_value) < Math.abs(best[1] - alert.worst_value) ? p : best));
}

// "GMT+8" for the zone at that time.
function offsetName(zone, ms) {
  const part = new Intl.DateTimeFormat("en-US", { timeZone: zone || undefined, timeZoneName: "shortOffset" })
    .formatToParts(new Date(ms)).find((p) => p.type === "timeZoneName");
  return part ? part.value : "";
}

function clock(ms, zone) {
  return new Date(ms).toLocaleString(state.lang === "zh" ? "zh-CN" : "en-GB", {
    month: "2-digit", day: "2-digit", hour: "2-digit", minute: "2-digit", hour12: false,
    ...(zone ? { timeZone: zone } : {}),
  });
}

// The plot's margins: on a phone the legend wraps to two rows, so the plot (and the y axis's
// name above it) starts lower, clear of the legend.
function chartGrid(box) {
  return { left: 8, right: 24, top: box.clientWidth < 520 ? 76 : 48, bottom: 56, containLabel: true };
}

// The evidence chart (Apache ECharts, served from /static/vendor by scripts/vendor): time in
// the site's zone on the x axis, the metric and its unit on the y axis, the clause's limits as
// dashed lines, the raw evidence as dots and the worst raw reading marked with its value; zoom
// with the wheel, a pinch or the slider.
// A quota alert shows consumption per period (alert.meter), an obligation its task's events and
// how long it was overdue (alert.obligation); every other alert its metric's readings.
async function drawChart(alert) {
  $("evidence-events").hidden = true;
  if (alert.meter) return drawMeterChart(alert);
  if (alert.obligation) return drawObligationChart(alert);
  const box = $("chart");
  const { line, low, high, evidence, bucketed } = await chartSeries(alert);
  if (state.selected !== alert.id) return;
  if (!newChart(box, line.length > 0)) return;
  const unit = alert.unit || "";
  const zone = alert.site_timezone;
  const limits = Object.entries(alert.clause.params).filter(([name]) => LIMIT_PARAM.test(name));
  const raw = bucketed ? evidence : line.concat(evidence);
  // The raw reading at the worst value (the API finds it among the stored readings), so a
  // chart of 5-minute means still shows it; else the kept evidence nearest it.
  const kept = alert.worst_reading;
  const worst = kept ? [Date.parse(kept.ts), kept.value] : worstPoint(alert, raw);
  const thin = (name, data) => ({
    name, type: "line", data, showSymbol: false, lineStyle: { width: 1, type: "dotted" },
    itemStyle: { color: "#98a2b3" },
  });
  window.echarts.init(box, null, { renderer: "svg" }).setOption({
    animation: false,
    grid: chartGrid(box),
    legend: { top: 0, textStyle: { fontSize: 11 } },
    tooltip: { trigger: "axis", renderMode: "richText" }, // no HTML: the page's CSP allows none
    xAxis: {
      type: "time",
      name: `${t("time_axis")} (${zone || ""} ${offsetName(zone, line[0][0])})`,
      nameLocation: "middle", nameGap: 26,
      axisLabel: { formatter: (value) => clock(value, zone), hideOverlap: true, fontSize: 10 },
    },
    yAxis: {
      type: "value", scale: true,
      name: `${alert.subject.metric ? metricName(alert.subject.metric, state.lang) : t("evidence")} (${unit})`,
      nameTextStyle: { align: "left" },
    },
    dataZoom: [{ type: "inside" }, { type: "slider", height: 14, bottom: 4 }],
    series: [
      {
        name: t(bucketed ? "mean_5m" : "readings"), type: "line", data: line, showSymbol: false,
        itemStyle: { color: "#1570ef" },
        markLine: {
          symbol: "none", silent: true,
          lineStyle: { color: "#b42318", type: "dashed" },
          label: { position: "insideEndTop", color: "#b42318" },
          data: limits.map(([name, value]) => ({ yAxis: value, name: `${bound(name)} ${value} ${unit}` })),
        },
      },
      ...(bucketed ? [thin(t("min_5m"), low), thin(t("max_5m"), high)] : []),
      {
        name: t("evidence_raw"), type: "scatter",
        data: kept && !raw.some((p) => p[0] === worst[0]) ? evidence.concat([worst]) : evidence,
        symbolSize: 7,
        itemStyle: { color: "#b42318" },
        markPoint: worst ? {
          symbol: "pin", symbolSize: 44, itemStyle: { color: "#b42318" },
          label: { formatter: `${shown(worst[1])}`, fontSize: 10 },
          data: [{ name: t("worst"), coord: worst, value: worst[1] }],
        } : undefined,
      },
    ],
  });
  $("chart-worst").textContent = worst
    ? `${t("worst")} ${shown(worst[1])} ${unit} · ${formatTime(new Date(worst[0]), zone)}` : "";
}

// Clears the box for a new chart; false (with a note in the box) when there is nothing to draw
// or the chart library is missing.
function newChart(box, hasData) {
  const old = window.echarts && window.echarts.getInstanceByDom(box);
  if (old) old.dispose();
  if (!window.echarts || !hasData) {
    box.replaceChildren(el("p", { class: "muted" }, t(window.echarts ? "no_data" : "no_chart_library")));
    return false;
  }
  box.replaceChildren();
  return true;
}

// A number as people read it: at most `digits` decimals, no trailing zeros.
function num(value, digits = 3) {
  return String(Number(value.toFixed(digits)));
}

// Seconds as days and hours ("2天6小时", "2 d 6 h"), hours and minutes below a day, minutes
// below an hour (as rules/durations.py describe_duration).
function duration(seconds) {
  const zh = state.lang === "zh";
  const whole = Math.round(seconds);
  if (whole < 60) return zh ? `${whole}秒` : `${whole} s`;
  const days = Math.floor(whole / 86400);
  const hours = Math.floor((whole % 86400) / 3600);
  const minutes = Math.floor((whole % 3600) / 60);
  const parts = [];
  if (days) parts.push(zh ? `${days}天` : `${days} d`);
  if (hours) parts.push(zh ? `${hours}小时` : `${hours} h`);
  if (minutes && !days) parts.push(zh ? `${minutes}分钟` : `${minutes} min`);
  return parts.join(zh ? "" : " ");
}

const TIME_AXIS = (alert, first) => ({
  type: "time",
  name: `${t("time_axis")} (${alert.site_timezone || ""} ${offsetName(alert.site_timezone, first)})`,
  nameLocation: "middle", nameGap: 26,
  axisLabel: { formatter: (value) => clock(value, alert.site_timezone), hideOverlap: true, fontSize: 10 },
});

// A quota alert: the register's consumption per bucket of the alert's period as bars, the
// period's running total as a line, both in the budget's unit (kWh/m² for a per-m² budget);
// the limit, the limit pro rata over the period, register resets, and the alert's own figure
// (its worst value, the period's consumption, per m² as the clause judges it).
function drawMeterChart(alert) {
  const meter = alert.meter;
  const box = $("chart");
  if (!newChart(box, meter.buckets.length > 0)) {
    $("chart-worst").textContent = "";
    return;
  }
  const unit = meter.unit;
  const mid = (b) => (Date.parse(b.start) + Date.parse(b.end)) / 2;
  const start = Date.parse(meter.period_start);
  const end = Date.parse(meter.period_end);
  const at = Date.parse(alert.ended_at || alert.started_at);
  const figure = alert.worst_value === null ? null
    : [Math.min(at, end), alert.worst_value / (meter.area_m2 || 1)];
  window.echarts.init(box, null, { renderer: "svg" }).setOption({
    animation: false,
    grid: chartGrid(box),
    legend: { top: 0, textStyle: { fontSize: 11 } },
    tooltip: { trigger: "axis", renderMode: "richText" },
    xAxis: { ...TIME_AXIS(alert, start), min: start, max: end },
    yAxis: {
      type: "value", name: `${t("consumption")} (${unit})`, nameTextStyle: { align: "left" },
      max: (extent) => extent.max * 1.25, // room above the limit for the pin
      axisLabel: { formatter: (value) => num(value, 2) },
    },
    dataZoom: [{ type: "inside" }, { type: "slider", height: 14, bottom: 4 }],
    series: [
      {
        name: t(`per_${meter.bucket}`), type: "bar", barMaxWidth: 18,
        data: meter.buckets.map((b) => [mid(b), b.value]), itemStyle: { color: "#84adff" },
      },
      {
        name: t("cumulative"), type: "line", showSymbol: false,
        data: [[start, 0], ...meter.buckets.map((b) => [Date.parse(b.end), b.cumulative])],
        itemStyle: { color: "#1570ef" },
        markLine: {
          symbol: "none", silent: true,
          lineStyle: { color: "#b42318", type: "dashed" },
          label: { position: "insideEndTop", color: "#b42318" },
          data: [
            {
              yAxis: meter.limit, name: `${t("limit")} ${num(meter.limit)} ${unit}`,
              label: { formatter: "{b}", position: "insideEndTop" },
            },
            ...meter.resets.map((ts) => ({
              xAxis: Date.parse(ts), name: t("register_reset"),
              lineStyle: { color: "#667085", type: "dotted" }, label: { formatter: t("register_reset") },
            })),
          ],
        },
        markPoint: figure ? {
          symbol: "pin", symbolSize: 36, itemStyle: { color: "#b42318" },
          label: { formatter: num(figure[1], 2), fontSize: 10 },
          data: [{ name: t("alert_value"), coord: figure, value: num(figure[1]) }],
        } : undefined,
      },
      {
        name: t("budget_to_date"), type: "line", showSymbol: false, data: [[start, 0], [end, meter.limit]],
        lineStyle: { width: 1, type: "dotted" }, itemStyle: { color: "#98a2b3" },
      },
    ],
  });
  const total = meter.buckets[meter.buckets.length - 1].cumulative;
  $("chart-worst").textContent = [
    `${t("cumulative")} ${num(total)} ${unit} / ${t("limit")} ${num(meter.limit)} ${unit}`,
    meter.area_m2 ? `${t("area")} ${num(meter.area_m2)} m²` : null,
    figure ? `${t("alert_value")} ${num(figure[1])} ${unit}` : null,
    meter.resets.length ? `${t("register_reset")} ×${meter.resets.length}` : null,
    meter.missing_hours > 0 ? `${num(meter.missing_hours, 1)} ${t("no_reading_hours")}` : null,
  ].filter(Boolean).join(" · ");
}

// An obligation alert: its task's events as marks on a time line, the last done and due times
// as lines, the overdue stretch (from due to done again, or now) shaded; the same in words.
function drawObligationChart(alert) {
  const duty = alert.obligation;
  const zone = alert.site_timezone;
  const box = $("chart");
  const due = Date.parse(duty.due_at);
  const until = Date.parse(duty.overdue_until);
  const overdue = `${t("overdue_by")} ${duration(duty.overdue_s)}`;
  $("chart-worst").textContent = [
    `${t("last_done")} ${duty.last_done_at ? formatTime(duty.last_done_at, zone) : t("not_done_since")}`,
    `${t("due")} ${formatTime(duty.due_at, zone)}`,
    overdue + (duty.done_at ? ` (${t("done_again")} ${formatTime(duty.done_at, zone)})` : ` (${t("still_overdue")})`),
  ].join(" · ");
  const list = $("evidence-events");
  list.replaceChildren(...duty.events.slice().reverse().map((e) => el(
    "li", {},
    [formatTime(e.ts, zone), e.type, e.space || e.device, e.actor,
      typeof e.attrs.note === "string" ? e.attrs.note : null].filter(Boolean).join(" · "),
  )));
  list.hidden = duty.events.length === 0;
  if (!newChart(box, true)) return;
  const lines = [{ xAxis: due, name: t("due"), label: { formatter: t("due") } }];
  if (duty.last_done_at) {
    lines.push({
      xAxis: Date.parse(duty.last_done_at), name: t("last_done"),
      lineStyle: { color: "#067647", type: "dashed" }, label: { formatter: t("last_done"), color: "#067647" },
    });
  }
  window.echarts.init(box, null, { renderer: "svg" }).setOption({
    animation: false,
    grid: chartGrid(box),
    legend: { top: 0, textStyle: { fontSize: 11 } },
    tooltip: { trigger: "item", renderMode: "richText" },
    xAxis: { ...TIME_AXIS(alert, due), min: Date.parse(duty.since), max: Date.parse(duty.until) },
    yAxis: { type: "value", min: 0, max: 2, show: false },
    dataZoom: [{ type: "inside" }, { type: "slider", height: 14, bottom: 4 }],
    series: [{
      name: `${duty.event} (${duty.events.length})`, type: "scatter", symbol: "diamond", symbolSize: 12,
      data: duty.events.map((e) => ({ value: [Date.parse(e.ts), 1], name: e.actor || e.device })),
      itemStyle: { color: "#1570ef" },
      markLine: {
        symbol: "none", silent: true,
        lineStyle: { color: "#b42318", type: "dashed" },
        label: { position: "insideEndTop", color: "#b42318" },
        data: lines,
      },
      markArea: {
        silent: true, itemStyle: { color: "rgba(180, 35, 24, 0.12)" },
        label: { color: "#b42318", fontSize: 11 },
        data: [[{ xAxis: due, name: overdue }, { xAxis: until }]],
      },
    }],
  });
}

async function act(path, body) {
  const alertId = state.selected;
  try {
    const updated = await api(`/alerts/${alertId}/${path}`, { method: "POST", body: JSON.stringify(body) });
    if (state.alerts.has(updated.id)) state.alerts.set(updated.id, updated);
    await showDetail(updated.id);
    return true;
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    else $("action-error").textContent = error.message;
    return false;
  }
}

// ---- silences and maintenance windows ----

const QUIET_KINDS = ["silence", "maintenance"];

async function loadQuiet() {
  if ($("app").hidden) return;
  let lists;
  try {
    lists = await Promise.all(QUIET_KINDS.map((kind) => api(`/${kind === "silence" ? "silences" : kind}`)));
  } catch (error) {
    if (error instanceof Unauthorized) showLogin(t("bad_token"));
    else $("quiet-error").textContent = error.message;
    return;
  }
  const items = lists.flatMap((list) => list.items);
  $("quiet-empty").hidden = items.length > 0;
  $("quiet-list").replaceChildren(...items.map((item) => {
    const scope = item.target === null ? item.site : `${item.site} / ${item.target}`;
    const cancel = el("button", { type: "button", class: "cancel" }, t("cancel"));
    cancel.addEventListener("click", () => cancelQuiet(item));
    return el(
      "li", { class: "quiet-item", "data-kind": item.kind, "data-id": String(item.id) },
      el("span", { class: "state" }, `${t(item.kind + "_short")} #${item.id}`), " ",
      el("span", { class: "title" }, scope), " ",
      el("span", { class: "meta" },
        `${formatTime(item.starts_at)} – ${formatTime(item.effective_end)}` +
        `${item.retroactive ? " · " + t("retroactive") : ""} · ${item.reason}` +
        ` · ${t("set_by")} ${item.created_by}`), " ",
      cancel,
    );
  }));
}

async function loadQuietSites() {
  try {
    const sites = await api("/sites");
    $("quiet-site").replaceChildren(...sites.map((site) => el("option", { value: site.id }, site.name)));
  } catch (error) {
    $("quiet-error").textContent = error.message;
  }
}

async function cancelQuiet(item) {
  const path = item.kind === "silence" ? "silences" : "maintenance";
  try {
    await api(`/${path}/${item.id}/cancel`, { method: "POST", body: "{}" });
    $("quiet-error").textContent = "";
  } catch (error) {
    $("quiet-error").textContent = error.message;
  }
  loadQuiet();
}

$("quiet-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const kind = $("quiet-kind").value;
  const scope = $("quiet-scope").value;
  const until = new Date($("quiet-until").value); // local time of the browser
  const body = {
    site: $("quiet-site").value,
    scope,
    ends_at: until.toISOString(),
    reason: $("quiet-reason").value,
  };
  if ($("quiet-from").value) body.starts_at = new Date($("quiet-from").value).toISOString();
  if (scope !== "site") body.target = $("quiet-target").value.trim();
  try {
    await api(`/${kind === "silence" ? "silences" : kind}`, { method: "POST", body: JSON.stringify(body) });
    $("quiet-reason").value = "";
    $("quiet-error").textContent = "";
  } catch (error) {
    if (error instanceof Unauthorized) return showLogin(t("bad_token"));
    $("quiet-error").textContent = error.message;
  }
  loadQuiet();
});

// ---- wiring ----

window.addEventListener("resize", () => {
  const chart = window.echarts && window.echarts.getInstanceByDom($("chart"));
  if (chart) chart.resize();
});
$("token-form").addEventListener("submit", (event) => {
  event.preventDefault();
  state.token = $("token-input").value.trim();
  sessionStorage.setItem(TOKEN_KEY, state.token);
  start();
});
$("sign-out").addEventListener("click", async () => {
  if (!state.token) return window.clausewatchSignOut(); // a user's session ends on the server
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = null;
  state.alerts.clear();
  state.lastEventId = null;
  showLogin();
});
$("detail-back").addEventListener("click", () => closeDetail());
window.addEventListener("popstate", route);
for (const button of document.querySelectorAll(".tabs [data-tab]")) {
  button.addEventListener("click", () => selectTab(button.dataset.tab));
}
$("filters").addEventListener("submit", (event) => {
  event.preventDefault();
  readFilters();
  reloadList();
});
$("filters").addEventListener("reset", () => {
  state.filters = {};
  setTimeout(reloadList); // after the form has cleared its fields
});
$("filters-toggle").addEventListener("click", () => {
  const form = $("filters");
  form.toggleAttribute("data-open");
  $("filters-toggle").setAttribute("aria-expanded", String(form.hasAttribute("data-open")));
});
$("more").addEventListener("click", () => loadAlerts(true).catch((error) => {
  $("bulk-result").textContent = error.message;
}));
$("select-all").addEventListener("change", () => {
  if ($("select-all").checked) for (const id of state.alerts.keys()) state.checked.add(id);
  else state.checked.clear();
  renderList();
});
$("bulk-ack").addEventListener("click", () => bulk("ack", {}));
$("bulk-close-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { cause: $("bulk-cause").value, corrective_action: $("bulk-action").value };
  if (await bulk("close", body)) {
    $("bulk-cause").value = "";
    $("bulk-action").value = "";
  }
});
$("comment-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  if (await act("comments", { text: $("comment-text").value })) $("comment-text").value = "";
});
$("reassign-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const body = { party: $("reassign-party").value, note: $("reassign-note").value };
  if (await act("reassign", body)) $("reassign-note").value = "";
});
$("sound-toggle").checked = soundOn();
$("sound-toggle").addEventListener("change", () => {
  localStorage.setItem(SOUND_KEY, $("sound-toggle").checked ? "on" : "off");
  if ($("sound-toggle").checked) beep(); // what it will sound like (and a user gesture for audio)
});
$("notify-permission").addEventListener("click", async () => {
  await Notification.requestPermission();
  renderNotifyButton();
});
document.addEventListener("visibilitychange", () => {
  if (document.visibilityState === "visible") {
    state.unseen.clear(); // back on the page: the list shows them
    renderTitle();
  }
});
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
renderNotifyButton();
const calendarLoaded = loadCalendar();
setInterval(loadCalendar, 3600e3); // the count of days to the next year moves on
// With a token, or a session cookie (start() finds out: a 401 leads to /login).
if (state.token || location.hash !== "#token") start();
else showLogin();
