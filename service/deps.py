"""What the service loads once at start-up, and the typed dependencies that hand it to routes."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from faceaudit.imaging import DecodedImage
from faceaudit.indexer.search import FaceIndex, Match, search_selfie
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
from faceaudit.service.errors import ServiceNotReady
from faceaudit.service.ratelimit import SearchRateLimit
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.thumbnails import ThumbnailTokens

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: ServiceSettings
    engine: FaceEngine
    index: FaceIndex
    tokens: ThumbnailTokens
    rate_limit: SearchRateLimit | None
    # The engine is not thread-safe. An async lock (rather than a threading one) makes queued
    # searches wait on the event loop instead of each holding a worker thread.
    engine_lock: anyio.Lock = field(default_factory=anyio.Lock)

    @property
    def photos_root(self) -> Path:
        return self.settings.dataset or self.index.dataset_root

    async def search(self, selfie: DecodedImage, threshold: float, top: int) -> list[Match]:
        async with self.engine_lock:
            return await run_in_threadpool(
                search_selfie, self.engine, self.index, selfie, threshold=threshold, top=top
            )


def load_services(settings: ServiceSettings, engine: FaceEngine | None = None) -> Services:
    """Load the engine (unless given) and the index; IncompatibleIndex when they differ."""
    index = FaceIndex(settings.index)
    if engine is None:
        engine = FaceEngine(resolve_pack(settings.models), device=settings.device,
                            threads=settings.threads)
    index.check_engine(engine)
    services = Services(
        settings=settings,
        engine=engine,
        index=index,
        tokens=ThumbnailTokens(settings.thumbnail_ttl),
        rate_limit=SearchRateLimit(settings.rate_limit) if settings.rate_limit else None,
    )
    if not services.photos_root.is_dir():
        log.warning("the dataset folder %s does not exist: thumbnails will be missing",
                    services.photos_root)
    log.info("serving index %s: %d faces in %d photos, model pack %s on %s", settings.index,
             index.size, len(index.images), index.model_pack, engine.device)
    return services


def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ServiceNotReady("The service is starting or stopping; try again in a moment.")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_index(services: ServicesDep) -> FaceIndex:
    return services.index


IndexDep = Annotated[FaceIndex, Depends(get_index)]


def check_rate_limit(request: Request, services: ServicesDep) -> None:
    if services.rate_limit is not None:
        services.rate_limit.hit(request.client.host if request.client else "unknown")
