"""What the service loads once at start-up, and the typed dependencies that hand it to routes."""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Annotated

import anyio
from fastapi import Depends, Request
from starlette.concurrency import run_in_threadpool

from faceaudit.indexer.search import FaceIndex
from faceaudit.models.engine import FaceEngine
from faceaudit.models.packs import resolve_pack
from faceaudit.removals import MatchIds, RemovalStore, check_state_dir, open_service_state
from faceaudit.service.catalog import Catalog, IndexGroup, Published
from faceaudit.service.confirmations import Confirmed
from faceaudit.service.engines import (
    EnginePool,
    SearchAdmission,
    cores,
    engine_replicas,
    replica_layout,
)
from faceaudit.service.errors import ServiceNotReady
from faceaudit.service.ratelimit import SearchRateLimit
from faceaudit.service.searching import TemplateSearch, embed_selfies, search_template
from faceaudit.service.settings import ServiceSettings
from faceaudit.service.thumbnails import ThumbnailTokens

log = logging.getLogger(__name__)


@dataclass
class Services:
    settings: ServiceSettings
    # The engine whose model pack and calibration the indexes are checked and searched with;
    # the pool's replicas (this engine among them) do the detection and embedding.
    engine: FaceEngine
    engines: EnginePool
    catalog: Catalog
    admission: SearchAdmission
    # Vector searches running at once: one per core; more would only share the cores.
    vector_searches: anyio.CapacityLimiter
    # Searches per client, per minute and per day (counted in the state folder); None: off.
    rate_limit: SearchRateLimit | None
    # Removal requests, suppressed faces and the search audit log; None with removals off.
    removals: RemovalStore | None = None
    match_ids: MatchIds | None = None

    # The first index served (the only one, usually).
    @property
    def published(self) -> Published:
        return self.catalog.served[0].published

    @property
    def index(self) -> FaceIndex:
        return self.published.index

    @property
    def tokens(self) -> ThumbnailTokens:
        return self.published.tokens

    @property
    def photos_root(self) -> Path:
        return self.catalog.served[0].photos_root(self.published)

    async def search(self, group: IndexGroup, selfies: Sequence[bytes], threshold: float | None,
                     top: int, confirmed: Sequence[Confirmed] = ()) -> TemplateSearch:
        """The matches of the template of ``selfies`` and ``confirmed`` faces in every index
        of ``group``, best first, at most ``top``, without the faces that removal requests
        named, at ``threshold`` (None: the template's default; never below it). The engine is
        held only to detect and embed; the vector searches and record lookups run without it,
        side by side."""
        async with self.engines.engine() as engine:
            vectors = await run_in_threadpool(embed_selfies, engine, selfies, self.settings)
        return await anyio.to_thread.run_sync(
            partial(search_template, group, vectors, confirmed, threshold, top,
                    self.engine.calibration, self.settings, self.removals),
            limiter=self.vector_searches)

    async def log_search(self, group: IndexGroup, threshold: float, *, faces: int,
                         results: int, outcome: str = "ok", selfies: int = 1,
                         confirmed: int = 0) -> None:
        """A row of the search audit log (counts only), unless removals are off."""
        if self.removals is not None:
            await run_in_threadpool(partial(
                self.removals.log_search, dataset=group.dataset, faces_in_selfie=faces,
                results=results, threshold=threshold, outcome=outcome, selfies=selfies,
                confirmed=confirmed))


def load_services(settings: ServiceSettings, engine: FaceEngine | None = None) -> Services:
    """Load the engine replicas (``engine`` among them, when given) and the indexes;
    IncompatibleIndex when an index was built with another model pack. Runs in the event loop
    (the pool's primitives belong to it)."""
    if engine is None:
        _, threads = replica_layout(settings.device, settings.replicas, settings.threads)
        engine = FaceEngine(resolve_pack(settings.models), device=settings.device,
                            threads=threads)
    replicas, threads = replica_layout(engine.device, settings.replicas, settings.threads)
    catalog = Catalog.load(settings.index, settings.dataset, engine, settings.thumbnail_ttl)
    removals, match_ids = None, None
    if settings.removals:
        for folder in settings.index[1:]:
            check_state_dir(settings.state_dir, folder)
        removals, match_ids = open_service_state(settings.state_dir, settings.index[0],
                                                 settings.thumbnail_ttl)
        log.info("removal requests and the search audit log in %s", settings.state_dir)
    else:
        log.warning("removal requests are OFF (--no-removals): searches carry no match_id, "
                    "POST /api/removals answers 404 naming whom to write to, and no search "
                    "is logged")
    services = Services(
        settings=settings,
        engine=engine,
        engines=EnginePool(engine_replicas(engine, replicas, threads)),
        catalog=catalog,
        admission=SearchAdmission(settings.max_searches),
        vector_searches=anyio.CapacityLimiter(cores()),
        rate_limit=search_rate_limit(settings),
        removals=removals,
        match_ids=match_ids,
    )
    for served in catalog.served:
        index = served.published.index
        root = served.photos_root(served.published)
        if not root.is_dir():
            log.warning("the dataset folder %s does not exist: thumbnails of %s will be missing",
                        root, index.dataset)
        log.info("serving index %s (%s): %d faces in %d photos", served.folder, index.dataset,
                 index.size, len(index.images))
    log.info("model pack %s on %s, %d engine replicas of %s threads", engine.pack.name,
             engine.device, replicas, threads or "all")
    return services


async def get_services(request: Request) -> Services:
    services: Services | None = getattr(request.app.state, "services", None)
    if services is None:
        raise ServiceNotReady("The service is starting or stopping; try again in a moment.")
    return services


ServicesDep = Annotated[Services, Depends(get_services)]


def search_rate_limit(settings: ServiceSettings) -> SearchRateLimit | None:
    """The per-client limits, shared by every process serving from the same state folder."""
    specs = [spec for spec in (settings.rate_limit, settings.daily_limit) if spec]
    return SearchRateLimit(specs, settings.state_dir) if specs else None


def check_rate_limit(request: Request, services: ServicesDep) -> None:
    if services.rate_limit is not None:
        services.rate_limit.hit(request.client.host if request.client else "unknown")
