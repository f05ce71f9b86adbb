"""Build an index: scan -> read+decode (threads) -> detect -> align+embed (batched) -> shard ->
merge -> publish. Shards make a build resumable: re-running the same command after a crash or
Ctrl-C skips every image already in a finished shard.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from queue import Queue
from typing import Any

import numpy as np
from numpy.typing import NDArray

from faceaudit import __version__
from faceaudit.errors import FaceAuditError
from faceaudit.imaging import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from faceaudit.indexer.publish import publish
from faceaudit.indexer.scan import scan_dataset
from faceaudit.indexer.store import (
    FAISS_FILE,
    FORMAT_NAME,
    FORMAT_VERSION,
    STATUS_FAILED,
    STATUS_NO_FACE,
    STATUS_OK,
    FaceTable,
    ImageRecord,
    read_images,
    write_images,
    write_index_files,
)
from faceaudit.models.engine import DetectedFace, FaceEngine

log = logging.getLogger(__name__)

BUILD_FILE = "build.json"


@dataclass
class StageTimes:
    """Seconds spent per stage (decode runs in worker threads, so it overlaps the others)."""

    read_decode: float = 0.0
    detect: float = 0.0
    embed: float = 0.0
    write: float = 0.0

    def as_dict(self) -> dict[str, float]:
        return {k: round(v, 3) for k, v in self.__dict__.items()}


@dataclass
class BuildSummary:
    images: int = 0
    images_with_faces: int = 0
    no_face: int = 0
    failed: int = 0
    faces: int = 0
    resumed_images: int = 0
    seconds: float = 0.0
    stages: StageTimes = field(default_factory=StageTimes)
    failures: list[tuple[str, str]] = field(default_factory=list)

    @property
    def images_per_second(self) -> float:
        processed = self.images - self.resumed_images
        return processed / self.seconds if self.seconds > 0 else 0.0


@dataclass
class _Decoded:
    path: str
    record: ImageRecord
    image: DecodedImage | None


def _read_and_decode(root: Path, path: str, max_pixels: int, max_side: int) -> _Decoded:
    try:
        data = (root / path).read_bytes()
    except OSError as error:
        return _Decoded(path, ImageRecord(path, STATUS_FAILED, error=f"cannot read: {error}"), None)
    record = ImageRecord(path, STATUS_OK, bytes=len(data), sha256=hashlib.sha256(data).hexdigest())
    try:
        image = decode_image(data, max_pixels=max_pixels, max_side=max_side, name=path)
    except FaceAuditError as error:
        record.status, record.error = STATUS_FAILED, error.message
        return _Decoded(path, record, None)
    record.width, record.height = image.width, image.height
    return _Decoded(path, record, image)


def _in_order(futures: Iterable[Future], ahead: int) -> Iterator:
    """Results of ``futures`` in submission order, keeping at most ``ahead`` in flight."""
    window: deque[Future] = deque()
    for future in futures:
        window.append(future)
        if len(window) >= ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


def default_inference_workers(engine: FaceEngine) -> int:
    """On a CPU, one single-threaded engine per core beats one engine using every core: the
    models' small tensors do not split well across threads. A GPU gets one engine."""
    return 1 if engine.device == "cuda" else max(1, min(os.cpu_count() or 1, 8))


@dataclass
class ProcessedImage:
    """One image through the face engine: its record, its faces and their embeddings."""

    record: ImageRecord
    faces: list[DetectedFace]
    vectors: NDArray[np.float32]
    query_vectors: NDArray[np.float32] | None = None  # as a selfie is embedded (with flip)


def _detect_and_embed(engines: Queue[FaceEngine], item: _Decoded, times: StageTimes,
                      as_query: bool) -> ProcessedImage:
    record, faces = item.record, []
    engine = engines.get()
    query_vectors = None
    try:
        vectors = np.empty((0, engine.dimension), np.float32)
        if item.image is None:
            return ProcessedImage(record, faces, vectors)
        try:
            clock = time.perf_counter()
            faces = engine.detect(item.image)
            times.detect += time.perf_counter() - clock
            clock = time.perf_counter()
            if as_query:
                vectors, query_vectors = engine.embed_with_mirror(item.image, faces)
            else:
                vectors = engine.embed(item.image, faces)
            times.embed += time.perf_counter() - clock
        except Exception as error:  # one bad image must never stop a long build
            log.warning("failed on %s: %s", item.path, error)
            record.status, record.error = STATUS_FAILED, f"face engine error: {error}"
            faces, vectors = [], np.empty((0, engine.dimension), np.float32)
    finally:
        engines.put(engine)
    record.faces = len(faces)
    if record.status == STATUS_OK and not faces:
        record.status = STATUS_NO_FACE
    return ProcessedImage(record, faces, vectors, query_vectors)


