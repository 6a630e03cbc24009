// The energy page: reads /api/v1/carbon, /api/v1/energy and /api/v1/energy/quotas and draws
// inline SVG charts; imports bills and manual readings (POST /api/v1/energy/bills). No build
// step, no library. Every text from the API goes in via textContent. Figures that include bills
// or manual readings say so (their parts: `billed`, `manual`).
//
// Requests go through request.js (pagekit.js's fetchApi and upload): a signed-in user's cookie
// with its CSRF token, or a machine token from #token=…. Site and period come from the query
// string (?site=&since=&until=); without them the page opens on the month of the site's data
// clock (data_time of GET /sites: the demo's building lives on simulated time), and quotas are
// judged at that time, not at the wall clock's.
"use strict";

const SVG_NS = "http://www.w3.org/2000/svg";
const CARRIERS = ["electricity", "natural_gas", "heat", "gasoline", "diesel"];
const KGCE_PER_UNIT = {  // GB/T 2589-2020, as the reports use them (heat per GJ)
  electricity: 0.1229, natural_gas: 1.2143, heat: 34.12, gasoline: 1.4714, diesel: 1.4571,
};
const TARGET_KGCE_PER_M2_YEAR = 18.48 * 0.95;  // 14th five-year plan, 2025 vs 2020
const form = document.getElementById("controls");
const english = () => L(true, false);
const CARRIER_ZH = { electricity: "电力", natural_gas: "天然气", heat: "热力", gasoline: "汽油",
  diesel: "柴油", water: "水" };
const carrierName = (c) => (english() ? c.replace("_", " ") : CARRIER_ZH[c] || c);
const STATUS_ZH = { ok: "正常", within: "未超限", forecast_overrun: "预计超限", breach: "已超限",
  exceeds: "超限", not_assessable: "无法评估" };
const statusLine = document.getElementById("status");
// The API gives every note in both languages: `note` / `notes` / `name` in English, the same in
// Chinese under the `_zh` key (energy/notes.py). The page shows the one of its language.
const said = (item, key) => (english() ? item[key] : item[`${key}_zh`]);
const PURPOSE_ZH = { location: "基于位置", market: "基于市场", scope1: "范围一" };
const PERIOD_ZH = { day: "日", week: "周", month: "月", quarter: "季度", year: "年" };

// An HTML or SVG (svg:…) element (pagekit.js's el makes HTML only).
function make(tag, attrs = {}, text) {
  const node = tag.startsWith("svg:")
    ? document.createElementNS(SVG_NS, tag.slice(4))
    : document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) node.setAttribute(key, value);
  if (text !== undefined) node.textContent = text;
  return node;
}

// Money as the API gives it: yuan with 2 decimals (the sums are of the exact values).
function money(value) {
  if (value === null || value === undefined || value === "") return "–";
  return Number(value).toLocaleString("en", { minimumFractionDigits: 2, maximumFractionDigits: 2 });
}

function fmt(value, digits = 1) {
  if (value === null || value === undefined || value === "") return "–";
  return Number(value).toLocaleString("en", { maximumFractionDigits: digits });
}

function colour(carrier) {
  return getComputedStyle(document.documentElement).getPropertyValue(`--${carrier}`).trim() || "#888";
}

// ---- charts ----

function frame(width, height) {
  return make("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img" });
}

function tick(value, max) {
  if (max >= 10000) return Number(value).toLocaleString("en", { notation: "compact" });
  return fmt(value, max < 1 ? 3 : max < 10 ? 2 : 0);
}

function axisY(svg, box, max, label) {
  for (let i = 0; i <= 4; i++) {
    const value = (max * i) / 4;
    const y = box.bottom - ((box.bottom - box.top) * i) / 4;
    svg.append(make("svg:line", { x1: box.left, x2: box.right, y1: y, y2: y, stroke: "#e5e9ef" }));
    svg.append(make("svg:text", { x: box.left - 4, y: y + 4, "text-anchor": "end" }, tick(value, max)));
  }
  svg.append(make("svg:text", { x: box.left, y: box.top - 6 }, label));
}

