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
  section.replaceChildren(el("h2", `Organisation ${node.path.join(" / ") || "(all)"}: ${node.sites.length} sites`));
  section.append(tiles([
    ["达标率 compliance", pct(node.compliance_rate)], ["关键条款覆盖率 coverage", pct(node.key_clause_coverage)],
    ["已评价占比 evaluated", pct(node.evaluated_share)], ["数据完整率 data", pct(node.data_completeness)],
    ["alerts", String(node.alerts)], ["open", String(node.open_alerts)],
    ["MTTA", hours(node.mean_time_to_acknowledge_s)], ["MTTC", hours(node.mean_time_to_close_s)],
  ]));
  section.append(table(["below", "sites", "compliance", "coverage", "evaluated", "alerts"],
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
    ["达标率 compliance", pct(s.compliance_rate)], ["关键条款覆盖率 coverage", pct(s.coverage.rate)],
    ["已评价占比 evaluated", pct(s.evaluated_share)], ["数据完整率 data", pct(s.data_completeness)],
    ["alerts", String(s.alerts)], ["MTTA", hours(s.mean_time_to_acknowledge_s)],
    ["MTTC", hours(s.mean_time_to_close_s)],
  ]));
  section.append(el("h3", "Alerts by clause and severity"));
  section.append(table(["clause", "severity", "alerts"], s.alerts_by_clause.map((a) => [a.clause_id, a.severity, a.alerts])));
  section.append(el("h3", "Alarm-system health"));
  const h = s.health;
  section.append(table(["responsible", "alerts", "per day"],
    h.per_party.map((p) => [p.name || p.party || "(unbound)", p.alerts, p.per_day.toFixed(2)])));
  section.append(table(["finding", "items"], [
    ["chattering", h.chattering.map((a) => `#${a.id} ${a.clause_id} (${a.reopen_count} reopens)`).join("; ") || "–"],
    ["standing", h.standing.map((a) => `#${a.id} ${a.clause_id} (${a.open_hours.toFixed(0)} h)`).join("; ") || "–"],
    ["never firing", h.never_firing.join(", ") || "–"],
    ["always firing", h.always_firing.map((c) => `${c.clause_id} ${pct(c.rate)}`).join(", ") || "–"],
  ]));
  const reports = await api("reports", { site });
  const box = document.getElementById("reports");
  box.replaceChildren(el("h3", "Evaluation reports"));
  const list = el("ul");
  for (const r of reports) {
    const item = el("li", `${r.period} · compliance ${pct(r.compliance_rate)} · `);
    item.append(el("a", "HTML", { href: `/api/v1/reports/${r.id}/html`, target: "_blank" }));
    list.append(item);
  }
  box.append(list);
}

async function show(event) {
  if (event) event.preventDefault();
  statusLine.textContent = "Loading…";
  try {
    await showOrg();
    await showSite();
    statusLine.textContent = "";
  } catch (error) {
    statusLine.textContent = `Could not load: ${error.message}`;
  }
}

form.addEventListener("submit", show);
token();
show();
