// The statistics page: an organisation node with its children (/api/v1/statistics/org), one
// site's figures and alarm-system health (/api/v1/statistics/site/{site}), and its stored
// evaluation reports (/api/v1/reports). Text goes in through textContent only. token, api, el and
// pct are in pagekit.js.
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
  ]));
  section.append(table(L(["below", "sites", "compliance", "coverage", "evaluated", "alerts"],
    ["下级", "站点", "达标率", "覆盖率", "已评价", "告警"]),
    stats.children.map((c) => [c.path.at(-1), c.sites.join(", "), pct(c.compliance_rate),
      pct(c.key_clause_coverage), pct(c.evaluated_share), c.alerts])));
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
    ["MTTC", hours(s.mean_time_to_close_s)],
  ]));
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
  const reports = await api("reports", { site });
  const box = document.getElementById("reports");
  box.replaceChildren(el("h3", L("Evaluation reports", "评价报告")));
  const list = el("ul");
  for (const r of reports) {
    const item = el("li", `${r.period} · ${L("compliance", "达标率")} ${pct(r.compliance_rate)} · `);
    item.append(el("a", "HTML", { href: `/api/v1/reports/${r.id}/html`, target: "_blank" }));
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
// ?path=&site=&since=&until= fill the form, so a link can open a site's figures.
for (const [name, value] of new URLSearchParams(location.search)) {
  if (name in form.elements && name !== "token") form.elements[name].value = value;
}
token();
show();
let language = L("en", "zh"); // drawn again in the language chosen on this page
document.addEventListener("clausewatch:lang", () => {
  if (language === L("en", "zh")) return;
  language = L("en", "zh");
  show();
});