def process_images(
    engine: FaceEngine,
    root: Path,
    paths: Iterable[str],
    *,
    workers: int = 2,
    inference_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    times: StageTimes | None = None,
    query_paths: Container[str] = frozenset(),
) -> Iterator[ProcessedImage]:
    """Read, decode, detect and embed each image; results in input order. The one pipeline
    that both ``index`` and ``eval`` run. A failure is recorded on the image, never raised.

    ``workers`` threads read and decode; ``inference_workers`` threads each own a replica of
    ``engine`` (onnxruntime and Pillow release the GIL, so both stages run in parallel).
    ``times`` accumulates busy seconds per stage, summed over threads. Images in
    ``query_paths`` also get ``query_vectors``, embedded as a selfie is (for ``eval``).
    """
    times = times if times is not None else StageTimes()
    count = inference_workers or default_inference_workers(engine)
    engines: Queue[FaceEngine] = Queue()
    if count == 1:
        engines.put(engine)
    else:
        cores = os.cpu_count() or 1
        for _ in range(count):
            engines.put(engine.replica(threads=max(1, cores // count)))
    ahead = 4 * (workers + count)

    def decode(path: str) -> _Decoded:
        clock = time.perf_counter()
        item = _read_and_decode(root, path, max_pixels, engine.detection.decode_max_side)
        times.read_decode += time.perf_counter() - clock
        return item

    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as decoders, \
            ThreadPoolExecutor(count, thread_name_prefix="infer") as inferers:
        decoded = _in_order((decoders.submit(decode, path) for path in paths), ahead)
        yield from _in_order(
            (inferers.submit(_detect_and_embed, engines, item, times, item.path in query_paths)
             for item in decoded), ahead
        )


def _build_settings(engine: FaceEngine, dataset: Path) -> dict[str, Any]:
    return {
        "dataset_root": str(dataset),
        "model_pack": engine.pack.name,
        "model_sha256": engine.sha256,
        "detection": engine.detection.as_dict(),
        "dimension": engine.dimension,
    }


class _ShardWriter:
    """Accumulates finished images and writes them as numbered shard folders (atomically)."""

    def __init__(self, folder: Path, first_number: int, dimension: int) -> None:
        self.folder = folder
        self.number = first_number
        self.dimension = dimension
        self._reset()

    def _reset(self) -> None:
        self.images: list[ImageRecord] = []
        self.vectors: list[NDArray[np.float32]] = []
        self.faces: list[FaceTable] = []

    def add(self, record: ImageRecord, vectors: NDArray[np.float32], faces: FaceTable) -> None:
        faces.image_id[:] = len(self.images)  # local to the shard; renumbered at merge
        self.images.append(record)
        self.vectors.append(vectors)
        self.faces.append(faces)

    def flush(self) -> None:
        if not self.images:
            return
        final = self.folder / f"{self.number:06d}"
        temporary = self.folder / f".{self.number:06d}.tmp"
        shutil.rmtree(temporary, ignore_errors=True)
        temporary.mkdir()
        vectors = (np.concatenate(self.vectors) if self.vectors
                   else np.empty((0, self.dimension), np.float32))
        np.save(temporary / "vectors.npy", vectors.astype(np.float32))
        FaceTable.concatenate(self.faces).save(temporary / "faces.npz")
        write_images(temporary / "images.jsonl", self.images)
        os.rename(temporary, final)
        self.number += 1
        self._reset()


def _load_shards(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_dir() and not p.name.startswith("."))


def _staging_folder(out: Path) -> Path:
    return out.parent / f".{out.name}.building"


def _prepare_staging(staging: Path, settings: dict[str, Any], fresh: bool) -> list[Path]:
    """Reuse a previous interrupted build with the same settings; otherwise start clean."""
    build_file = staging / BUILD_FILE
    if staging.exists() and not fresh and build_file.is_file():
        previous = json.loads(build_file.read_text())
        if previous == settings:
            return _load_shards(staging / "shards")
        log.warning("discarding an interrupted build made with other settings: %s", staging)
    shutil.rmtree(staging, ignore_errors=True)
    (staging / "shards").mkdir(parents=True)
    build_file.write_text(json.dumps(settings, indent=2))
    return []


def build_index(
    dataset: Path,
    out: Path,
    engine: FaceEngine,
    *,
    workers: int = 2,
    inference_workers: int | None = None,
    shard_size: int = 512,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    fresh: bool = False,
    progress: Callable[[int, int], None] | None = None,
) -> BuildSummary:
    """Index every image under ``dataset`` into ``out`` and publish it atomically.

    ``progress(done, total)`` is called after each image. Returns counts and timings.
    """
    started = time.perf_counter()
    dataset = dataset.resolve()
    out = out.resolve()
    if not dataset.is_dir():
        raise FaceAuditError(f"Dataset folder {dataset} does not exist or is not a folder.")
    if out == dataset or dataset in out.parents:
        raise FaceAuditError(f"Put the index outside the dataset folder, not at {out}.")
    out.parent.mkdir(parents=True, exist_ok=True)
    settings = _build_settings(engine, dataset)
    staging = _staging_folder(out)
    shards = _prepare_staging(staging, settings, fresh)
    done: set[str] = set()
    for shard in shards:
        done.update(record.path for record in read_images(shard / "images.jsonl"))

    summary = BuildSummary()
    all_paths = list(scan_dataset(dataset))
    todo = [p for p in all_paths if p not in done]
    summary.resumed_images = len(all_paths) - len(todo)
    if summary.resumed_images:
        log.info("resuming: %d images already indexed, %d to go", summary.resumed_images,
                 len(todo))
    writer = _ShardWriter(staging / "shards", len(shards), engine.dimension)
    times = summary.stages
    finished = summary.resumed_images
    for item in process_images(engine, dataset, todo, workers=workers,
                               inference_workers=inference_workers, max_pixels=max_pixels,
                               times=times):
        faces_table = FaceTable.empty()
        if item.faces:
            faces_table = FaceTable(
                np.zeros(len(item.faces), np.int32),
                np.array([f.bbox for f in item.faces], np.float32),
                np.stack([f.landmarks for f in item.faces]).astype(np.float32),
                np.array([f.score for f in item.faces], np.float32),
            )
        writer.add(item.record, item.vectors, faces_table)
        if len(writer.images) >= shard_size:
            clock = time.perf_counter()
            writer.flush()
            times.write += time.perf_counter() - clock
        finished += 1
        if progress:
            progress(finished, len(all_paths))
    clock = time.perf_counter()
    writer.flush()
    _merge_and_publish(staging, out, engine, settings, summary)
    times.write += time.perf_counter() - clock
    summary.seconds = time.perf_counter() - started
    log.info("stage seconds: %s", times.as_dict())
    return summary


def _merge_and_publish(
    staging: Path, out: Path, engine: FaceEngine, settings: dict[str, Any], summary: BuildSummary
) -> None:
    """Merge the shards in path order, write the index into a fresh folder, publish it."""
    images: list[ImageRecord] = []
    vectors: list[NDArray[np.float32]] = []
    tables: list[FaceTable] = []
    for shard in _load_shards(staging / "shards"):
        shard_images = read_images(shard / "images.jsonl")
        table = FaceTable.load(shard / "faces.npz")
        table.image_id = table.image_id + len(images)
        images.extend(shard_images)
        vectors.append(np.load(shard / "vectors.npy"))
        tables.append(table)
    faces = FaceTable.concatenate(tables)
    all_vectors = (np.concatenate(vectors) if vectors
                   else np.empty((0, engine.dimension), np.float32))
    # Image ids follow the dataset's path order, whatever order a resumed build ran in.
    order = sorted(range(len(images)), key=lambda i: images[i].path)
    new_id = np.empty(len(images), np.int32)
    new_id[order] = np.arange(len(images), dtype=np.int32)
    images = [images[i] for i in order]
    faces.image_id = new_id[faces.image_id] if len(faces) else faces.image_id
    face_order = np.argsort(faces.image_id, kind="stable")
    faces = FaceTable(faces.image_id[face_order], faces.bbox[face_order],
                      faces.landmarks[face_order], faces.score[face_order])
    all_vectors = all_vectors[face_order]

    summary.images = len(images)
    summary.faces = len(faces)
    summary.images_with_faces = sum(1 for r in images if r.faces > 0)
    summary.no_face = sum(1 for r in images if r.status == STATUS_NO_FACE)
    summary.failed = sum(1 for r in images if r.status == STATUS_FAILED)
    summary.failures = [(r.path, r.error or "") for r in images if r.status == STATUS_FAILED]
    manifest = {
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
        "index": {"type": "IndexFlatIP", "file": FAISS_FILE, "exact": True},
        "detection": engine.detection.as_dict(),
        "dataset": {"root": settings["dataset_root"]},
        "counts": {
            "images": summary.images,
            "images_with_faces": summary.images_with_faces,
            "no_face": summary.no_face,
            "failed": summary.failed,
            "faces": summary.faces,
        },
    }
    final = staging.parent / f".{out.name}.publish"
    shutil.rmtree(final, ignore_errors=True)
    final.mkdir()
    write_index_files(final, vectors=all_vectors, faces=faces, images=images, manifest=manifest)
    publish(final, out)
    shutil.rmtree(staging)
