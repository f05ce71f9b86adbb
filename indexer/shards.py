"""Staging shards: the finished part of a build, kept so that an interrupted build resumes.

Each shard folder holds ``images.parquet`` (the records, row i for image i of the shard),
``faces/`` and ``small_faces/`` (``image_id`` local to the shard) and ``vectors.npy`` (float16,
row i for face i: the index stores them so, and half the bytes to write and merge). A shard
is written to a hidden folder, flushed, then renamed into place: a folder with a shard's name
is complete. A unit of a distributed build adds its own files (``faceaudit.indexer.units``).
"""

from __future__ import annotations

import logging
import os
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from numpy.typing import NDArray

from faceaudit.indexer.store import (
    FACES_DIR,
    IMAGES_FILE,
    SMALL_FACES_DIR,
    BoxTable,
    FaceTable,
    ImageRecord,
    fsync_tree,
    read_image_table,
    records_to_table,
    stable_face_id,
    write_image_table,
)
from faceaudit.models.engine import DetectedFace

log = logging.getLogger(__name__)

VECTORS_FILE = "vectors.npy"


def box_table(faces: list[DetectedFace], image_id: int) -> BoxTable:
    return BoxTable(np.full(len(faces), image_id, np.int32),
                    np.array([f.bbox for f in faces], np.float32).reshape(-1, 4))


def face_table(record: ImageRecord, faces: list[DetectedFace], image_id: int) -> FaceTable:
    """The faces of one image as rows of a face table, with their stable ids."""
    if not faces:
        return FaceTable.empty()
    return FaceTable(
        np.full(len(faces), image_id, np.int32),
        np.array([stable_face_id(record.key, i) for i in range(len(faces))], np.int64),
        np.array([f.bbox for f in faces], np.float32),
        np.stack([f.landmarks for f in faces]).astype(np.float32),
        np.array([f.score for f in faces], np.float32),
    )


class ShardWriter:
    """Accumulates finished images and writes them as numbered shard folders."""

    def __init__(self, folder: Path, first_number: int, dimension: int) -> None:
        self.folder = folder
        self.number = first_number
        self.dimension = dimension
        self._reset()

    def _reset(self) -> None:
        self.records: list[ImageRecord] = []
        self.vectors: list[NDArray[np.float32]] = []
        self.faces: list[FaceTable] = []
        self.small_faces: list[BoxTable] = []

    def __len__(self) -> int:
        return len(self.records)

    def add(self, record: ImageRecord, faces: list[DetectedFace],
            vectors: NDArray[np.float32], small_faces: list[DetectedFace]) -> None:
        self.faces.append(face_table(record, faces, len(self.records)))
        self.small_faces.append(box_table(small_faces, len(self.records)))
        self.records.append(record)
        self.vectors.append(vectors)

    def flush(self, extra: Callable[[Path], None] | None = None, *,
              always: bool = False) -> Path | None:
        """Write the images added since the last flush as the next shard (nothing when there
        are none, unless ``always``); ``extra(folder)`` writes more files into it first."""
        if not self.records and not always:
            return None
        vectors = (np.concatenate(self.vectors) if self.vectors
                   else np.empty((0, self.dimension), np.float32))
        final = write_shard(self.folder / shard_name(self.number), records_to_table(self.records),
                            FaceTable.concatenate(self.faces),
                            BoxTable.concatenate(self.small_faces), vectors, extra)
        self.number += 1
        self._reset()
        return final


def shard_name(number: int) -> str:
    return f"{number:06d}"


def write_shard(final: Path, images: pa.Table, faces: FaceTable, small_faces: BoxTable,
                vectors: NDArray[np.floating], extra: Callable[[Path], None] | None = None
                ) -> Path:
    """Write a shard folder at ``final`` atomically: into a hidden folder beside it, flushed,
    then renamed (on shared storage too: a rename within one folder is atomic on NFS).

    Its images are sorted by key (faces, small faces and vectors alike), as the index is: a
    merge then reads each shard front to back instead of a row here and there."""
    images, faces, small_faces, vectors = sorted_by_key(images, faces, small_faces, vectors)
    temporary = final.with_name(f".{final.name}.tmp")
    shutil.rmtree(temporary, ignore_errors=True)
    temporary.mkdir()
    np.save(temporary / VECTORS_FILE, np.asarray(vectors).astype(np.float16))
    faces.save(temporary / FACES_DIR)
    small_faces.save(temporary / SMALL_FACES_DIR)
    write_image_table(temporary / IMAGES_FILE, images)
    if extra is not None:
        extra(temporary)
    fsync_tree(temporary)
    os.rename(temporary, final)
    return final


def sorted_by_key(images: pa.Table, faces: FaceTable, small_faces: BoxTable,
                  vectors: NDArray[np.floating]
                  ) -> tuple[pa.Table, FaceTable, BoxTable, NDArray[np.floating]]:
    """The shard's images in key order (stable), its faces in that image order."""
    order = np.asarray(pc.sort_indices(images.column("key")).to_numpy(), np.int64)
    if (order == np.arange(len(order))).all():
        return images, faces, small_faces, vectors
    new_id = np.empty(len(order), np.int64)
    new_id[order] = np.arange(len(order))

    def reordered(table: FaceTable | BoxTable) -> tuple[NDArray[np.int64], NDArray[np.int64]]:
        image = new_id[np.asarray(table.image_id, np.int64)]
        rows = np.argsort(image, kind="stable")
        return rows, image[rows]

    face_rows, face_image = reordered(faces)
    small_rows, small_image = reordered(small_faces)
    faces, small_faces = faces.take(face_rows), small_faces.take(small_rows)
    faces.image_id, small_faces.image_id = (face_image.astype(np.int32),
                                            small_image.astype(np.int32))
    return images.take(pa.array(order)), faces, small_faces, np.asarray(vectors)[face_rows]


def shard_folders(folder: Path) -> list[Path]:
    """The finished shards in ``folder``, in the order they were written."""
    return sorted((p for p in folder.iterdir() if p.is_dir() and not p.name.startswith(".")),
                  key=lambda p: (len(p.name), p.name))


def check_shards(folder: Path) -> list[Path]:
    """The shard folders that load; one that does not (a disk error, a crash mid-write on a
    file system without ordered renames) is deleted so its images are processed again."""
    good = []
    for shard in shard_folders(folder):
        try:
            read_image_table(shard / IMAGES_FILE)
            FaceTable.load(shard / FACES_DIR, mmap=True)
            BoxTable.load(shard / SMALL_FACES_DIR, mmap=True)
            np.load(shard / VECTORS_FILE, mmap_mode="r")
        except Exception as error:  # noqa: BLE001 - any damage means: redo this shard
            log.warning("discarding damaged shard %s: %s", shard, error)
            shutil.rmtree(shard, ignore_errors=True)
            continue
        good.append(shard)
    return good
