"""Build an index from a source: read -> decode -> detect -> embed (``pipeline``) -> staging
shards (``shards``) -> merge with the unchanged part of the previous index (``merge``) ->
enrich -> publish.

Builds are incremental and resumable. An image is known by its key and the SHA-256 of its
bytes: one already in a finished shard of an interrupted build, or unchanged in the index
being replaced, is not decoded again. Images gone from the source are gone from the new index;
images that failed for a passing reason (a read error) are tried again.
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from faceaudit import __version__
from faceaudit.errors import FaceAuditError
from faceaudit.imaging import DEFAULT_MAX_PIXELS
from faceaudit.indexer.enrich import ENRICHMENTS, enrich_images
from faceaudit.indexer.lock import build_lock
from faceaudit.indexer.merge import (
    Parts,
    concatenate,
    load_index_parts,
    load_shards,
    select,
    without_faces,
)
from faceaudit.indexer.pipeline import StageTimes, process_items
from faceaudit.indexer.publish import publish
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.readers.base import Source
from faceaudit.indexer.shards import ShardWriter, check_shards
from faceaudit.indexer.store import (
    FACES_DIR,
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGES_FILE,
    SMALL_FACES_DIR,
    STATUS_FAILED,
    STATUS_NO_FACE,
    BoxTable,
    FaceTable,
    read_image_table,
    read_manifest,
    write_index_files,
)
from faceaudit.models.engine import FaceEngine

log = logging.getLogger(__name__)

BUILD_FILE = "build.json"
FROM_SHARDS, FROM_PREVIOUS = "shards", "previous"
# The failures a summary lists one by one; all are counted by reason.
MAX_LISTED_FAILURES = 1000


@dataclass
class BuildSummary:
    images: int = 0
    images_with_faces: int = 0
    no_face: int = 0
    failed: int = 0
    faces: int = 0
    small_faces: int = 0  # found but too small to embed; kept to be blurred
    processed: int = 0  # images read, decoded and run through the models in this run
    reused_images: int = 0  # unchanged since the previous index or an interrupted build
    removed_images: int = 0  # in the previous index, gone from the source
    removed_faces: int = 0  # left out because their removal was requested
    duplicates: int = 0  # items whose key another item of the source already had
    seconds: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)
    failures: list[tuple[str, str]] = field(default_factory=list)  # (ref, reason), first ones
    failure_reasons: Counter[str] = field(default_factory=Counter)
    coverage: dict[str, Any] = field(default_factory=dict)
    enrichment: dict[str, Any] = field(default_factory=dict)

    @property
    def images_per_second(self) -> float:
        return self.processed / self.seconds if self.seconds > 0 else 0.0


def default_dataset_name(source: Source) -> str:
    return source.root.name or "dataset"


def _settings(engine: FaceEngine, source: Source, dataset: str) -> dict[str, Any]:
    return {
        "format_version": FORMAT_VERSION,
        "source": source.identity(),
        "dataset": dataset,
        "model_sha256": engine.sha256,
        "detection": engine.detection.as_dict(),
        "dimension": engine.dimension,
    }


def _staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.building"


def _prepare_staging(staging: Path, settings: dict[str, Any], fresh: bool) -> list[Path]:
    """Reuse a previous interrupted build with the same settings; otherwise start clean."""
    build_file = staging / BUILD_FILE
    if staging.exists() and not fresh and build_file.is_file():
        try:
            previous = json.loads(build_file.read_text())
        except ValueError:
            previous = None
        if previous == settings:
            return check_shards(staging / "shards")
        log.warning("discarding an interrupted build made with other settings: %s", staging)
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "shards").mkdir(parents=True)
    build_file.write_text(json.dumps(settings, indent=2))
    return []


def _known_images(images: pa.Table) -> dict[str, tuple[str | None, bool]]:
    """key -> (sha256, retry) of the images of a table; a later row wins."""
    keys = images.column("key").to_pylist()
    shas = images.column("sha256").to_pylist()
    retry = images.column("retry").to_pylist()
    return {k: (s, bool(r)) for k, s, r in zip(keys, shas, retry, strict=True)}


def _previous_index(out: Path, engine: FaceEngine, dataset: str, fresh: bool
                    ) -> dict[str, tuple[str | None, bool]]:
    """The images of the index at ``out`` that a new build may reuse: none if it was made with
    other models, detection settings or dataset name (or cannot be read)."""
    if fresh or not out.exists():
        return {}
    try:
        manifest = read_manifest(out)
        FaceTable.load(out / FACES_DIR, mmap=True)  # every table readable, or nothing reused
        BoxTable.load(out / SMALL_FACES_DIR, mmap=True)
    except (FaceAuditError, OSError, RuntimeError, ValueError) as error:
        log.warning("not reusing the index at %s: %s", out, error)
        return {}
    built = {name: f["sha256"] for name, f in manifest["model_pack"]["files"].items()}
    if (built != engine.sha256 or manifest.get("detection") != engine.detection.as_dict()
            or manifest.get("dataset", {}).get("name") != dataset):
        log.info("the index at %s was built with other settings: rebuilding every image", out)
        return {}
    return _known_images(read_image_table(out / IMAGES_FILE).select(["key", "sha256",
                                                                      "retry"]))


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
) -> BuildSummary:
    """Index every image of ``source`` (a reader, or a path for ``open_source``) into ``out``
    and publish it atomically.

    ``dataset`` names the dataset in every image's key and provenance (default: the source
    folder's name). ``enrich`` maps an enrichment (``yfcc100m``) to its metadata file.
    ``progress(done, total)`` is called after each image (``total`` None when the source
    cannot say in advance). ``fresh`` ignores an interrupted build and the previous index.
    ``removed_face_ids``: faces whose removal was requested: left out of the searchable index
    (their boxes are kept with the small faces, so that they are blurred like bystanders).
    """
    started = time.perf_counter()
    if isinstance(source, Path):
        source = open_source(source)
    out = out.resolve()
    root = source.root.resolve()
    if out == root or root in out.parents:
        raise FaceAuditError(f"Put the index outside the dataset folder, not at {out}.")
    for name in enrich or {}:
        if name not in ENRICHMENTS:
            raise FaceAuditError(f"Unknown enrichment {name!r}: faceaudit knows "
                                 f"{', '.join(ENRICHMENTS)}.")
    dataset = dataset or default_dataset_name(source)
    out.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out):
        summary = _build_locked(source, out, engine, dataset, enrich or {}, workers,
                                inference_workers, shard_size, max_pixels, fresh, progress,
                                removed_face_ids)
    summary.seconds = time.perf_counter() - started
    log.info("stage seconds: %s", summary.stages.as_dict())
    return summary


def _build_locked(source: Source, out: Path, engine: FaceEngine, dataset: str,
                  enrich: Mapping[str, Path], workers: int, inference_workers: int | None,
                  shard_size: int, max_pixels: int, fresh: bool,
                  progress: Callable[[int, int | None], None] | None,
                  removed_face_ids: Collection[int]) -> BuildSummary:
    settings = _settings(engine, source, dataset)
    staging = _staging_folder(out)
    shards = _prepare_staging(staging, settings, fresh)
    # Only the keys, digests and retry flags of the finished shards: their faces and vectors
    # are read once, by the merge.
    staged = _known_images(pa.concat_tables(
        [read_image_table(s / IMAGES_FILE).select(["key", "sha256", "retry"]) for s in shards]
    )) if shards else {}
    previous = _previous_index(out, engine, dataset, fresh)

    def reusable(key: str, sha256: str) -> str | None:
        for origin, known in ((FROM_SHARDS, staged), (FROM_PREVIOUS, previous)):
            found = known.get(key)
            if found is not None and found[0] == sha256 and not found[1]:
                return origin
        return None

    summary = BuildSummary()
    live: dict[str, str] = {}  # key -> where the merge takes it from
    next_number = int(shards[-1].name) + 1 if shards else 0
    writer = ShardWriter(staging / "shards", next_number, engine.dimension)
    times = summary.stages
    for done, item in enumerate(
        process_items(engine, source.root, source.items(), dataset=dataset, workers=workers,
                      inference_workers=inference_workers, max_pixels=max_pixels, times=times,
                      reusable=reusable), start=1
    ):
        key = item.record.key
        if key in live:
            summary.duplicates += 1
        elif item.reused_from is not None:
            live[key] = item.reused_from
            summary.reused_images += 1
        else:
            live[key] = FROM_SHARDS
            summary.processed += 1
            writer.add(item.record, item.faces, item.vectors, item.small_faces)
            if len(writer) >= shard_size:
                clock = time.perf_counter()
                writer.flush()
                times.write += time.perf_counter() - clock
        if progress:
            progress(done, None)
    clock = time.perf_counter()
    writer.flush()
    summary.removed_images = sum(1 for key in previous if key not in live)
    merged = _merge(staging, out, engine.dimension, live, bool(previous))
    merged, summary.removed_faces = without_faces(merged, removed_face_ids)
    merged_images, summary.enrichment = enrich_images(merged.images, enrich)
    merged = Parts(merged_images, merged.faces, merged.vectors, merged.small_faces)
    _count(merged, summary)
    summary.coverage = {**source.coverage.as_dict(), "indexed": summary.images - summary.failed,
                        "failed": summary.failed, "no_face": summary.no_face,
                        "duplicates": summary.duplicates}
    manifest = _manifest(engine, source, dataset, summary)
    final = staging.parent / f".{out.name}.publish"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    write_index_files(final, vectors=merged.vectors, faces=merged.faces,
                      small_faces=merged.small_faces, images=merged.images, manifest=manifest)
    publish(final, out)
    shutil.rmtree(staging)
    times.write += time.perf_counter() - clock
    return summary


def _merge(staging: Path, out: Path, dimension: int, live: dict[str, str],
           has_previous: bool) -> Parts:
    """The live images, from the shards (newest version of each key) or the previous index."""
    shards = load_shards(check_shards(staging / "shards"), dimension)
    wanted_from_previous = [k for k, origin in live.items() if origin == FROM_PREVIOUS]
    previous = (load_index_parts(out) if has_previous and wanted_from_previous
                else Parts.empty(dimension))
    shard_rows = shards.last_row_of_each_key()
    previous_rows = previous.last_row_of_each_key()
    both = concatenate([shards, previous], dimension)
    rows = np.array(
        [shard_rows[key] if origin == FROM_SHARDS else shards.images.num_rows + previous_rows[key]
         for key, origin in live.items()], np.int64)
    return select(both, rows)


def _count(merged: Parts, summary: BuildSummary) -> None:
    images = merged.images
    status = images.column("status")
    summary.images = images.num_rows
    summary.faces = len(merged.faces)
    summary.small_faces = len(merged.small_faces)
    summary.images_with_faces = int(pc.sum(pc.greater(images.column("faces"), 0)).as_py() or 0)
    summary.no_face = int(pc.sum(pc.equal(status, STATUS_NO_FACE)).as_py() or 0)
    failed = images.filter(pc.equal(status, STATUS_FAILED)).select(["ref", "error"])
    summary.failed = failed.num_rows
    refs, errors = failed.column("ref").to_pylist(), failed.column("error").to_pylist()
    summary.failures = list(zip(refs, errors, strict=True))[:MAX_LISTED_FAILURES]
    # Reasons name their file; without the name, they can be counted.
    summary.failure_reasons = Counter((e or "").replace(r, "the image")[:160]
                                      for r, e in zip(refs, errors, strict=True))


def _manifest(engine: FaceEngine, source: Source, dataset: str,
              summary: BuildSummary) -> dict[str, Any]:
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "faceaudit_version": __version__,
        "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "model_pack": {
            "name": engine.pack.name,
            "files": {
                f.path.name: {"role": f.role, "sha256": engine.sha256[f.path.name]}
                for f in engine.pack.files
            },
            "licence": engine.pack.licence,
        },
        "embedding": {"dimension": engine.dimension, "metric": "cosine", "normalised": True},
        "index": {},  # filled in by write_index_files with the structure it builds
        "detection": engine.detection.as_dict(),
        "dataset": {"name": dataset, "root": str(source.root.resolve()), "kind": source.kind},
        "source": source.identity(),
        "coverage": summary.coverage,
        "enrichment": summary.enrichment,
        "counts": {
            "images": summary.images,
            "images_with_faces": summary.images_with_faces,
            "no_face": summary.no_face,
            "failed": summary.failed,
            "faces": summary.faces,
            "small_faces": summary.small_faces,
            "removed_faces": summary.removed_faces,
        },
        "failure_reasons": dict(summary.failure_reasons.most_common(50)),
    }
