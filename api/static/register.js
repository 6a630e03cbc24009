// The register page: search /api/v1/register, show one clause from /api/v1/register/{id}.
// Text from the API always goes in through textContent. Token: #token=… or the form, kept in
// sessionStorage like the energy page (token, api, el and pct are in pagekit.js).
"use strict";

const form = document.getElementById("controls");
const statusLine = document.getElementById("status");
const detail = document.getElementById("detail");

async function search(event) {
  if (event) event.preventDefault();
  const params = Object.fromEntries(
    ["q", "domain", "key", "confidence", "status"].map((k) => [k, form.elements[k].value]));
  statusLine.textContent = "Searching…";
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
      row.append(cell, el("td", entry.status.replace("_", " "), { class: `status-${entry.status}` }));
      row.addEventListener("click", () => show(entry.clause_id, row));
      body.append(row);
    }
    statusLine.textContent = `${entries.length} clauses`;
  } catch (error) {
    statusLine.textContent = `Could not search: ${error.message}`;
  }
}

async function show(clauseId, row) {
  document.querySelectorAll("tr.picked").forEach((r) => r.classList.remove("picked"));
  row.classList.add("picked");
  detail.replaceChildren(el("p", "Loading…"));
  try {
    const clause = await api(`register/${encodeURIComponent(clauseId)}`);
    detail.replaceChildren(el("h2", `${clause.standard.code} · ${clause.clause_id}`));
    detail.append(el("p", `${clause.standard.title} · ${clause.domain} · confidence ${clause.confidence}` +
      (clause.key ? " · key clause" : "")));
    detail.append(el("h3", "Versions"));
    for (const version of clause.versions) {
      const box = el("div");
      box.append(el("h4", `v${version.version} ${version.number} — ${version.status.replace("_", " ")}` +
        ` (${version.effective_from} – ${version.effective_to || "open"})`));
      box.append(el("p", version.text || version.title));
      if (version.changes.length) {
        const table = el("table");
        const head = el("tr");
        head.append(el("th", "changed"), el("th", "before"), el("th", "after"));
        table.append(head);
        for (const change of version.changes) {
          const tr = el("tr");
          tr.append(el("td", change.path), el("td", JSON.stringify(change.before)),
            el("td", JSON.stringify(change.after)));
          table.append(tr);
        }
        box.append(table);
      }
      detail.append(box);
    }
    detail.append(el("h3", "Where it applies"));
    if (!clause.sites.length) detail.append(el("p", "Nowhere in the sites this token sees.", { class: "muted" }));
    for (const site of clause.sites) {
      detail.append(el("h4", `${site.site}: compliance ${pct(site.compliance_rate)} (30 days),` +
        ` ${site.open_alerts} open alerts`));
      detail.append(el("p", `Spaces: ${site.spaces.join(", ")}`));
      const sources = site.data_sources.map((s) => `${s.device} (${s.metrics.join(", ")})`);
      detail.append(el("p", `Data sources: ${sources.join("; ") || site.events.join(", ") || "none"}`));
      const people = site.responsible.map((p) => `${p.name} (${p.role} L${p.level}, ${p.domain}, ${p.space})`);
      detail.append(el("p", `Responsible: ${people.join("; ") || "nobody"}`));
    }
  } catch (error) {
    detail.replaceChildren(el("p", `Could not load the clause: ${error.message}`));
  }
}

form.addEventListener("submit", search);
token();
search();
