// The site model page (issue 21): download the template or a site's workbook, upload a filled
// workbook (.xlsx, or a zip of CSV files), see the dry run's diff and problems by sheet, row and
// column. A new site is then applied at once (POST /api/v1/sites/import); a change of a
// configured site is proposed as a site revision (POST /api/v1/site-revisions), which another
// admin approves on the register page. Admins of the workbook's site.
"use strict";

const KINDS = { space: ["Spaces", "空间"], device: ["Devices", "设备"], party: ["Parties", "责任方"],
  assignment: ["Assignments", "责任分配"] };
const STATES = { pending: ["awaiting approval", "待审批"] };
// { kind: "diff" | "problems" | "error" | "revision", data }
let last = null;
// What the button does with the workbook its dry run showed: "apply" (a new site) or "propose".
let next = "apply";

function texts() {
  document.getElementById("export").textContent = L("Export workbook", "导出工作簿");
  document.getElementById("template").textContent = L("Template", "下载模板");
  document.getElementById("file-label").textContent = L("Workbook (.xlsx or .zip of CSV)", "工作簿（.xlsx 或 CSV 的 zip 包）");
  document.getElementById("reason-label").textContent = L("Reason for a revision", "修订原因");
  document.getElementById("dry-run").textContent = L("Dry run", "试运行");
  document.getElementById("apply").textContent = next === "apply" ? L("Apply", "应用") : L("Propose revision", "提交修订");
  document.getElementById("apply-note").textContent = L(
    "A new site's workbook is applied at once: its file written and the registry updated; the running engines judge with it within about a second. A change of a site already configured is proposed as a site revision: another admin approves it on the register page, and it applies at the effective time it is published with. A new device's MQTT login needs `clausewatch broker files` and a broker reload.",
    "新站点的工作簿可直接应用：立即写入站点文件并同步登记表，运行中的判定引擎约一秒内按新的站点模型判定。已有站点的修改须提交站点修订：由另一位管理员在登记表页面批准，并在发布的生效时间生效。新增设备的 MQTT 登录需运行 clausewatch broker files 并重新加载代理。");
  draw();
}

async function sites() {
  const select = document.querySelector("#controls select[name=site]");
  try {
    const found = await api("sites");
    select.replaceChildren(...found.map((s) => el("option", `${s.id} ${s.name || ""}`.trim(), { value: s.id })));
  } catch (error) {
    status(error.message);
  }
}

function status(text) { document.getElementById("status").textContent = text; }

// A workbook of the API handed over as a file (pagekit's download: the cookie or the token).
function workbook(path, name) {
  download(path, {}, name).catch((error) => status(error.message));
}

async function importWorkbook(dryRun) {
  const file = document.querySelector("#upload input[type=file]").files[0];
  if (!file) return;
  status(L("Checking…", "检查中…"));
  document.getElementById("apply").disabled = true;
  const answer = await upload("POST", "sites/import", {
    params: { dry_run: String(dryRun), filename: file.name.slice(0, 200) },
    body: file, type: file.type || "application/octet-stream",
  });
  const data = await answer.json().catch(() => ({}));
  if (answer.ok) {
    last = { kind: "diff", data };
    const changes = Object.values(data.changes).some((c) => c.added.length || c.changed.length || c.removed.length)
      || data.new_site || data.site_changed;
    next = data.new_site ? "apply" : "propose";
    document.getElementById("apply").disabled = !(dryRun && changes);
  } else {
    refused(answer, data);
  }
  texts();
}

// The workbook its dry run showed, proposed as a revision of its (configured) site.
async function propose() {
  const file = document.querySelector("#upload input[type=file]").files[0];
  if (!file) return;
  document.getElementById("apply").disabled = true;
  const reason = document.querySelector("#upload input[name=reason]").value.trim().slice(0, 2000);
  const answer = await upload("POST", "site-revisions", {
    params: { filename: file.name.slice(0, 200), reason },
    body: file, type: file.type || "application/octet-stream",
  });
  const data = await answer.json().catch(() => ({}));
  if (answer.ok) last = { kind: "revision", data };
  else refused(answer, data);
  draw();
}

function refused(answer, data) {
  if (answer.status === 422 && Array.isArray(data.problems)) last = { kind: "problems", data };
  else last = { kind: "error", data: `${answer.status} ${typeof data.detail === "string" ? data.detail : answer.statusText}` };
}