function niceMax(value) {
  if (!(value > 0)) return 1;
  const step = 10 ** Math.floor(Math.log10(value)) / 2;
  return Math.ceil((value * 1.05) / step) * step;
}

// Stacked bars: groups = [{label, parts: {carrier: value}}]
function stackedBars(container, groups, unit, width = 640) {
  const height = 240;
  const box = { left: 56, right: width - 10, top: 20, bottom: height - 28 };
  const svg = frame(width, height);
  const max = niceMax(Math.max(0, ...groups.map((g) => Object.values(g.parts).reduce((a, b) => a + b, 0))));
  axisY(svg, box, max, unit);
  const slot = (box.right - box.left) / Math.max(groups.length, 1);
  const barWidth = Math.max(2, Math.min(48, slot * 0.7));
  const labelEvery = Math.ceil(groups.length / 16);
  groups.forEach((group, index) => {
    let y = box.bottom;
    const x = box.left + slot * index + (slot - barWidth) / 2;
    for (const carrier of CARRIERS) {
      const value = group.parts[carrier] || 0;
      if (value <= 0) continue;
      const h = ((box.bottom - box.top) * value) / max;
      y -= h;
      const bar = make("svg:rect", { x, y, width: barWidth, height: h, fill: colour(carrier),
                                   "data-carrier": carrier });
      const flag = (group.flags && group.flags[carrier]) || "";
      bar.append(make("svg:title", {}, `${group.label} ${carrier}: ${fmt(value, 3)} ${unit}${flag}`));
      if (flag) bar.setAttribute("data-flagged", "true");
      svg.append(bar);
    }
    if (index % labelEvery === 0) {
      svg.append(make("svg:text", { x: x + barWidth / 2, y: box.bottom + 14, "text-anchor": "middle" },
                    group.label));
    }
  });
  container.replaceChildren(svg);
}

function lineChart(container, points, unit, reference) {
  const width = 640, height = 240;
  const box = { left: 56, right: width - 10, top: 20, bottom: height - 28 };
  const svg = frame(width, height);
  const max = niceMax(Math.max(reference || 0, ...points.map((p) => p.value)));
  axisY(svg, box, max, unit);
  const step = (box.right - box.left) / Math.max(points.length - 1, 1);
  const xy = (p, i) => [box.left + step * i, box.bottom - ((box.bottom - box.top) * p.value) / max];
  if (reference) {
    const y = box.bottom - ((box.bottom - box.top) * reference) / max;
    svg.append(make("svg:line", { x1: box.left, x2: box.right, y1: y, y2: y, stroke: "#c0392b",
                                "stroke-dasharray": "6 4" }));
  }
  svg.append(make("svg:polyline", { points: points.map((p, i) => xy(p, i).join(",")).join(" "),
                                  fill: "none", stroke: colour("electricity"), "stroke-width": 2,
                                  class: "trend" }));
  const labelEvery = Math.ceil(points.length / 16);
  points.forEach((p, i) => {
    const [x, y] = xy(p, i);
    const dot = make("svg:circle", { cx: x, cy: y, r: 2.5, fill: colour("electricity") });
    dot.append(make("svg:title", {}, `${p.label}: ${fmt(p.value, 4)} ${unit}`));
    svg.append(dot);
    if (i % labelEvery === 0) {
      svg.append(make("svg:text", { x, y: box.bottom + 14, "text-anchor": "middle" }, p.label));
    }
  });
  container.replaceChildren(svg);
}

