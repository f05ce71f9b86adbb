"""Merge: the images a build keeps, taken from staging shards and from the index it replaces,
written as a new index's tables and vector store: images sorted by key, their faces in image
order, each face's vector in the same row.

Streaming, so that memory does not grow with the vectors: the image tables stay Arrow (no
Python object per image), face tables are gathered as arrays, and the vectors are copied
chunk by chunk from the shards' and the previous index's stores into the new float16 store.
"""

from __future__ import annotations

import logging
from collections.abc import Collection, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError
from faceaudit.indexer.ann import VECTOR_STORE
from faceaudit.indexer.enrich import enrich_images
from faceaudit.indexer.npy_rows import NpyFile, NpyWriter, gather_rows
from faceaudit.indexer.shards import VECTORS_FILE
from faceaudit.indexer.store import (
    FACES_DIR,
    IMAGE_SCHEMA,
    IMAGES_FILE,
    ROW_GROUP_SIZE,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    ImageTableWriter,
    read_image_table,
)

log = logging.getLogger(__name__)

# A selection: one row per image of the new index, ``key`` and ``shard`` (the name of the
# shard folder to take it from; null: from the index being replaced).
SELECTION_SCHEMA = pa.schema([("key", pa.string()), ("shard", pa.string())])
# Images written to images.parquet per batch.
WRITE_ROWS = 8 * ROW_GROUP_SIZE
LOAD_THREADS = 8  # shards read side by side
_SHARDS, _PREVIOUS = 0, 1


class DamagedStaging(FaceAuditError):
    code = "damaged_staging"


@dataclass
class Merged:
    """What a merge wrote: the new index's images (in no particular order), and counts."""

    images: pa.Table
    faces: int = 0
    small_faces: int = 0
    removed_faces: int = 0  # left out of the searchable faces, kept as boxes to blur
    enrichment: dict[str, Any] = field(default_factory=dict)


@dataclass
class _Side:
    """The shards together, or the previous index: its images, its faces and small faces
    (``image_id`` = row of ``images``, non-decreasing) and its vector files."""

    images: pa.Table
    faces: FaceTable
    small_faces: BoxTable
    vectors: list[NpyFile]
    face_offsets: NDArray[np.int64]  # first face of each vector file, and the total
    image_counts: list[int]  # images per file (shard)

    def ranges(self, table: FaceTable | BoxTable) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(first row, count) of each image's rows in ``table``."""
        image_id = np.asarray(table.image_id)
        if len(image_id) and (np.diff(image_id) < 0).any():
            raise DamagedStaging("a face table is not in image order: rebuild with --fresh")
        counts = np.bincount(image_id, minlength=self.images.num_rows).astype(np.int64)
        return np.cumsum(counts) - counts, counts

    def file_rows(self, rows: NDArray[np.int64]) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        """(vector file, row in that file) of the faces at ``rows``."""
        if not self.vectors:
            return np.zeros(len(rows), np.int64), rows
        files = np.searchsorted(self.face_offsets, rows, side="right") - 1
        files = np.clip(files, 0, len(self.vectors) - 1)
        return files, rows - self.face_offsets[files]


def _no_side() -> _Side:
    return _Side(IMAGE_SCHEMA.empty_table(), FaceTable.empty(), BoxTable.empty(), [],
                 np.zeros(1, np.int64), [])


@dataclass
class _ShardFiles:
    """One shard, opened: its images, and the headers of its arrays."""

    folder: Path
    images: pa.Table
    vectors: NpyFile
    faces: dict[str, NpyFile]
    small_faces: dict[str, NpyFile]


