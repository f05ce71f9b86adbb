"""The index on disk: the contract between the indexer and the service.

An index folder holds

- ``manifest.json``: format version, model pack (name and SHA-256 of each file), embedding
  dimension and metric, index type, counts, source coverage, detection settings, creation
  time, faceaudit version. It is written last: a folder without it is not an index.
- ``vectors.npy``: every face's L2-normalised embedding, float16, row i for face i (memory-
  mapped): what the searchable structure is built from, what rebuilds and clustering read.
- ``faces.faiss``: the searchable structure over those vectors (``faceaudit.indexer.ann``; the
  manifest's ``index`` section names its type); row i is face i.
- ``faces/``: per-face arrays as ``.npy`` files (memory-mapped by readers), row i for face i:
  ``image_id`` (int32, row of images.parquet), ``face_id`` (int64, stable across rebuilds),
  ``bbox`` (x1, y1, x2, y2; float32), ``landmarks`` (5x2, float32) and ``score`` (float32),
  in pixels of the upright full-size photo. Faces are in image id order.
- ``small_faces/``: ``image_id`` and ``bbox`` of the faces found but too small to embed (under
  the minimum face size), kept so that the service blurs them too.
- ``images.parquet``: one row per image, sorted by ``key`` (row i is image id i), with where
  its bytes are, its status and its provenance (``IMAGE_SCHEMA``). Read lazily, a row group
  at a time, so an index of 10^8 images does not become 10^8 Python objects.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
from collections import OrderedDict
from collections.abc import Iterable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
from numpy.typing import NDArray
from typing_extensions import Self

from faceaudit.errors import IndexNotFound
from faceaudit.indexer.ann import FAISS_FILE, VECTOR_STORE, build_search_index, write_vector_store
from faceaudit.indexer.readers.base import PROVENANCE_FIELDS, ByteLocation

FORMAT_NAME = "faceaudit-index"
FORMAT_VERSION = 3
MANIFEST = "manifest.json"
FACES_DIR = "faces"
SMALL_FACES_DIR = "small_faces"
IMAGES_FILE = "images.parquet"
ROW_GROUP_SIZE = 8192

STATUS_OK = "ok"
STATUS_NO_FACE = "no_face"
STATUS_FAILED = "failed"


@dataclass
class ImageRecord:
    """One image of the index: its stable key, where its bytes are, what became of it, and its
    provenance (the PROVENANCE_FIELDS, None where the source gives nothing)."""

    key: str
    ref: str
    status: str
    path: str | None = None  # ByteLocation under the dataset root
    offset: int | None = None
    size: int | None = None
    width: int | None = None
    height: int | None = None
    bytes: int | None = None
    faces: int = 0
    error: str | None = None
    retry: bool = False  # failed for a reason that may pass (a read error): the next build retries
    enriched: str | None = None  # the enrichment joined for it ("yfcc100m"), found or not
    dataset: str | None = None
    photo_id: str | None = None
    page_url: str | None = None
    image_url: str | None = None
    uploader_id: str | None = None
    uploader_name: str | None = None
    title: str | None = None
    licence_name: str | None = None
    licence_url: str | None = None
    date_taken: str | None = None
    date_uploaded: str | None = None
    sha256: str | None = None
    source_record: str | None = None

    @property
    def location(self) -> ByteLocation | None:
        return None if self.path is None else ByteLocation(self.path, self.offset, self.size)

    def provenance(self) -> dict[str, str | None]:
        """Exactly the PROVENANCE_FIELDS, in order."""
        return {name: getattr(self, name) for name in PROVENANCE_FIELDS}


_STRING = pa.string()
_TYPES = {"offset": pa.int64(), "size": pa.int64(), "width": pa.int32(), "height": pa.int32(),
          "bytes": pa.int64(), "faces": pa.int32(), "retry": pa.bool_()}
IMAGE_SCHEMA = pa.schema([(f.name, _TYPES.get(f.name, _STRING)) for f in fields(ImageRecord)])
_FIELD_NAMES = tuple(f.name for f in fields(ImageRecord))


def image_key(dataset: str, photo_id: str | None, sha256: str | None, ref: str) -> str:
    """The stable key of an image: ``{dataset}:{photo_id}`` when the platform gives an id,
    else ``{dataset}:sha256:{hex}`` of its bytes, else (bytes unreadable)
    ``{dataset}:ref:{ref}``."""
    if photo_id:
        return f"{dataset}:{photo_id}"
    if sha256:
        return f"{dataset}:sha256:{sha256}"
    return f"{dataset}:ref:{ref}"


def stable_face_id(key: str, ordinal: int) -> int:
    """A 63-bit id for face ``ordinal`` (detection order) of the image ``key``: the same in
    every build that sees the same bytes with the same models, whatever else the index holds."""
    digest = hashlib.blake2b(f"{key}\0{ordinal}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big") & 0x7FFF_FFFF_FFFF_FFFF


def records_to_table(records: Iterable[ImageRecord]) -> pa.Table:
    return pa.Table.from_pylist([asdict(r) for r in records], schema=IMAGE_SCHEMA)


def write_image_table(path: Path, table: pa.Table) -> None:
    with ImageTableWriter(path) as writer:
        writer.write(table)


class ImageTableWriter:
    """``images.parquet`` written a table at a time (row groups of ROW_GROUP_SIZE rows)."""

    def __init__(self, path: Path) -> None:
        self._writer = pq.ParquetWriter(path, IMAGE_SCHEMA, compression="zstd")

    def write(self, table: pa.Table) -> None:
        self._writer.write_table(table.select(list(_FIELD_NAMES)).cast(IMAGE_SCHEMA),
                                 row_group_size=ROW_GROUP_SIZE)

    def __enter__(self) -> ImageTableWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._writer.close()


def read_image_table(path: Path) -> pa.Table:
    return pq.read_table(path, schema=IMAGE_SCHEMA)


def record_from_row(row: dict[str, Any]) -> ImageRecord:
    return ImageRecord(**{name: row.get(name) for name in _FIELD_NAMES})  # type: ignore[arg-type]


class ImageTable:
    """The images of an index, read lazily from ``images.parquet``: a lookup reads one row
    group (8,192 rows) as Arrow, a few recent ones stay cached, and only the row asked for
    becomes Python objects. Thread-safe."""

    def __init__(self, path: Path, cached_groups: int = 16) -> None:
        self._file = pq.ParquetFile(path, memory_map=True)
        meta = self._file.metadata
        self._starts = np.cumsum([0] + [meta.row_group(i).num_rows
                                        for i in range(meta.num_row_groups)])
        self._cache: OrderedDict[int, pa.Table] = OrderedDict()
        self._cached_groups = cached_groups
        self._lock = threading.Lock()

    def __len__(self) -> int:
        return int(self._starts[-1])

    def _group(self, number: int) -> pa.Table:
        with self._lock:
            group = self._cache.get(number)
            if group is not None:
                self._cache.move_to_end(number)
                return group
            # Read under the lock: ParquetFile is not safe to read from several threads.
            group = self._file.read_row_group(number)
            self._cache[number] = group
            while len(self._cache) > self._cached_groups:
                self._cache.popitem(last=False)
        return group

    def __getitem__(self, image_id: int) -> ImageRecord:
        if not 0 <= image_id < len(self):
            raise IndexError(f"image id {image_id} out of range")
        group = int(np.searchsorted(self._starts, image_id, side="right")) - 1
        row = self._group(group).slice(image_id - int(self._starts[group]), 1).to_pylist()[0]
        return record_from_row(row)

    def __iter__(self) -> Iterator[ImageRecord]:
        for batch in self._file.iter_batches(batch_size=ROW_GROUP_SIZE):
            for row in batch.to_pylist():
                yield record_from_row(row)

    def column(self, name: str) -> list[Any]:
        return self._file.read(columns=[name]).column(name).to_pylist()


class _Columns:
    """Arrays of equal length, one row per face, saved as one ``.npy`` file each."""

    image_id: NDArray[np.int32]

    def __len__(self) -> int:
        return len(self.image_id)

    def take(self, rows: NDArray[np.integer]) -> Self:
        return type(self)(*(np.asarray(getattr(self, f.name))[rows]
                            for f in fields(self)))  # type: ignore[arg-type]

    @classmethod
    def concatenate(cls, tables: list[Self]) -> Self:
        if not tables:
            return cls.empty()
        return cls(*(np.concatenate([getattr(t, f.name) for t in tables])
                     for f in fields(cls)))  # type: ignore[arg-type]

    @classmethod
    def empty(cls) -> Self:
        raise NotImplementedError

    def save(self, folder: Path) -> None:
        folder.mkdir(exist_ok=True)
        for f in fields(self):  # type: ignore[arg-type]
            np.save(folder / f"{f.name}.npy", np.ascontiguousarray(getattr(self, f.name)))

    @classmethod
    def load(cls, folder: Path, *, mmap: bool = False) -> Self:
        return cls(*(np.load(folder / f"{f.name}.npy", mmap_mode="r" if mmap else None)
                     for f in fields(cls)))  # type: ignore[arg-type]


@dataclass
class FaceTable(_Columns):
    """The embedded faces: row i is vector i of the FAISS index."""

    image_id: NDArray[np.int32]
    face_id: NDArray[np.int64]
    bbox: NDArray[np.float32]
    landmarks: NDArray[np.float32]
    score: NDArray[np.float32]

    @classmethod
    def empty(cls) -> FaceTable:
        return cls(np.empty(0, np.int32), np.empty(0, np.int64), np.empty((0, 4), np.float32),
                   np.empty((0, 5, 2), np.float32), np.empty(0, np.float32))


@dataclass
class BoxTable(_Columns):
    """Faces found but too small to embed: never searched, but blurred in every image the
    service sends, like every face but the one that matched."""

    image_id: NDArray[np.int32]
    bbox: NDArray[np.float32]

    @classmethod
    def empty(cls) -> BoxTable:
        return cls(np.empty(0, np.int32), np.empty((0, 4), np.float32))


def fsync_tree(folder: Path) -> None:
    """Flush every file under ``folder`` and the folders themselves to stable storage, so a
    power cut after the publish swap cannot leave a published index with empty files."""
    for current, _, files in os.walk(folder):
        for name in files:
            fd = os.open(Path(current, name), os.O_RDONLY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
        fsync_dir(Path(current))


def fsync_dir(folder: Path) -> None:
    fd = os.open(folder, os.O_RDONLY | os.O_DIRECTORY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def write_index_files(
    folder: Path,
    *,
    vectors: NDArray[np.floating],
    faces: FaceTable,
    small_faces: BoxTable,
    images: pa.Table,
    manifest: dict[str, Any],
    index_type: str = "auto",
) -> None:
    """Write a complete index into ``folder`` (an empty staging folder), manifest last (its
    ``index`` section filled in here), and flush it all to disk."""
    write_vector_store(folder / VECTOR_STORE, vectors)
    faces.save(folder / FACES_DIR)
    small_faces.save(folder / SMALL_FACES_DIR)
    write_image_table(folder / IMAGES_FILE, images)
    finish_index_files(folder, manifest, index_type)


def finish_index_files(folder: Path, manifest: dict[str, Any], index_type: str = "auto") -> None:
    """Complete an index folder whose vector store and tables are written: build the
    searchable structure from the (memory-mapped) store, write the manifest last (its
    ``index`` section filled in here), and flush everything to disk."""
    stored = np.load(folder / VECTOR_STORE, mmap_mode="r")
    searchable, manifest["index"] = build_search_index(stored, index_type)
    del stored
    faiss.write_index(searchable, str(folder / FAISS_FILE))
    del searchable
    with open(folder / MANIFEST, "w", encoding="utf-8") as stream:
        json.dump(manifest, stream, indent=2)
        stream.write("\n")
    fsync_tree(folder)


def read_manifest(folder: Path) -> dict[str, Any]:
    path = folder / MANIFEST
    if not path.is_file():
        raise IndexNotFound(
            f"{folder} is not a faceaudit index (it has no {MANIFEST}). Build one with "
            f"`faceaudit index SOURCE --out {folder}`."
        )
    manifest: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    if manifest.get("format") != FORMAT_NAME:
        raise IndexNotFound(f"{path} is not a faceaudit manifest.")
    if manifest.get("format_version") != FORMAT_VERSION:
        raise IndexNotFound(
            f"{folder} has index format {manifest.get('format_version')}, and this faceaudit "
            f"reads format {FORMAT_VERSION}: rebuild the index with this version "
            f"(`faceaudit index SOURCE --out {folder}`)."
        )
    return manifest
