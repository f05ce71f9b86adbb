"""The web service: ``create_app(settings)`` builds the FastAPI app that serves page and API."""

from __future__ import annotations

import logging
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from fastapi import FastAPI
from fastapi.responses import FileResponse
from fastapi.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from faceaudit import __version__
from faceaudit.models.engine import FaceEngine
from faceaudit.service.api import router
from faceaudit.service.deps import load_services
from faceaudit.service.errors import install_error_handlers
from faceaudit.service.settings import ServiceSettings

log = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
# The page loads nothing from elsewhere and runs no inline script; the selfie preview is a
# blob: URL. /docs is left out of it (Swagger UI comes from a CDN).
PAGE_POLICY = (
    "default-src 'self'; img-src 'self' blob:; object-src 'none'; base-uri 'none'; "
    "frame-ancestors 'none'; form-action 'self'"
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
    """The app over ``settings.index``. ``engine``: an engine already loaded (tests share one);
    by default the lifespan loads the one ``settings`` names. Start-up fails when the index was
    built with another model pack."""

    @asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        app.state.services = load_services(settings, engine)
        try:
            yield
        finally:
            del app.state.services  # the last reference to engine and index: free them
            log.info("released the engine and the index")

    app = FastAPI(
        title="faceaudit",
        version=__version__,
        description="Find the photos of an indexed dataset in which a person appears, from one "
        "selfie. The selfie is processed in memory and never stored.",
        lifespan=lifespan,
    )
    install_error_handlers(app)
    app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")

    @app.get("/", include_in_schema=False)
    def page() -> FileResponse:
        return FileResponse(STATIC / "index.html", headers={
            "Content-Security-Policy": PAGE_POLICY,
            "Cache-Control": "no-cache",
        })

    app.add_middleware(SecurityHeaders)
    return app