def _open_shard(folder: Path, dimension: int) -> _ShardFiles:
    try:
        opened = _ShardFiles(folder, read_image_table(folder / IMAGES_FILE),
                             NpyFile(folder / VECTORS_FILE),
                             {f.name: NpyFile(folder / FACES_DIR / f"{f.name}.npy")
                              for f in fields(FaceTable)},
                             {f.name: NpyFile(folder / SMALL_FACES_DIR / f"{f.name}.npy")
                              for f in fields(BoxTable)})
    except (OSError, ValueError, pa.ArrowException) as error:
        raise DamagedStaging(f"the shard {folder} cannot be read ({error}): run `faceaudit "
                             "index` again, which processes its images again.") from None
    count = len(opened.vectors)
    if (opened.vectors.shape[1:] != (dimension,)
            or any(len(column) != count for column in opened.faces.values())
            or len({len(column) for column in opened.small_faces.values()}) > 1):
        raise DamagedStaging(f"{folder}: its face arrays and {opened.vectors.shape} vectors "
                             f"do not match (dimension {dimension})")
    return opened


def _read_columns(table: type[FaceTable] | type[BoxTable], shards: list[_ShardFiles],
                  part: str, image_offsets: list[int]) -> FaceTable | BoxTable:
    """The face (or small face) tables of ``shards`` read into arrays allocated once, image
    ids made global: no per-shard arrays to concatenate (nor to fragment the heap)."""
    columns = {name: [getattr(s, part)[name] for s in shards]
               for name in (f.name for f in fields(table))}
    counts = [len(getattr(s, part)["image_id"]) for s in shards]
    starts = np.cumsum([0] + counts)
    arrays: dict[str, NDArray] = {}
    for name, files in columns.items():
        sample = files[0] if files else None
        dtype = np.int64 if name == "image_id" else (sample.dtype if sample is not None
                                                     else np.float32)
        shape = sample.shape[1:] if sample is not None else ()
        arrays[name] = np.empty((int(starts[-1]), *shape), dtype)

    def fill(number: int) -> None:
        for name, files in columns.items():
            target = arrays[name][starts[number]:starts[number + 1]]
            files[number].read_into(target)
            if name == "image_id":
                target += image_offsets[number]

    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        list(pool.map(fill, range(len(shards))))
    return table(**arrays) if shards else table.empty()


def _load_shards(folders: list[Path], dimension: int) -> _Side:
    if not folders:
        return _no_side()
    # Thousands of small files: read side by side (Arrow and preads release the GIL).
    with ThreadPoolExecutor(LOAD_THREADS) as pool:
        shards = list(pool.map(lambda folder: _open_shard(folder, dimension), folders))
    _release()  # Parquet's decoding buffers
    image_counts = [s.images.num_rows for s in shards]
    image_offsets = [int(n) for n in np.cumsum([0] + image_counts[:-1])]
    files = [s.vectors for s in shards]
    return _Side(pa.concat_tables([s.images for s in shards]),
                 _read_columns(FaceTable, shards, "faces", image_offsets),
                 _read_columns(BoxTable, shards, "small_faces", image_offsets),
                 files, np.cumsum([0] + [len(f) for f in files]).astype(np.int64), image_counts)


def _load_previous(folder: Path) -> _Side:
    store = NpyFile(folder / VECTOR_STORE)
    images = read_image_table(folder / IMAGES_FILE)
    return _Side(images, FaceTable.load(folder / FACES_DIR),
                 BoxTable.load(folder / SMALL_FACES_DIR), [store],
                 np.array([0, len(store)], np.int64), [images.num_rows])


def _rows_of(keys: pa.Table, side_keys: pa.Array, shard_of_row: NDArray[np.int32] | None,
             what: str) -> NDArray[np.int64]:
    """Rows of a side's images holding the selected ``keys`` (with their shard index, when
    ``shard_of_row`` is given); within a shard, a later row holding a key wins."""
    columns = {"key": side_keys, "row": pa.array(np.arange(len(side_keys), dtype=np.int64))}
    match = ["key"]
    if shard_of_row is not None:
        columns["shard"] = pa.array(shard_of_row)
        match.append("shard")
    found = keys.join(pa.table(columns), keys=match, join_type="inner")
    found = found.group_by(match).aggregate([("row", "max")])
    if found.num_rows != keys.num_rows:
        raise DamagedStaging(f"{keys.num_rows - found.num_rows} selected images are not in "
                             f"{what}: the staging folder is damaged or the index changed since "
                             "its scan; run `faceaudit index` again.")
    return np.asarray(found.column("row_max").to_numpy(), np.int64)


