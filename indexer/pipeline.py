"""The one pipeline that ``index`` and ``eval`` run: read -> hash -> decode (threads), then
detect -> align -> embed (one engine replica per core), results in input order.

Nothing an image can do stops it: any failure to read, decode or run the models on one image
is recorded on that image's record, with a reason a person understands, and the run goes on.
"""

from __future__ import annotations

import hashlib
import logging
import os
import time
from collections import deque
from collections.abc import Callable, Container, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from queue import Queue

import numpy as np
from numpy.typing import NDArray

from faceaudit.errors import FaceAuditError, InvalidSetting
from faceaudit.imaging import DEFAULT_MAX_PIXELS, DecodedImage, decode_image
from faceaudit.indexer.readers.base import (
    ByteLocation,
    SourceItem,
    UnreadableFile,
    read_location,
)
from faceaudit.indexer.readers.flickr import complete_flickr_fields
from faceaudit.indexer.store import (
    STATUS_FAILED,
    STATUS_NO_FACE,
    STATUS_OK,
    ImageRecord,
    image_key,
)
from faceaudit.models.engine import DetectedFace, FaceEngine

log = logging.getLogger(__name__)

# Decoding threads at most: each keeps 4 decoded photos ahead of the models (process_items),
# up to 2 x det_size on a side: 64 threads hold about 3 GB of pixels at the default det_size.
MAX_WORKERS = 64

# Decides, from an image's key and SHA-256, whether an earlier build already holds it: its
# bytes are then neither decoded nor run through the models. Returns where it is, or None.
Reusable = Callable[[str, str], str | None]


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


@dataclass
class _Read:
    record: ImageRecord
    image: DecodedImage | None
    reused_from: str | None = None


def check_workers(workers: int) -> None:
    """Refuse a number of decoding threads outside 1..MAX_WORKERS (InvalidSetting)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidSetting("workers", f"the decoding threads must be from 1 to "
                             f"{MAX_WORKERS}, not {workers}")


def new_record(item: SourceItem, dataset: str) -> ImageRecord:
    location = item.location or ByteLocation("")
    fields = complete_flickr_fields(item.fields)
    record = ImageRecord(key="", ref=item.ref, status=STATUS_OK,
                         path=location.path if item.location else None,
                         offset=location.offset, size=location.size, dataset=dataset,
                         source_record=item.source_record or item.ref)
    for name, value in fields.items():
        if hasattr(record, name) and name not in ("dataset", "sha256", "source_record"):
            setattr(record, name, value)
    return record


def read_and_decode(item: SourceItem, root: Path, dataset: str, *, max_pixels: int,
                    max_side: int | None, reusable: Reusable | None = None) -> _Read:
    """Read the item's bytes, hash them, key the image, and decode it unless an earlier build
    holds it unchanged. Never raises for a bad image."""
    record = new_record(item, dataset)

    def failed(reason: str, retry: bool = False) -> _Read:
        record.status, record.error, record.retry = STATUS_FAILED, reason, retry
        record.key = image_key(dataset, record.photo_id, record.sha256, record.ref)
        return _Read(record, None)

    if item.error:
        return failed(item.error)
    data = item.data
    if data is None:
        if item.location is None:
            return failed("the source gives no image for this row")
        try:
            data = read_location(root, item.location)
        except UnreadableFile as error:
            return failed(str(error), retry=error.transient)
    if not data:
        return failed("an empty (zero-byte) file")
    record.bytes, record.sha256 = len(data), hashlib.sha256(data).hexdigest()
    record.key = image_key(dataset, record.photo_id, record.sha256, record.ref)
    if reusable is not None:
        where = reusable(record.key, record.sha256)
        if where is not None:
            return _Read(record, None, where)
    try:
        image = decode_image(data, max_pixels=max_pixels, max_side=max_side, name=item.ref)
    except FaceAuditError as error:
        return failed(error.message)
    except Exception as error:  # a corrupt file can make any decoder raise anything
        return failed(f"{item.ref} is corrupt: the decoder failed with "
                      f"{type(error).__name__}: {error}")
    record.width, record.height = image.width, image.height
    return _Read(record, image)


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
    models' small tensors do not split well across threads. A GPU gets two engines, so that
    one's CPU work (letterboxing, NMS, alignment) overlaps the other's inference."""
    return 2 if engine.device == "cuda" else max(1, min(os.cpu_count() or 1, 8))


