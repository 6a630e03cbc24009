"""What a browser gets from the service (issue 18, finding 11): security headers on every
response, a Content-Security-Policy that allows only the service's own origin and that every
page runs under without a violation, the API docs served from the package (no CDN: the test
browser reaches nothing but 127.0.0.1), no /redoc, and the dashboard's token kept for the tab
only (sessionStorage)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from urllib.parse import urlsplit

import httpx
import psycopg
import pytest

from api.tokens import create_token
from tests.support import launch_chromium, skip_without_chromium

pytestmark = pytest.mark.integration

PATHS = [
    "/",
    "/energy",
    "/register",
    "/statistics",
    "/sites",
    "/login",
    "/checkin/sheet?site=site-a",
    "/checkin/site-a/room-1",
    "/api/v1/checkin-photos/00000000-0000-4000-8000-000000000000",  # 401: no token
    "/me",
    "/static/dashboard.js",
    "/static/dashboard.css",
    "/docs",
    "/openapi.json",
    "/healthz",
    "/metrics",
    "/api/v1/alerts",  # 401: no token
    "/api/v1/nowhere",  # 404
    "/public/site-a",  # 404: not public
]
PAGES = [
    "/",
    "/energy",
    "/register",
    "/statistics",
    "/sites",
    "/login",
    "/checkin/sheet",
    "/checkin/site-a/room-1",
    "/me",
]


def _policy(header: str) -> dict[str, list[str]]:
    directives: dict[str, list[str]] = {}
    for part in header.split(";"):
        words = part.split()
        if words:
            directives[words[0]] = words[1:]
    return directives


@pytest.mark.parametrize("path", PATHS)
def test_every_response_carries_the_security_headers(live_api: str, path: str) -> None:
    response = httpx.get(live_api + path, timeout=10)
    headers = response.headers
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["x-frame-options"] == "DENY"
    assert headers["referrer-policy"] == "no-referrer"
    policy = _policy(headers["content-security-policy"])
    assert policy["default-src"] == ["'self'"]
    assert policy["script-src"] == ["'self'"]
    assert policy["style-src"] == ["'self'"]
    assert policy["frame-ancestors"] == ["'none'"]
    assert policy["object-src"] == ["'none'"]
    for sources in policy.values():
        for source in sources:
            # Only the origin itself, nothing inline or evaluated, no other host.
            assert source in {"'self'", "'none'", "data:"}, headers["content-security-policy"]


def test_docs_name_no_other_host_and_redoc_is_off(live_api: str) -> None:
    docs = httpx.get(live_api + "/docs", timeout=10)
    assert docs.status_code == 200
    for url in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", docs.text):
        assert url.startswith("/") and not url.startswith("//"), url
    assert "<script>" not in docs.text.replace(" ", "")  # no inline script
    for path in re.findall(r"""(?:src|href)\s*=\s*["']([^"']+)""", docs.text):
        assert httpx.get(live_api + path, timeout=10).status_code == 200, path
    assert httpx.get(live_api + "/redoc", timeout=10).status_code == 404


@contextmanager
def _offline_page(base: str) -> Iterator[tuple[Any, list[str], list[str]]]:
    """A Chromium page that reaches 127.0.0.1 only (every other request aborted and listed),
    with the page's Content-Security-Policy violations and script errors listed."""
    skip_without_chromium()
    with launch_chromium() as browser:
        context = browser.new_context()
        blocked: list[str] = []
        problems: list[str] = []

        def route(route: Any) -> None:
            if urlsplit(route.request.url).hostname == "127.0.0.1":
                route.continue_()
            else:
                blocked.append(route.request.url)
                route.abort()

        context.route("**/*", route)
        page = context.new_page()
        page.on("pageerror", lambda error: problems.append(f"error: {error}"))
        page.on(
            "console",
            lambda message: (
                problems.append(message.text) if "Content Security Policy" in message.text else None
            ),
        )
        page.add_init_script(
            "document.addEventListener('securitypolicyviolation', (e) =>"
            " console.error('Content Security Policy violated: ' + e.violatedDirective"
            " + ' ' + e.blockedURI));"
        )
        try:
            yield page, blocked, problems
        finally:
            context.close()


@pytest.mark.browser
def test_docs_render_their_operations_without_any_other_host(live_api: str) -> None:
    from playwright.sync_api import expect

    with _offline_page(live_api) as (page, blocked, problems):
        page.goto(live_api + "/docs")
        expect(page.locator(".opblock").first).to_be_visible(timeout=15_000)
        assert page.locator(".opblock").count() >= 20
        expect(
            page.locator(".opblock-summary-path", has_text="/api/v1/alerts").first
        ).to_be_visible()
        page.locator(".opblock-summary-path", has_text="/api/v1/alerts").first.click()
        expect(page.locator(".opblock-body").first).to_be_visible()
        assert not blocked, blocked
        assert not problems, problems


@pytest.mark.browser
@pytest.mark.parametrize("path", PAGES)
def test_pages_run_under_the_policy(live_api: str, path: str) -> None:
    with _offline_page(live_api) as (page, blocked, problems):
        page.goto(live_api + path)
        page.wait_for_load_state("networkidle")
        assert not blocked, blocked
        assert not problems, problems


@pytest.mark.browser
def test_the_dashboard_keeps_its_token_for_the_tab_only(
    live_api: str, api_database_url: str
) -> None:
    from playwright.sync_api import expect

    with psycopg.connect(api_database_url) as conn:
        token, _ = create_token(conn, "viewer", ("site-a",), "one tab")
    with _offline_page(live_api) as (page, blocked, problems):
        # A token an earlier version left in localStorage is removed, never used.
        page.goto(live_api + "/#token")  # the token form (people sign in at /login)
        page.evaluate("localStorage.setItem('clausewatch.token', 'cw_left_behind')")
        page.reload()
        expect(page.locator("#login")).to_be_visible()
        assert page.evaluate("localStorage.getItem('clausewatch.token')") is None

        page.fill("#token-input", token)
        page.click("#token-form button[type=submit]")
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")
        assert page.evaluate("sessionStorage.getItem('clausewatch.token')") == token
        assert page.evaluate("localStorage.getItem('clausewatch.token')") is None
        page.reload()  # the same tab keeps it
        expect(page.locator("#connection")).to_have_attribute("data-state", "live")

        other_tab = page.context.new_page()
        other_tab.goto(live_api + "/#token")
        expect(other_tab.locator("#login")).to_be_visible()
        assert other_tab.evaluate("sessionStorage.getItem('clausewatch.token')") is None
        assert not blocked, blocked
        assert not problems, problems
