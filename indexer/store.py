"""The index on disk: the contract between the indexer and the service.

An index folder holds

- ``manifest.json``: format version, model pack (name and SHA-256 of each file), embedding
  dimension and metric, index type, counts, detection settings, creation time, faceaudit
  version. It is written last: a folder without it is not an index.
- ``faces.faiss``: a FAISS index of every face's L2-normalised embedding; row i is face i.
- ``faces.npz``: per-face arrays, row i for face i: ``image_id`` (int32), ``bbox`` (x1, y1, x2,
  y2; float32), ``landmarks`` (5x2, float32) and ``score`` (float32), in pixels of the upright
  full-size photo.
- ``images.jsonl``: one JSON object per image, line i for image id i: ``path`` (relative to
  the dataset root, POSIX), ``width``, ``height``, ``bytes``, ``sha256``, ``status`` (``ok``,
  ``no_face`` or ``failed``), ``error`` and ``faces``. Readers ignore keys they do not know, so
  per-image provenance (``source_url``, ``photo_id``, ``uploader``, ``licence``) is added as
  more keys without a format break.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import IndexNotFound

FORMAT_NAME = "faceaudit-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
FAISS_FILE = "faces.faiss"
FACES_FILE = "faces.npz"
IMAGES_FILE = "images.jsonl"

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_FAILED = "failed"


@dataclass
class ImageRecord:
    path: str
    status: str
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    sha256: str | None = None
    faces: int = 0
    error: str | None = None
    extra: dict[str, Any] = field(default_factory=dict)  # keys this version does not know

    def to_json(self) -> str:
        data = asdict(self)
        extra = data.pop("extra")
        return json.dumps({**data, **extra}, ensure_ascii=False)

    @classmethod
    def from_json(cls, line: str) -> ImageRecord:
        data = json.loads(line)
        known = {k: data.pop(k) for k in list(data) if k in cls.__dataclass_fields__}
        known.pop("extra", None)
        return cls(**known, extra=data)


@dataclass
class FaceTable:
    image_id: NDArray[np.int32]
    bbox: NDArray[np.float32]
    landmarks: NDArray[np.float32]
    score: NDArray[np.float32]

    @classmethod
    def empty(cls) -> FaceTable:
        return cls(
            np.empty(0, np.int32),
            np.empty((0, 4), np.float32),
            np.empty((0, 5, 2), np.float32),
            np.empty(0, np.float32),
        )

    def __len__(self) -> int:
        return len(self.image_id)

    @classmethod
    def concatenate(cls, tables: list[FaceTable]) -> FaceTable:
        if not tables:
            return cls.empty()
        return cls(
            np.concatenate([t.image_id for t in tables]).astype(np.int32),
            np.concatenate([t.bbox for t in tables]).astype(np.float32),
            np.concatenate([t.landmarks for t in tables]).astype(np.float32),
            np.concatenate([t.score for t in tables]).astype(np.float32),
        )

    def save(self, path: Path) -> None:
        with open(path, "wb") as stream:
            np.savez(stream, image_id=self.image_id, bbox=self.bbox,
                     landmarks=self.landmarks, score=self.score)

    @classmethod
    def load(cls, path: Path) -> FaceTable:
        with np.load(path) as data:
            return cls(data["image_id"], data["bbox"], data["landmarks"], data["score"])


def write_images(path: Path, images: list[ImageRecord]) -> None:
    with open(path, "w", encoding="utf-8") as stream:
        for record in images:
            stream.write(record.to_json() + "\n")


def read_images(path: Path) -> list[ImageRecord]:
    with open(path, encoding="utf-8") as stream:
        return [ImageRecord.from_json(line) for line in stream if line.strip()]


def build_faiss(vectors: NDArray[np.float32], dimension: int) -> faiss.Index:
    """Exact inner product over L2-normalised vectors, i.e. cosine similarity."""
    index = faiss.IndexFlatIP(dimension)
    if len(vectors):
        index.add(np.ascontiguousarray(vectors, dtype=np.float32))
    return index


def write_index_files(
    folder: Path,
    *,
    vectors: NDArray[np.float32],
    faces: FaceTable,
    images: list[ImageRecord],
    manifest: dict[str, Any],
) -> None:
    """Write a complete index into ``folder`` (an empty staging folder), manifest last."""
    dimension = int(manifest["embedding"]["dimension"])
    faiss.write_index(build_faiss(vectors, dimension), str(folder / FAISS_FILE))
    faces.save(folder / FACES_FILE)
    write_images(folder / IMAGES_FILE, images)
    with open(folder / MANIFEST, "w", encoding="utf-8") as stream:
        json.dump(manifest, stream, indent=2)
        stream.write("\n")


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexNotFound(
            f"{folder} is not a faceaudit index (it has no {MANIFEST}). Build one with "
            f"`faceaudit index DATASET_DIR --out {folder}`."
        )
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_NAME:
        raise IndexNotFound(f"{path} is not a faceaudit manifest.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexNotFound(
            f"{folder} has index format {manifest.get('format_version')}, and this faceaudit "
            f"reads format {FORMAT_VERSION}: rebuild the index with this version."
        )
    return manifest
