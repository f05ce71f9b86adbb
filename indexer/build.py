"""Build an index from a source on one host: read -> decode -> detect -> embed (``pipeline``)
-> staging shards (``shards``, ``staging``) -> the public step ``build_from_embeddings``: merge
with the unchanged part of the previous index, enrich, publish.

Builds are incremental and resumable. An image is known by its key and the SHA-256 of its
bytes: one already in a finished shard of an interrupted build, or unchanged in the index
being replaced, is not decoded again. Images gone from the source are gone from the new index;
images that failed for a passing reason (a read error) are tried again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Collection, Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa

from faceaudit.errors import FaceAuditError
from faceaudit.imaging import DEFAULT_MAX_PIXELS
from faceaudit.indexer.enrich import ENRICHMENTS
from faceaudit.indexer.from_embeddings import manifest_base, publish_embeddings
from faceaudit.indexer.lock import build_lock
from faceaudit.indexer.merge import SELECTION_SCHEMA
from faceaudit.indexer.pipeline import check_workers, process_items
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.readers.base import Source
from faceaudit.indexer.reuse import PREVIOUS, previous_index
from faceaudit.indexer.shards import ShardWriter, shard_name
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.indexer.staging import (
    SHARDS_DIR,
    ScanRecord,
    finish_scan,
    manifest_digest,
    prepare_staging,
    staging_folder,
)
from faceaudit.indexer.store import FORMAT_VERSION, IMAGES_FILE, read_image_table
from faceaudit.indexer.summary import BuildSummary
from faceaudit.indexer.units import check_unit_size
from faceaudit.models.engine import FaceEngine

__all__ = ["BuildSummary", "build_index", "check_build", "default_dataset_name", "scan_settings"]

log = logging.getLogger(__name__)


def default_dataset_name(source: Source) -> str:
    return source.root.name or "dataset"


def scan_settings(engine: FaceEngine, source: Source, dataset: str) -> dict[str, Any]:
    """What makes the work in a staging folder reusable by a later build."""
    return {
        "format_version": FORMAT_VERSION,
        "source": source.identity(),
        "dataset": dataset,
        "model_sha256": engine.sha256,
        "detection": engine.detection.as_dict(),
        "dimension": engine.dimension,
    }


def check_build(source: Source, out: Path, enrich: Mapping[str, Path] | None, *,
                workers: int = 2, unit_size: int | None = None) -> None:
    """Refuse, before anything is written, a build that would write into its own dataset, name
    an unknown enrichment, or run with a number of threads or a unit size that cannot work."""
    check_workers(workers)
    if unit_size is not None:
        check_unit_size(unit_size)
    root = source.root.resolve()
    if out == root or root in out.parents:
        raise FaceAuditError(f"Put the index outside the dataset folder, not at {out}.")
    for name in enrich or {}:
        if name not in ENRICHMENTS:
            raise FaceAuditError(f"Unknown enrichment {name!r}: faceaudit knows "
                                 f"{', '.join(ENRICHMENTS)}.")


def _staged_images(shards: list[Path]) -> dict[str, tuple[str | None, bool, str]]:
    """key -> (sha256, retry, shard) of the images of finished shards; a later shard wins.
    Only these columns: the faces and vectors are read once, by the merge."""
    known: dict[str, tuple[str | None, bool, str]] = {}
    for shard in shards:
        table = read_image_table(shard / IMAGES_FILE).select(["key", "sha256", "retry"])
        for key, sha, retry in zip(*(table.column(c).to_pylist() for c in table.column_names),
                                   strict=True):
            known[key] = (sha, bool(retry), shard.name)
    return known


def build_index(
    source: Source | Path,
    out: Path,
    engine: FaceEngine,
    *,
    dataset: str | None = None,
    enrich: Mapping[str, Path] | None = None,
    workers: int = 2,
    inference_workers: int | None = None,
    shard_size: int = 512,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fresh: bool = False,
    progress: Callable[[int, int | None], None] | None = None,
    removed_face_ids: Collection[int] = frozenset(),
    index_type: str = "auto",
    allow_empty: bool = False,
) -> BuildSummary:
    """Index every image of ``source`` (a reader, or a path for ``open_source``) into ``out``
    and publish it atomically.

    ``dataset`` names the dataset in every image's key and provenance (default: the source
    folder's name). ``enrich`` maps an enrichment (``yfcc100m``) to its metadata file.
    ``progress(done, total)`` is called after each image (``total`` None when the source
    cannot say in advance). ``fresh`` ignores an interrupted build and the previous index.
    ``removed_face_ids``: faces whose removal was requested: left out of the searchable index
    (their boxes are kept with the small faces, so that they are blurred like bystanders).
    ``index_type``: the searchable structure (``faceaudit.indexer.ann``). ``allow_empty``:
    publish an index without faces over one with faces (refused otherwise: ``EmptyIndex``).
    """
    started = time.perf_counter()
    if isinstance(source, Path):
        source = open_source(source)
    out = out.resolve()
    check_build(source, out, enrich, workers=workers)
    dataset = dataset or default_dataset_name(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out):
        staging = staging_folder(out)
        record = _scan(source, out, staging, engine, dataset, workers, inference_workers,
                       shard_size, max_pixels, fresh, progress)
        clock = time.perf_counter()
        summary = publish_embeddings(staging, out, removed_face_ids=removed_face_ids,
                                     enrich=enrich or {}, index_type=index_type,
                                     allow_empty=allow_empty)
        summary.stages.write += time.perf_counter() - clock
    summary.seconds = time.perf_counter() - started
    log.info("stage seconds: %s (scan: %s)", summary.stages.as_dict(), record.stages)
    return summary


def _scan(source: Source, out: Path, staging: Path, engine: FaceEngine, dataset: str,
          workers: int, inference_workers: int | None, shard_size: int, max_pixels: int,
          fresh: bool, progress: Callable[[int, int | None], None] | None) -> ScanRecord:
    """Process every image of ``source`` not held unchanged by a finished shard of
    ``staging`` or by the index at ``out``, and record in ``staging`` where each image of the
    new index is to be taken from."""
    shards = prepare_staging(staging, scan_settings(engine, source, dataset),
                             manifest_base(engine, source, dataset), fresh)
    staged = _staged_images(shards)
    previous = None if fresh else previous_index(out, engine, dataset)

    def reusable(key: str, sha256: str) -> str | None:
        found = staged.get(key)
        if found is not None and found[0] == sha256 and not found[1]:
            return found[2]
        if previous is not None and (key, sha256) in previous:
            return PREVIOUS
        return None

    record = ScanRecord(previous_manifest=manifest_digest(out) if previous is not None
                        else None)
    live: dict[str, str] = {}  # key -> the shard it is taken from, or PREVIOUS
    next_number = int(shards[-1].name) + 1 if shards else 0
    writer = ShardWriter(staging / SHARDS_DIR, next_number, engine.dimension)
    times = StageTimes()
    for done, item in enumerate(
        process_items(engine, source.root, source.items(), dataset=dataset, workers=workers,
                      inference_workers=inference_workers, max_pixels=max_pixels, times=times,
                      reusable=reusable), start=1
    ):
        key = item.record.key
        if key in live:
            record.duplicates += 1
        elif item.reused_from is not None:
            live[key] = item.reused_from
            record.reused_images += 1
        else:
            live[key] = shard_name(writer.number)
            record.processed += 1
            writer.add(item.record, item.faces, item.vectors, item.small_faces)
            if len(writer) >= shard_size:
                clock = time.perf_counter()
                writer.flush()
                times.write += time.perf_counter() - clock
        if progress:
            progress(done, None)
    writer.flush()
    record.coverage = source.coverage.as_dict()
    record.stages = times.as_dict()
    selection = pa.table({"key": pa.array(list(live), pa.string()),
                          "shard": pa.array([None if origin == PREVIOUS else origin
                                             for origin in live.values()], pa.string())},
                         schema=SELECTION_SCHEMA)
    live.clear()
    staged.clear()
    finish_scan(staging, selection, record)
    return record
