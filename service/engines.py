"""Engines for searches: a pool of replicas that detect and embed selfies side by side, and the
bound on how many searches the service takes at once."""

from __future__ import annotations

import logging
import math
import os
import time
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager

import anyio

from faceaudit.models.engine import FaceEngine
from faceaudit.service.errors import ServiceBusy

log = logging.getLogger(__name__)


def cores() -> int:
    """The cores this process may run on."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (
        os.cpu_count() or 1)


def replica_layout(device: str, replicas: int | None, threads: int | None
                   ) -> tuple[int, int | None]:
    """(replicas, onnxruntime threads of each). On CPU, by default one single-threaded replica
    per core: a selfie is small, and one engine given every core spends much of its time
    handing work between threads (benchmarks/load.py measures both). On CUDA one replica
    (the GPU is shared anyway)."""
    if replicas is None:
        replicas = 1 if device == "cuda" else cores()
    if threads is None and device != "cuda":
        threads = max(1, cores() // replicas)
    return replicas, threads


def engine_replicas(engine: FaceEngine, replicas: int, threads: int | None
                    ) -> list[FaceEngine]:
    """``engine`` and ``replicas - 1`` more like it, each with ``threads`` threads (the given
    engine keeps its own)."""
    return [engine] + [engine.replica(threads=threads) for _ in range(replicas - 1)]


class EnginePool:
    """Engines lent to one search at a time: an engine is not thread-safe, so each is used by
    one worker thread at a time, and a search waits (on the event loop, holding no thread)
    for a free one. Waiters are served first come, first served."""

    def __init__(self, engines: list[FaceEngine]) -> None:
        if not engines:
            raise ValueError("an engine pool needs at least one engine")
        self.size = len(engines)
        self._free = list(engines)
        self._available = anyio.Semaphore(len(engines))

    @asynccontextmanager
    async def engine(self) -> AsyncIterator[FaceEngine]:
        async with self._available:
            engine = self._free.pop()
            try:
                yield engine
            finally:
                self._free.append(engine)


class SearchAdmission:
    """At most ``limit`` searches at once, running or waiting for an engine; one more is
    refused at once (ServiceBusy, 503) instead of queueing without end, so the memory the
    waiting uploads take stays bounded. Used from the event loop only."""

    def __init__(self, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._seconds = 0.5  # a running mean of how long a search holds its slot

    @contextmanager
    def admit(self) -> Iterator[None]:
        if self.active >= self.limit:
            raise ServiceBusy(
                f"The service is busy with {self.active} searches right now: try again in "
                f"{self.retry_after()} seconds. Your photo was not kept.",
                retry_after=self.retry_after())
        self.active += 1
        started = time.monotonic()
        try:
            yield
        finally:
            self.active -= 1
            self._seconds = 0.9 * self._seconds + 0.1 * (time.monotonic() - started)

    def retry_after(self) -> int:
        """Seconds until the searches admitted now are likely done: as many finish per second
        as are admitted over the time each holds its slot (Little's law), so draining them
        takes about that time."""
        return max(1, math.ceil(self._seconds))