function burnDown(quota) {
  const width = 360, height = 170;
  const box = { left: 56, right: width - 10, top: 20, bottom: height - 24 };
  const svg = frame(width, height);
  const start = Date.parse(quota.period_start), end = Date.parse(quota.period_end);
  const budget = Number(quota.budget || 0), forecast = Number(quota.forecast || 0);
  const max = niceMax(Math.max(budget, forecast, Number(quota.consumed)));
  axisY(svg, box, max, quota.unit);
  const x = (t) => box.left + ((box.right - box.left) * (t - start)) / (end - start);
  const y = (v) => box.bottom - ((box.bottom - box.top) * v) / max;
  if (budget) {
    svg.append(make("svg:line", { x1: x(start), y1: y(0), x2: x(end), y2: y(budget), stroke: "#5b6775",
                                "stroke-dasharray": "3 3", class: "budget" }));
    svg.append(make("svg:line", { x1: box.left, x2: box.right, y1: y(budget), y2: y(budget),
                                stroke: "#c0392b", class: "budget-total" }));
  }
  const curve = [[start, 0], ...quota.curve.map((p) => [Date.parse(p.at), Number(p.cumulative)])];
  svg.append(make("svg:polyline", { points: curve.map(([t, v]) => `${x(t)},${y(v)}`).join(" "),
                                  fill: "none", stroke: colour("electricity"), "stroke-width": 2,
                                  class: "consumed" }));
  if (forecast) {
    const [lastT, lastV] = curve[curve.length - 1];
    svg.append(make("svg:line", { x1: x(lastT), y1: y(lastV), x2: x(end), y2: y(forecast),
                                stroke: colour("natural_gas"), "stroke-dasharray": "6 4",
                                class: "forecast" }));
  }
  svg.append(make("svg:text", { x: box.left, y: box.bottom + 16 }, quota.period_start.slice(0, 10)));
  svg.append(make("svg:text", { x: box.right, y: box.bottom + 16, "text-anchor": "end" },
                quota.period_end.slice(0, 10)));
  return svg;
}

// ---- tables ----

function table(id, header, rows) {
  const node = document.getElementById(id);
  const head = make("tr");
  header.forEach((h) => head.append(make("th", {}, h)));
  node.replaceChildren(head);
  for (const row of rows) {
    const tr = make("tr");
    for (const cell of row) {
      if (cell instanceof Node) { const td = make("td"); td.append(cell); tr.append(td); continue; }
      const numeric = cell !== null && cell !== "" && !Number.isNaN(Number(cell));
      tr.append(make("td", numeric ? { class: "num" } : {}, cell === null ? "–" : String(cell)));
    }
    node.append(tr);
  }
}

function badge(status) {
  return make("span", { class: `badge ${status}` }, english() ? status.replace("_", " ") : STATUS_ZH[status] || status);
}

// ---- the page ----

function monthLabel(iso) { return iso.slice(0, 7); }

// What part of a figure came from bills or manual readings, as a short suffix ("" if none).
function flags(item, unit = "") {
  const parts = [];
  if (Number(item.billed)) parts.push(`${L("billed", "账单")} ${fmt(item.billed, 3)}${unit}`);
  if (Number(item.manual)) parts.push(`${L("manual (estimated)", "手工/估计")} ${fmt(item.manual, 3)}${unit}`);
  return parts.length ? ` (${parts.join(", ")})` : "";
}

function addGroup(map, key, carrier, kgce, item) {
  if (!map.has(key)) map.set(key, { label: key, parts: {}, flags: {} });
  const group = map.get(key);
  group.parts[carrier] = (group.parts[carrier] || 0) + kgce;
  const flag = flags(item);
  if (flag) group.flags[carrier] = flag;
}

