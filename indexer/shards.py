"""Staging shards: the finished part of a build, kept so that an interrupted build resumes.

Each shard folder holds ``images.parquet`` (the records, row i for image i of the shard),
``faces/`` (the face table, ``image_id`` local to the shard) and ``vectors.npy`` (row i for
face i). A shard is written to a hidden folder, flushed, then renamed into place: a folder
with a shard's name is complete.
"""

from __future__ import annotations

import logging
import os
import shutil
from pathlib import Path

import numpy as np
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

    def flush(self) -> None:
        if not self.records:
            return
        final = self.folder / f"{self.number:06d}"
        temporary = self.folder / f".{self.number:06d}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        vectors = (np.concatenate(self.vectors) if self.vectors
                   else np.empty((0, self.dimension), np.float32))
        np.save(temporary / VECTORS_FILE, vectors.astype(np.float32))
        FaceTable.concatenate(self.faces).save(temporary / FACES_DIR)
        BoxTable.concatenate(self.small_faces).save(temporary / SMALL_FACES_DIR)
        write_image_table(temporary / IMAGES_FILE, records_to_table(self.records))
        fsync_tree(temporary)
        os.rename(temporary, final)
        self.number += 1
        self._reset()


def shard_folders(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


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
