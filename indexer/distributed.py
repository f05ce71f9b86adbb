"""Build an index on a Ray cluster: decode, detect and embed run in a pool of Ray actors (one
face engine each, one GPU each where the cluster has GPUs), one unit of the source at a time
(``faceaudit.indexer.units``); each finished unit is a shard in the staging folder on shared
storage; then the public step ``build_from_embeddings`` publishes.

The driver lists the units, skips those finished by an earlier run with the same settings
(resume), hands out the rest, and chooses each image's version as the single-host build does:
the first occurrence of a key in the source's order wins, an image unchanged in the index
being replaced is taken from it.
"""

from __future__ import annotations

import logging
import os
import shutil
import time
from collections.abc import Callable, Collection, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from faceaudit.errors import FaceAuditError
from faceaudit.imaging import DEFAULT_MAX_PIXELS
from faceaudit.indexer.build import check_build, default_dataset_name, scan_settings
from faceaudit.indexer.from_embeddings import manifest_base, publish_embeddings
from faceaudit.indexer.lock import build_lock
from faceaudit.indexer.readers.base import Source
from faceaudit.indexer.reuse import KnownImages, previous_index
from faceaudit.indexer.shards import shard_folders
from faceaudit.indexer.staging import (
    SHARDS_DIR,
    ScanRecord,
    finish_scan,
    manifest_digest,
    prepare_staging,
    staging_folder,
)
from faceaudit.indexer.summary import BuildSummary
from faceaudit.indexer.units import (
    DEFAULT_UNIT_SIZE,
    Unit,
    UnitContext,
    UnitResult,
    finished_unit,
    process_unit,
    source_units,
    units_selection,
)
from faceaudit.models.engine import FaceEngine

log = logging.getLogger(__name__)


class RayError(FaceAuditError):
    code = "ray"


@dataclass(frozen=True)
class ActorPlan:
    """How many workers, and what each asks the cluster for."""

    actors: int
    num_cpus: float
    num_gpus: float
    device: str
    threads: int | None
    inference_workers: int | None


def plan_actors(resources: Mapping[str, float], device: str) -> ActorPlan:
    """One actor per GPU when the cluster has GPUs (and the device allows them), else one
    single-threaded actor per CPU core, as the single-host build runs one engine per core."""
    gpus = int(resources.get("GPU", 0))
    if gpus and device != "cpu":
        return ActorPlan(gpus, 1, 1, device, None, None)
    if device == "cuda":
        raise RayError("--device cuda: the Ray cluster reports no GPU.")
    return ActorPlan(max(1, int(resources.get("CPU", 1))), 1, 0, "cpu", 1, 1)


class UnitWorker:
    """A Ray actor: one face engine, checked to be the driver's models, processing units."""

    def __init__(self, engine_spec: dict[str, Any], expected_sha256: dict[str, str],
                 context: UnitContext, known: KnownImages | None) -> None:
        self.engine = FaceEngine(**engine_spec)
        if self.engine.sha256 != expected_sha256:
            raise RayError(f"a worker's model files differ from the driver's: "
                           f"{self.engine.sha256} != {expected_sha256}. Install the same model "
                           "pack at the same path on every host.")
        self.context, self.known = context, known

    def ready(self) -> bool:
        return True

    def process(self, unit: Unit) -> UnitResult:
        return process_unit(unit, self.context, self.engine, self.known)


@contextmanager
def ray_session(address: str | None) -> Iterator[Any]:
    """Ray, connected: to ``address`` (a cluster's, ``auto``), or, when None, as ``ray.init()``
    decides (``RAY_ADDRESS``, else a new local instance). A caller's existing connection is
    used as it is and left open."""
    try:
        import ray
    except ImportError:
        raise RayError("--ray needs Ray: pip install 'faceaudit[ray]'.") from None
    if ray.is_initialized():
        yield ray
        return
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")  # nothing reported to Anyscale
    try:
        if address is None:
            ray.init(include_dashboard=False, logging_level=logging.WARNING)
        else:
            ray.init(address=address, logging_level=logging.WARNING)
    except (ConnectionError, ValueError, RuntimeError) as error:
        raise RayError(f"cannot connect to Ray{f' at {address}' if address else ''}: "
                       f"{error}") from None
    try:
        yield ray
    finally:
        ray.shutdown()