function render(report, daily, quotas) {
  const area = Number(report.intensity.area_m2 || 0);
  const tiles = [
    ["kgce", report.kgce, L("energy, standard coal", "综合能耗（标准煤）") + flags({ billed: report.billed_kgce, manual: report.manual_kgce })],
    [L("t CO2 (location)", "t CO2（基于位置）"), report.total_location_tco2, L("scope 1 + scope 2 location-based", "范围一 + 范围二，基于位置") + flags({ billed: report.billed_tco2, manual: report.manual_tco2 }, " t")],
    [L("t CO2 (market)", "t CO2（基于市场）"), report.total_market_tco2, report.green_kwh ? L(`${fmt(report.green_kwh)} kWh green at 0`, `绿电 ${fmt(report.green_kwh)} kWh 按 0 计`) : L("no green-power records", "无绿电记录")],
    ["kgce / m²", report.intensity.kgce_per_m2, `${fmt(report.intensity.area_m2)} m²`],
    [L("kgce / person", "kgce / 人"), report.intensity.kgce_per_person, L(`${report.intensity.occupants ?? "–"} people`, `${report.intensity.occupants ?? "–"} 人`)],
    ["kg CO2 / m²", report.intensity.kgco2_per_m2, L("location-based", "基于位置")],
  ];
  const cost = report.cost;
  if (cost) {
    const split = L(`billed ${money(cost.billed)}, estimated ${money(cost.estimated)}`,
                    `账单 ${money(cost.billed)}，估算 ${money(cost.estimated)}`);
    tiles.push([L("cost (yuan)", "运行成本（元）"), cost.total, split, true],
               [L("yuan / m²", "元 / m²"), cost.per_m2, `${fmt(cost.area_m2)} m²`, true],
               [L("yuan / person", "元 / 人"), cost.per_person, L(`${cost.occupants ?? "–"} people`, `${cost.occupants ?? "–"} 人`), true]);
  }
  document.getElementById("summary").replaceChildren(...tiles.map(([label, value, hint, isMoney]) => {
    const tile = make("div", { class: isMoney ? "tile cost" : "tile" });
    tile.append(make("div", { class: "label" }, label),
                make("div", { class: "value" }, isMoney ? money(value) : fmt(value, 3)),
                make("div", { class: "label" }, hint));
    return tile;
  }));

  const months = new Map();
  for (const m of report.months) {
    if (!(m.carrier in KGCE_PER_UNIT)) continue;
    addGroup(months, monthLabel(m.start), m.carrier, Number(m.kgce), m);
  }
  stackedBars(document.getElementById("monthly-chart"), [...months.values()], "kgce");
  document.getElementById("monthly-legend").replaceChildren(
    ...CARRIERS.filter((c) => report.carriers.some((r) => r.carrier === c)).map((c) => {
      const item = make("span", {}, carrierName(c));
      // Through the CSSOM: a style attribute is inline style, which the page's policy refuses.
      item.style.setProperty("--swatch", colour(c));
      return item;
    }));

  const days = new Map();
  for (const p of daily.points) {
    if (!(p.carrier in KGCE_PER_UNIT)) continue;
    addGroup(days, p.start.slice(5, 10), p.carrier, Number(p.value) * KGCE_PER_UNIT[p.carrier], p);
  }
  stackedBars(document.getElementById("daily-chart"), [...days.values()], "kgce", 1300);

  // Intensity trend: per month, or per day when the period is shorter than two months.
  const perMonth = months.size >= 2;
  const source = perMonth ? [...months.values()] : [...days.values()];
  const trend = source.map((g) => ({
    label: g.label,
    value: area ? Object.values(g.parts).reduce((a, b) => a + b, 0) / area : 0,
  }));
  const reference = area ? TARGET_KGCE_PER_M2_YEAR / (perMonth ? 12 : 365) : 0;
  document.getElementById("intensity-caption").textContent =
    L(`Intensity trend (kgce per m² per ${perMonth ? "month" : "day"}; dashed: the 2025 target ` +
      `${fmt(TARGET_KGCE_PER_M2_YEAR, 3)} kgce/(m²·a) pro rata)`,
      `能耗强度趋势（kgce/m²·${perMonth ? "月" : "日"}；虚线：2025 年目标 ` +
      `${fmt(TARGET_KGCE_PER_M2_YEAR, 3)} kgce/(m²·a) 按时间折算）`);
  lineChart(document.getElementById("intensity-chart"), trend,
            perMonth ? L("kgce/m² per month", "kgce/m²·月") : L("kgce/m² per day", "kgce/m²·日"), reference);

  const quotaBox = document.getElementById("quotas");
  quotaBox.replaceChildren(...quotas.map((q) => {
    const card = make("div", { class: "quota", "data-clause": q.clause_id });
    const title = make("div");
    title.append(make("strong", {}, `${q.clause_id} v${q.version}`), " ", badge(q.status));
    card.append(title, make("div", {}, `${q.title} — ${q.device} (${q.space}), ${english() ? q.period : PERIOD_ZH[q.period] || q.period}`));
    card.append(make("div", {}, L(`consumed ${fmt(q.consumed)} of ${fmt(q.budget)} ${q.unit}; ` +
                                `to date ${fmt(q.budget_to_date)}; forecast ${fmt(q.forecast)}`,
                                `已用 ${fmt(q.consumed)} / ${fmt(q.budget)} ${q.unit}；` +
                                `至今应用 ${fmt(q.budget_to_date)}；预测 ${fmt(q.forecast)}`) +
                              (Number(q.missing_hours) > 0 ? L(`; ${fmt(q.missing_hours)} h without data`, `；${fmt(q.missing_hours)} 小时无数据`) : "")));
    card.append(burnDown(q));
    return card;
  }));
  if (!quotas.length) quotaBox.replaceChildren(make("p", {}, L("No quota clause in force for this site.", "本站点没有现行的定额条款。")));

  table("carriers", english() ? ["carrier", "consumption", "unit", "estimated", "billed", "manual", "kgce", "scope", "t CO2 location", "of it billed / manual", "t CO2 market"]
                              : ["品种", "消耗量", "单位", "估算", "账单", "手工/估计", "kgce", "范围", "t CO2（位置）", "其中账单 / 手工", "t CO2（市场）"],
        report.carriers.map((c) => [carrierName(c.carrier), c.consumption, c.unit, c.estimated, c.billed, c.manual, c.kgce, c.scope, c.location_tco2,
                                    c.location_tco2 === null ? null : `${c.billed_tco2} / ${c.manual_tco2}`, c.market_tco2]));
  table("comparisons", english() ? ["", "annualised", "limit", "unit", "status"] : ["", "年化值", "限值", "单位", "状态"],
        report.comparisons.map((c) => [said(c, "name"), c.annualised_actual, c.limit, english() ? c.unit : c.unit.replace("person", "人"), badge(c.status)]));
  table("factors", english() ? ["use", "carrier", "year", "series", "region", "data year", "value", "unit", "instrument", "note"]
                             : ["用途", "品种", "年份", "系列", "区域", "数据年份", "数值", "单位", "出处", "说明"],
        report.factors.map((f) => [english() ? f.purpose : PURPOSE_ZH[f.purpose] || f.purpose, carrierName(f.carrier), f.year, f.series, f.region, f.data_year, f.value, f.unit, `${f.instrument} (${f.confidence})`, said(f, "note")]));
  table("meters", english() ? ["meter", "space", "carrier", "consumption", "unit", "readings", "resets", "gaps", "missing", "counted"]
                            : ["计量表", "空间", "品种", "消耗量", "单位", "读数", "归零", "间断", "缺失", "计入"],
        report.meters.map((m) => [m.device, m.space, carrierName(m.carrier), m.consumption, m.unit, m.readings, m.resets.length, m.gaps.length, m.missing.length, m.counted ? L("yes", "是") : L(`in ${m.parent}`, `含于 ${m.parent}`)]));
  table("imbalances", english() ? ["parent", "children", "parent", "Σ children", "imbalance", "%"]
                                : ["总表", "分表", "总表读数", "Σ 分表", "差值", "%"],
        report.imbalances.map((i) => [i.parent, i.children.join(" + "), i.parent_value, i.children_value, i.imbalance, i.imbalance_pct]));
  const use = (b) => (b.counted ? L("counted", "计入") : b.metered !== null ? L("beside the meter", "与表计对照") : L("not counted", "不计入"));
  table("bills", english() ? ["kind", "carrier", "where", "period", "bill", "unit", "cost (CNY)", "metered", "metered − bill", "%", "use"]
                           : ["类型", "品种", "位置", "账期", "账单量", "单位", "费用（元）", "表计量", "表计 − 账单", "%", "用途"],
        report.bills.map((b) => [b.kind === "billed" ? L("billed", "账单") : L("manual (estimated)", "手工/估计"), carrierName(b.carrier),
                                 b.device || b.space || report.site, `${b.first_day}…${b.last_day}`, b.amount, b.unit, b.cost,
                                 b.metered, b.difference, b.difference_pct, use(b)]));
  const bandName = (b) => (english() ? b.band : b.label.split(" ")[0]);
  table("costs", english() ? ["carrier", "cost (yuan)", "billed", "estimated", "tariff estimate", "priced", "unit", "by period", "no tariff"]
                           : ["品种", "费用（元）", "账单", "估算", "按价格估算", "计价量", "单位", "分时段", "无价格"],
        (cost ? cost.carriers : []).map((c) => [carrierName(c.carrier), money(c.cost), money(c.billed_cost), money(c.estimated_cost),
                                                money(c.tariff_estimate), c.consumption, c.unit,
                                                c.bands.map((b) => `${bandName(b)} ${fmt(b.consumption, 3)} ${c.unit} ${money(b.cost)}`).join("; "),
                                                c.untariffed]));
  table("cost-bills", english() ? ["bill", "carrier", "period", "bill cost", "tariff estimate", "bill − estimate", "%"]
                                : ["账单", "品种", "账期", "账单费用", "按价格估算", "账单 − 估算", "%"],
        (cost ? cost.bills : []).map((b) => [`#${b.id} ${b.reference}`, carrierName(b.carrier), `${b.first_day}…${b.last_day}`,
                                             money(b.cost), money(b.tariff_estimate), money(b.difference), b.difference_pct]));
  const notes = said(report, "notes").concat(cost ? said(cost, "notes") : []);
  document.getElementById("notes").replaceChildren(...notes.map((n) => make("li", {}, n)));
  labels();
}

