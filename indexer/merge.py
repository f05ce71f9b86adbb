"""Merge: the images a build keeps, taken from its staging shards and from the index it
replaces, into one table sorted by key, with their faces and vectors in the same order."""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import faiss
import numpy as np
import pyarrow as pa
from numpy.typing import NDArray

from faceaudit.indexer.shards import load_shard
from faceaudit.indexer.store import (
    FACES_DIR,
    FAISS_FILE,
    IMAGE_SCHEMA,
    IMAGES_FILE,
    FaceTable,
    read_image_table,
)

log = logging.getLogger(__name__)


@dataclass
class Parts:
    """Images with their faces (``faces.image_id`` = row of ``images``) and face vectors."""

    images: pa.Table
    faces: FaceTable
    vectors: NDArray[np.float32]

    @classmethod
    def empty(cls, dimension: int) -> Parts:
        return cls(IMAGE_SCHEMA.empty_table(), FaceTable.empty(),
                   np.empty((0, dimension), np.float32))

    def last_row_of_each_key(self) -> dict[str, int]:
        """key -> its last row: a later shard holds the newer version of an image."""
        return {key: row for row, key in enumerate(self.images.column("key").to_pylist())}


def concatenate(parts: list[Parts], dimension: int) -> Parts:
    if not parts:
        return Parts.empty(dimension)
    offsets = np.cumsum([0] + [p.images.num_rows for p in parts])
    faces = [FaceTable(p.faces.image_id.astype(np.int64) + offset, *(
        getattr(p.faces, name) for name in ("face_id", "bbox", "landmarks", "score")))
        for p, offset in zip(parts, offsets, strict=False)]
    table = FaceTable.concatenate(faces)
    return Parts(pa.concat_tables([p.images for p in parts]), table,
                 np.concatenate([p.vectors for p in parts]).astype(np.float32, copy=False))


def load_shards(folders: list[Path], dimension: int) -> Parts:
    parts = []
    for folder in folders:
        shard = load_shard(folder)
        parts.append(Parts(shard.images, shard.faces, shard.vectors))
    return concatenate(parts, dimension)


def load_index_parts(folder: Path) -> Parts:
    """A published index as Parts (its vectors read back from the exact FAISS index)."""
    index = faiss.read_index(str(folder / FAISS_FILE))
    vectors = (index.reconstruct_n(0, index.ntotal) if index.ntotal
               else np.empty((0, index.d), np.float32))
    return Parts(read_image_table(folder / IMAGES_FILE), FaceTable.load(folder / FACES_DIR),
                 vectors)


def select(parts: Parts, rows: NDArray[np.int64]) -> Parts:
    """The images at ``rows`` sorted by key, their faces in image order, renumbered."""
    keys = np.array(parts.images.column("key").to_pylist(), dtype=object)
    rows = np.asarray(rows, np.int64)
    rows = rows[np.argsort(keys[rows], kind="stable")] if len(rows) else rows
    new_id = np.full(parts.images.num_rows, -1, np.int64)
    new_id[rows] = np.arange(len(rows))
    face_image = new_id[parts.faces.image_id] if len(parts.faces) else np.empty(0, np.int64)
    kept = np.flatnonzero(face_image >= 0)
    kept = kept[np.argsort(face_image[kept], kind="stable")]
    faces = parts.faces.take(kept)
    faces.image_id = face_image[kept].astype(np.int32)
    return Parts(parts.images.take(pa.array(rows)), faces, parts.vectors[kept])
