// The statistics page: an organisation node with its children (/api/v1/statistics/org), one
// site's figures and alarm-system health (/api/v1/statistics/site/{site}), attainment of each
// against the targets of the plan with the sites below them, the site's open improvement
// actions (overdue flagged), the feedback from its public form still to deal with, triaged here
// (/api/v1/feedback), its evaluations (/api/v1/evaluations) and stored evaluation reports
// (/api/v1/reports: HTML to read or print, CSV). Text goes in through textContent only. Signed
// by the user's cookie or a #token=… (request.js); api, send, linkFile, el and pct are in
// pagekit.js.
"use strict";

const form = document.getElementById("controls");
const statusLine = document.getElementById("status");

const hours = (s) => (s === null || s === undefined ? "–" : `${(s / 3600).toFixed(1)} h`);

function table(head, rows) {
  const t = el("table");
  const tr = el("tr");
  head.forEach((h) => tr.append(el("th", h)));
  t.append(tr);
  for (const row of rows) {
    const r = el("tr");
    row.forEach((cell) => r.append(el("td", String(cell))));
    t.append(r);
  }
  return t;
}

function tiles(pairs) {
  const box = el("div", undefined, { class: "tiles" });
  for (const [label, value] of pairs) {
    const tile = el("div", label, { class: "tile" });
    tile.append(el("b", value));
    box.append(tile);
  }
  return box;
}

// Targets and attainment: figure, target, actual, attained, the sites pulling it down.
function attainment(a) {
  const box = el("div", undefined, { class: "attainment" });
  const from = a.targets_from === null ? L("the plan's defaults", "规划默认值")
    : (a.targets_from.join(" / ") || L("all sites", "全部站点"));
  box.append(el("h3", L("Targets and attainment", "目标与达标")));
  box.append(el("p", `${L("Targets set at", "目标来自")}: ${from}`, { class: "muted" }));
  const t = el("table");
  const head = el("tr");
  L(["figure", "target", "actual", "attained", "sites below target"],
    ["指标", "目标", "实际", "达标", "未达标站点"]).forEach((h) => head.append(el("th", h)));
  t.append(head);
  for (const f of a.figures) {
    const r = el("tr");
    r.append(el("td", L(f.name, f.name_zh)));
    r.append(el("td", `≥ ${pct(f.target)}`));
    r.append(el("td", pct(f.value)));
    const met = f.met === null ? "–" : f.met ? L("yes", "达标") : L("no", "未达标");
    r.append(el("td", met, { class: f.met === null ? "" : f.met ? "met" : "unmet" }));
    r.append(el("td", f.below.map((b) => `${b.site} ${pct(b.value)}`).join(", ") || "–"));
    t.append(r);
  }
  box.append(t);
  return box;
}

const missed = (a) => a.figures.filter((f) => f.met === false).map((f) => L(f.name, f.name_zh)).join(", ") || "–";

// How an evaluation was made (compliance/evaluations.py, Method): [English, Chinese].
const METHODS = {
  inspection: ["on-site inspection", "现场检查"], records: ["records review", "资料查阅"],
  survey: ["occupant survey", "问卷调查"], measurement: ["measurement", "检测"],
  interview: ["interviews", "座谈访谈"],
};

// The open improvement actions, each with a button that records it done (限期整改).
function openActions(actions) {
  const t = table(L(["clause", "action", "owner", "deadline", "state", ""], ["条款", "措施", "责任人", "期限", "状态", ""]), []);
  t.classList.add("actions");
  for (const a of actions) {
    const r = el("tr");
    [a.clause_id, a.action, a.owner, a.deadline.slice(0, 10)].forEach((v) => r.append(el("td", v)));
    r.append(el("td", a.overdue ? L("overdue", "逾期") : L("open", "进行中"), { class: a.overdue ? "unmet" : "" }));
    const done = el("button", L("Mark done", "标记完成"), { type: "button" });
    done.addEventListener("click", () => act(() => send("PATCH", `evaluations/actions/${a.id}`, { state: "done" }),
      L("Action closed", "已记录完成")));
    const cell = el("td");
    cell.append(done);
    r.append(cell);
    t.append(r);
  }
  return t;
}

