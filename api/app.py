"""The FastAPI application: `create_app(database)` builds it; nothing connects at import time.

`database` is a PostgreSQL URL or an open `ConnectionPool` owned by the caller. For a URL the
app opens its pool (and the stream's LISTEN connection) in its lifespan and closes them at
shutdown, so `uvicorn.run(create_app(url))` is self-contained. `ledger_anchors` is where
GET /ledger/verify reads the signed anchors of the ledger from (None: the chain is checked
without them, and the verdict says it is not anchored); `session_policy` how long users'
sessions live and when failed sign-ins lock a name or an address out (api/sessions.py).
"""

from __future__ import annotations

import importlib.resources
import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Literal

from fastapi import FastAPI, Request, status
from fastapi import Path as FastApiPath
from fastapi.exception_handlers import http_exception_handler
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from psycopg_pool import ConnectionPool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import ASGIApp, Receive, Scope, Send

from alerts.anchors import AnchorSource
from api import STATIC_DIR
from api.headers import SecurityHeaders
from api.limits import DEFAULT_MAX_BODY_BYTES, BodyGate
from api.routers import (
    alerts,
    checkins,
    clauses,
    compliance,
    energy,
    evaluations,
    feedback,
    health,
    ingest,
    ledger,
    people,
    public,
    quiet,
    readings,
    register,
    registry,
    reports,
    revisions,
    routes,
    session,
    sites,
    statistics,
    subscriptions,
    webhooks,
)
from api.sessions import SessionPolicy
from api.stream import AlertFeed, StreamConfig
from api.stream import router as stream_router

log = logging.getLogger(__name__)
API_PREFIX = "/api/v1"

# Small by design: API requests are short and the machine is shared with ingest. Sync routes run
# in Starlette's thread pool, so more connections than threads would only idle.
POOL_MIN_SIZE = 1
POOL_MAX_SIZE = 8


def create_app(
    database: str | ConnectionPool,
    *,
    stream: StreamConfig | None = None,
    ledger_anchors: AnchorSource | None = None,
    max_body_bytes: int = DEFAULT_MAX_BODY_BYTES,
    http_ingest: ingest.HttpIngest | None = None,
    session_policy: SessionPolicy | None = None,
    public_base_url: str | None = None,
    config_dir: Path | None = None,
) -> FastAPI:
    stream_config = stream or StreamConfig()

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        owned_pool: ConnectionPool | None = None
        if isinstance(database, ConnectionPool):
            pool = database
        else:
            if not database:
                raise RuntimeError("the API needs a database URL (CLAUSEWATCH_DATABASE_URL)")
            owned_pool = pool = ConnectionPool(
                database, min_size=POOL_MIN_SIZE, max_size=POOL_MAX_SIZE, open=False
            )
            pool.open(wait=True, timeout=30.0)
        conninfo = pool.conninfo if isinstance(pool.conninfo, str) else pool.conninfo()
        feed = AlertFeed(conninfo, stream_config)
        await feed.start()
        app.state.pool = pool
        app.state.feed = feed
        try:
            yield
        finally:
            await feed.stop()
            if owned_pool is not None:
                owned_pool.close()

    app = FastAPI(
        title="clausewatch",
        version="1",
        summary="Quantitative facility standards as live, enforced, traceable checks.",
        # The docs page is served from the package (_install_docs), not from a CDN; ReDoc
        # (which needs inline styles) is off.
        docs_url=None,
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
        openapi_url="/openapi.json",
        lifespan=lifespan,
    )
    app.state.ledger_anchors = ledger_anchors
    app.state.ingest = http_ingest
    app.state.session_policy = session_policy or SessionPolicy()
    # The configuration directory the service runs with (None: the bundled one, read only):
    # the site workbook's import writes there and its export reads from it (routers/sites.py).
    app.state.config_dir = config_dir
    # Named users sign in at /login (issue 19): the session API and the page.
    app.include_router(session.router, prefix=API_PREFIX)
    app.include_router(session.pages)
    # Where the check-in sheet's QR codes point (None: the address the sheet was asked at).
    app.state.public_base_url = public_base_url
    for module in (
        alerts,
        clauses,
        compliance,
        energy,
        ledger,
        people,
        quiet,
        readings,
        registry,
        routes,
        subscriptions,
        webhooks,
    ):
        app.include_router(module.router, prefix=API_PREFIX)
    if http_ingest is not None:  # only where a pipeline runs (the service, not a bare API)
        app.include_router(ingest.router, prefix=API_PREFIX)
        app.include_router(checkins.writes, prefix=API_PREFIX)
    # Field check-ins (issue 19): the sheet, a space's tasks, photos, and their pages.
    app.include_router(checkins.router, prefix=API_PREFIX)
    app.include_router(checkins.pages)
    app.include_router(stream_router, prefix=API_PREFIX)
    # The standards register (issue 10): its API, its pages and the unauthenticated public view.
    for module in (register, revisions, statistics, reports, evaluations, feedback, public, sites):
        app.include_router(module.router, prefix=API_PREFIX)
    app.include_router(sites.revisions, prefix=API_PREFIX)
    for pages in (
        register.pages,
        statistics.pages,
        public.pages,
        sites.pages,
        subscriptions.pages,
        people.pages,
    ):
        app.include_router(pages)
    app.include_router(health.router)
    app.add_middleware(RejectNulInUrl)
    # Bodies are bounded and need a token before they are read (api/limits.py); the security
    # headers go on every answer, the gate's refusals included (outermost).
    app.add_middleware(BodyGate, max_body_bytes=max_body_bytes)
    app.add_middleware(SecurityHeaders)
    _install_error_handlers(app)
    _install_dashboard(app)
    _install_docs(app)
    _install_web_app(app)
    return app