// ---- importing bills ----

const MAX_BILL_BYTES = 1024 * 1024;  // energy/bills.py MAX_FILE_BYTES
const XLSX = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const billForm = document.getElementById("bill-form");
const billStatus = document.getElementById("bill-status");

// Texts of the parts nav.js does not label.
function labels() {
  document.getElementById("cost-title").textContent = L("Operating cost (yuan; estimated: priced at the tariff)", "运行成本（元；估算：按价格计算）");
  document.getElementById("cost-bills-title").textContent = L("Bills' costs beside the tariff estimate", "账单费用与按价格估算对照");
  document.getElementById("bills-title").textContent = L("Bills and manual readings", "账单与手工抄表");
  document.getElementById("import-title").textContent = L("Import bills and manual readings", "导入账单与手工抄表");
  document.getElementById("bill-file-label").textContent = L("File (.csv or .xlsx)", "文件（.csv 或 .xlsx）");
  document.getElementById("bill-check").textContent = L("Check (dry run)", "检查（不保存）");
  document.getElementById("bill-apply").textContent = L("Import", "导入");
}

function showImport(result) {
  const state = result.dry_run ? L("checked, nothing stored", "已检查，未保存")
    : result.applied ? L("stored", "已保存") : L("nothing stored: fix the errors", "未保存：请改正错误");
  billStatus.className = result.errors.length ? "error" : "";
  billStatus.textContent = L(
    `${result.file}: ${result.rows} rows — ${result.new} new, ${result.corrected} corrected, ${result.unchanged} unchanged, ${result.errors.length} errors; ${state}`,
    `${result.file}：${result.rows} 行 — 新增 ${result.new}，更正 ${result.corrected}，未变 ${result.unchanged}，错误 ${result.errors.length}；${state}`);
  document.getElementById("bill-errors").replaceChildren(...result.errors.map((e) =>
    make("li", { class: "bill-error" },
       `${e.sheet ? e.sheet + "!" : ""}${L("row", "第")} ${e.row}${L("", " 行")}${e.column ? " " + e.column : ""}: ${e.message}`)));
}