// The revision just proposed: its number, its state, and who must act next.
function drawRevision(revision) {
  const state = L(...(STATES[revision.state] || [revision.state, revision.state]));
  status(L(`Revision #${revision.id} proposed (${state}): nothing changes until another admin approves it on the register page and it is published with an effective time.`,
    `已提交修订 #${revision.id}（${state}）：须由另一位管理员在登记表页面批准，并以生效时间发布后才生效，此前不作任何改动。`));
  const box = document.getElementById("diff");
  box.append(el("h2", L(`Site revision #${revision.id}: site ${revision.site}`, `站点修订 #${revision.id}：站点 ${revision.site}`)));
  const facts = el("p", undefined, { id: "revision", "data-state": revision.state });
  facts.append(el("b", state), ` · ${L("proposed by", "提议人")}: ${revision.proposed_by} · `);
  facts.append(el("a", L("Register: approve there", "登记表：在此批准"), { href: "/register" }));
  box.append(facts);
  const lines = el("ul", undefined, { class: "excerpt" });
  for (const line of revision.diff) lines.append(el("li", line));
  box.append(lines);
}

function draw() {
  const diff = document.getElementById("diff");
  const problems = document.getElementById("problems");
  diff.replaceChildren();
  problems.replaceChildren();
  if (!last) { status(""); return; }
  if (last.kind === "error") { status(last.data); return; }
  if (last.kind === "revision") { drawRevision(last.data); return; }
  if (last.kind === "problems") {
    status(L(`${last.data.problems.length} problem(s): nothing was written`, `${last.data.problems.length} 个问题：未写入任何内容`));
    problems.append(el("h2", L("Problems", "问题")));
    const table = el("table");
    const head = el("tr");
    for (const h of [L("Sheet", "工作表"), L("Row", "行"), L("Column", "列"), L("Problem", "问题")]) head.append(el("th", h));
    table.append(head);
    for (const p of last.data.problems) {
      const row = el("tr", undefined, { class: "problem" });
      row.append(el("td", p.sheet || L("workbook", "工作簿")), el("td", p.row ? String(p.row) : ""),
        el("td", p.column), el("td", L(p.en, p.zh)));
      table.append(row);
    }
    const box = el("div", undefined, { class: "scroll" });
    box.append(table);
    problems.append(box);
    return;
  }
  const d = last.data;
  status(d.dry_run
    ? L(`Dry run of site ${d.site} (${d.file}): nothing written yet`, `站点 ${d.site}（${d.file}）试运行：尚未写入`)
    : d.applied || Object.keys(d.registry).length
      ? L(`Applied: ${d.file} written, registry synced; the engines judge with it within a second.`,
        `已应用：已写入 ${d.file}，登记表已同步；判定引擎约一秒内按新模型判定。`)
      : L("Nothing to change", "无变化"));
  diff.append(el("h2", L(`Changes: site ${d.site}`, `变更：站点 ${d.site}`)));
  if (d.new_site) diff.append(el("p", L("A new site", "新站点")));
  else if (d.site_changed) diff.append(el("p", L("The site sheet changed", "站点信息有修改")));
  const table = el("table");
  const head = el("tr");
  for (const h of [L("Kind", "类别"), L("Added", "新增"), L("Changed", "修改"), L("Removed", "删除")]) head.append(el("th", h));
  table.append(head);
  for (const [kind, c] of Object.entries(d.changes)) {
    const row = el("tr", undefined, { "data-kind": kind });
    row.append(el("th", L(...(KINDS[kind] || [kind, kind]))));
    for (const ids of [c.added, c.changed, c.removed]) {
      const cell = el("td");
      cell.append(el("b", String(ids.length)));
      if (ids.length) cell.append(el("div", ids.slice(0, 20).join(", ") + (ids.length > 20 ? " …" : ""), { class: "excerpt" }));
      row.append(cell);
    }
    table.append(row);
  }
  const box = el("div", undefined, { class: "scroll" });
  box.append(table);
  diff.append(box);
}

document.getElementById("upload").addEventListener("submit", (event) => { event.preventDefault(); importWorkbook(true); });
document.getElementById("apply").addEventListener("click", () => (next === "apply" ? importWorkbook(false) : propose()));
document.getElementById("export").addEventListener("click", () => {
  const site = document.querySelector("#controls select[name=site]").value;
  if (site) workbook(`sites/${encodeURIComponent(site)}/export.xlsx`, `${site}.xlsx`);
});
document.getElementById("template").addEventListener("click", () => workbook("sites/template.xlsx", "site-template.xlsx"));
document.querySelector("#upload input[type=file]").addEventListener("change", () => {
  last = null; next = "apply"; document.getElementById("apply").disabled = true; texts();
});
document.addEventListener("clausewatch:lang", texts);
sites();
