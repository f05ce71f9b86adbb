"""What the service loads once at start-up, and the typed dependencies that hand it to routes."""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from faceaudit.errors import FaceAuditError
from faceaudit.imaging import DecodedImage
from faceaudit.indexer.search import FaceIndex, Match, search_selfie
from faceaudit.indexer.store import MANIFEST
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
from faceaudit.removals import MatchIds, RemovalStore, open_service_state, visible, widen
from faceaudit.service.errors import ServiceNotReady
from faceaudit.service.ratelimit import SearchRateLimit
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.thumbnails import ThumbnailTokens

log = logging.getLogger(__name__)


def manifest_stamp(folder: Path) -> tuple[int, int] | None:
    """Identity of the index published at ``folder`` (its manifest's inode and mtime): it
    changes when `faceaudit index` publishes a new index there."""
    try:
        stat = (folder / MANIFEST).stat()
    except OSError:
        return None
    return (stat.st_ino, stat.st_mtime_ns)


@dataclass(frozen=True)
class Published:
    """The index being served and the links issued for it, replaced as one when a new index
    is published: a request takes one snapshot, so it never mixes two indexes, and links
    issued for the old index stop working (new secret) instead of pointing at other photos."""

    index: FaceIndex
    tokens: ThumbnailTokens
    stamp: tuple[int, int] | None


@dataclass
class Services:
    settings: ServiceSettings
    engine: FaceEngine
    published: Published
    rate_limit: SearchRateLimit | None
    daily_limit: SearchRateLimit | None = None
    # Removal requests, suppressed faces and the search audit log; None without a state_dir.
    removals: RemovalStore | None = None
    match_ids: MatchIds | None = None
    # The engine is not thread-safe. An async lock (rather than a threading one) makes queued
    # searches wait on the event loop instead of each holding a worker thread.
    engine_lock: anyio.Lock = field(default_factory=anyio.Lock)
    reload_lock: anyio.Lock = field(default_factory=anyio.Lock)
    last_check: float = field(default_factory=time.monotonic)

    @property
    def index(self) -> FaceIndex:
        return self.published.index

    @property
    def tokens(self) -> ThumbnailTokens:
        return self.published.tokens

    @property
    def photos_root(self) -> Path:
        return self.settings.dataset or self.index.dataset_root

    async def search(self, index: FaceIndex, selfie: DecodedImage, threshold: float,
                     top: int) -> list[Match]:
        """The selfie's matches, without the faces that removal requests named."""
        suppressed: frozenset[tuple[str, int]] = frozenset()
        if self.removals is not None:
            suppressed = await run_in_threadpool(self.removals.suppressed, index.dataset)
        async with self.engine_lock:
            matches = await run_in_threadpool(
                search_selfie, self.engine, index, selfie, threshold=threshold,
                top=widen(top, suppressed)
            )
        return visible(matches, suppressed, top)

    async def log_search(self, index: FaceIndex, threshold: float, *, faces: int, results: int,
                         outcome: str = "ok") -> None:
        """A row of the search audit log (counts only), when the service has a state_dir."""
        if self.removals is not None:
            await run_in_threadpool(self.removals.log_search, dataset=index.dataset,
                                    faces_in_selfie=faces, results=results,
                                    threshold=threshold, outcome=outcome)

    async def refresh(self) -> None:
        """Serve a newly published index without a restart: at most every
        ``settings.reload_interval`` seconds, compare the manifest's identity; when it
        changed, load the new index off the event loop and swap it in. A new index that cannot
        be loaded (or was built with another model pack) is logged and the old one kept."""
        interval = self.settings.reload_interval
        now = time.monotonic()
        if interval is None or now - self.last_check < interval:
            return
        self.last_check = now
        stamp = manifest_stamp(self.settings.index)
        if stamp is None or stamp == self.published.stamp:
            return
        async with self.reload_lock:
            if stamp == self.published.stamp:
                return
            try:
                index = await run_in_threadpool(FaceIndex, self.settings.index)
                index.check_engine(self.engine)
            except (FaceAuditError, OSError, RuntimeError) as error:
                log.error("not serving the index newly published at %s: %s",
                          self.settings.index, error)
                self.published = replace(self.published, stamp=stamp)  # don't retry it
                return
            self.published = Published(index, ThumbnailTokens(self.settings.thumbnail_ttl),
                                       stamp)
            log.info("now serving the index published at %s: %d faces in %d photos",
                     self.settings.index, index.size, len(index.images))


def load_services(settings: ServiceSettings, engine: FaceEngine | None = None) -> Services:
    """Load the engine (unless given) and the index; IncompatibleIndex when they differ."""
    index = FaceIndex(settings.index)
    if engine is None:
        engine = FaceEngine(resolve_pack(settings.models), device=settings.device,
                            threads=settings.threads)
    index.check_engine(engine)
    removals, match_ids = (open_service_state(settings.state_dir, settings.index,
                                              settings.thumbnail_ttl)
                           if settings.state_dir is not None else (None, None))
    services = Services(
        settings=settings,
        engine=engine,
        published=Published(index, ThumbnailTokens(settings.thumbnail_ttl),
                            manifest_stamp(settings.index)),
        rate_limit=SearchRateLimit(settings.rate_limit) if settings.rate_limit else None,
        daily_limit=SearchRateLimit(settings.daily_limit) if settings.daily_limit else None,
        removals=removals,
        match_ids=match_ids,
    )
    if not services.photos_root.is_dir():
        log.warning("the dataset folder %s does not exist: thumbnails will be missing",
                    services.photos_root)
    log.info("serving index %s: %d faces in %d photos, model pack %s on %s", settings.index,
             index.size, len(index.images), index.model_pack, engine.device)
    return services


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ServiceNotReady("The service is starting or stopping; try again in a moment.")
    await services.refresh()
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def get_index(services: ServicesDep) -> FaceIndex:
    return services.index


IndexDep = Annotated[FaceIndex, Depends(get_index)]


def check_rate_limit(request: Request, services: ServicesDep) -> None:
    client = request.client.host if request.client else "unknown"
    for limit in (services.rate_limit, services.daily_limit):
        if limit is not None:
            limit.hit(client)
