"""Merge: the images a build keeps, taken from its staging shards and from the index it
replaces, into one table sorted by key, with their faces and vectors in the same order."""

from __future__ import annotations

import logging
from collections.abc import Collection
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from faceaudit.indexer.ann import VECTOR_STORE
from faceaudit.indexer.shards import VECTORS_FILE
from faceaudit.indexer.store import (
    FACES_DIR,
    IMAGE_SCHEMA,
    IMAGES_FILE,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    read_image_table,
)

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Images with their faces and small faces (``image_id`` = row of ``images``) and the
    faces' vectors."""

    images: pa.Table
    faces: FaceTable
    vectors: NDArray[np.float32]
    small_faces: BoxTable

    @classmethod
    def empty(cls, dimension: int) -> Parts:
        return cls(IMAGE_SCHEMA.empty_table(), FaceTable.empty(),
                   np.empty((0, dimension), np.float32), BoxTable.empty())

    @classmethod
    def load(cls, folder: Path, vectors: NDArray[np.float32]) -> Parts:
        return cls(read_image_table(folder / IMAGES_FILE), FaceTable.load(folder / FACES_DIR),
                   vectors, BoxTable.load(folder / SMALL_FACES_DIR))

    def last_row_of_each_key(self) -> dict[str, int]:
        """key -> its last row: a later shard holds the newer version of an image."""
        return {key: row for row, key in enumerate(self.images.column("key").to_pylist())}


def _shifted(table: FaceTable | BoxTable, offset: int) -> FaceTable | BoxTable:
    shifted = table.take(np.arange(len(table)))
    shifted.image_id = table.image_id.astype(np.int64) + offset
    return shifted


def concatenate(parts: list[Parts], dimension: int) -> Parts:
    if not parts:
        return Parts.empty(dimension)
    offsets = [int(o) for o in np.cumsum([0] + [p.images.num_rows for p in parts])]
    pairs = list(zip(parts, offsets, strict=False))
    return Parts(
        pa.concat_tables([p.images for p in parts]),
        FaceTable.concatenate([_shifted(p.faces, o) for p, o in pairs]),  # type: ignore[misc]
        np.concatenate([p.vectors for p in parts]).astype(np.float32, copy=False),
        BoxTable.concatenate([_shifted(p.small_faces, o) for p, o in pairs]),  # type: ignore[misc]
    )


def load_shards(folders: list[Path], dimension: int) -> Parts:
    return concatenate([Parts.load(f, np.load(f / VECTORS_FILE)) for f in folders], dimension)


def load_index_parts(folder: Path) -> Parts:
    """A published index as Parts (its vectors from its float16 vector store)."""
    return Parts.load(folder, np.load(folder / VECTOR_STORE).astype(np.float32))


def _rows_of(table: FaceTable | BoxTable, new_id: NDArray[np.int64]
             ) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
    """Rows of ``table`` whose image is kept, in new image order, and their new image ids."""
    image = new_id[table.image_id] if len(table) else np.empty(0, np.int64)
    kept = np.flatnonzero(image >= 0)
    kept = kept[np.argsort(image[kept], kind="stable")]
    return kept, image[kept]


def select(parts: Parts, rows: NDArray[np.int64]) -> Parts:
    """The images at ``rows`` sorted by key, their faces in image order, renumbered."""
    keys = np.array(parts.images.column("key").to_pylist(), dtype=object)
    rows = np.asarray(rows, np.int64)
    rows = rows[np.argsort(keys[rows], kind="stable")] if len(rows) else rows
    new_id = np.full(parts.images.num_rows, -1, np.int64)
    new_id[rows] = np.arange(len(rows))
    kept, image = _rows_of(parts.faces, new_id)
    faces = parts.faces.take(kept)
    faces.image_id = image.astype(np.int32)
    small_kept, small_image = _rows_of(parts.small_faces, new_id)
    small = parts.small_faces.take(small_kept)
    small.image_id = small_image.astype(np.int32)
    return Parts(parts.images.take(pa.array(rows)), faces, parts.vectors[kept], small)


def without_faces(parts: Parts, face_ids: Collection[int]) -> tuple[Parts, int]:
    """``parts`` with the faces of ``face_ids`` taken out of the searchable faces and kept as
    boxes only (so that they are still blurred); and how many were taken out."""
    if not face_ids or not len(parts.faces):
        return parts, 0
    removed = np.isin(np.asarray(parts.faces.face_id),
                      np.fromiter(face_ids, np.int64, len(face_ids)))
    if not removed.any():
        return parts, 0
    kept = np.flatnonzero(~removed)
    gone = parts.faces.take(np.flatnonzero(removed))
    small = BoxTable.concatenate([parts.small_faces, BoxTable(gone.image_id, gone.bbox)])
    order = np.argsort(small.image_id, kind="stable")
    images = parts.images
    counts = np.bincount(np.asarray(parts.faces.image_id)[kept],
                         minlength=images.num_rows).astype(np.int32)
    images = images.set_column(images.schema.get_field_index("faces"), "faces",
                               pa.array(counts, pa.int32()))
    return Parts(images, parts.faces.take(kept), parts.vectors[kept], small.take(order)), \
        int(removed.sum())