// Feedback from the public form (信息反馈, compliance/feedback.py): categories and states named.
const CATEGORIES = {
  too_cold: ["Too cold", "太冷"], too_hot: ["Too hot", "太热"], not_cleaned: ["Not cleaned", "未打扫干净"],
  lift: ["Lift problem", "电梯故障"], other: ["Something else", "其他问题"],
};
const STATES = { new: ["new", "待分拣"], triaged: ["triaged", "已受理"] };
// The next steps of an item in each state: [state, English, Chinese].
const STEPS = {
  new: [["triaged", "Accept", "受理"], ["rejected", "Reject", "驳回"]],
  triaged: [["resolved", "Resolved", "已解决"], ["rejected", "Reject", "驳回"]],
};

// The photo of an item, fetched with the page's credentials (request.js) and shown inline (a
// data: URL: the page's policy allows no blob: images).
async function showPhoto(itemId, cell) {
  const answer = await fetchApi(`feedback/${itemId}/photo`);
  const reader = new FileReader();
  reader.onload = () => cell.append(el("img", undefined, { src: reader.result, alt: L("photo", "照片"), class: "feedback-photo" }));
  reader.readAsDataURL(await answer.blob());
}

// The site's feedback not closed yet (new, then triaged), each with a note field and its steps.
async function feedbackPanel(site) {
  const box = el("div", undefined, { id: "feedback" });
  box.append(el("h3", L("Feedback to deal with", "待处理的信息反馈")));
  const items = [...await api("feedback", { site, state: "new" }), ...await api("feedback", { site, state: "triaged" })];
  if (!items.length) { box.append(el("p", L("None.", "无。"), { class: "muted" })); return box; }
  const t = table(L(["received", "space", "problem", "said", "state", ""], ["收到时间", "空间", "问题", "说明", "状态", ""]), []);
  t.classList.add("actions");
  for (const item of items) {
    const r = el("tr", undefined, { "data-item": String(item.id) });
    r.append(el("td", new Date(item.received_at).toLocaleString(L("en-GB", "zh-CN"))), el("td", item.space),
      el("td", L(...CATEGORIES[item.category])));
    const said = el("td", item.text || "–");
    if (item.photo) {
      const photo = el("button", L("Photo", "照片"), { type: "button" });
      photo.addEventListener("click", () => { photo.disabled = true; showPhoto(item.id, said).catch((e) => { statusLine.textContent = e.message; }); });
      said.append(" ", photo);
    }
    r.append(said, el("td", L(...STATES[item.state])));
    const cell = el("td");
    const note = el("input", undefined, { name: "note", maxlength: "2000", size: "10", placeholder: L("note", "备注") });
    cell.append(note);
    for (const [state, en, zh] of STEPS[item.state]) {
      const step = el("button", L(en, zh), { type: "button", "data-state": state });
      step.addEventListener("click", () => act(() => send("PATCH", `feedback/${item.id}`, { state, note: note.value }),
        L("Feedback updated", "已记录")));
      cell.append(step);
    }
    r.append(cell);
    t.append(r);
  }
  const wrap = el("div", undefined, { class: "scroll" });
  wrap.append(t);
  box.append(wrap);
  return box;
}

// The quarter a date falls in ("2026Q4"), in local time.
function quarterOf(day) {
  return `${day.getFullYear()}Q${Math.floor(day.getMonth() / 3) + 1}`;
}

// A person's implementation evaluation of a clause at this site (POST /evaluations).
function evaluationForm(s) {
  const f = el("form", undefined, { id: "evaluate", class: "evaluate" });
  const field = (label, input) => { const l = el("label", label); l.append(input); f.append(l); return input; };
  const clause = field(L("Clause", "条款"), el("select", undefined, { name: "clause_id", required: "" }));
  s.clauses_in_force.forEach((c) => clause.append(el("option", c, { value: c })));
  const until = form.elements.until.value ? new Date(`${form.elements.until.value}T00:00:00`) : new Date();
  field(L("Quarter", "季度"), el("input", undefined, { name: "period", required: "", pattern: "\\d{4}Q[1-4]", size: "7", value: quarterOf(until) }));
  const method = field(L("Method", "方法"), el("select", undefined, { name: "method" }));
  for (const [value, names] of Object.entries(METHODS)) method.append(el("option", L(...names), { value }));
  const score = field(L("Satisfaction", "满意度"), el("select", undefined, { name: "satisfaction" }));
  for (const n of [5, 4, 3, 2, 1]) score.append(el("option", String(n), { value: String(n) }));
  field(L("Findings", "发现"), el("textarea", undefined, { name: "findings", required: "", maxlength: "4000", rows: "2" }));
  field(L("Improvement action", "整改措施"), el("input", undefined, { name: "action", maxlength: "4000" }));
  field(L("Owner", "责任人"), el("input", undefined, { name: "owner", maxlength: "200", size: "10" }));
  field(L("Deadline", "期限"), el("input", undefined, { name: "deadline", type: "date" }));
  f.append(el("button", L("Record evaluation", "记录评价"), { type: "submit" }));
  f.addEventListener("submit", (event) => {
    event.preventDefault();
    const v = (name) => f.elements[name].value.trim();
    const body = {
      site: s.site, clause_id: v("clause_id"), period: v("period"), method: v("method"),
      findings: v("findings"), satisfaction: Number(v("satisfaction")), actions: [],
    };
    if (v("action")) {
      body.actions.push({ action: v("action"), owner: v("owner"), deadline: `${v("deadline")}T18:00:00+08:00` });
    }
    act(() => send("POST", "evaluations", body), L("Evaluation recorded", "已记录评价"));
  });
  return f;
}