def _images_in_key_order(staged: _Side, old: _Side, shard_rows: NDArray[np.int64],
                         previous_rows: NDArray[np.int64]
                         ) -> tuple[pa.Table, NDArray[np.int8], NDArray[np.int64]]:
    """The selected images of both sides sorted by key, and for each its side and row there.
    Taken a column at a time, each source column let go once taken, so the image tables are
    never held twice over; the sides' tables are emptied."""
    names = list(IMAGE_SCHEMA.names)
    sources = pa.concat_tables([staged.images.select(names), old.images.select(names)])
    first_previous = staged.images.num_rows
    staged.images = old.images = IMAGE_SCHEMA.empty_table()
    rows = np.concatenate([shard_rows, first_previous + previous_rows])
    order = pc.sort_indices(sources.column("key").take(pa.array(rows)))
    rows = rows[np.asarray(order.to_numpy(), np.int64)]
    taken = []
    for name in names:
        taken.append(sources.column(name).take(pa.array(rows)))
        sources = sources.drop_columns([name])
        _release()
    side = (rows >= first_previous).astype(np.int8)
    return (pa.Table.from_arrays(taken, schema=IMAGE_SCHEMA), side,
            np.where(side == _PREVIOUS, rows - first_previous, rows))


def _release() -> None:
    """Give the memory Arrow's pool keeps after frees back to the system (mimalloc and jemalloc
    hold on to it), so that it does not add to the build's peak."""
    pa.default_memory_pool().release_unused()


def _expand(starts: NDArray[np.int64], counts: NDArray[np.int64]) -> NDArray[np.int64]:
    """The rows start[i] .. start[i] + count[i] - 1 of every i, in order."""
    total = int(counts.sum())
    ends = np.cumsum(counts)
    return np.repeat(starts - (ends - counts), counts) + np.arange(total, dtype=np.int64)


def _pick(values: tuple[NDArray, NDArray], side: NDArray[np.int8],
          rows: NDArray[np.int64]) -> NDArray:
    """values[side[i]][rows[i]] for every i."""
    first, second = (np.asarray(v) for v in values)
    out = np.empty((len(rows), *first.shape[1:]), first.dtype)
    from_second = side == _PREVIOUS
    out[~from_second] = first[rows[~from_second]]
    if from_second.any():
        out[from_second] = second[rows[from_second]]
    return out


