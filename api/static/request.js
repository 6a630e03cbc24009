// The one way every page talks to /api/v1 (loaded first on every page). A request is signed by
// a machine token when the tab has one (the dashboard's token form, or #token=… in the address,
// which browsers never send; kept in sessionStorage for the tab), else by the signed-in user's
// session cookie, with the session's CSRF token (cookie cw_csrf, __Host-cw_csrf over HTTPS) as
// X-CSRF-Token on every request that changes something. It also registers the web app's
// service worker (sw.js). Defines window.clausewatchRequest, window.clausewatchSignOut,
// window.clausewatchToken and window.clausewatchCsrf.
"use strict";

(() => {
  const TOKEN_KEY = "clausewatch.token";
  let leaving = false; // signing out: a read refused meanwhile sends nobody anywhere else

  function csrf() {
    const found = document.cookie.split("; ").find((c) => /^(__Host-)?cw_csrf=/.test(c));
    return found ? found.slice(found.indexOf("=") + 1) : "";
  }

  // The tab's machine token, taken from the address's fragment once (then removed from it).
  function token() {
    const fromHash = new URLSearchParams(location.hash.slice(1)).get("token");
    if (fromHash) {
      sessionStorage.setItem(TOKEN_KEY, fromHash);
      history.replaceState(null, "", location.pathname + location.search);
    }
    return sessionStorage.getItem(TOKEN_KEY) || "";
  }

  // The headers that sign a request of `method`: the token's, else the session's CSRF token
  // on a write (a read needs only the cookie, which the browser sends itself).
  function credentials(method = "GET", bearer = token()) {
    if (bearer) return { Authorization: `Bearer ${bearer}` };
    return method === "GET" || method === "HEAD" ? {} : { "X-CSRF-Token": csrf() };
  }

  // fetch /api/v1{path} (path starts with "/" and may carry its own query); `params` are added
  // to the query, empty ones left out; `body` is sent as it is, as `type` (JSON unless said).
  // Answers the Response; a 401 of a read signed by the cookie alone sends the person to /login,
  // who comes back to this page (unless `login` is false: the dashboard shows its own form).
  // `headers` are added (the stream's Last-Event-ID), `signal` aborts (the stream).
  async function request(method, path, {
    params = {}, body, type, bearer = token(), login = true, headers: extra = {}, signal,
  } = {}) {
    const query = new URLSearchParams(
      Object.entries(params).filter(([, v]) => v !== "" && v !== undefined && v !== null));
    const joined = `${path}${query.size ? (path.includes("?") ? "&" : "?") + query : ""}`;
    const headers = { ...credentials(method, bearer), ...extra };
    if (body !== undefined) headers["Content-Type"] = type || "application/json";
    const answer = await fetch(`/api/v1${joined}`, { method, headers, body, signal });
    if (answer.status === 401 && !bearer && login && method === "GET" && !leaving) {
      location.assign(`/login?next=${encodeURIComponent(location.pathname + location.search)}`);
    }
    return answer;
  }

  // Ends the person's session on the server and goes to /login (every page's sign-out button).
  async function signOut() {
    leaving = true;
    window.clausewatchSigningOut = true; // the dashboard's own redirect to /login waits too
    await request("DELETE", "/session", { bearer: "" }).catch(() => null);
    location.assign("/login");
  }

  window.clausewatchRequest = request;
  window.clausewatchSignOut = signOut;
  window.clausewatchToken = token;
  window.clausewatchCsrf = csrf;
  token(); // a #token=… in the address is taken now and leaves the address bar

  // The installable web app: its manifest in the language chosen on the pages (条款守望 or
  // clausewatch), its service worker (sw.js): the offline shell, never the API.
  const manifest = document.querySelector("link[rel=manifest]");
  if (manifest && localStorage.getItem("clausewatch.lang") === "en") {
    manifest.href = "/manifest.webmanifest?lang=en";
  }
  if ("serviceWorker" in navigator) navigator.serviceWorker.register("/sw.js").catch(() => null);
})();