async function importBills(event) {
  event.preventDefault();
  const file = billForm.elements.file.files[0];
  if (!file) return;
  document.getElementById("bill-errors").replaceChildren();
  if (file.size > MAX_BILL_BYTES) {
    billStatus.className = "error";
    billStatus.textContent = L("The file is over 1 MiB: split it.", "文件超过 1 MiB，请拆分。");
    return;
  }
  const dry = !event.submitter || event.submitter.value === "dry";
  const xlsx = file.name.toLowerCase().endsWith(".xlsx");
  const params = { filename: file.name.replace(/[\/\\]/g, "_"), dry_run: String(dry) };
  billStatus.className = "";
  billStatus.textContent = L("Sending…", "发送中…");
  try {
    const answer = await upload("POST", "energy/bills", {
      params, body: await file.arrayBuffer(), type: xlsx ? XLSX : "text/csv",
    });
    const body = await answer.json();
    const result = answer.ok ? body : answer.status === 422 ? body.result : undefined;
    if (result) {
      showImport(result);
      if (result.applied) await load();
      return;
    }
    billStatus.className = "error";
    billStatus.textContent = `${answer.status} ${JSON.stringify(body.detail)}`;
  } catch (error) {
    billStatus.className = "error";
    billStatus.textContent = `${L("Could not send", "无法发送")}: ${error.message}`;
  }
}

