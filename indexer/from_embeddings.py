"""Build the searchable index from embedding shards: the step after a scan, public so that
the single-host build, the distributed build and an operator (`faceaudit build-index`) all
publish the same way.

It streams (``faceaudit.indexer.merge``): images sorted by key with Arrow, faces gathered in
that order, vectors copied chunk by chunk into the new float16 store, the searchable structure
built from the memory-mapped store; then the manifest, fsync, and the atomic swap.
"""

from __future__ import annotations

import json
import logging
import shutil
from collections.abc import Collection, Mapping, Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceaudit import __version__
from faceaudit.errors import FaceAuditError
from faceaudit.indexer.lock import build_lock
from faceaudit.indexer.merge import SELECTION_SCHEMA, DamagedStaging, merge_index_files
from faceaudit.indexer.publish import publish
from faceaudit.indexer.readers.base import Source
from faceaudit.indexer.shards import shard_folders
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.indexer.staging import SHARDS_DIR, ScanRecord, manifest_digest, read_scan
from faceaudit.indexer.store import (
    FORMAT_NAME,
    FORMAT_VERSION,
    IMAGES_FILE,
    MANIFEST,
    finish_index_files,
)
from faceaudit.indexer.summary import BuildSummary
from faceaudit.models.engine import FaceEngine

log = logging.getLogger(__name__)


class EmptyIndex(FaceAuditError):
    """A build that found no faces would replace an index that has some."""

    code = "empty_index"


def manifest_base(engine: FaceEngine, source: Source, dataset: str) -> dict[str, Any]:
    """The manifest of an index of ``source`` by ``engine``, less what publishing fills in."""
    return {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "faceaudit_version": __version__,
        "created": None,
        "model_pack": {
            "name": engine.pack.name,
            "files": {
                f.path.name: {"role": f.role, "sha256": engine.sha256[f.path.name]}
                for f in engine.pack.files
            },
            "licence": engine.pack.licence,
        },
        "embedding": {"dimension": engine.dimension, "metric": "cosine", "normalised": True},
        "index": {},  # filled in by finish_index_files with the structure it builds
        "detection": engine.detection.as_dict(),
        "dataset": {"name": dataset, "root": str(source.root.resolve()), "kind": source.kind},
        "source": source.identity(),
        "coverage": {},
        "enrichment": {},
        "counts": {},
        "failure_reasons": {},
    }


def newest_of_each_key(shards: Sequence[Path]) -> pa.Table:
    """A selection of every image of ``shards``, a later shard's version of a key winning."""
    tables = [pa.table({"key": pq.read_table(s / IMAGES_FILE, columns=["key"]).column("key"),
                        "order": pa.array(np.full(pq.read_metadata(s / IMAGES_FILE).num_rows,
                                                  number, np.int32))})
              for number, s in enumerate(shards)]
    if not tables:
        return SELECTION_SCHEMA.empty_table()
    newest = pa.concat_tables(tables).group_by("key").aggregate([("order", "max")])
    names = pa.array([s.name for s in shards], pa.string())
    return pa.table({"key": newest.column("key"),
                     "shard": names.take(newest.column("order_max"))}, schema=SELECTION_SCHEMA)


def build_from_embeddings(
    staging_or_shards: Path | Sequence[Path],
    out: Path,
    *,
    manifest: Mapping[str, Any] | None = None,
    removed_face_ids: Collection[int] = frozenset(),
    enrich: Mapping[str, Path] | None = None,
    index_type: str = "auto",
    allow_empty: bool = False,
) -> BuildSummary:
    """Publish at ``out`` the index of a finished scan's staging folder, or of shard folders.

    A staging folder (``faceaudit.indexer.staging``) says which image comes from which shard
    or from the index at ``out``, and gives the manifest; it is deleted once the index is
    published. Shard folders give every image they hold (a later shard's version of a key
    winning) and need ``manifest`` (see ``manifest_base``). ``removed_face_ids``: faces left out
    of the searchable index, their boxes kept to be blurred. ``enrich``: as for build_index.
    An index without faces is not published over one with faces (``EmptyIndex``) unless
    ``allow_empty``. Holds the build lock of ``out``; memory stays bounded whatever the number
    of faces.
    """
    out = out.resolve()
    out.parent.mkdir(parents=True, exist_ok=True)
    with build_lock(out):
        return publish_embeddings(staging_or_shards, out, manifest=manifest,
                                  removed_face_ids=removed_face_ids, enrich=enrich,
                                  index_type=index_type, allow_empty=allow_empty)


