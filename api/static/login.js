// The sign-in page (/login): a user's name and password → POST /api/v1/session, which sets the
// session cookie (HttpOnly) and the CSRF cookie; then on to the page that sent us here (?next=,
// a path of this site only) or the dashboard. Text from the API goes in through textContent.
"use strict";

(() => {
  const TEXT = {
    zh: {
      title: "登录", name: "用户名", password: "密码", submit: "登录",
      use_token: "使用访问令牌（接口、演示）", wrong: "用户名或密码错误",
      locked: "登录失败次数过多，请稍后再试或联系管理员", failed: "登录失败",
      page_title: "clausewatch · 登录",
    },
    en: {
      title: "Sign in", name: "User name", password: "Password", submit: "Sign in",
      use_token: "Use an access token (API, demo)", wrong: "Wrong user name or password",
      locked: "Too many failed sign-ins; try again later or ask an administrator",
      failed: "Sign-in failed", page_title: "clausewatch · sign in",
    },
  };
  const lang = () => (typeof window.clausewatchLang === "function" ? window.clausewatchLang() : "zh");
  const say = (key) => TEXT[lang()][key];
  let lastError = null; // [key, detail]: redrawn in the other language

  function draw() {
    for (const node of document.querySelectorAll("[data-login]")) node.textContent = say(node.dataset.login);
    document.title = say("page_title");
    const error = document.getElementById("login-error");
    if (!lastError) error.textContent = "";
    else error.textContent = lastError[1] && lastError[0] === "locked"
      ? `${say("locked")} (${lastError[1]})` : say(lastError[0]);
  }

  // Only a path of this site: never "//host" or "https://…" (no open redirect).
  function next() {
    const target = new URLSearchParams(location.search).get("next") || "/";
    return /^\/(?![/\\])/.test(target) ? target : "/";
  }

  document.addEventListener("clausewatch:lang", draw);
  document.getElementById("login-form").addEventListener("submit", async (event) => {
    event.preventDefault();
    const form = event.target;
    const button = document.getElementById("login-submit");
    button.disabled = true;
    try {
      const answer = await window.clausewatchRequest("POST", "/session", { // request.js
        body: JSON.stringify({ name: form.elements.name.value.trim(), password: form.elements.password.value }),
        bearer: "", // a person signs in: never with a token left in the tab
      });
      if (answer.ok) {
        sessionStorage.removeItem("clausewatch.token"); // the person, not a pasted token
        location.assign(next());
        return;
      }
      const body = await answer.json().catch(() => null);
      const detail = body && typeof body.detail === "string" ? body.detail : "";
      const until = detail.match(/after (\S+Z)/);
      lastError = answer.status === 429
        ? ["locked", until ? new Date(until[1]).toLocaleString(lang() === "zh" ? "zh-CN" : "en-GB", { hour12: false }) : ""]
        : [answer.status === 401 ? "wrong" : "failed", detail];
      form.elements.password.value = "";
    } catch (error) {
      lastError = ["failed", ""];
    } finally {
      button.disabled = false;
    }
    draw();
  });
  draw();
})();
