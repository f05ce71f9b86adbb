"""The web service: ``create_app(settings)`` builds the FastAPI app that serves page and API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import anyio
from fastapi import FastAPI
from fastapi.openapi.docs import get_swagger_ui_html
from fastapi.responses import FileResponse, HTMLResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from swagger_ui_bundle import swagger_ui_path

from faceaudit import __version__
from faceaudit.errors import FaceAuditError
from faceaudit.models.engine import FaceEngine
from faceaudit.service.admin import router as admin_router
from faceaudit.service.api import router
from faceaudit.service.deps import load_services
from faceaudit.service.errors import install_error_handlers
from faceaudit.service.removal_status import router as removal_status_router
from faceaudit.service.removals import off_router as removals_off_router
from faceaudit.service.removals import router as removals_router
from faceaudit.service.settings import ServiceSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# Swagger UI's own files, from the installed swagger-ui-bundle-v2 package: FastAPI's default
# /docs loads them from a CDN, and is a blank page without internet.
DOCS_ASSETS = Path(str(swagger_ui_path))
# The page loads nothing from elsewhere and runs no inline script; the selfie preview is a
# blob: URL; removal letters are downloaded as blob: URLs too.
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
)
# /docs: Swagger UI starts from an inline script and styles itself inline and with data: icons;
# nothing from another origin.
DOCS_POLICY = (
    "default-src 'self'; script-src 'self' 'unsafe-inline'; style-src 'self' 'unsafe-inline'; "
    "img-src 'self' data:; object-src 'none'; base-uri 'none'; frame-ancestors 'none'"
)


class SecurityHeaders:
    """Headers for every response. ``no-referrer`` keeps thumbnail links out of other sites'
    logs should the page ever link out."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message.setdefault("headers", [])
                message["headers"] = [*message["headers"],
                                      (b"x-content-type-options", b"nosniff"),
                                      (b"referrer-policy", b"no-referrer")]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(settings: ServiceSettings, *, engine: FaceEngine | None = None) -> FastAPI:
    """The app over the indexes of ``settings.index``. ``engine``: an engine already loaded
    (tests share one; the lifespan adds replicas of it); by default the lifespan loads the one
    ``settings`` names. Start-up fails when an index was built with another model pack."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        try:
            services = app.state.services = load_services(settings, engine)
        except FaceAuditError as error:
            # Said here in words: the server logs the traceback by type and place only.
            log.error("cannot start: %s", error.message)
            raise
        try:
            async with anyio.create_task_group() as background:
                if settings.reload_interval is not None:  # newly published indexes
                    background.start_soon(services.catalog.watch, settings.reload_interval)
                yield
                background.cancel_scope.cancel()
        finally:
            del app.state.services, services  # the last references to engines and indexes
            log.info("released the engines and the indexes")

    app = FastAPI(
        title="faceaudit",
        version=__version__,
        description="Find the photos of an indexed dataset in which a person appears, from one "
        "selfie. The selfie is processed in memory and never stored.",
        lifespan=lifespan,
        docs_url=None,  # served below from local files
        redoc_url=None,  # ReDoc too loads from a CDN; one offline viewer is enough
    )
    install_error_handlers(app)
    app.include_router(router)
    if settings.removals:
        app.include_router(removals_router)
        app.include_router(removal_status_router)
        if settings.admin_token is not None:  # otherwise they do not exist, not even documented
            app.include_router(admin_router)
    else:
        app.include_router(removals_off_router)
        if settings.admin_token is not None:
            log.warning("FACEAUDIT_ADMIN_TOKEN is set but removals are off: no admin routes")
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    app.mount("/docs/assets", StaticFiles(directory=DOCS_ASSETS), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs() -> HTMLResponse:
        html = get_swagger_ui_html(
            openapi_url=app.openapi_url or "/openapi.json",
            title="faceaudit: HTTP API",
            swagger_js_url="/docs/assets/swagger-ui-bundle.js",
            swagger_css_url="/docs/assets/swagger-ui.css",
            swagger_favicon_url="/favicon.ico",
            # No validator badge: it would send the API description to validator.swagger.io.
            swagger_ui_parameters={"validatorUrl": None},
        )
        html.headers["Content-Security-Policy"] = DOCS_POLICY
        return html

    @app.get("/favicon.ico", include_in_schema=False)
    def favicon() -> FileResponse:
        return FileResponse(STATIC / "favicon.ico", media_type="image/x-icon",
                            headers={"Cache-Control": "public, max-age=86400"})

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": PAGE_POLICY,
            "Cache-Control": "no-cache",
        })

    app.add_middleware(SecurityHeaders)
    return app
