// The service worker of the installed web app (served as /sw.js, scope "/"; api/app.py). It
// keeps one thing offline: the shell that says the service cannot be reached (offline.html,
// its style and icons). Pages are fetched from the network every time, and nothing under
// /api/ is ever stored: alerts, people and sessions stay on the server. When a page cannot be
// fetched (no network, server down), the offline shell answers instead.
"use strict";

const SHELL = "clausewatch-shell-v1";
const SHELL_FILES = ["/static/offline.html", "/static/site.css", "/static/icons/icon-192.png",
  "/static/icons/icon.svg"];

self.addEventListener("install", (event) => {
  event.waitUntil(caches.open(SHELL).then((cache) => cache.addAll(SHELL_FILES))
    .then(() => self.skipWaiting()));
});

self.addEventListener("activate", (event) => {
  event.waitUntil(caches.keys()
    .then((names) => Promise.all(names.filter((n) => n !== SHELL).map((n) => caches.delete(n))))
    .then(() => self.clients.claim()));
});

self.addEventListener("fetch", (event) => {
  const request = event.request;
  const url = new URL(request.url);
  if (request.method !== "GET" || url.origin !== self.location.origin) return;
  if (request.mode === "navigate") {
    // A page: always the network's answer; the offline shell only when there is none.
    event.respondWith(fetch(request).catch(() => caches.match("/static/offline.html")));
    return;
  }
  if (SHELL_FILES.includes(url.pathname)) {
    // The shell's own files (the offline page asks for them): the network first, else stored.
    event.respondWith(fetch(request).catch(() => caches.match(url.pathname)));
  }
  // Everything else, the API above all, goes to the network untouched and is never stored.
});
