"""The pipeline ``index`` and ``eval`` run: read and decode on threads, then detect and embed."""

from __future__ import annotations

import os
import time
from collections import deque
from collections.abc import Container, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from queue import Queue

from faceaudit.errors import InvalidSetting
from faceaudit.imaging import DEFAULT_MAX_PIXELS
from faceaudit.indexer.face_inference import (
    ProcessedImage,
    default_inference_workers,
    detect_and_embed,
    detect_and_embed_batch,
    image_batches,
)
from faceaudit.indexer.image_reading import LoadedImage, Reusable, read_and_decode
from faceaudit.indexer.readers.base import ByteLocation, SourceItem
from faceaudit.indexer.stage_times import StageTimes
from faceaudit.models.engine import FaceEngine

# Nothing an image can do stops the pipeline: any failure to read, decode or run the models on
# one image is recorded on that image's record, with a reason a person understands, and the
# run goes on. Results come in input order.

# Decoding threads at most: each keeps 4 decoded photos ahead of the models (process_items),
# up to 2 x det_size on a side: 64 threads hold about 3 GB of pixels at the default det_size.
MAX_WORKERS = 64


def check_workers(workers: int) -> None:
    """Refuse a number of decoding threads outside 1..MAX_WORKERS (InvalidSetting)."""
    if not 1 <= workers <= MAX_WORKERS:
        raise InvalidSetting("workers", f"the decoding threads must be from 1 to "
                             f"{MAX_WORKERS}, not {workers}")


def _in_order(futures: Iterable[Future], ahead: int) -> Iterator:
    """Results of ``futures`` in submission order, keeping at most ``ahead`` in flight."""
    window: deque[Future] = deque()
    for future in futures:
        window.append(future)
        if len(window) >= ahead:
            yield window.popleft().result()
    while window:
        yield window.popleft().result()


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

    def read(item: SourceItem) -> LoadedImage:
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
                (inferers.submit(detect_and_embed_batch, engines, batch, times, query_refs,
                                 engine.dimension)
                 for batch in image_batches(decoded, engine.batch_size)), count + 1
            ):
                yield from batch
            return
        yield from _in_order(
            (inferers.submit(detect_and_embed, engines, item, times,
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