// A write, then the figures again with what it changed; a refusal is said in the status line.
async function act(write, said) {
  try {
    await write();
    await show();
    statusLine.textContent = said;
  } catch (error) {
    statusLine.textContent = `${L("Not saved", "未保存")}: ${error.message}`;
  }
}

function period() {
  const day = (v) => (v ? `${v}T00:00:00+08:00` : "");
  return { since: day(form.elements.since.value), until: day(form.elements.until.value) };
}

async function showOrg() {
  const section = document.getElementById("org");
  const stats = await api("statistics/org", { path: form.elements.path.value, ...period() });
  const node = stats.node;
  const where = node.path.join(" / ") || L("(all)", "（全部）");
  section.replaceChildren(el("h2", L(`Organisation ${where}: ${node.sites.length} sites`,
    `组织 ${where}：${node.sites.length} 个站点`)));
  section.append(tiles([
    [L("Compliance", "达标率"), pct(node.compliance_rate)], [L("Key-clause coverage", "关键条款覆盖率"), pct(node.key_clause_coverage)],
    [L("Evaluated", "已评价占比"), pct(node.evaluated_share)], [L("Data completeness", "数据完整率"), pct(node.data_completeness)],
    [L("Exempt (planned maintenance)", "维护豁免时长"), hours(node.exempt_s)],
    [L("Alerts", "告警"), String(node.alerts)], [L("Open", "未关闭"), String(node.open_alerts)],
    ["MTTA", hours(node.mean_time_to_acknowledge_s)], ["MTTC", hours(node.mean_time_to_close_s)],
    [L("Open actions", "整改中"), String(node.open_actions)], [L("Overdue actions", "逾期整改"), String(node.overdue_actions)],
    [L("Feedback", "信息反馈"), String(node.feedback)], [L("Feedback not triaged", "待分拣反馈"), String(node.feedback_new)],
  ]));
  section.append(attainment(node.attainment));
  section.append(el("h3", L("One level down", "下级单位")));
  section.append(table(L(["below", "sites", "compliance", "coverage", "evaluated", "targets missed", "alerts"],
    ["下级", "站点", "达标率", "覆盖率", "已评价", "未达标指标", "告警"]),
    stats.children.map((c) => [c.path.at(-1), c.sites.join(", "), pct(c.compliance_rate),
      pct(c.key_clause_coverage), pct(c.evaluated_share), missed(c.attainment), c.alerts])));
}

