// The shared top of the energy, register, statistics and sign-in pages (after request.js): the one language choice of the
// whole product (localStorage "clausewatch.lang", also used by the dashboard; Chinese unless
// English was chosen), applied to every element with data-i18n / data-i18n-placeholder, the
// shared navigation with its language button. A page's own script listens to "clausewatch:lang" to redraw
// what it wrote itself. Loaded before the page's script; it defines window.clausewatchLang only.
"use strict";

(() => {
  const KEY = "clausewatch.lang";
  const csrf = window.clausewatchCsrf; // the session's CSRF token (request.js, loaded first)
  const LABELS = {
    zh: {
      alerts: "告警", energy: "能耗与碳排放", register: "标准条款库", statistics: "统计",
      checkin: "签到二维码", users: "用户管理", me: "我的订阅",
      api: "API", other_language: "English", sign_out: "退出",
      energy_title: "能耗与碳排放", register_title: "标准条款库", statistics_title: "统计",
      site: "站点", space: "空间", whole_site: "整个站点", from: "起", until: "止（不含）",
      show: "显示", carbon_csv: "碳排放 CSV", energy_csv: "逐日能耗 CSV", ledger_csv: "告警台账 CSV",
      monthly_energy: "分品种月能耗（kgce，GB/T 2589-2020）", intensity: "能耗强度趋势",
      daily_energy: "分品种日能耗（kgce）", quotas: "定额条款：消耗进度与预测",
      by_carrier: "分品种", against_quota: "与定额和目标对比（年化）",
      factors: "所用排放因子", meters: "计量表", imbalance: "分项计量不平衡", notes: "说明",
      search: "搜索", domain: "领域", key: "关键条款", confidence: "可信度", status: "状态",
      any: "全部", is_key: "关键", not_key: "非关键", in_force: "现行", planned: "待实施",
      superseded: "已废止", standard: "标准", clause: "条款", organisation: "组织",
      search_hint: "室内温度、甲醛、GB 50736…",
      pending_revisions: "待审批与待发布的修订", change: "修订内容", state: "状态", revised: "条款或站点",
      sites: "站点模型", sites_title: "站点模型：批量导入与导出",
      page_energy: "能耗与碳排放 · 条款守望", page_register: "标准条款库 · 条款守望",
      page_statistics: "统计 · 条款守望", page_login: "登录 · 条款守望",
    },
    en: {
      alerts: "Alerts", energy: "Energy & carbon", register: "Register", statistics: "Statistics",
      checkin: "Check-in codes", users: "Users", me: "My subscriptions",
      api: "API", other_language: "中文", sign_out: "Sign out",
      energy_title: "Energy and carbon", register_title: "Standards register",
      statistics_title: "Statistics",
      site: "Site", space: "Space", whole_site: "whole site", from: "From",
      until: "To (exclusive)", show: "Show", carbon_csv: "carbon CSV",
      energy_csv: "daily energy CSV", ledger_csv: "alert ledger (台账) CSV",
      monthly_energy: "Monthly energy by carrier (kgce, GB/T 2589-2020)",
      intensity: "Intensity trend", daily_energy: "Daily energy by carrier (kgce)",
      quotas: "Quota clauses: burn-down and forecast", by_carrier: "By carrier",
      against_quota: "Against quota and targets (annualised)", factors: "Emission factors used",
      meters: "Meters", imbalance: "Sub-meter imbalance", notes: "Notes", search: "Search",
      domain: "Domain", key: "Key", confidence: "Confidence", status: "Status", any: "any",
      is_key: "key", not_key: "not key", in_force: "in force", planned: "planned",
      superseded: "superseded", standard: "Standard", clause: "Clause",
      organisation: "Organisation", search_hint: "indoor temperature, formaldehyde, GB 50736…",
      pending_revisions: "Revisions awaiting approval or publication", change: "Change", revised: "Clause or site",
      state: "State",
      sites: "Sites", sites_title: "Site model: bulk import and export",
      page_energy: "Energy and carbon · clausewatch", page_register: "Standards register · clausewatch",
      page_statistics: "Statistics · clausewatch", page_login: "Sign in · clausewatch",
    },
  };
  const lang = () => (localStorage.getItem(KEY) === "en" ? "en" : "zh");

  function apply() {
    const labels = LABELS[lang()];
    document.documentElement.lang = lang() === "zh" ? "zh-CN" : "en";
    for (const node of document.querySelectorAll("[data-i18n]")) {
      const text = labels[node.dataset.i18n];
      if (text !== undefined) node.textContent = text;
    }
    for (const node of document.querySelectorAll("[data-i18n-placeholder]")) {
      const text = labels[node.dataset.i18nPlaceholder];
      if (text !== undefined) node.placeholder = text;
    }
    const toggle = document.getElementById("lang-toggle");
    if (toggle) toggle.textContent = labels.other_language;
    document.dispatchEvent(new CustomEvent("clausewatch:lang", { detail: lang() }));
    // Labelled and navigable: the page may show (site.css, "labelling").
    document.documentElement.classList.remove("labelling");
  }

  // The navigation of every page but the dashboard (which has its own, with the connection state
  // and sign-out): the same links in the same order, the current page marked.
  const LINKS = [["/", "alerts"], ["/energy", "energy"], ["/register", "register"],
    ["/statistics", "statistics"], ["/sites", "sites"], ["/checkin/sheet", "checkin"],
    ["/users", "users"], ["/docs", "api"]];
  const nav = document.querySelector("nav.site-nav[data-current]");
  if (nav) {
    for (const [href, key] of LINKS) {
      const link = document.createElement("a");
      link.href = href;
      link.dataset.i18n = key;
      if (href === nav.dataset.current) link.setAttribute("aria-current", "page");
      nav.append(link);
    }
    const toggle = document.createElement("button");
    toggle.id = "lang-toggle";
    toggle.type = "button";
    nav.append(toggle);
    if (csrf()) { // signed in as a user (the session cookie itself is HttpOnly)
      const mine = document.createElement("a"); // the user's own contacts and subscriptions
      mine.href = "/me";
      mine.dataset.i18n = "me";
      if (nav.dataset.current === "/me") mine.setAttribute("aria-current", "page");
      nav.append(mine);
      const out = document.createElement("button");
      out.id = "sign-out";
      out.type = "button";
      out.dataset.i18n = "sign_out";
      out.addEventListener("click", () => window.clausewatchSignOut());
      nav.append(out);
    }
  }


  window.clausewatchLang = lang;
  document.addEventListener("DOMContentLoaded", () => {
    const toggle = document.getElementById("lang-toggle");
    if (toggle) {
      toggle.addEventListener("click", () => {
        localStorage.setItem(KEY, lang() === "zh" ? "en" : "zh");
        apply();
      });
    }
    apply();
  });
})();
