// The signed-in user's own page (/me): their contact points (GET/PUT /api/v1/me/contacts) and
// subscriptions (GET/POST/DELETE /api/v1/me/subscriptions). Changes carry the session's CSRF
// token (nav.js); text from the API goes in through textContent. Not signed in: to /login.
"use strict";

(() => {
  const TEXT = {
    zh: {
      page_title: "clausewatch · 我的订阅", title: "我的订阅", contacts: "我的联系方式",
      email: "电子邮件", mobile: "手机号码", save: "保存", saved: "已保存", name: "名称",
      site: "站点（留空：我能看到的全部站点）", domain: "条款领域（留空：全部）",
      severity: "严重程度", critical: "严重", major: "重要", warning: "警告", info: "提示",
      channels: "通知方式", by_email: "电子邮件", by_sms: "短信",
      send_resolved: "告警恢复或关闭时也通知我", subscribe: "订阅", subscribed: "已订阅",
      remove: "取消订阅", none: "还没有订阅", all_sites: "全部站点", failed: "操作失败",
    },
    en: {
      page_title: "clausewatch · my subscriptions", title: "My subscriptions",
      contacts: "My contact points", email: "E-mail", mobile: "Mobile number", save: "Save",
      saved: "Saved", name: "Name", site: "Site (empty: every site I can see)",
      domain: "Clause domain (empty: all)", severity: "Severity", critical: "critical",
      major: "major", warning: "warning", info: "info", channels: "Notify me by",
      by_email: "e-mail", by_sms: "SMS", send_resolved: "Also when the alert is resolved or closed",
      subscribe: "Subscribe", subscribed: "Subscribed", remove: "Unsubscribe",
      none: "No subscriptions yet", all_sites: "every site", failed: "That did not work",
    },
  };
  const lang = () => (typeof window.clausewatchLang === "function" ? window.clausewatchLang() : "zh");
  const say = (key) => TEXT[lang()][key];
  const api = (path, options = {}) => fetch("/api/v1" + path, {
    ...options,
    headers: { "Content-Type": "application/json", "X-CSRF-Token": window.clausewatchCsrf(), ...(options.headers || {}) },
  });
  let subscriptions = [];
  const shown = { contacts: null, subscribe: null }; // [key, detail] per status line

  async function problem(answer) {
    const body = await answer.json().catch(() => null);
    const detail = body && body.detail;
    if (typeof detail === "string") return detail;
    if (Array.isArray(detail)) return detail.map((d) => d.msg).join("; ");
    return "";
  }

  function status(which) {
    const node = document.getElementById(`${which}-status`);
    const state = shown[which];
    node.textContent = state ? say(state[0]) + (state[1] ? `: ${state[1]}` : "") : "";
    node.classList.toggle("error", Boolean(state && state[0] === "failed"));
  }

  function drawList() {
    const list = document.getElementById("subscriptions");
    list.replaceChildren();
    if (!subscriptions.length) {
      const empty = document.createElement("li");
      empty.textContent = say("none");
      list.append(empty);
    }
    for (const sub of subscriptions) {
      const item = document.createElement("li");
      item.dataset.id = sub.id;
      const text = document.createElement("span");
      const severities = (sub.match.severities || []).map(say).join("/");
      const channels = sub.channels.map((c) => say(`by_${c}`)).join("、");
      text.textContent = [sub.name, sub.sites.join(", ") || say("all_sites"), severities,
        (sub.match.domains || []).join(", "), channels].filter(Boolean).join(" · ");
      const remove = document.createElement("button");
      remove.type = "button";
      remove.textContent = say("remove");
      remove.addEventListener("click", async () => {
        const answer = await api(`/me/subscriptions/${sub.id}`, { method: "DELETE" });
        if (answer.ok) await load();
      });
      item.append(text, remove);
      list.append(item);
    }
  }

  function draw() {
    for (const node of document.querySelectorAll("[data-me]")) node.textContent = say(node.dataset.me);
    document.title = say("page_title");
    status("contacts");
    status("subscribe");
    drawList();
  }

  async function load() {
    const [contacts, subs] = await Promise.all([api("/me/contacts"), api("/me/subscriptions")]);
    if (contacts.status === 401 || subs.status === 401) {
      location.assign("/login?next=%2Fme");
      return;
    }
    if (contacts.ok) {
      const body = await contacts.json();
      const form = document.getElementById("contacts-form");
      // What the person typed while the page was loading wins over what is stored.
      for (const name of ["email", "mobile"]) {
        const field = form.elements[name];
        if (!field.dataset.edited) field.value = body[name] || "";
      }
    }
    subscriptions = subs.ok ? await subs.json() : [];
    drawList();
    document.body.dataset.loaded = "true";
  }
  for (const name of ["email", "mobile"]) {
    document.getElementById("contacts-form").elements[name]
      .addEventListener("input", (event) => { event.target.dataset.edited = "true"; });
  }

  document.getElementById("contacts-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const answer = await api("/me/contacts", {
      method: "PUT",
      body: JSON.stringify({ email: form.elements.email.value.trim() || null, mobile: form.elements.mobile.value.trim() || null }),
    });
    shown.contacts = answer.ok ? ["saved", ""] : ["failed", await problem(answer)];
    status("contacts");
  });

  document.getElementById("subscribe-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const checked = (name) => [...form.querySelectorAll(`input[name=${name}]:checked`)].map((i) => i.value);
    const site = form.elements.site.value.trim();
    const domain = form.elements.domain.value.trim();
    const body = {
      name: form.elements.name.value.trim(),
      sites: site ? [site] : [],
      match: { severities: checked("severity"), domains: domain ? [domain] : [] },
      channels: checked("channel"),
      send_resolved: form.elements.send_resolved.checked,
    };
    const answer = await api("/me/subscriptions", { method: "POST", body: JSON.stringify(body) });
    shown.subscribe = answer.ok ? ["subscribed", ""] : ["failed", await problem(answer)];
    status("subscribe");
    if (answer.ok) {
      form.elements.name.value = "";
      await load();
    }
  });

  document.addEventListener("clausewatch:lang", draw);
  draw();
  load();
})();
