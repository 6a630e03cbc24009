// The administrators' page of users (/users; api/routers/people.py): the list with each user's
// role, scope and state, disable / enable, a new user, a new password. Only an administrator
// of every site may (the API answers 403 to anyone else, and the page says so). Writes carry
// the session's CSRF token (request.js); text from the API goes in through textContent.
"use strict";

(() => {
  const ROLES = {
    viewer: ["viewer (reads)", "只读"],
    facility_manager: ["facility manager", "物业管理"],
    energy_officer: ["energy officer", "能源管理"],
    admin: ["administrator", "管理员"],
    cleaner: ["cleaner (check-ins only)", "保洁（仅签到）"],
  };
  const SCOPES = { sites: ["sites", "站点"], org: ["organisation", "组织"], all: ["every site", "全部站点"] };
  const $ = (id) => document.getElementById(id);
  const say = ([en, zh]) => L(en, zh);
  let people = [];
  let status = null; // [en, zh] of the page's status line, redrawn with the language

  function scopeText(user) {
    if (user.sites.length) return `${L("sites", "站点")} ${user.sites.join(", ")}`;
    if (user.org.length) return `${L("organisation", "组织")} ${user.org.join("/")}`;
    return say(SCOPES.all);
  }

  function labels() {
    document.title = `clausewatch · ${L("Users", "用户管理")}`;
    const texts = {
      title: ["Users", "用户管理"], "list-title": ["Users", "用户"],
      "create-title": ["New user", "新建用户"], "name-label": ["User name (a-z 0-9 . _ -)", "用户名（a-z 0-9 . _ -）"],
      "display-label": ["Full name", "姓名"], "role-label": ["Role", "角色"], "scope-label": ["Scope", "范围"],
      "password-label": ["First password (at least 10 characters)", "初始密码（至少 10 个字符）"],
      create: ["Create", "新建"], "reset-title": ["New password", "重设密码"], "reset-user-label": ["User", "用户"],
      "reset-password-label": ["New password (ends their sessions)", "新密码（该用户将被登出）"], reset: ["Set", "重设"],
    };
    for (const [id, text] of Object.entries(texts)) $(id).textContent = say(text);
    const role = $("new-role").value || "viewer";
    $("new-role").replaceChildren(...Object.entries(ROLES).map(([value, text]) => el("option", say(text), { value })));
    $("new-role").value = role;
    const scope = $("new-scope").value || "sites";
    $("new-scope").replaceChildren(...Object.entries(SCOPES).map(([value, text]) => el("option", say(text), { value })));
    $("new-scope").value = scope;
    where();
    if (status) $("status").textContent = say(status);
    draw();
  }

  // What the scope's field asks for: site ids, an organisation path, or nothing.
  function where() {
    const scope = $("new-scope").value;
    $("new-where").hidden = $("where-label").hidden = scope === "all";
    $("new-where").required = scope !== "all";
    $("where-label").textContent = scope === "org"
      ? L("Organisation path (city/district)", "组织路径（市/区）") : L("Site ids, comma-separated", "站点编号，逗号分隔");
  }

  function draw() {
    $("users").replaceChildren(...people.map((user) => {
      const li = el("li", undefined, { "data-user": user.name, "data-enabled": String(user.enabled) });
      const who = el("div", undefined, { class: "who" });
      who.append(el("strong", user.display_name ? `${user.display_name} (${user.name})` : user.name),
                 el("small", `${say(ROLES[user.role] || [user.role, user.role])} · ${scopeText(user)}` +
                             (user.enabled ? "" : ` · ${L("disabled", "已停用")}`)));
      const button = el("button", user.enabled ? L("Disable", "停用") : L("Enable", "启用"), { type: "button" });
      button.addEventListener("click", () => change(user, user.enabled ? "disable" : "enable"));
      li.append(who, button);
      return li;
    }));
    const chosen = $("reset-user").value;
    $("reset-user").replaceChildren(...people.map((u) => el("option", u.display_name ? `${u.name} (${u.display_name})` : u.name, { value: u.name })));
    if (chosen) $("reset-user").value = chosen;
  }

  function show(line, text, failed = false) {
    line.className = failed ? "status error" : "status";
    line.textContent = text;
  }

  async function load() {
    try {
      people = await api("users");
      status = null;
      $("status").textContent = "";
      draw();
    } catch (error) {
      status = error.status === 403
        ? ["Only an administrator of every site manages users.", "只有全部站点的管理员可以管理用户。"]
        : [`Could not load the users: ${error.message}`, `无法加载用户：${error.message}`];
      show($("status"), say(status), true);
    }
  }

  async function change(user, action) {
    try {
      await send("POST", `users/${encodeURIComponent(user.name)}/${action}`);
      show($("status"), action === "disable" ? L(`${user.name} disabled; signed out`, `已停用 ${user.name}，其登录已结束`)
                                              : L(`${user.name} enabled`, `已启用 ${user.name}`));
      await load();
    } catch (error) {
      show($("status"), `${L("Not changed", "未更改")}: ${error.message}`, true);
    }
  }

  $("new-scope").addEventListener("change", where);
  $("create-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const scope = $("new-scope").value;
    const parts = $("new-where").value.split(scope === "org" ? "/" : ",").map((s) => s.trim()).filter(Boolean);
    const body = { name: $("new-name").value.trim(), display_name: $("new-display").value.trim(), role: $("new-role").value,
                   sites: scope === "sites" ? parts : [], org: scope === "org" ? parts : [], password: $("new-password").value };
    try {
      const made = await send("POST", "users", body);
      show($("create-status"), L(`${made.name} created: they sign in at /login`, `已新建 ${made.name}，可在 /login 登录`));
      event.target.reset();
      labels();
      await load();
    } catch (error) {
      show($("create-status"), `${L("Not created", "未新建")}: ${error.message}`, true);
    }
  });
  $("reset-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const name = $("reset-user").value;
    try {
      await send("POST", `users/${encodeURIComponent(name)}/password`, { password: $("reset-password").value });
      show($("reset-status"), L(`New password set for ${name}; they were signed out`, `已为 ${name} 设置新密码，其登录已结束`));
      $("reset-password").value = "";
    } catch (error) {
      show($("reset-status"), `${L("Not changed", "未更改")}: ${error.message}`, true);
    }
  });
  document.addEventListener("clausewatch:lang", labels);
  document.addEventListener("DOMContentLoaded", load);
})();