async function csvLink(id, path, params) {
  const link = document.getElementById(id);
  const answer = await fetchApi(path, { ...params, format: "csv" });
  const blob = await answer.blob();
  if (link.href.startsWith("blob:")) URL.revokeObjectURL(link.href);
  link.href = URL.createObjectURL(blob);
  link.download = `${path.replace("/", "-")}-${params.site}-${params.since}.csv`;
}

let shown = null; // what the page last drew, drawn again when the language changes

async function load() {
  const params = { site: form.elements.site.value, since: form.elements.since.value,
                   until: form.elements.until.value };
  if (form.elements.space.value) params.space = form.elements.space.value;
  history.replaceState(null, "", `${location.pathname}?${new URLSearchParams(params)}`);
  statusLine.className = "";
  statusLine.textContent = L("Loading…", "加载中…");
  try {
    const report = await api("carbon", params);
    const daily = await api("energy", { ...params, bucket: "day", by: "carrier" });
    // Quotas are judged at the site's "now" (its data clock), or at the period's end if sooner.
    const now = (await siteClock(params.site)).at;
    const at = new Date(Math.min(now.getTime(), Date.parse(report.until) - 1000)).toISOString();
    const quotas = await api("energy/quotas", { site: params.site, at, space: params.space || "" });
    shown = { report, daily, quotas };
    render(report, daily, quotas);
    await csvLink("csv-carbon", "carbon", params);
    await csvLink("csv-energy", "energy", { ...params, bucket: "day", by: "meter" });
    // The site's 台账 (its alerts with cause and action) for the same days: until is exclusive.
    const lastDay = new Date(Date.parse(`${params.until}T00:00:00Z`) - 86400000).toISOString().slice(0, 10);
    linkFile(document.getElementById("csv-ledger"), "alerts/ledger.csv",
      { site: params.site, first_day: params.since, last_day: lastDay },
      `taizhang-${params.site}-${params.since}-${lastDay}.csv`,
      (error) => { statusLine.className = "error"; statusLine.textContent = `${L("Could not download", "无法下载")}: ${error.message}`; });
    shown.status = () => `${report.site}${report.space ? " / " + report.space : ""}: ` +
      `${report.since.slice(0, 10)} ${L("to", "至")} ${report.until.slice(0, 10)} (${report.timezone}), ` +
      `${fmt(report.days, 2)} ${L("days", "天")}`;
    statusLine.textContent = shown.status();
    document.body.dataset.loaded = "true";
  } catch (error) {
    statusLine.className = "error";
    statusLine.textContent = `${L("Could not load", "无法加载")}: ${error.message}`;
  }
}

async function start() {
  const query = new URLSearchParams(location.search);
  form.elements.site.value = query.get("site") || "demo-hq";
  form.elements.space.value = query.get("space") || "";
  // The period with data: the month of the site's data clock (the wall clock's before any data).
  const { at, zone } = await siteClock(form.elements.site.value);
  form.elements.since.value = query.get("since") || monthStart(at, zone);
  form.elements.until.value = query.get("until") || monthStart(at, zone, 1);
  form.addEventListener("submit", (event) => { event.preventDefault(); load(); });
  billForm.addEventListener("submit", importBills);
  labels();
  document.addEventListener("clausewatch:lang", () => {
    labels();
    if (!shown) return;
    render(shown.report, shown.daily, shown.quotas);
    if (shown.status) statusLine.textContent = shown.status();
  });
  load();
}

start();