class RejectNulInUrl:
    """PostgreSQL text cannot hold NUL, so a path or query naming one is bad input: 422 here,
    before any route can hand it to the database (where it would be an error, not an answer)."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "http":
            query = scope.get("query_string", b"").lower()
            if "\x00" in scope["path"] or b"%00" in query or b"\x00" in query:
                detail = [
                    {
                        "loc": ["query"],
                        "msg": "NUL characters are not allowed",
                        "type": "value_error",
                    }
                ]
                response = JSONResponse({"detail": detail}, status.HTTP_422_UNPROCESSABLE_CONTENT)
                await response(scope, receive, send)
                return
        await self.app(scope, receive, send)


def _install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(StarletteHTTPException)
    async def http_error(request: Request, exc: StarletteHTTPException) -> Response:
        # Every 422 has the documented shape (a list of {loc, msg, type}); a route that raised
        # one with a plain message gets it wrapped as an error of the request as a whole.
        if exc.status_code == status.HTTP_422_UNPROCESSABLE_CONTENT and isinstance(exc.detail, str):
            detail = [{"loc": ["query"], "msg": exc.detail, "type": "value_error"}]
            return JSONResponse({"detail": detail}, exc.status_code, exc.headers)
        return await http_exception_handler(request, exc)

    @app.exception_handler(Exception)
    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        # A bug, not an answer: log it with the request so it gets fixed, and still answer
        # in the API's error shape rather than a bare text page.
        log.exception("unhandled error on %s %s", request.method, request.url.path)
        return JSONResponse(
            {"detail": "internal error; it has been logged"},
            status_code=status.HTTP_500_INTERNAL_SERVER_ERROR,
        )


def _install_dashboard(app: FastAPI) -> None:
    index = STATIC_DIR / "index.html"

    @app.get("/", include_in_schema=False)
    def dashboard() -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8")

    # One alert's own address (the link a notification carries): the dashboard, which opens
    # that alert's detail; what the page then reads needs the token like every API call.
    @app.get("/alerts/{alert_id}", include_in_schema=False)
    def alert_page(alert_id: Annotated[int, FastApiPath(ge=1, le=2**63 - 1)]) -> FileResponse:
        return FileResponse(index, media_type="text/html; charset=utf-8")

    energy_page = STATIC_DIR / "energy.html"  # the energy engineer's page (issue 7)

    @app.get("/energy", include_in_schema=False)
    def energy() -> FileResponse:
        return FileResponse(energy_page, media_type="text/html; charset=utf-8")

    app.mount("/static", StaticFiles(directory=STATIC_DIR), name="static")


def _install_web_app(app: FastAPI) -> None:
    """The installable web app (issue 19): its manifest and its service worker, at the root so
    the worker's scope is the whole site. Both are read again on every visit (no-cache), so a
    new version reaches installed phones; the worker keeps only the offline shell (sw.js)."""
    fresh = {"Cache-Control": "no-cache"}

    # One app ("id": "/") named in the language chosen on the pages (request.js asks for it).
    manifests = {"zh": "manifest.webmanifest", "en": "manifest.en.webmanifest"}

    @app.get("/manifest.webmanifest", include_in_schema=False)
    def manifest(lang: Literal["zh", "en"] = "zh") -> FileResponse:
        return FileResponse(
            STATIC_DIR / manifests[lang],
            media_type="application/manifest+json",
            headers=fresh,
        )

    @app.get("/sw.js", include_in_schema=False)
    def service_worker() -> FileResponse:
        return FileResponse(
            STATIC_DIR / "sw.js",
            media_type="text/javascript; charset=utf-8",
            headers={**fresh, "Service-Worker-Allowed": "/"},
        )


# Swagger UI's files, from the PyPI package fastapi-offline (a dependency), served under /docs.
SWAGGER_FILES = {
    "swagger-ui-bundle.js": "text/javascript; charset=utf-8",
    "swagger-ui.css": "text/css; charset=utf-8",
    "favicon.png": "image/png",
}


def _install_docs(app: FastAPI) -> None:
    page = STATIC_DIR / "docs.html"
    swagger = Path(str(importlib.resources.files("fastapi_offline") / "static"))

    @app.get("/docs", include_in_schema=False)
    def docs() -> FileResponse:
        return FileResponse(page, media_type="text/html; charset=utf-8")

    @app.get("/docs/{name}", include_in_schema=False)
    def docs_file(name: str) -> FileResponse:
        media_type = SWAGGER_FILES.get(name)
        if media_type is None:
            raise StarletteHTTPException(status.HTTP_404_NOT_FOUND)
        return FileResponse(swagger / name, media_type=media_type)
