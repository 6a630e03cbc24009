// The register page: search /api/v1/register, show one clause from /api/v1/register/{id}.
// Text from the API always goes in through textContent. Signed by the user's cookie or a
// #token=… (request.js); api, el and pct are in pagekit.js.
"use strict";

const form = document.getElementById("controls");
const statusLine = document.getElementById("status");
const detail = document.getElementById("detail");
const STATUS_ZH = { in_force: "现行", planned: "待实施", superseded: "已废止" };
const statusName = (status) => L(status.replace("_", " "), STATUS_ZH[status] || status);
const REVISION_ZH = { pending: "待审批", approved: "已批准，待发布", published: "已发布，待生效" };
const REVISION_EN = { pending: "awaiting approval", approved: "approved, to publish", published: "published, to apply" };
const revisionName = (state) => L(REVISION_EN[state] || state, REVISION_ZH[state] || state);
// Who an actor names, without the display name that may change ("user:li (李处长)" → "user:li").
const person = (actor) => actor.split(" (")[0];

// Whether the signed-in person may approve `revision` (the API's rule, so the button is offered
// only where it works): a named user (never a token), not its proposer, an admin of every site
// for a clause, of the site for a site revision.
function approves(me, revision, site) {
  if (!me || me.kind !== "user" || me.role !== "admin" || revision.state !== "pending") return false;
  if (person(revision.proposed_by) === person(me.actor)) return false;
  return me.sites === null || (site !== undefined && me.sites.includes(site));
}

// Who is signed in (GET /session); null when that cannot be told.
async function whoAmI() {
  try {
    return await api("session");
  } catch (error) {
    return null;
  }
}

// Approves one revision through the API (`kind`: clause-revisions or site-revisions), then
// draws the list again; a refusal is said in the status line.
async function approve(kind, id) {
  try {
    await send("POST", `${kind}/${id}/approve`, {});
    statusLine.textContent = L(`Revision #${id} approved.`, `修订 #${id} 已批准。`);
  } catch (error) {
    statusLine.textContent = `${L("Not approved", "未能批准")}: ${error.message}`;
  }
  revisions();
}

function approveButton(kind, revision) {
  const button = el("button", L("Approve", "批准"), { type: "button", class: "approve" });
  button.addEventListener("click", () => {
    button.disabled = true;
    approve(kind, revision.id);
  });
  return button;
}

function stateCell(me, kind, revision, site) {
  const cell = el("td", undefined, { class: `revision-${revision.state}` });
  cell.append(el("div", revisionName(revision.state)));
  if (approves(me, revision, site)) cell.append(approveButton(kind, revision));
  return cell;
}

function proposedLine(revision) {
  return el("div", `${L("Proposed by", "提议人")}: ${revision.proposed_by}` +
    (revision.approved_by ? ` · ${L("approved by", "批准人")}: ${revision.approved_by}` : ""), { class: "excerpt" });
}

// Revisions waiting for approval or publication, clauses' and sites', above the list (hidden
// when there are none), each with an approve button for whoever may approve it.
async function revisions() {
  const box = document.getElementById("revisions");
  try {
    const [me, waiting, sites] = await Promise.all([
      whoAmI(),
      api("clause-revisions", { open: "true" }),
      api("site-revisions", { open: "true" }),
    ]);
    const body = document.querySelector("#revision-list tbody");
    body.replaceChildren();
    for (const revision of waiting) {
      const row = el("tr", undefined, { class: "revision" });
      const clause = el("td");
      clause.append(el("code", revision.clause_id), el("div", `v${revision.based_on} · #${revision.id}`, { class: "muted" }));
      const change = el("td");
      for (const c of revision.diff) {
        change.append(el("div", `${c.path}: ${JSON.stringify(c.before)} → ${JSON.stringify(c.after)}`));
      }
      change.append(el("div", `${L("Reason", "理由")}: ${revision.reason}`, { class: "excerpt" }));
      change.append(proposedLine(revision));
      for (const t of revision.backtest) {
        change.append(el("div", L(`Backtest ${t.site}: compliance ${pct(t.in_force_rate)} → ${pct(t.candidate_rate)}, alerts ${t.in_force_alerts} → ${t.candidate_alerts}`,
          `回测 ${t.site}：达标率 ${pct(t.in_force_rate)} → ${pct(t.candidate_rate)}，告警 ${t.in_force_alerts} → ${t.candidate_alerts} 条`), { class: "excerpt" }));
      }
      row.append(clause, change, stateCell(me, "clause-revisions", revision));
      body.append(row);
    }
    for (const revision of sites) {
      const row = el("tr", undefined, { class: "revision site-revision" });
      const site = el("td");
      site.append(el("code", revision.site), el("div", `${L("site model", "站点模型")} · #${revision.id}`, { class: "muted" }));
      const change = el("td");
      for (const line of revision.diff) change.append(el("div", line));
      change.append(el("div", `${L("Reason", "理由")}: ${revision.reason}`, { class: "excerpt" }));
      change.append(proposedLine(revision));
      if (revision.effective_at) {
        change.append(el("div", `${L("Applies at", "生效时间")}: ${revision.effective_at}`, { class: "excerpt" }));
      }
      row.append(site, change, stateCell(me, "site-revisions", revision, revision.site));
      body.append(row);
    }
    box.hidden = waiting.length + sites.length === 0;
  } catch (error) {
    box.hidden = true;
  }
}

