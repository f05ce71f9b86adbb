"""A source cut into units of work for a distributed build, and the work on one unit.

A unit is an img2dataset tar (its samples are read where the unit runs: the bytes go from
shared storage to the worker, not through the driver), or, for folders, manifests and the
img2dataset files layout, a run of consecutive items in the source's stable order (listed once
by the driver; the worker reads their files). Each finished unit is one shard of the staging
folder, named by its number, holding besides the shard's files ``unit.json`` (what it is, its
fingerprint, its coverage and counts) and ``reused.parquet`` (the keys it takes from the index
being replaced). A unit whose shard exists with the same fingerprint is done: a resumed build
skips it.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from collections.abc import Iterator
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from faceaudit.errors import InvalidSetting
from faceaudit.imaging import DEFAULT_MAX_PIXELS
from faceaudit.indexer.merge import SELECTION_SCHEMA
from faceaudit.indexer.pipeline import process_items
from faceaudit.indexer.readers import open_source
from faceaudit.indexer.readers.base import Coverage, Source, SourceItem
from faceaudit.indexer.readers.webdataset import WebDatasetSource
from faceaudit.indexer.reuse import PREVIOUS, KnownImages
from faceaudit.indexer.shards import ShardWriter, shard_name
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.indexer.staging import SHARDS_DIR, ScanRecord
from faceaudit.models.engine import FaceEngine

UNIT_FILE = "unit.json"
REUSED_FILE = "reused.parquet"
DEFAULT_UNIT_SIZE = 1000  # items per unit of a folder or manifest


@dataclass
class Unit:
    """One unit of work: a tar of the source (``items`` None) or a list of its items."""

    number: int
    name: str  # the tar's name, or "items 0-999"
    fingerprint: str  # changes whenever what the unit reads changes
    items: list[SourceItem] | None = None


@dataclass
class UnitContext:
    """What a worker needs to process units, the same for every unit of a build."""

    source_path: Path  # what open_source opened (tar units are read through it)
    field_map: dict[str, str]
    root: Path
    dataset: str
    staging: Path
    dimension: int
    max_pixels: int = DEFAULT_MAX_PIXELS
    workers: int = 2  # decoding threads
    inference_workers: int | None = None


@dataclass
class UnitResult:
    """A finished unit, as ``unit.json`` records it."""

    number: int
    name: str
    fingerprint: str
    images: int = 0  # distinct keys, processed or reused
    processed: int = 0
    reused: int = 0
    duplicates: int = 0  # items whose key an earlier item of the unit had
    coverage: dict[str, Any] | None = None  # tar units: the tar's coverage
    stages: dict[str, float] = field(default_factory=dict)


def _stat(path: Path) -> list[int]:
    try:
        info = path.stat()
    except OSError:
        return []
    return [info.st_size, info.st_mtime_ns]


def _digest(value: Any) -> str:
    return hashlib.sha256(json.dumps(value, sort_keys=True, default=str).encode()).hexdigest()


def check_unit_size(unit_size: int) -> None:
    """Refuse a unit of fewer than one image (InvalidSetting)."""
    if unit_size < 1:
        raise InvalidSetting("unit_size", f"a unit holds at least 1 image, not {unit_size}")


def source_units(source: Source, unit_size: int = DEFAULT_UNIT_SIZE) -> Iterator[Unit]:
    """The units of ``source``, in its order. For a source of items (not tars) the items are
    listed here, so that the source's coverage is complete once this is exhausted."""
    if isinstance(source, WebDatasetSource):
        for number, path in enumerate(source.shards):
            yield Unit(number, path.name, _digest([path.name, _stat(path),
                                                   _stat(path.with_suffix(".parquet"))]))
        return
    chunk: list[SourceItem] = []
    number = 0
    for item in source.items():
        chunk.append(item)
        if len(chunk) == unit_size:
            yield _items_unit(source.root, number, chunk)
            number, chunk = number + 1, []
    if chunk:
        yield _items_unit(source.root, number, chunk)


def _items_unit(root: Path, number: int, items: list[SourceItem]) -> Unit:
    described = [[asdict(item) | {"data": None},
                  _stat(root / item.location.path) if item.location else []] for item in items]
    return Unit(number, f"items {items[0].ref} .. {items[-1].ref}", _digest(described), items)


def unit_folder(staging: Path, number: int) -> Path:
    return staging / SHARDS_DIR / shard_name(number)


def finished_unit(staging: Path, unit: Unit) -> UnitResult | None:
    """The record of ``unit`` if its shard is finished with the same fingerprint."""
    try:
        record = UnitResult(**json.loads((unit_folder(staging, unit.number) / UNIT_FILE)
                                         .read_text(encoding="utf-8")))
    except (OSError, ValueError, TypeError):
        return None
    return record if record.fingerprint == unit.fingerprint else None


def unit_keys(folder: Path) -> pa.Table:
    """(key, processed) of every image a finished unit holds, in no particular order."""
    processed = pq.read_table(folder / "images.parquet", columns=["key"]).column("key")
    reused = pq.read_table(folder / REUSED_FILE, columns=["key"]).column("key")
    return pa.table({"key": pa.chunked_array(processed.chunks + reused.chunks, pa.string()),
                     "processed": pa.array([True] * len(processed) + [False] * len(reused))})