def publish_embeddings(
    staging_or_shards: Path | Sequence[Path],
    out: Path,
    *,
    manifest: Mapping[str, Any] | None = None,
    removed_face_ids: Collection[int] = frozenset(),
    enrich: Mapping[str, Path] | None = None,
    index_type: str = "auto",
    allow_empty: bool = False,
) -> BuildSummary:
    """``build_from_embeddings`` for a caller that holds the build lock of ``out``."""
    staging = None
    if isinstance(staging_or_shards, Path):
        staging = staging_or_shards
        selection, record, base = read_scan(staging)
        shards = shard_folders(staging / SHARDS_DIR)  # a damaged one fails the merge
    else:
        if manifest is None:
            raise ValueError("building from shard folders needs their manifest")
        shards = list(staging_or_shards)
        selection, record, base = newest_of_each_key(shards), ScanRecord(), dict(manifest)
    previous = None
    if record.previous_manifest is not None:
        if manifest_digest(out) != record.previous_manifest:
            raise DamagedStaging(f"The index at {out} changed since the scan that reused its "
                                 "images: run `faceaudit index` again.")
        previous = out
    work = out.parent / f".{out.name}.publish"
    shutil.rmtree(work, ignore_errors=True)
    work.mkdir()
    merged = merge_index_files(work, shards, selection, previous,
                               dimension=int(base["embedding"]["dimension"]),
                               removed_face_ids=removed_face_ids, enrich=enrich)
    stages = StageTimes(**{k: v for k, v in record.stages.items()
                           if k in StageTimes.__dataclass_fields__})
    summary = BuildSummary(processed=record.processed, reused_images=record.reused_images,
                           duplicates=record.duplicates, stages=stages,
                           units=dict(record.units), faces=merged.faces,
                           small_faces=merged.small_faces, removed_faces=merged.removed_faces,
                           enrichment=merged.enrichment)
    summary.count_images(merged.images)
    del merged
    pa.default_memory_pool().release_unused()  # the tables' memory, before the index's build
    if previous is not None:
        summary.removed_images = _removed_images(previous, selection)
    summary.coverage = {**record.coverage, "indexed": summary.images - summary.failed,
                        "failed": summary.failed, "no_face": summary.no_face,
                        "duplicates": summary.duplicates}
    summary.source_kind = base.get("dataset", {}).get("kind", "")
    if summary.faces == 0 and not allow_empty:
        _refuse_empty(out, work, staging)
    finish_index_files(work, complete_manifest(base, summary), index_type)
    publish(work, out)
    if staging is not None:
        shutil.rmtree(staging)
    return summary


def _refuse_empty(out: Path, work: Path, staging: Path | None) -> None:
    """Raise ``EmptyIndex`` when the index at ``out`` has faces: a build that found none
    (wrong source, detection settings that find nothing) must not replace it silently."""
    try:
        counts = json.loads((out / MANIFEST).read_text(encoding="utf-8")).get("counts") or {}
    except (OSError, ValueError, AttributeError):  # no index there: nothing to lose
        return
    faces = int(counts.get("faces") or 0)
    if faces:
        shutil.rmtree(work, ignore_errors=True)
        kept = f" The scan is kept in {staging}." if staging is not None else ""
        raise EmptyIndex(f"The new index has no faces and would replace {out}, which has "
                         f"{faces:,}: it was left as it was. Check the source and the "
                         f"detection settings, or pass --allow-empty to publish it.{kept}")


def _removed_images(previous: Path, selection: pa.Table) -> int:
    """Images of the previous index whose key the new one no longer has."""
    keys = pq.read_table(previous / IMAGES_FILE, columns=["key"]).column("key")
    kept = pc.is_in(keys, value_set=selection.column("key").combine_chunks())
    return int(len(keys) - (pc.sum(kept).as_py() or 0))


def complete_manifest(base: Mapping[str, Any], summary: BuildSummary) -> dict[str, Any]:
    return {**base,
            "created": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "coverage": summary.coverage,
            "enrichment": summary.enrichment,
            "counts": {
                "images": summary.images,
                "images_with_faces": summary.images_with_faces,
                "no_face": summary.no_face,
                "failed": summary.failed,
                "all_faces_removed": summary.all_faces_removed,
                "faces": summary.faces,
                "small_faces": summary.small_faces,
                "removed_faces": summary.removed_faces,
            },
            "failure_reasons": dict(summary.failure_reasons.most_common(50))}