async function showSite() {
  const section = document.getElementById("site");
  const site = form.elements.site.value;
  if (!site) { section.replaceChildren(); return; }
  const s = await api(`statistics/site/${encodeURIComponent(site)}`, period());
  section.replaceChildren(el("h2", `${s.name} (${s.site})`));
  section.append(tiles([
    [L("Compliance", "达标率"), pct(s.compliance_rate)], [L("Key-clause coverage", "关键条款覆盖率"), pct(s.coverage.rate)],
    [L("Evaluated", "已评价占比"), pct(s.evaluated_share)], [L("Data completeness", "数据完整率"), pct(s.data_completeness)],
    [L("Exempt (planned maintenance)", "维护豁免时长"), hours(s.exempt_s)],
    [L("Alerts", "告警"), String(s.alerts)], ["MTTA", hours(s.mean_time_to_acknowledge_s)],
    ["MTTC", hours(s.mean_time_to_close_s)], [L("Overdue actions", "逾期整改"), String(s.overdue_actions)],
    [L("Feedback", "信息反馈"), String(s.feedback.received)],
    [L("Time to triage", "平均分拣用时"), hours(s.feedback.mean_time_to_triage_s)],
  ]));
  section.append(attainment(s.attainment));
  section.append(el("h3", L("Improvement actions open", "整改中的措施")));
  section.append(openActions(s.open_actions));
  section.append(await feedbackPanel(s.site));
  section.append(el("h3", L("Alerts by clause and severity", "按条款和级别的告警")));
  section.append(table(L(["clause", "severity", "alerts"], ["条款", "级别", "告警"]), s.alerts_by_clause.map((a) => [a.clause_id, a.severity, a.alerts])));
  section.append(el("h3", L("Alarm-system health", "告警系统健康度")));
  const h = s.health;
  section.append(table(L(["responsible", "alerts", "per day"], ["责任人", "告警", "每天"]),
    h.per_party.map((p) => [p.name || p.party || L("(unbound)", "（未绑定）"), p.alerts, p.per_day.toFixed(2)])));
  section.append(table(L(["finding", "items"], ["问题", "明细"]), [
    [L("chattering", "反复触发"), h.chattering.map((a) => `#${a.id} ${a.clause_id} (${a.reopen_count} ${L("reopens", "次重开")})`).join("; ") || "–"],
    [L("standing", "长期未关闭"), h.standing.map((a) => `#${a.id} ${a.clause_id} (${a.open_hours.toFixed(0)} h)`).join("; ") || "–"],
    [L("never firing", "从不触发"), h.never_firing.join(", ") || "–"],
    [L("always firing", "一直触发"), h.always_firing.map((c) => `${c.clause_id} ${pct(c.rate)}`).join(", ") || "–"],
  ]));
  const evaluations = await api("evaluations", { site, ...period() });
  section.append(el("h3", L("Implementation evaluations", "实施评价")));
  section.append(table(L(["period", "clause", "method", "satisfaction", "by"], ["期间", "条款", "方法", "满意度", "评价人"]),
    evaluations.map((e) => [e.period, e.clause_id, L(...METHODS[e.method]), `${e.satisfaction}/5`, e.evaluated_by])));
  section.append(evaluationForm(s));
  const reports = await api("reports", { site });
  const box = document.getElementById("reports");
  box.replaceChildren(el("h3", L("Evaluation reports", "评价报告")));
  const list = el("ul");
  for (const r of reports) {
    const item = el("li", `${r.period} · ${L("compliance", "达标率")} ${pct(r.compliance_rate)} · `);
    const failed = (error) => { statusLine.textContent = `${L("Could not download", "无法下载")}: ${error.message}`; };
    item.append(linkFile(el("a", "HTML"), `reports/${r.id}/html`, {}, null, failed));
    item.append(" · ");
    item.append(linkFile(el("a", "CSV"), `reports/${r.id}/csv`, {}, `report-${r.id}.csv`, failed));
    list.append(item);
  }
  box.append(list);
}

async function show(event) {
  if (event) event.preventDefault();
  statusLine.textContent = L("Loading…", "加载中…");
  try {
    await showOrg();
    await showSite();
    statusLine.textContent = "";
  } catch (error) {
    statusLine.textContent = `${L("Could not load", "无法加载")}: ${error.message}`;
  }
}

form.addEventListener("submit", show);
// ?path=&site=&since=&until= fill the form, so a link can open a site's figures. Without a
// period a site's figures cover the 30 days up to its data clock (the demo's simulated day).
(async () => {
  for (const [name, value] of new URLSearchParams(location.search)) {
    if (name in form.elements) form.elements[name].value = value;
  }
  const site = form.elements.site.value;
  if (site && !form.elements.since.value && !form.elements.until.value) {
    const { at, zone } = await siteClock(site);
    form.elements.since.value = localDay(at, zone, -29);
    form.elements.until.value = localDay(at, zone, 1);
  }
  show();
})();
let language = L("en", "zh"); // drawn again in the language chosen on this page
document.addEventListener("clausewatch:lang", () => {
  if (language === L("en", "zh")) return;
  language = L("en", "zh");
  show();
});