async function search(event) {
  if (event) event.preventDefault();
  const params = Object.fromEntries(
    ["q", "domain", "key", "confidence", "status"].map((k) => [k, form.elements[k].value]));
  statusLine.textContent = L("Searching…", "搜索中…");
  try {
    const entries = await api("register", params);
    const body = document.querySelector("#results tbody");
    body.replaceChildren();
    for (const entry of entries) {
      const row = el("tr", undefined, { class: "pick" });
      row.append(el("td", entry.standard.code));
      const cell = el("td");
      cell.append(el("div", `${entry.number} ${entry.title}`));
      cell.append(el("div", entry.excerpt, { class: "excerpt" }));
      cell.append(el("code", entry.clause_id));
      const flags = el("td", statusName(entry.status), { class: `status-${entry.status}` });
      // 复审: the review date, flagged when it is due within 90 days or overdue.
      flags.append(el("div", `${L("review", "复审")} ${entry.review_due}`,
        { class: entry.review_reminder ? "review-due" : "muted review" }));
      if (entry.review_reminder) flags.lastChild.append(el("span", L(" · due", " · 待复审")));
      if (entry.pending_revisions) {
        flags.append(el("div", L(`${entry.pending_revisions} pending revision`, `待审批修订 ${entry.pending_revisions} 项`), { class: "pending-revision" }));
      }
      row.append(cell, flags);
      row.addEventListener("click", () => show(entry.clause_id, row));
      body.append(row);
    }
    statusLine.textContent = L(`${entries.length} clauses`, `${entries.length} 条`);
  } catch (error) {
    statusLine.textContent = `${L("Could not search", "无法搜索")}: ${error.message}`;
  }
}

async function show(clauseId, row) {
  document.querySelectorAll("tr.picked").forEach((r) => r.classList.remove("picked"));
  row.classList.add("picked");
  detail.replaceChildren(el("p", L("Loading…", "加载中…")));
  try {
    const clause = await api(`register/${encodeURIComponent(clauseId)}`);
    detail.replaceChildren(el("h2", `${clause.standard.code} · ${clause.clause_id}`));
    detail.append(el("p", `${clause.standard.title} · ${clause.domain} · ${L("confidence", "可信度")} ${clause.confidence}` +
      (clause.key ? L(" · key clause", " · 关键条款") : "")));
    detail.append(el("h3", L("Versions", "版本")));
    for (const version of clause.versions) {
      const box = el("div");
      box.append(el("h4", `v${version.version} ${version.number} — ${statusName(version.status)}` +
        ` (${version.effective_from} – ${version.effective_to || L("open", "至今")})`));
      box.append(el("p", version.text || version.title));
      if (version.changes.length) {
        const table = el("table");
        const head = el("tr");
        head.append(el("th", L("changed", "变更项")), el("th", L("before", "变更前")), el("th", L("after", "变更后")));
        table.append(head);
        for (const change of version.changes) {
          const tr = el("tr");
          tr.append(el("td", change.path), el("td", JSON.stringify(change.before)),
            el("td", JSON.stringify(change.after)));
          table.append(tr);
        }
        const wrap = el("div", undefined, { class: "scroll" });
        wrap.append(table);
        box.append(wrap);
      }
      detail.append(box);
    }
    detail.append(el("h3", L("Where it applies", "适用范围")));
    if (!clause.sites.length) detail.append(el("p", L("Nowhere in the sites this token sees.", "本令牌可见的站点均不适用。"), { class: "muted" }));
    for (const site of clause.sites) {
      detail.append(el("h4", L(`${site.site}: compliance ${pct(site.compliance_rate)} (30 days),` +
        ` ${site.open_alerts} open alerts`, `${site.site}：达标率 ${pct(site.compliance_rate)}（30 天），` +
        `未关闭告警 ${site.open_alerts} 条`)));
      detail.append(el("p", `${L("Spaces", "空间")}: ${site.spaces.join(", ")}`));
      const sources = site.data_sources.map((s) => `${s.device} (${s.metrics.map((m) => metricName(m, L("en", "zh"))).join(", ")})`);
      detail.append(el("p", `${L("Data sources", "数据来源")}: ${sources.join("; ") || site.events.join(", ") || L("none", "无")}`));
      const people = site.responsible.map((p) => `${p.name} (${p.role} L${p.level}, ${p.domain}, ${p.space})`);
      detail.append(el("p", `${L("Responsible", "责任人")}: ${people.join("; ") || L("nobody", "无")}`));
    }
  } catch (error) {
    detail.replaceChildren(el("p", `${L("Could not load the clause", "无法加载条款")}: ${error.message}`));
  }
}

form.addEventListener("submit", search);
search();
revisions();
// The language changed on this page: the list and the open clause again, in that language.
let language = L("en", "zh");
document.addEventListener("clausewatch:lang", async () => {
  if (language === L("en", "zh")) return; // the first application when the page opens
  language = L("en", "zh");
  const picked = document.querySelector("tr.picked code");
  const clauseId = picked ? picked.textContent : null;
  detail.replaceChildren();
  revisions();
  await search();
  const row = [...document.querySelectorAll("#results tbody tr")]
    .find((r) => r.querySelector("code").textContent === clauseId);
  if (row) show(clauseId, row);
});