def _detect_and_embed(engines: Queue[FaceEngine], item: _Read, times: StageTimes,
                      as_query: bool, dimension: int) -> ProcessedImage:
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


# Decoded pixels gathered for one batch at most (384 MiB of RGB): 256 LFW photos, ~45 at 2048 px.
BATCH_PIXELS = 128 * 2**20


def _batches(decoded: Iterable[_Read], size: int) -> Iterator[list[_Read]]:
    batch: list[_Read] = []
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


def _detect_and_embed_batch(engines: Queue[FaceEngine], items: list[_Read], times: StageTimes,
                            query_refs: Container[str], dimension: int) -> list[ProcessedImage]:
    """``_detect_and_embed`` of many images at once (``engine.batched``, the CUDA path): the
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


def process_items(
    engine: FaceEngine,
    root: Path,
    items: Iterable[SourceItem],
    *,
    dataset: str = "",
    workers: int = 2,
    inference_workers: int | None = None,
    max_pixels: int = DEFAULT_MAX_PIXELS,
    times: StageTimes | None = None,
    reusable: Reusable | None = None,
    query_refs: Container[str] = frozenset(),
) -> Iterator[ProcessedImage]:
    """Read, decode, detect and embed each item; results in input order. A failure is
    recorded on the image, never raised.

    ``workers`` threads read and decode; ``inference_workers`` threads each own a replica of
    ``engine`` (onnxruntime and Pillow release the GIL, so both stages run in parallel).
    ``times`` accumulates busy seconds per stage, summed over threads. Items whose ``ref`` is
    in ``query_refs`` also get ``query_vectors``, embedded as a selfie is (for ``eval``).
    When ``engine.batched`` (the default on CUDA), each replica takes ``engine.batch_size``
    images at a time: one detector run per batch of photos, one recognizer run per batch of
    crops from many photos.
    """
    check_workers(workers)
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
    if engine.batched:  # decoding goes on while the main thread waits for a batch
        ahead += engine.batch_size
    max_side = engine.detection.decode_max_side

    def read(item: SourceItem) -> _Read:
        clock = time.perf_counter()
        result = read_and_decode(item, root, dataset, max_pixels=max_pixels, max_side=max_side,
                                 reusable=reusable)
        times.read_decode += time.perf_counter() - clock
        return result

    with ThreadPoolExecutor(workers, thread_name_prefix="decode") as decoders, \
            ThreadPoolExecutor(count, thread_name_prefix="infer") as inferers:
        decoded = _in_order((decoders.submit(read, item) for item in items), ahead)
        if engine.batched:
            for batch in _in_order(
                (inferers.submit(_detect_and_embed_batch, engines, batch, times, query_refs,
                                 engine.dimension)
                 for batch in _batches(decoded, engine.batch_size)), count + 1
            ):
                yield from batch
            return
        yield from _in_order(
            (inferers.submit(_detect_and_embed, engines, item, times,
                             item.record.ref in query_refs, engine.dimension)
             for item in decoded), ahead
        )


def process_images(
    engine: FaceEngine,
    root: Path,
    paths: Iterable[str],
    *,
    query_paths: Container[str] = frozenset(),
    **options,
) -> Iterator[ProcessedImage]:
    """``process_items`` over image files given by their paths relative to ``root``."""
    items = (SourceItem(ref=path, location=ByteLocation(path), source_record=path)
             for path in paths)
    yield from process_items(engine, root, items, query_refs=query_paths, **options)