def build_index_on_ray(
    source: Source,
    out: Path,
    engine: FaceEngine,
    *,
    address: str | None = None,
    device: str = "auto",
    dataset: str | None = None,
    enrich: Mapping[str, Path] | None = None,
    workers: int = 2,
    unit_size: int = DEFAULT_UNIT_SIZE,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fresh: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    removed_face_ids: Collection[int] = frozenset(),
    index_type: str = "auto",
    allow_empty: bool = False,
) -> BuildSummary:
    """``build_index`` on a Ray cluster: the same index, its scan spread over the cluster.

    ``engine`` is the driver's: each worker loads the same model pack (same files, same path
    on every host) with the same detection settings, on ``device`` (auto: a GPU per worker
    where the cluster has GPUs). ``source`` and ``out`` must be on storage
    every worker sees at the same path: the staging folder is written beside ``out``.
    ``workers``: decoding threads per actor. ``unit_size``: items per unit of a folder or
    manifest (img2dataset tars are one unit each). Other arguments as for ``build_index``.
    """
    started = time.perf_counter()
    out = out.resolve()
    check_build(source, out, enrich, workers=workers, unit_size=unit_size)
    dataset = dataset or default_dataset_name(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out):
        staging = staging_folder(out)
        settings = {**scan_settings(engine, source, dataset), "layout": "units",
                    "unit_size": unit_size}
        prepare_staging(staging, settings, manifest_base(engine, source, dataset), fresh)
        known = None if fresh else previous_index(out, engine, dataset)
        with ray_session(address) as ray:  # the workers are gone before publishing
            plan = plan_actors(ray.cluster_resources(), device)
            identity = source.identity()
            context = UnitContext(
                source_path=Path(identity["path"]),
                field_map=dict(identity.get("field_map", {})), root=source.root,
                dataset=dataset, staging=staging, dimension=engine.dimension,
                max_pixels=max_pixels, workers=workers,
                inference_workers=plan.inference_workers)
            clock = time.perf_counter()
            actors = _start_workers(ray, plan, engine, context, known)
            startup = time.perf_counter() - clock
            _scan_units(ray.util.ActorPool(actors), plan.actors, source, staging, unit_size,
                        progress, manifest_digest(out) if known is not None else None)
            del actors
        clock = time.perf_counter()
        summary = publish_embeddings(staging, out, removed_face_ids=removed_face_ids,
                                     enrich=enrich or {}, index_type=index_type,
                                     allow_empty=allow_empty)
        summary.stages.write += time.perf_counter() - clock
    summary.seconds, summary.startup_seconds = time.perf_counter() - started, startup
    return summary


def _start_workers(ray: Any, plan: ActorPlan, engine: FaceEngine, context: UnitContext,
                   known: KnownImages | None) -> list[Any]:
    """The actors of ``plan``, each up with its models loaded and checked."""
    spec = {"pack": engine.pack, "device": plan.device, "detection": engine.detection,
            "threads": plan.threads}
    actor = ray.remote(UnitWorker).options(num_cpus=plan.num_cpus, num_gpus=plan.num_gpus,
                                           max_restarts=2, max_task_retries=2)
    known_ref = ray.put(known)  # one copy in the object store, shared by a host's workers
    actors = [actor.remote(spec, engine.sha256, context, known_ref)
              for _ in range(plan.actors)]
    try:
        ray.get([worker.ready.remote() for worker in actors])
    except ray.exceptions.RayError as error:
        raise RayError(f"the Ray workers could not start: {error}") from error
    log.info("ray: %d workers ready (%s)", plan.actors, plan)
    return actors


def _scan_units(pool: Any, actors: int, source: Source, staging: Path, unit_size: int,
                progress: Callable[[int, int | None], None] | None,
                previous_manifest: str | None) -> ScanRecord:
    """Process every unit not finished yet; record the selection and the scan."""
    results: dict[int, UnitResult] = {}
    resumed: set[int] = set()
    pending = done = 0
    images = 0

    def collect() -> None:
        nonlocal pending, images
        result = pool.get_next_unordered()
        pending -= 1
        results[result.number] = result
        images += result.images + result.duplicates
        if progress:
            progress(images, None)

    try:
        for unit in source_units(source, unit_size):
            finished = finished_unit(staging, unit)
            if finished is not None:
                results[unit.number] = finished
                resumed.add(unit.number)
                continue
            while pending >= 2 * actors:  # bounded: units are listed while others run
                collect()
            pool.submit(lambda worker, value: worker.process.remote(value), unit)
            pending += 1
            done += 1
        while pending:
            collect()
    except Exception as error:
        if type(error).__module__.startswith("ray"):
            raise RayError(f"a Ray worker failed: {error}. The finished units are kept: run "
                           "the same command again to resume.") from error
        raise
    for folder in shard_folders(staging / SHARDS_DIR):  # units the source no longer has
        if not folder.name.isdecimal() or int(folder.name) not in results:
            shutil.rmtree(folder)
    log.info("ray: %d units processed, %d resumed", done, len(resumed))
    selection, record = units_selection(staging, [results[n] for n in sorted(results)],
                                        resumed, previous_manifest)
    if not any(r.coverage is not None for r in results.values()):
        record.coverage = source.coverage.as_dict()  # units of items: counted when listed
    finish_scan(staging, selection, record)
    return record