def process_unit(unit: Unit, context: UnitContext, engine: FaceEngine,
                 known: KnownImages | None) -> UnitResult:
    """Read, decode, detect and embed the items of ``unit`` (those unchanged in ``known``, the
    index being replaced, are reused) and write its shard. Returns what it did."""
    coverage = None
    if unit.items is None:
        source = open_source(context.source_path, context.field_map)
        if not isinstance(source, WebDatasetSource):
            raise ValueError(f"{context.source_path} has no tars: unit {unit.name} is not one")
        source.coverage = coverage = Coverage()
        items: Iterator[SourceItem] = source.shard_items(context.root / unit.name)
    else:
        items = iter(unit.items)

    def reusable(key: str, sha256: str) -> str | None:
        return PREVIOUS if known is not None and (key, sha256) in known else None

    times = StageTimes()
    result = UnitResult(unit.number, unit.name, unit.fingerprint)
    writer = ShardWriter(context.staging / SHARDS_DIR, unit.number, context.dimension)
    seen: set[str] = set()
    reused: list[str] = []
    for item in process_items(engine, context.root, items, dataset=context.dataset,
                              workers=context.workers,
                              inference_workers=context.inference_workers,
                              max_pixels=context.max_pixels, times=times, reusable=reusable):
        key = item.record.key
        if key in seen:
            result.duplicates += 1
            continue
        seen.add(key)
        if item.reused_from is not None:
            reused.append(key)
        else:
            writer.add(item.record, item.faces, item.vectors, item.small_faces)
    result.images, result.reused = len(seen), len(reused)
    result.processed = len(seen) - len(reused)
    result.coverage = coverage.as_dict() if coverage is not None else None
    result.stages = times.as_dict()

    def extra(folder: Path) -> None:
        pq.write_table(pa.table({"key": pa.array(reused, pa.string())}), folder / REUSED_FILE)
        (folder / UNIT_FILE).write_text(json.dumps(asdict(result), indent=2), encoding="utf-8")

    final = unit_folder(context.staging, unit.number)
    if final.exists():  # an unfinished or outdated try of this unit
        _remove(final)
    writer.flush(extra, always=True)
    return result


def _remove(folder: Path) -> None:
    aside = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    os.rename(folder, aside)
    shutil.rmtree(aside, ignore_errors=True)


def add_coverage(total: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Two coverages (``Coverage.as_dict``) added up."""
    if not total:
        return dict(part)
    not_downloaded = dict(total.get("not_downloaded", {}))
    for reason, count in part.get("not_downloaded", {}).items():
        not_downloaded[reason] = not_downloaded.get(reason, 0) + count
    return {"rows": total["rows"] + part["rows"],
            "downloaded": total["downloaded"] + part["downloaded"],
            "not_downloaded": not_downloaded,
            "malformed": total["malformed"] + part["malformed"],
            "malformed_examples": (total["malformed_examples"]
                                   + part["malformed_examples"])[:20]}


def units_selection(staging: Path, results: list[UnitResult], resumed: set[int],
                    previous_manifest: str | None) -> tuple[pa.Table, ScanRecord]:
    """The selection of finished units (``results`` in unit order), each key taken from its
    first occurrence in the source's order as the single-host build does; and the record of
    the scan (coverage: the tars', if the units are tars)."""
    tables = [keys.append_column("unit", pa.array(np.full(keys.num_rows, r.number, np.int32)))
              for r in results for keys in [unit_keys(unit_folder(staging, r.number))]]
    every = (pa.concat_tables(tables) if tables else
             pa.table({"key": pa.array([], pa.string()), "processed": pa.array([], pa.bool_()),
                       "unit": pa.array([], pa.int32())}))
    first = every.take(pc.sort_indices(every, [("key", "ascending"), ("unit", "ascending")]))
    keys = first.column("key").combine_chunks()
    new_key = np.ones(len(keys), bool)
    if len(keys) > 1:
        new_key[1:] = np.asarray(pc.not_equal(keys[1:], keys[:-1]).to_numpy(
            zero_copy_only=False), bool)
    chosen = first.filter(pa.array(new_key))
    names = pc.utf8_lpad(pc.cast(chosen.column("unit"), pa.string()), 6, "0")
    selection = pa.table({"key": chosen.column("key"),
                          "shard": pc.if_else(chosen.column("processed"), names,
                                              pa.scalar(None, pa.string()))},
                         schema=SELECTION_SCHEMA)
    processed = np.asarray(chosen.column("processed").to_numpy(zero_copy_only=False), bool)
    again = np.isin(np.asarray(chosen.column("unit").to_numpy(), np.int64),
                    np.fromiter(resumed, np.int64, len(resumed)))
    coverage: dict[str, Any] = {}
    stages: dict[str, float] = {}
    for result in results:
        if result.coverage is not None:
            coverage = add_coverage(coverage, result.coverage)
        if result.number not in resumed:
            for name, seconds in result.stages.items():
                stages[name] = round(stages.get(name, 0.0) + seconds, 3)
    return selection, ScanRecord(
        coverage=coverage,
        processed=int((processed & ~again).sum()),
        reused_images=int((~processed).sum() + (processed & again).sum()),
        duplicates=sum(r.duplicates for r in results) + every.num_rows - chosen.num_rows,
        stages=stages, units={"units": len(results), "processed": len(results) - len(resumed),
                              "resumed": len(resumed)},
        previous_manifest=previous_manifest)
