"""Detecting and embedding the faces of read images on a pool of engine replicas, alone or in
batches; a failure is recorded on its image, never raised."""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Container, Iterable, Iterator
from dataclasses import dataclass, field
from queue import Queue

import numpy as np
from numpy.typing import NDArray

from faceaudit.indexer.image_reading import LoadedImage
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.indexer.store import STATUS_FAILED, STATUS_NO_FACE, STATUS_OK, ImageRecord
from faceaudit.models.engine import DetectedFace, FaceEngine

log = logging.getLogger(__name__)

# Decoded pixels gathered for one batch at most (384 MiB of RGB): 256 LFW photos, ~45 at 2048 px.
BATCH_PIXELS = 128 * 2**20


@dataclass
class ProcessedImage:
    """One image through the pipeline: its record, its faces and their embeddings.
    ``reused_from``: set when an earlier build already holds this image unchanged."""

    record: ImageRecord
    faces: list[DetectedFace]
    vectors: NDArray[np.float32]
    query_vectors: NDArray[np.float32] | None = None  # as a selfie is embedded (with flip)
    reused_from: str | None = None
    # Faces found but too small to embed (under min_face): kept so the service can blur them.
    small_faces: list[DetectedFace] = field(default_factory=list)


def default_inference_workers(engine: FaceEngine) -> int:
    """On a CPU, one single-threaded engine per core beats one engine using every core: the
    models' small tensors do not split well across threads. A GPU gets two engines, so that
    one's CPU work (letterboxing, NMS, alignment) overlaps the other's inference."""
    return 2 if engine.device == "cuda" else max(1, min(os.cpu_count() or 1, 8))


def detect_and_embed(engines: Queue[FaceEngine], item: LoadedImage, times: StageTimes,
                     as_query: bool, dimension: int) -> ProcessedImage:
    """The faces of one read image and their embeddings (``as_query``: also embedded as a
    selfie is), on an engine taken from ``engines`` and put back."""
    record = item.record
    vectors = np.empty((0, dimension), np.float32)
    if item.image is None:
        return ProcessedImage(record, [], vectors, reused_from=item.reused_from)
    faces: list[DetectedFace] = []
    small: list[DetectedFace] = []
    query_vectors = None
    engine = engines.get()
    try:
        clock = time.perf_counter()
        for face in engine.detect_all(item.image):
            (faces if face.short_side >= engine.detection.min_face else small).append(face)
        times.detect += time.perf_counter() - clock
        clock = time.perf_counter()
        if as_query:
            vectors, query_vectors = engine.embed_with_mirror(item.image, faces)
        else:
            vectors = engine.embed(item.image, faces)
        times.embed += time.perf_counter() - clock
    except Exception as error:  # one bad image must never stop a long build
        log.warning("failed on %s: %s", record.ref, error)
        record.status, record.error = STATUS_FAILED, f"face engine error: {error}"
        faces, small, vectors = [], [], np.empty((0, dimension), np.float32)
    finally:
        engines.put(engine)
    record.faces = len(faces)
    if record.status == STATUS_OK and not faces:
        record.status = STATUS_NO_FACE
    return ProcessedImage(record, faces, vectors, query_vectors, small_faces=small)


def image_batches(decoded: Iterable[LoadedImage], size: int) -> Iterator[list[LoadedImage]]:
    """``decoded`` in batches of ``size`` images, or fewer once they hold BATCH_PIXELS."""
    batch: list[LoadedImage] = []
    pixels = 0
    for item in decoded:
        batch.append(item)
        if item.image is not None:
            pixels += item.image.pixels.shape[0] * item.image.pixels.shape[1]
        if len(batch) >= size or pixels >= BATCH_PIXELS:
            yield batch
            batch, pixels = [], 0
    if batch:
        yield batch


def detect_and_embed_batch(engines: Queue[FaceEngine], items: list[LoadedImage],
                           times: StageTimes, query_refs: Container[str], dimension: int
                           ) -> list[ProcessedImage]:
    """``detect_and_embed`` of many images at once (``engine.batched``, the CUDA path): the
    detector runs on batches of photos, the recognizer on the crops of all of them together.
    A failure is still one image's own, recorded on it."""
    empty = np.empty((0, dimension), np.float32)
    results = [ProcessedImage(item.record, [], empty, reused_from=item.reused_from)
               for item in items]
    decoded = [(result, item.image) for result, item in zip(results, items, strict=True)
               if item.image is not None]
    crops: list[list[NDArray[np.uint8]]] = []
    engine = engines.get()
    try:
        clock = time.perf_counter()
        found = engine.detect_all_batch([image for _, image in decoded])
        times.detect += time.perf_counter() - clock
        clock = time.perf_counter()
        for (result, image), faces in zip(decoded, found, strict=True):
            crops.append([])
            try:
                if isinstance(faces, Exception):
                    raise faces
                for face in faces:
                    big = face.short_side >= engine.detection.min_face
                    (result.faces if big else result.small_faces).append(face)
                if result.record.ref in query_refs:
                    result.vectors, result.query_vectors = engine.embed_with_mirror(
                        image, result.faces)
                else:
                    crops[-1] = engine.align(image, result.faces)
            except Exception as error:
                _engine_failed(result, error, dimension)
        for (result, _), vectors in zip(decoded, _embed_all(engine, crops), strict=True):
            if isinstance(vectors, Exception):
                _engine_failed(result, vectors, dimension)
            elif len(vectors):  # (a query's were set above, from no crops here)
                result.vectors = vectors
        times.embed += time.perf_counter() - clock
    finally:
        engines.put(engine)
    for result, _ in decoded:
        result.record.faces = len(result.faces)
        if result.record.status == STATUS_OK and not result.faces:
            result.record.status = STATUS_NO_FACE
    return results


def _embed_all(engine: FaceEngine, crops: list[list[NDArray[np.uint8]]]
               ) -> list[NDArray[np.float32] | Exception]:
    """Each image's embeddings, all images' crops run together; when that fails, each image's
    again on its own, so that only the image at fault fails."""
    if not crops:
        return []
    try:
        vectors = engine.embed_crops([crop for image_crops in crops for crop in image_crops])
        return list(np.split(vectors, np.cumsum([len(c) for c in crops])[:-1]))
    except Exception:
        results: list[NDArray[np.float32] | Exception] = []
        for image_crops in crops:
            try:
                results.append(engine.embed_crops(image_crops))
            except Exception as error:
                results.append(error)
        return results


def _engine_failed(result: ProcessedImage, error: Exception, dimension: int) -> None:
    log.warning("failed on %s: %s", result.record.ref, error)
    result.record.status, result.record.error = STATUS_FAILED, f"face engine error: {error}"
    result.faces, result.small_faces = [], []
    result.vectors, result.query_vectors = np.empty((0, dimension), np.float32), None