def merge_index_files(folder: Path, shards: list[Path], selection: pa.Table,
                      previous: Path | None, *, dimension: int,
                      removed_face_ids: Collection[int] = frozenset(),
                      enrich: Mapping[str, Path] | None = None) -> Merged:
    """Write into ``folder`` the images of ``selection`` (SELECTION_SCHEMA) from ``shards``
    and the index at ``previous``: ``images.parquet``, ``faces/``, ``small_faces/`` and the
    float16 ``vectors.npy``. Faces in ``removed_face_ids`` are left out of the searchable
    faces and kept with the small faces (so that they are blurred like bystanders)."""
    if pc.count_distinct(selection.column("key")).as_py() != selection.num_rows:
        raise DamagedStaging("the selection lists an image twice: run `faceaudit index` again")
    staged = _load_shards(shards, dimension)
    from_previous = pc.is_null(selection.column("shard"))
    wanted = selection.filter(pc.invert(from_previous))
    shard_index = pc.index_in(wanted.column("shard"),
                              value_set=pa.array([s.name for s in shards], pa.string()))
    if shard_index.null_count:
        raise DamagedStaging("the selection names shards the staging folder does not hold")
    shard_of_row = np.repeat(np.arange(len(shards), dtype=np.int32), staged.image_counts)
    shard_rows = _rows_of(pa.table({"key": wanted.column("key"),
                                    "shard": shard_index.cast(pa.int32())}),
                          staged.images.column("key").combine_chunks(), shard_of_row,
                          "the staging shards")
    wanted_previous = selection.filter(from_previous).select(["key"])
    _release()  # what reading and joining the tables left in Arrow's pool
    old, previous_rows = _no_side(), np.empty(0, np.int64)
    if wanted_previous.num_rows:
        if previous is None:
            raise DamagedStaging("the selection takes images from a previous index, and none "
                                 "was given")
        old = _load_previous(previous)
        previous_rows = _rows_of(wanted_previous, old.images.column("key").combine_chunks(),
                                 None, f"the index at {previous}")

    face_ranges = staged.ranges(staged.faces), old.ranges(old.faces)
    small_ranges = staged.ranges(staged.small_faces), old.ranges(old.small_faces)
    images, side, side_row = _images_in_key_order(staged, old, shard_rows, previous_rows)
    count = images.num_rows

    # Faces of the new images, in the new image order.
    counts = _pick((face_ranges[0][1], face_ranges[1][1]), side, side_row)
    face_side = np.repeat(side, counts)
    face_row = _expand(_pick((face_ranges[0][0], face_ranges[1][0]), side, side_row), counts)
    face_image = np.repeat(np.arange(count, dtype=np.int64), counts)
    face_id = _pick((staged.faces.face_id, old.faces.face_id), face_side, face_row)
    removed = (np.isin(face_id, np.fromiter(removed_face_ids, np.int64, len(removed_face_ids)))
               if removed_face_ids else np.zeros(len(face_id), bool))
    kept = ~removed
    kept_side, kept_row = face_side[kept], face_row[kept]
    FaceTable(*(
        face_image[kept].astype(np.int32) if f.name == "image_id" else
        _pick((getattr(staged.faces, f.name), getattr(old.faces, f.name)), kept_side, kept_row)
        for f in fields(FaceTable))).save(folder / FACES_DIR)

    # Small faces, then the boxes of the removed faces, each image's together.
    small_counts = _pick((small_ranges[0][1], small_ranges[1][1]), side, side_row)
    small_side = np.repeat(side, small_counts)
    small_row = _expand(_pick((small_ranges[0][0], small_ranges[1][0]), side, side_row),
                        small_counts)
    small_image = np.concatenate([np.repeat(np.arange(count, dtype=np.int64), small_counts),
                                  face_image[removed]])
    small_bbox = np.concatenate([
        _pick((staged.small_faces.bbox, old.small_faces.bbox), small_side, small_row),
        _pick((staged.faces.bbox, old.faces.bbox), face_side[removed], face_row[removed])])
    small_order = np.argsort(small_image, kind="stable")
    BoxTable(small_image[small_order].astype(np.int32),
             small_bbox[small_order].astype(np.float32)).save(folder / SMALL_FACES_DIR)

    # Vectors, from the shards' files and the previous index's store (the last file).
    shard_file, shard_file_row = staged.file_rows(kept_row)
    from_shards = kept_side == _SHARDS
    file_of = np.where(from_shards, shard_file, len(staged.vectors))
    row_of = np.where(from_shards, shard_file_row, kept_row)
    with NpyWriter(folder / VECTOR_STORE, (len(kept_row), dimension), np.float16) as store:
        gather_rows(staged.vectors + old.vectors, file_of, row_of, store)

    # Images: face counts after removals, enrichment, then written a batch at a time.
    face_counts = np.bincount(face_image[kept], minlength=count).astype(np.int32)
    images = images.set_column(images.schema.get_field_index("faces"), "faces",
                               pa.array(face_counts, pa.int32()))
    images, enrichment = enrich_images(images, enrich or {})
    with ImageTableWriter(folder / IMAGES_FILE) as writer:
        for start in range(0, count, WRITE_ROWS):
            writer.write(images.slice(start, WRITE_ROWS))
    return Merged(images, len(kept_row), len(small_image), int(removed.sum()), enrichment)
